//! What Steadfast's storage layer does on its own: job lives per second
//! through the store's calls (a batched enqueue, a lease, a batched
//! completion), with no HTTP, no JSON bodies and no SDK in the way. The gap
//! between this and `steadfast bench throughput` is what the server and the
//! clients cost; the gap between this and `physical_limits` (the same writes
//! in raw SQL) is what the store's own code costs.
//!
//!     cargo run --release -p steadfast-cli --example store_limits -- [jobs] [batch] [tasks] [DATABASE_URL]
//!
//! Without a URL the store is embedded SQLite on a fresh temporary data dir;
//! with one, PostgreSQL as an application role of a migrated database (each
//! run makes a fresh tenant), with an audit chainer running beside the tasks
//! as the server's duties run one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use steadfast_core::{JobId, Limits, QueueName, Timestamp, WorkerId};
use steadfast_server::{Clock, SystemClock};
use steadfast_store::conformance::{new_job, new_tenant, spec};
use steadfast_store::{Completing, LeaseRequest, Maintenance, Store};

fn now() -> Timestamp {
    SystemClock.now()
}

async fn run<S: Store + Maintenance + Clone + Send + Sync + 'static>(
    store: S,
    jobs: usize,
    batch: usize,
    tasks: usize,
) {
    let (scope, key_id) = new_tenant(&store).await;
    let queue = format!("limits-{}", uuid::Uuid::now_v7().simple());
    let done = Arc::new(AtomicBool::new(false));
    let chainer = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if store.chain_audit(5000).await.expect("chain") < 5000 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };
    let per_task = jobs / tasks;
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let (store, scope, key_id, queue) = (store.clone(), scope.clone(), key_id.clone(), queue.clone());
            tokio::spawn(async move {
                let mut lived = 0;
                while lived < per_task {
                    let n = batch.min(per_task - lived);
                    let new = (0..n).map(|_| new_job(spec(&queue))).collect();
                    store
                        .enqueue(&scope, new, Limits::default().dedup_window, now())
                        .await
                        .expect("enqueue");
                    let request = LeaseRequest {
                        queues: vec![QueueName::new(queue.clone()).expect("a queue name")],
                        max_jobs: n as u32,
                        worker_id: WorkerId::new(format!("limits-{task}")).expect("a worker id"),
                        key_id: key_id.clone(),
                        ttl: Duration::from_secs(60),
                        token_seed: rand::random(),
                    };
                    let leased = store.lease(&scope, request, now()).await.expect("lease");
                    let items: Vec<Completing> = leased
                        .iter()
                        .map(|leased| Completing {
                            id: leased.job.id,
                            token: leased.job.lease.as_ref().expect("leased").token.clone(),
                            output: "{}".into(),
                        })
                        .collect();
                    let ids: Vec<JobId> = items.iter().map(|item| item.id).collect();
                    let results = store.complete_many(&scope, items, now()).await.expect("complete");
                    assert!(results.iter().all(Result::is_ok), "every completion of {ids:?} lands");
                    lived += results.len();
                }
                lived
            })
        })
        .collect();
    let mut lived = 0;
    for worker in workers {
        lived += worker.await.expect("a task ends");
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    chainer.await.expect("the chainer ends");
    println!(
        "{lived} job lives, {batch} per call, {tasks} tasks: {:.0} jobs/s",
        lived as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number =
        |index: usize, default: usize| args.get(index).map(|n| n.parse().expect("a number")).unwrap_or(default);
    let (jobs, batch, tasks) = (number(0, 100_000), number(1, 100), number(2, 8));
    match args.get(3) {
        Some(url) => {
            let store = steadfast_postgres::PostgresStore::connect(url).await.expect("connect");
            run(store, jobs, batch, tasks).await;
        }
        None => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = steadfast_sqlite::SqliteStore::open(&dir.path().join("steadfast.db")).expect("open");
            run(store, jobs, batch, tasks).await;
        }
    }
}
