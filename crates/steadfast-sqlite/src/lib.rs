//! Steadfast's embedded storage: one SQLite file in WAL mode.
//!
//! Writes go through one [`writer`] thread that group-commits, and a syncer
//! thread that fsyncs the WAL before any durable write is answered, so every
//! acknowledged write is on disk; reads use a
//! small pool of read-only connections ([`readers`]). The module names mirror
//! the store traits (`tenants`, `keys`, `jobs`, `workflows`, `maintenance`), and will be
//! mirrored again by the PostgreSQL backend.
//!
//! Only this crate contains SQLite SQL.

mod audit;
mod bulk;
mod dashboard;
mod flow;
mod inbox;
mod jobs;
mod keys;
mod limits;
mod maintenance;
mod outbox;
mod persist;
mod producers;
mod readers;
mod rows;
mod schedules;
pub mod schema;
mod schemas;
mod slos;
mod tenants;
mod workflows;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use steadfast_core::Timestamp;
use steadfast_store::StoreError;
use steadfast_store::decide::{Author, Decision};

use crate::readers::Readers;
use crate::writer::{Durability, Writer};

/// The embedded store. Cheap to clone; all clones share one writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Writer,
    readers: Readers,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the database at {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("cannot prepare the database at {path}: {source}")]
    Schema { path: PathBuf, source: schema::SchemaError },
    #[error("cannot start the storage writer: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens a connection with the settings every Steadfast connection uses.
fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // Another process (the CLI while a server runs) may hold the write lock briefly.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, WAL is required"
        )));
    }
    // FULL: every commit fsyncs the WAL (migrations, the checkpointer).
    // Each store's writer connection runs NORMAL instead and fsyncs in its
    // syncer before answering (writer.rs).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The writer runs each command in a savepoint, so SQLite keeps a
    // statement sub-journal per command: in a temp file that costs a
    // pwrite per page (a sixth of the writer's time, by perf). In memory
    // it is bounded by one commit's pages (BENCHMARKS.md, "Where the time goes").
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Plans must not depend on bound values. Without this guarantee SQLite
    // (3.5x) marks statements whose plan consulted a parameter (an equality
    // in a subquery, a LIMIT) for re-preparation, and rusqlite's statement
    // cache clears bindings on every return, which then re-prepares them on
    // every use: a third of the writer's time per workflow step, by perf.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    /// Other processes may open the same file: SQLite's own locking keeps
    /// their writes serialised with ours.
    pub fn open(path: &Path) -> Result<SqliteStore, OpenError> {
        let sqlite = |source| OpenError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let mut conn = connect(path).map_err(sqlite)?;
        schema::migrate(&mut conn).map_err(|source| OpenError::Schema {
            path: path.to_owned(),
            source,
        })?;
        // The database and WAL files now exist; make their directory entries
        // durable too, or a power loss could forget a file we acknowledged into.
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Writer::start(conn, connect(path).map_err(sqlite)?).map_err(|error| match error {
                    writer::StartError::Sqlite(source) => sqlite(source),
                    writer::StartError::Io(error) => OpenError::from(error),
                })?,
                readers: Readers::new(path.to_owned()),
                path: path.to_owned(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    fn readers(&self) -> &Readers {
        &self.inner.readers
    }

    /// Runs one operation on the writer, in three phases: `decide` loads
    /// the rows it needs and calls the shared decision (`steadfast_store::
    /// decide`), then the decision's writes are persisted in the same
    /// savepoint. The answer returns once the commit is as durable as asked.
    async fn decided<T, F>(
        &self,
        author: Author,
        durability: Durability,
        now: Timestamp,
        decide: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<Decision<T>, StoreError> + Send + 'static,
    {
        self.writer()
            .send(durability, move |conn| {
                let mut decision = decide(conn)?;
                // Ended attempts of jobs that name a resource report to its breaker.
                flow::record_outcomes(conn, &mut decision.writes, now)?;
                persist::persist(conn, &decision.writes, &author, now)?;
                Ok(decision.answer)
            })
            .await
    }
}

/// SQLite errors are never the client's fault: they mean the store could not
/// do its job right now. The message is for logs, not for clients.
pub(crate) fn sqlite_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match error.sqlite_error_code() {
        Some(DiskFull) => StoreError::StorageFull,
        Some(DatabaseBusy | DatabaseLocked) => {
            StoreError::Unavailable("the database is locked by another process".into())
        }
        Some(DatabaseCorrupt | NotADatabase) => StoreError::Corrupt(error.to_string()),
        Some(OperationInterrupted) => StoreError::Unavailable("the query ran past its time limit".into()),
        _ => StoreError::Unavailable(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("steadfast.db")).expect("open");
        (store, dir)
    }

    steadfast_store::conformance_suite!(temp_store);

    /// A cached statement whose plan consulted a parameter (here the
    /// equality inside a subquery, as `save_step` has) is prepared once, not
    /// again on every use.
    #[test]
    fn cached_statements_are_not_prepared_again_on_each_use() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = connect(&dir.path().join("plain.db")).expect("connect");
        conn.execute_batch("CREATE TABLE t (k TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (k, n)) WITHOUT ROWID")
            .expect("create");
        let sql = "INSERT INTO t (k, n) VALUES (?1, (SELECT COALESCE(MAX(n), 0) + 1 FROM t WHERE k = ?1))";
        for key in ["a", "b", "a", "c"] {
            conn.prepare_cached(sql)
                .and_then(|mut insert| insert.execute([key]))
                .expect("insert");
        }
        let insert = conn.prepare_cached(sql).expect("cached");
        assert_eq!(insert.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    /// A full store refuses writes with `StorageFull` and changes nothing,
    /// keeps answering reads, and takes writes again once there is room,
    /// with no restart. (`max_page_count` on the writer's connection stands
    /// in for a full filesystem: SQLite reports both as SQLITE_FULL.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_store_refuses_writes_keeps_reads_and_recovers() {
        use steadfast_store::JobStore;
        use steadfast_store::conformance::*;

        use crate::writer::Durability;

        let (store, _dir) = temp_store().await;
        let (scope, _) = new_tenant(&store).await;
        let limit = |pages: Option<i64>| {
            store.writer().send(Durability::Durable, move |conn| {
                let now: i64 = conn
                    .query_row("PRAGMA page_count", [], |row| row.get(0))
                    .map_err(sqlite_error)?;
                conn.pragma_update(None, "max_page_count", pages.unwrap_or(now))
                    .map_err(sqlite_error)
            })
        };
        limit(None).await.expect("no room left beyond today's pages");

        let payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
        let mut acknowledged = Vec::new();
        let refused = loop {
            assert!(acknowledged.len() < 1000, "the store never filled up");
            let job = new_job(
                request("q", &payload)
                    .validate(&Default::default(), [0; 32], t0())
                    .unwrap(),
            );
            let id = job.id;
            match store.enqueue(&scope, vec![job], std::time::Duration::ZERO, t0()).await {
                Ok(_) => acknowledged.push(id),
                Err(StoreError::StorageFull) => break id,
                Err(other) => panic!("{other}"),
            }
        };

        assert!(store.job(&scope, refused).await.unwrap().is_none(), "nothing half-done");
        for id in &acknowledged {
            assert!(store.job(&scope, *id).await.unwrap().is_some(), "reads keep working");
        }
        let checked: String = store
            .writer()
            .send(Durability::Durable, |conn| {
                conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
                    .map_err(sqlite_error)
            })
            .await
            .unwrap();
        assert_eq!(checked, "ok");

        limit(Some(1 << 30)).await.unwrap();
        let again = new_job(
            request("q", &payload)
                .validate(&Default::default(), [0; 32], t0())
                .unwrap(),
        );
        let id = again.id;
        store
            .enqueue(&scope, vec![again], std::time::Duration::ZERO, t0())
            .await
            .expect("writes work again once there is room");
        assert!(store.job(&scope, id).await.unwrap().is_some());
    }

    mod tampering {
        use steadfast_core::audit::{Breach, Head};
        use steadfast_store::audit::{VerifyError, verify};
        use steadfast_store::conformance::*;
        use steadfast_store::{AuditStore, JobStore, TenantScope};

        use crate::SqliteStore;

        /// Drops the triggers that keep audit records append-only, as an
        /// attacker with the file would.
        const DROP_TRIGGERS: &str = "DROP TRIGGER audit_records_append_only_update; \
             DROP TRIGGER audit_records_append_only_delete; DROP TRIGGER audit_batches_append_only_update; \
             DROP TRIGGER audit_batches_append_only_delete;";

        /// A store with a tenant and a chain of a few records (1 and 2 are
        /// the tenant's and its key's, 3 to 8 six single-job enqueues, 9 to
        /// 11 one batch of three); `tamper` then edits the database file
        /// directly, triggers dropped.
        async fn tampered(tamper: &str, checkpoint: bool) -> Result<(), Breach> {
            match tampered_store(tamper, checkpoint).await {
                Ok(()) => Ok(()),
                Err(VerifyError::Breach(breach)) => Err(breach),
                Err(other) => panic!("{other}"),
            }
        }

        async fn tampered_store(tamper: &str, checkpoint: bool) -> Result<(), VerifyError> {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("steadfast.db");
            let store = SqliteStore::open(&path).unwrap();
            let (scope, _): (TenantScope, _) = new_tenant(&store).await;
            for i in 0..6 {
                enqueue_one(&store, &scope, spec("q"), at(i)).await;
            }
            let batch = (0..3).map(|_| new_job(spec("q"))).collect();
            store
                .enqueue(&scope, batch, std::time::Duration::from_secs(60), at(7))
                .await
                .unwrap();
            let kept: Option<Head> = if checkpoint {
                store.audit_head(&scope).await.unwrap()
            } else {
                None
            };
            let raw = rusqlite::Connection::open(&path).unwrap();
            raw.execute_batch(DROP_TRIGGERS).unwrap();
            raw.execute_batch(&tamper.replace("{tenant}", &scope.tenant_id().to_string()))
                .unwrap();
            verify(&store, &scope, kept.as_slice()).await.map(|_| ())
        }

        #[tokio::test]
        async fn hiding_a_record_from_its_jobs_history_fails_verification() {
            let hide = "DROP TRIGGER audit_job_records_append_only_delete; \
                        DELETE FROM audit_job_records WHERE tenant_id = '{tenant}' AND seq = 10";
            let found = tampered_store(hide, false).await.unwrap_err();
            assert!(
                found
                    .to_string()
                    .contains("record 10 is missing from its job's lineage"),
                "{found}"
            );
        }

        #[tokio::test]
        async fn a_batch_claiming_records_outside_its_range_fails_verification() {
            // A forged row below every scan's start, holding record 7.
            let forge = "INSERT INTO audit_batches (tenant_id, first_seq, last_seq, at, actor_kind, actor_name, records) \
                         SELECT tenant_id, 0, 0, at, actor_kind, actor_name, json_set(records, '$[0].target', 'forged') \
                         FROM audit_batches WHERE tenant_id = '{tenant}' AND first_seq = 7; \
                         UPDATE audit_batches SET last_seq = 7 WHERE tenant_id = '{tenant}' AND first_seq = 0";
            let found = tampered_store(forge, false).await.unwrap_err();
            assert!(found.to_string().contains("outside its sequence range"), "{found}");
            let below = "INSERT INTO audit_batches (tenant_id, first_seq, last_seq, at, actor_kind, actor_name, records) \
                         SELECT tenant_id, 0, 0, at, actor_kind, actor_name, records \
                         FROM audit_batches WHERE tenant_id = '{tenant}' AND first_seq = 7";
            let found = tampered_store(below, false).await.unwrap_err();
            assert!(found.to_string().contains("outside its sequence range"), "{found}");
        }

        #[tokio::test]
        async fn an_untouched_chain_verifies() {
            assert_eq!(tampered("SELECT 1", true).await, Ok(()));
        }

        #[tokio::test]
        async fn an_edited_record_is_named() {
            let edit = "UPDATE audit_batches SET records = json_set(records, '$[0].summary', '{\"forged\":true}') \
                        WHERE tenant_id = '{tenant}' AND first_seq = 4";
            assert_eq!(tampered(edit, false).await, Err(Breach::Edited { seq: 4 }));
            let inside = "UPDATE audit_batches SET records = json_set(records, '$[1].target', 'forged') \
                          WHERE tenant_id = '{tenant}' AND first_seq = 9";
            assert_eq!(tampered(inside, false).await, Err(Breach::Edited { seq: 10 }));
        }

        #[tokio::test]
        async fn a_deleted_record_is_named() {
            let delete = "DELETE FROM audit_batches WHERE tenant_id = '{tenant}' AND first_seq = 4";
            assert_eq!(tampered(delete, false).await, Err(Breach::Missing { from: 4, to: 4 }));
            let inside = "UPDATE audit_batches SET records = json_remove(records, '$[1]') \
                          WHERE tenant_id = '{tenant}' AND first_seq = 9";
            assert_eq!(tampered(inside, false).await, Err(Breach::Missing { from: 10, to: 10 }));
        }

        #[tokio::test]
        async fn reordered_records_are_named() {
            let swap = "UPDATE audit_batches SET first_seq = -1, last_seq = -1, records = json_set(records, '$[0].seq', -1) \
                          WHERE tenant_id = '{tenant}' AND first_seq = 3; \
                        UPDATE audit_batches SET first_seq = 3, last_seq = 3, records = json_set(records, '$[0].seq', 3) \
                          WHERE tenant_id = '{tenant}' AND first_seq = 4; \
                        UPDATE audit_batches SET first_seq = 4, last_seq = 4, records = json_set(records, '$[0].seq', 4) \
                          WHERE tenant_id = '{tenant}' AND first_seq = -1;";
            assert_eq!(tampered(swap, false).await, Err(Breach::Reordered { seq: 3 }));
            let inside = "UPDATE audit_batches SET records = json_set(records, '$[0].seq', 10, '$[1].seq', 9) \
                          WHERE tenant_id = '{tenant}' AND first_seq = 9";
            assert_eq!(tampered(inside, false).await, Err(Breach::Reordered { seq: 9 }));
        }

        #[tokio::test]
        async fn a_truncated_tail_is_caught_by_a_checkpoint() {
            // A careful attacker also moves the stored head back.
            let cut = "DELETE FROM audit_batches WHERE tenant_id = '{tenant}' AND first_seq > 5; \
                       UPDATE audit_heads SET seq = 5, hash = (SELECT unhex(json_extract(records, '$[0].hash')) \
                         FROM audit_batches WHERE tenant_id = '{tenant}' AND first_seq = 5) \
                       WHERE tenant_id = '{tenant}';";
            assert_eq!(
                tampered(cut, true).await,
                Err(Breach::Truncated {
                    checkpoint_seq: 11,
                    last_seq: 5
                })
            );
            assert_eq!(
                tampered(cut, false).await,
                Ok(()),
                "without a checkpoint a clean cut is invisible"
            );
        }

        #[tokio::test]
        async fn the_database_refuses_to_change_records() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("steadfast.db");
            let store = SqliteStore::open(&path).unwrap();
            let (scope, _) = new_tenant(&store).await;
            enqueue_one(&store, &scope, spec("q"), t0()).await;
            let raw = rusqlite::Connection::open(&path).unwrap();
            for statement in [
                "UPDATE audit_batches SET records = '[]'",
                "DELETE FROM audit_batches",
                "UPDATE audit_job_records SET seq = 0",
                "DELETE FROM audit_job_records",
            ] {
                let refused = raw.execute(statement, []).unwrap_err();
                assert!(refused.to_string().contains("append-only"), "{statement}: {refused}");
            }
        }
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        use steadfast_store::conformance::*;
        use steadfast_store::{JobStore, TenantStore, auth};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steadfast.db");
        let (job, tenant_name) = {
            let store = SqliteStore::open(&path).unwrap();
            let (scope, _) = new_tenant(&store).await;
            let job = enqueue_one(&store, &scope, spec("durable"), t0()).await;
            let tenant = store.list_tenants().await.unwrap().remove(0);
            (job, tenant.name)
        };
        let store = SqliteStore::open(&path).unwrap();
        let tenant = store.tenant_by_name(&tenant_name).await.unwrap().unwrap();
        let record = store
            .job(&auth::local_operator(&tenant), job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.job, job);
    }
}
