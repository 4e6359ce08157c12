//! A store written by the release with schema 2 (audit records one row
//! each) opens with this build: every job, key, SLO and audit record is
//! carried over, the chain runs on in the new format, and verification
//! still names a tampered record on either side of the upgrade.
//!
//! `tests/fixtures/schema2.db` was made by that release's binary with
//! `tests/fixtures/make_schema2_store.py`.

use steadfast_core::TenantName;
use steadfast_core::audit::Breach;
use steadfast_sqlite::SqliteStore;
use steadfast_store::audit::{VerifyError, verify};
use steadfast_store::conformance::{Written, assert_carried_over, enqueue_one, spec};
use steadfast_store::{AuditQuery, AuditStore, TenantStore, auth};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema2.db");

/// What the fixture holds, read with plain SQL before the upgrade.
struct Before {
    written: Written,
    records: i64,
}

fn before(path: &std::path::Path) -> Before {
    let raw = rusqlite::Connection::open(path).unwrap();
    let version: i64 = raw.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    assert_eq!(version, 2, "the fixture is a schema-2 store");
    let mut select = raw.prepare("SELECT id, state FROM jobs ORDER BY seq").unwrap();
    let jobs = select
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let count = |table: &str| -> i64 {
        raw.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))
            .unwrap()
    };
    Before {
        written: Written {
            jobs,
            keys: count("api_keys"),
            slos: count("slos"),
        },
        records: count("audit_records"),
    }
}

/// After everything the fixture recorded: the records written now follow
/// the old ones in time as in the chain.
fn later(seconds: u64) -> steadfast_core::Timestamp {
    steadfast_core::Timestamp::now()
        .saturating_add(std::time::Duration::from_secs(seconds))
        .unwrap()
}

fn copy_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steadfast.db");
    std::fs::copy(FIXTURE, &path).unwrap();
    (dir, path)
}

#[tokio::test]
async fn a_schema_2_store_upgrades_in_place_and_its_chain_verifies_across_the_upgrade() {
    let (_dir, path) = copy_fixture();
    let before = before(&path);
    assert!(
        before.records > 10 && before.written.jobs.len() == 5,
        "a fixture worth upgrading"
    );

    let store = SqliteStore::open(&path).unwrap();
    let scope = assert_carried_over(&store, &before.written).await;

    // The old chain verifies, then runs on in the new format.
    let verified = verify(&store, &scope, &[]).await.unwrap();
    assert_eq!(verified.records as i64, before.records);
    let old_head = verified.head.unwrap();
    for i in 0..3 {
        enqueue_one(&store, &scope, spec("after-upgrade"), later(i)).await;
    }
    let verified = verify(&store, &scope, &[old_head]).await.unwrap();
    assert_eq!(verified.records as i64, before.records + 3);

    // Listing pages through both formats in order, without gaps or repeats.
    let (mut seen, mut cursor) = (Vec::new(), None);
    loop {
        let page = store
            .audit_records(
                &scope,
                AuditQuery {
                    limit: 4,
                    after: cursor,
                    ..AuditQuery::default()
                },
            )
            .await
            .unwrap();
        seen.extend(page.records.iter().map(|record| record.seq));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<u64> = (1..=before.records as u64 + 3).collect();
    assert_eq!(seen, expected);
}

/// Opens a copy of the fixture, adds records in the new format, then lets
/// `tamper` edit the file and reports what verification finds.
async fn tampered_after_upgrade(tamper: &str) -> Result<(), Breach> {
    let (_dir, path) = copy_fixture();
    let store = SqliteStore::open(&path).unwrap();
    let tenant = store
        .tenant_by_name(&TenantName::new("default").unwrap())
        .await
        .unwrap()
        .unwrap();
    let scope = auth::local_operator(&tenant);
    for i in 0..3 {
        enqueue_one(&store, &scope, spec("after-upgrade"), later(i)).await;
    }
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP TRIGGER audit_records_append_only_update; DROP TRIGGER audit_records_append_only_delete; \
         DROP TRIGGER audit_batches_append_only_update; DROP TRIGGER audit_batches_append_only_delete;",
    )
    .unwrap();
    raw.execute_batch(tamper).unwrap();
    match verify(&store, &scope, &[]).await {
        Ok(_) => Ok(()),
        Err(VerifyError::Breach(breach)) => Err(breach),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn tampering_on_either_side_of_the_upgrade_is_named() {
    let old = before(&copy_fixture().1).records as u64;
    assert_eq!(
        tampered_after_upgrade("UPDATE audit_records SET summary = '{\"forged\":1}' WHERE seq = 3").await,
        Err(Breach::Edited { seq: 3 })
    );
    assert_eq!(
        tampered_after_upgrade("DELETE FROM audit_records WHERE seq = 5").await,
        Err(Breach::Missing { from: 5, to: 5 })
    );
    let edit_new = format!(
        "UPDATE audit_batches SET records = json_set(records, '$[0].summary', '{{}}') WHERE first_seq = {}",
        old + 2
    );
    assert_eq!(
        tampered_after_upgrade(&edit_new).await,
        Err(Breach::Edited { seq: old + 2 })
    );
    let drop_first_new = format!("DELETE FROM audit_batches WHERE first_seq = {}", old + 1);
    assert_eq!(
        tampered_after_upgrade(&drop_first_new).await,
        Err(Breach::Missing {
            from: old + 1,
            to: old + 1
        })
    );
}
