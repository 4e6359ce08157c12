//! How fast a day's window of a large audit log answers.
//!
//! Fills a fresh embedded store with one tenant's chain of N records (real
//! hashes, spread evenly over 30 days), then times, through the store's own
//! query API, the first page of one day's records and paging through the
//! whole day.
//!
//! ```sh
//! cargo run --release -p steadfast-sqlite --example audit_query -- 10000000
//! ```

use std::time::{Duration, Instant};

use rusqlite::params;
use steadfast_core::audit::{self, Actor, Draft, Head};
use steadfast_core::{JobId, TenantId, TenantName, Timestamp};
use steadfast_sqlite::SqliteStore;
use steadfast_store::{AuditQuery, AuditStore, TenantStore, auth};

const DAYS: i64 = 30;

#[tokio::main]
async fn main() {
    let records: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |n| n.parse().expect("a record count"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steadfast.db");
    let store = SqliteStore::open(&path).unwrap();
    let tenant = store
        .create_tenant(
            TenantId(uuid::Uuid::now_v7()),
            &TenantName::new("bench").unwrap(),
            Timestamp::UNIX_EPOCH,
        )
        .await
        .unwrap();
    let scope = auth::local_operator(&tenant);
    let start = Timestamp::from_second(1_800_000_000).unwrap();
    let spacing_ms = DAYS * 86_400_000 / records as i64;

    let filling = Instant::now();
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let mut head = store.audit_head(&scope).await.unwrap();
    let mut written = 0u64;
    while written < records {
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO audit_records (tenant_id, seq, at, actor_kind, actor_key_id, actor_name, request_id, \
                     action, target, job_id, summary, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, NULL, ?5, NULL, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .unwrap();
            for _ in 0..100_000.min(records - written) {
                let job = JobId(uuid::Uuid::now_v7());
                let at = Timestamp::from_millisecond(start.as_millisecond() + written as i64 * spacing_ms).unwrap();
                let draft = Draft {
                    action: "job.enqueued",
                    target: job.to_string(),
                    job_id: Some(job),
                    summary: r#"{"queue":"q"}"#.into(),
                };
                let record = audit::append(head, tenant.id, at, Actor::System, None, draft);
                insert
                    .execute(params![
                        tenant.id.to_string(),
                        record.seq as i64,
                        at.as_millisecond(),
                        "system",
                        "system",
                        record.action,
                        record.target,
                        job.to_string(),
                        record.summary,
                        record.prev_hash.as_slice(),
                        record.hash.as_slice(),
                    ])
                    .unwrap();
                head = Some(Head {
                    seq: record.seq,
                    hash: record.hash,
                });
                written += 1;
            }
        }
        tx.commit().unwrap();
    }
    let head = head.unwrap();
    conn.execute(
        "UPDATE audit_heads SET seq = ?2, hash = ?3 WHERE tenant_id = ?1",
        params![tenant.id.to_string(), head.seq as i64, head.hash.as_slice()],
    )
    .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;").unwrap();
    drop(conn);
    println!(
        "filled {records} records over {DAYS} days in {:.1}s",
        filling.elapsed().as_secs_f64()
    );

    // A day in the middle of the range, queried through the store API.
    let day = Timestamp::from_millisecond(start.as_millisecond() + 15 * 86_400_000).unwrap();
    let until = day.checked_add(Duration::from_secs(86_400)).unwrap();
    let mut first_pages = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let page = store
            .audit_records(
                &scope,
                AuditQuery {
                    since: Some(day),
                    until: Some(until),
                    limit: 1000,
                    ..AuditQuery::default()
                },
            )
            .await
            .unwrap();
        first_pages.push(started.elapsed());
        assert_eq!(page.records.len(), 1000);
    }
    first_pages.sort();
    let started = Instant::now();
    let mut query = AuditQuery {
        since: Some(day),
        until: Some(until),
        limit: 1000,
        ..AuditQuery::default()
    };
    let mut in_day = 0;
    loop {
        let page = store.audit_records(&scope, query.clone()).await.unwrap();
        in_day += page.records.len();
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let whole_day = started.elapsed();
    println!(
        "{records} records: first page (1,000) of one day's window: median {:.2} ms (min {:.2}, max {:.2}); \
         the whole day ({in_day} records, {} pages): {:.0} ms",
        first_pages[2].as_secs_f64() * 1000.0,
        first_pages[0].as_secs_f64() * 1000.0,
        first_pages[4].as_secs_f64() * 1000.0,
        in_day.div_ceil(1000),
        whole_day.as_secs_f64() * 1000.0
    );
}
