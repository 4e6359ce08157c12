//! What collecting metrics costs per enqueue request, measured in isolation:
//! the exact recording calls the server makes for one `POST /v1/jobs`
//! (request counter and duration histogram, queue label, enqueued counter),
//! from one thread and from several at once.
//!
//!     cargo run --release -p steadfast-server --example metrics_cost -- [iterations]

use std::sync::Arc;
use std::time::{Duration, Instant};

use steadfast_server::metrics::{Metrics, QueueLabels};

fn record_one_enqueue(metrics: &Metrics) {
    metrics.record_http("/v1/jobs".to_owned(), "POST".to_owned(), 201, Duration::from_micros(90));
    let queue = metrics.queue("emails");
    metrics.enqueued.get_or_create(&QueueLabels { queue }).inc();
}

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("iterations is a number"))
        .unwrap_or(2_000_000);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    for threads in [1, threads] {
        let metrics = Arc::new(Metrics::new());
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..iterations {
                        record_one_enqueue(&metrics);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("no panic");
        }
        let elapsed = started.elapsed();
        let per_call = elapsed.as_nanos() as f64 / iterations as f64;
        println!("{threads} thread(s): {per_call:.0} ns per enqueue request's metrics (wall time per call per thread)");
    }
}
