//! `steadfast bench peer`: Steadfast's adapter for the peers' benchmark
//! harness, so the harness measures Steadfast exactly as it measures Celery,
//! BullMQ or graphile-worker: same payload, same record per job, same clock.
//! `bench/peer/peer.sh` starts the server; these commands only talk to it.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use steadfast_sdk::{Client, JobError, Worker, WorkerConfig, wire};

use super::{Stamp, request};
use crate::cli::{PeerCommand, PeerServer};

/// The harness's batch size for W1's enqueue phase.
const ENQUEUE_CHUNK: usize = 1000;
/// Every sub-command gives up after this long (the harness bounds runs too).
const TIME_LIMIT: Duration = Duration::from_secs(600);

pub async fn run(command: PeerCommand) -> anyhow::Result<()> {
    match command {
        PeerCommand::Enqueue { n, server } => enqueue(n, &server).await,
        PeerCommand::Warm { k, server } => warm(k, &server).await,
        PeerCommand::Produce { rate, secs, server } => produce(rate, secs, &server).await,
        PeerCommand::Worker {
            concurrency,
            rec_dir,
            server,
        } => worker(concurrency, &rec_dir, &server).await,
    }
}

fn client(server: &PeerServer) -> anyhow::Result<Client> {
    Ok(Client::new(&server.url, &server.key)?)
}

fn emit(value: serde_json::Value) {
    println!("{value}");
}

async fn enqueue(n: usize, server: &PeerServer) -> anyhow::Result<()> {
    let client = client(server)?;
    let deadline = Instant::now() + TIME_LIMIT;
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        anyhow::ensure!(Instant::now() < deadline, "enqueue ran out of time after {i} jobs");
        let end = (i + ENQUEUE_CHUNK).min(n);
        let jobs = (i..end).map(|i| request(&server.queue, i)).collect();
        client.enqueue_batch(&wire::BatchEnqueueRequest { jobs }).await?;
        i = end;
    }
    emit(serde_json::json!({"n": n, "seconds": started.elapsed().as_secs_f64()}));
    Ok(())
}

async fn warm(k: usize, server: &PeerServer) -> anyhow::Result<()> {
    let client = client(server)?;
    for i in 1..=k {
        client.enqueue(&request(&server.queue, -(i as i64))).await?;
    }
    Ok(())
}

/// One job per request at a steady rate, like the peers' `produce_loop`:
/// job k is due at start + k / rate; a late producer does not catch up in bursts
/// but records how late it ran.
async fn produce(rate: u32, secs: u32, server: &PeerServer) -> anyhow::Result<()> {
    anyhow::ensure!(rate > 0 && rate <= 100_000, "RATE must be 1 to 100000");
    anyhow::ensure!(secs > 0 && secs <= 600, "SECS must be 1 to 600");
    let client = client(server)?;
    let n = rate as usize * secs as usize;
    let started = Instant::now();
    let mut max_lag = Duration::ZERO;
    for k in 0..n {
        let due = started + Duration::from_secs_f64(k as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else {
            max_lag = max_lag.max(now - due);
        }
        client.enqueue(&request(&server.queue, k)).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    emit(serde_json::json!({
        "n": n, "seconds": elapsed, "rate": n as f64 / elapsed, "max_lag_ms": max_lag.as_secs_f64() * 1000.0,
    }));
    Ok(())
}

/// Appends one line per job to this process's record file, one `write` each.
struct Records(Mutex<std::fs::File>);

impl Records {
    fn open(dir: &Path) -> anyhow::Result<Records> {
        let path = dir.join(format!("steadfast-{}.rec", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Records(Mutex::new(file)))
    }

    fn write(&self, job: &Stamp, started: f64) -> std::io::Result<()> {
        let line = format!("{} {:.6} {:.6} {:.6}\n", job.i, job.t, started, super::unix_now());
        self.0.lock().expect("not poisoned").write_all(line.as_bytes())
    }
}

async fn worker(concurrency: usize, rec_dir: &Path, server: &PeerServer) -> anyhow::Result<()> {
    anyhow::ensure!((1..=10_000).contains(&concurrency), "--concurrency must be 1 to 10000");
    let records = Arc::new(Records::open(rec_dir)?);
    let config = WorkerConfig {
        worker_id: format!("bench-peer-{}", std::process::id()),
        concurrency,
        poll_wait: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(10),
    };
    Worker::new(client(server)?, config)
        .handle(&server.queue, move |ctx| {
            let records = records.clone();
            async move {
                let started = super::unix_now();
                let job: Stamp = ctx.payload()?;
                records
                    .write(&job, started)
                    .map_err(|error| JobError::retryable(format!("writing the record: {error}")))?;
                Ok(())
            }
        })
        .run()
        .await?;
    Ok(())
}
