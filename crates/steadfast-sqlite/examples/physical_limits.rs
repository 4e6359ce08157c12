//! The physical limits under Steadfast's embedded storage, on this machine:
//! how many fsyncs per second the disk takes, and how many job lives per
//! second raw SQLite can make durable (no HTTP, no audit), one job per
//! commit and in group commits. The figures bound what the server can do.
//!
//!     cargo run --release -p steadfast-sqlite --example physical_limits -- [jobs]

use std::io::Write;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

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
}
