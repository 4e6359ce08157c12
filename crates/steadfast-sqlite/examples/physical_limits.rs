//! The physical limits under Steadfast's embedded storage, on this machine:
//! how many fsyncs per second the disk takes, how many job lives per second
//! raw SQLite can make durable (no HTTP, no audit), one job per commit and in
//! group commits, and how many with the writes Steadfast's contract needs
//! per job (its real schema: the job row and its indexes, three
//! hash-chained audit records, the attempt; and with three checkpointed
//! steps per job, what `bench steps` writes), still without HTTP or JSON
//! handling. The figures bound what the server can do.
//!
//!     cargo run --release -p steadfast-sqlite --example physical_limits -- [jobs]

use std::io::Write;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use steadfast_core::audit::{self, Actor, Draft, Head};
use steadfast_core::{JobId, TenantId, Timestamp};

fn fsyncs_per_second(dir: &std::path::Path, count: usize) -> (f64, Duration) {
    let mut file = std::fs::File::create(dir.join("fsync-probe")).expect("can create a file");
    let block = [7u8; 4096];
    let mut each = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let one = Instant::now();
        file.write_all(&block).expect("can write");
        file.sync_data().expect("can fsync");
        each.push(one.elapsed());
    }
    let elapsed = started.elapsed();
    each.sort();
    (count as f64 / elapsed.as_secs_f64(), each[each.len() / 2])
}

fn open(dir: &std::path::Path, name: &str) -> Connection {
    let conn = Connection::open(dir.join(name)).expect("can open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    conn.pragma_update(None, "synchronous", "FULL").expect("FULL");
    conn.pragma_update(None, "temp_store", "MEMORY").expect("temp_store");
    conn.execute_batch(
        "CREATE TABLE jobs (
             id INTEGER PRIMARY KEY, queue TEXT NOT NULL, state TEXT NOT NULL,
             run_at INTEGER NOT NULL, payload BLOB NOT NULL, lease TEXT, finished_at INTEGER);
         CREATE INDEX ready ON jobs (queue, state, run_at);",
    )
    .expect("schema");
    conn
}

/// A job's life as the three durable writes it needs (enqueue, lease,
/// complete), `per_commit` jobs' writes of each kind in one transaction.
fn job_lives_per_second(dir: &std::path::Path, jobs: usize, per_commit: usize) -> f64 {
    let mut conn = open(dir, &format!("lives-{per_commit}.db"));
    let payload = [b'x'; 100];
    let started = Instant::now();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(per_commit) {
        let tx = conn.transaction().expect("begin");
        for &i in chunk {
            tx.execute(
                "INSERT INTO jobs (id, queue, state, run_at, payload) VALUES (?1, 'q', 'queued', ?1, ?2)",
                params![i as i64, &payload[..]],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
        let tx = conn.transaction().expect("begin");
        for &i in chunk {
            tx.execute(
                "UPDATE jobs SET state = 'running', lease = 'token' WHERE id = ?1",
                params![i as i64],
            )
            .expect("lease");
        }
        tx.commit().expect("commit");
        let tx = conn.transaction().expect("begin");
        for &i in chunk {
            tx.execute(
                "UPDATE jobs SET state = 'succeeded', lease = NULL, finished_at = ?1 WHERE id = ?1",
                params![i as i64],
            )
            .expect("complete");
        }
        tx.commit().expect("commit");
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

/// A job's life with what Steadfast writes for it, in its real schema (every
/// migration): the enqueue (job row, `job.enqueued`), the lease (row update,
/// `job.leased`; committed without fsync, as the server does) and the
/// completion (row update, attempt row, `job.succeeded`), `per_commit` jobs
/// per transaction. Each transaction stores its records as the server does
/// since schema 3: one `audit_batches` row (a JSON array of the records, each
/// with its own hash), a lineage row per record, and the chain head advanced once.
/// Returns (whole lives, enqueue alone, lease and completion alone) per second.
/// `lean` drops every index that only serves queries (listing jobs by tenant,
/// state, queue or finish time; audit batches by time; the lineage by job),
/// keeping what leasing, sweeps and the chain need: what the same writes
/// would cost with the fewest indexes Steadfast could run on.
/// `lease_in_memory` skips the lease's row update (keeping its audit
/// record): the most a lease held in memory could save.
/// `steps` checkpointed steps run between lease and completion, each a
/// durable commit marking it started and one storing its output, each with
/// its audit record, as `bench steps` makes the server write them.
#[derive(Debug, Clone, Copy)]
struct Shape {
    lean: bool,
    lease_in_memory: bool,
    steps: u32,
}

fn steadfast_lives_per_second(dir: &std::path::Path, jobs: usize, per_commit: usize, shape: Shape) -> (f64, f64, f64) {
    let Shape {
        lean,
        lease_in_memory,
        steps,
    } = shape;
    let name = format!(
        "steadfast-{per_commit}-{}-{}-{steps}.db",
        if lean { "lean" } else { "full" },
        if lease_in_memory { "memory" } else { "row" }
    );
    let mut conn = Connection::open(dir.join(name)).expect("can open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    conn.pragma_update(None, "temp_store", "MEMORY").expect("temp_store");
    steadfast_sqlite::schema::migrate(&mut conn).expect("schema");
    if lean {
        conn.execute_batch(
            "DROP INDEX jobs_by_tenant; DROP INDEX jobs_by_state; DROP INDEX jobs_by_queue; DROP INDEX jobs_finished; \
             DROP INDEX audit_batches_by_time;",
        )
        .expect("lean schema");
    }
    set_synchronous(&conn, false);
    let tenant = TenantId(uuid::Uuid::now_v7());
    let actor = Actor::Key {
        key_id: steadfast_core::KeyId::parse("0123456789abcdef").expect("a key id"),
        name: "bench".into(),
    };
    let mut head: Option<Head> = None;
    let now = Timestamp::from_millisecond(1_800_000_000_000).expect("a time");
    // This transaction's records, stored together by `advance`.
    let mut batch: Vec<audit::Record> = Vec::new();
    let mut append = |batch: &mut Vec<audit::Record>, action: &'static str, id: JobId, summary: &str| {
        let draft = Draft {
            action,
            target: id.to_string(),
            job_id: Some(id),
            summary: summary.to_owned(),
        };
        let record = audit::append(head, tenant, now, actor.clone(), Some("req-0123456789".into()), draft);
        head = Some(Head {
            seq: record.seq,
            hash: record.hash,
        });
        batch.push(record);
    };
    let advance = |tx: &rusqlite::Transaction<'_>, batch: &mut Vec<audit::Record>| {
        let (first, last) = (batch.first().expect("a record"), batch.last().expect("a record"));
        let records: Vec<serde_json::Value> = batch
            .iter()
            .map(|record| {
                serde_json::json!({
                    "seq": record.seq,
                    "action": record.action,
                    "target": record.target,
                    "job_id": record.job_id.map(|id| id.to_string()),
                    "summary": record.summary,
                    "prev_hash": hex::encode(record.prev_hash),
                    "hash": hex::encode(record.hash),
                })
            })
            .collect();
        tx.prepare_cached(
            "INSERT INTO audit_batches (tenant_id, first_seq, last_seq, at, actor_kind, actor_key_id, actor_name, \
             request_id, records) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                tenant.to_string(),
                first.seq as i64,
                last.seq as i64,
                now.as_millisecond(),
                first.actor.kind(),
                first.actor.key_id().map(|k| k.as_str()),
                first.actor.name(),
                first.request_id,
                serde_json::Value::Array(records).to_string(),
            ])
        })
        .expect("audit batch");
        if !lean {
            let mut lineage = tx
                .prepare_cached("INSERT INTO audit_job_records (tenant_id, job_id, seq) VALUES (?1, ?2, ?3)")
                .expect("lineage");
            for record in batch.iter() {
                let job = record.job_id.expect("a job's record").to_string();
                lineage
                    .execute(params![tenant.to_string(), job, record.seq as i64])
                    .expect("lineage row");
            }
        }
        tx.prepare_cached(
            "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?1, ?2, ?3) \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )
        .and_then(|mut upsert| upsert.execute(params![tenant.to_string(), last.seq as i64, last.hash.as_slice()]))
        .expect("head");
        batch.clear();
    };
    let payload = format!("{{\"n\":0,\"pad\":\"{}\"}}", "x".repeat(80));
    let ms = now.as_millisecond();
    let ids: Vec<JobId> = (0..jobs).map(|_| JobId(uuid::Uuid::now_v7())).collect();
    let (mut enqueueing, mut draining) = (Duration::ZERO, Duration::ZERO);
    for chunk in ids.chunks(per_commit) {
        let started = Instant::now();
        let tx = conn.transaction().expect("begin");
        for id in chunk {
            tx.prepare_cached(
                "INSERT INTO jobs (id, tenant_id, queue, payload, state, priority, run_at, attempt, \
                 uncounted_attempts, max_attempts, timeout_ms, created_at, updated_at) \
                 VALUES (?1, ?2, 'bench', ?3, 'queued', 0, ?4, 0, 0, 25, 300000, ?4, ?4)",
            )
            .and_then(|mut insert| insert.execute(params![id.to_string(), tenant.to_string(), payload, ms]))
            .expect("enqueue");
            append(
                &mut batch,
                "job.enqueued",
                *id,
                r#"{"queue":"bench","priority":0,"max_attempts":25}"#,
            );
        }
        advance(&tx, &mut batch);
        tx.commit().expect("commit");
        enqueueing += started.elapsed();

        let started = Instant::now();
        set_synchronous(&conn, true);
        let tx = conn.transaction().expect("begin");
        for id in chunk.iter().filter(|_| !lease_in_memory) {
            tx.prepare_cached(
                "UPDATE jobs SET state = 'running', attempt = 1, lease_token = ?2, lease_worker_id = 'worker-1', \
                 lease_key_id = '0123456789abcdef', lease_started_at = ?3, lease_expires_at = ?3 + 30000, \
                 lease_deadline = ?3 + 300000, updated_at = ?3 WHERE id = ?1",
            )
            .and_then(|mut lease| {
                lease.execute(params![
                    id.to_string(),
                    format!("lt_{}_1_0123456789abcdef", id.0.simple()),
                    ms
                ])
            })
            .expect("lease");
        }
        for id in chunk {
            append(
                &mut batch,
                "job.leased",
                *id,
                r#"{"from":"queued","to":"running","attempt":1,"worker":"worker-1"}"#,
            );
        }
        advance(&tx, &mut batch);
        tx.commit().expect("commit");
        set_synchronous(&conn, false);

        for step in 0..steps {
            let name = format!("step-{step}");
            for checkpoint in [false, true] {
                let tx = conn.transaction().expect("begin");
                for id in chunk {
                    // What the server reads to decide: the job, the step, the count.
                    let job = id.to_string();
                    tx.prepare_cached("SELECT * FROM jobs WHERE id = ?1")
                        .and_then(|mut select| select.query_row([&job], |row| row.get::<_, rusqlite::types::Value>(0)))
                        .expect("job");
                    tx.prepare_cached("SELECT * FROM steps WHERE job_id = ?1 AND name = ?2")
                        .and_then(|mut select| {
                            select
                                .query_row(params![job, name], |row| row.get::<_, rusqlite::types::Value>(0))
                                .optional()
                        })
                        .expect("step");
                    tx.prepare_cached("SELECT COUNT(*) FROM steps WHERE job_id = ?1")
                        .and_then(|mut count| count.query_row([&job], |row| row.get::<_, i64>(0)))
                        .expect("step count");
                    tx.prepare_cached(
                        "INSERT INTO steps (job_id, name, tenant_id, attempt, started_at, completed_at, output, \
                         position) VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7) ON CONFLICT (job_id, name) DO UPDATE \
                         SET completed_at = excluded.completed_at, output = excluded.output",
                    )
                    .and_then(|mut upsert| {
                        upsert.execute(params![
                            job,
                            name,
                            tenant.to_string(),
                            ms,
                            checkpoint.then_some(ms),
                            checkpoint.then_some(step.to_string()),
                            i64::from(step) + 1,
                        ])
                    })
                    .expect("step");
                    let (action, summary) = if checkpoint {
                        (
                            "step.completed",
                            format!(r#"{{"step":"{name}","attempt":1,"output":{step}}}"#),
                        )
                    } else {
                        ("step.started", format!(r#"{{"step":"{name}","attempt":1}}"#))
                    };
                    append(&mut batch, action, *id, &summary);
                }
                advance(&tx, &mut batch);
                tx.commit().expect("commit");
            }
        }

        let tx = conn.transaction().expect("begin");
        for id in chunk {
            tx.prepare_cached(
                "UPDATE jobs SET state = 'succeeded', output = '{}', finished_at = ?2, updated_at = ?2 WHERE id = ?1",
            )
            .and_then(|mut complete| complete.execute(params![id.to_string(), ms]))
            .expect("complete");
            tx.prepare_cached(
                "INSERT INTO attempts (job_id, number, tenant_id, worker_id, key_id, started_at, ended_at, outcome) \
                 VALUES (?1, 1, ?2, 'worker-1', '0123456789abcdef', ?3, ?3, 'succeeded')",
            )
            .and_then(|mut insert| insert.execute(params![id.to_string(), tenant.to_string(), ms]))
            .expect("attempt");
            append(
                &mut batch,
                "job.succeeded",
                *id,
                r#"{"from":"running","to":"succeeded","attempt":1,"output":{}}"#,
            );
        }
        advance(&tx, &mut batch);
        tx.commit().expect("commit");
        draining += started.elapsed();
    }
    let rate = |spent: Duration| jobs as f64 / spent.as_secs_f64();
    (rate(enqueueing + draining), rate(enqueueing), rate(draining))
}

/// Makes the next commits skip fsync (a lease's durability) or wait for it
/// (everything else).
fn set_synchronous(conn: &Connection, relaxed: bool) {
    let level = if relaxed { "NORMAL" } else { "FULL" };
    conn.pragma_update(None, "synchronous", level).expect("synchronous");
}

fn main() {
    let jobs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("jobs is a number"))
        .unwrap_or(3000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!("directory: {}", dir.path().display());
    let (rate, median) = fsyncs_per_second(dir.path(), jobs);
    println!("fsync (4 KiB write + fdatasync): {rate:.0}/s, median {median:?}");
    for per_commit in [1, 10, 100, 1000] {
        let rate = job_lives_per_second(dir.path(), jobs.max(per_commit), per_commit);
        println!("SQLite job lives (3 fsync'd commits each), {per_commit} per commit: {rate:.0} jobs/s");
    }
    let shape = |lean, lease_in_memory, steps| Shape {
        lean,
        lease_in_memory,
        steps,
    };
    let variants = [
        (shape(false, false, 0), "Steadfast's schema"),
        (shape(true, false, 0), "the query-only indexes dropped"),
        (
            shape(false, true, 0),
            "Steadfast's schema, the lease's row update skipped",
        ),
        (
            shape(false, false, 3),
            "Steadfast's schema, 3 checkpointed steps per job",
        ),
    ];
    for (shape, schema) in variants {
        for per_commit in [100, 1000] {
            let (lives, enqueue, drain) =
                steadfast_lives_per_second(dir.path(), jobs.max(per_commit), per_commit, shape);
            println!(
                "SQLite job lives with Steadfast's writes ({schema}; audit chain, attempt; lease without fsync), \
                 {per_commit} per commit: {lives:.0} jobs/s; enqueue alone {enqueue:.0} jobs/s, the drain \
                 (lease, steps if any, completion) alone {drain:.0} jobs/s"
            );
        }
    }
}
