//! `steadfast bench latency`: schedule-to-start at a steady enqueue rate,
//! the peers' W2 workload. One producer enqueues one job at a time at
//! `--rate` for `--seconds`; workers long-poll for work; each job's latency
//! is the time from just before its enqueue call to the moment a worker
//! starts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use steadfast_sdk::{Client, wire};

use super::{Endpoint, request};
use crate::cli::LatencyArgs;

/// Jobs run before measuring, to prove the workers are leasing.
const WARM_UP_JOBS: usize = 5;

#[derive(Debug, Serialize)]
pub(super) struct LatencyReport {
    pub rate: u32,
    pub seconds: u64,
    pub jobs: usize,
    pub workers: usize,
    /// The rate the producer achieved (jobs / time spent enqueueing).
    pub achieved_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What the workers saw: for each job index, milliseconds from enqueue to start.
#[derive(Default)]
struct Starts {
    latencies_ms: Mutex<Vec<(usize, f64)>>,
}

impl Starts {
    fn count(&self, measured: impl Fn(usize) -> bool) -> usize {
        self.latencies_ms
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(i, _)| measured(*i))
            .count()
    }
}

/// The enqueue time the producer put in the payload.
fn enqueued_at(job: &wire::LeasedJob) -> Option<(usize, f64)> {
    let stamp: super::Stamp = serde_json::from_str(job.payload.get()).ok()?;
    Some((usize::try_from(stamp.i).ok()?, stamp.t))
}

fn start_workers(
    client: &Client,
    queue: &str,
    workers: usize,
    starts: &Arc<Starts>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    (0..workers)
        .map(|w| {
            let (client, starts, stop) = (client.clone(), starts.clone(), stop.clone());
            let lease = wire::LeaseRequest {
                queues: vec![queue.to_owned()],
                max_jobs: Some(10),
                wait_ms: Some(1000),
                worker_id: format!("bench-latency-{w}"),
            };
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let leased = client.lease(&lease).await?;
                    // Every job in the lease is in the worker's hands now,
                    // not after the completions of those before it.
                    let started = super::unix_now();
                    for job in leased {
                        if let Some((i, t)) = enqueued_at(&job) {
                            let latency = ((started - t) * 1000.0).max(0.0);
                            starts.latencies_ms.lock().expect("not poisoned").push((i, latency));
                        }
                        client.complete(&job.id.to_string(), &job.lease_token, None).await?;
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect()
}

async fn wait_for(
    starts: &Starts,
    wanted: usize,
    measured: impl Fn(usize) -> bool + Copy,
    deadline: Instant,
) -> anyhow::Result<()> {
    while starts.count(measured) < wanted {
        if Instant::now() > deadline {
            bail!(
                "the benchmark ran out of time: {} of {wanted} jobs started",
                starts.count(measured)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The nearest-rank percentile of sorted values.
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the steady-rate workload against `client`'s server on a fresh queue.
pub(super) async fn measure(client: &Client, args: &LatencyArgs, quiet: bool) -> anyhow::Result<LatencyReport> {
    let jobs = usize::try_from(u64::from(args.rate) * args.seconds)?;
    if jobs > 1_000_000 {
        bail!("--rate x --seconds is {jobs} jobs; at most 1,000,000 per run");
    }
    let queue = format!("bench-latency-{}", uuid::Uuid::now_v7());
    let deadline = Instant::now() + Duration::from_secs(args.seconds + args.timeout_secs);
    let starts = Arc::new(Starts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_workers(client, &queue, args.workers, &starts, &stop);
    let warm_up = |i: usize| i >= jobs;
    for i in jobs..jobs + WARM_UP_JOBS {
        client.enqueue(&request(&queue, i)).await?;
    }
    wait_for(&starts, WARM_UP_JOBS, warm_up, deadline).await?;

    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let bar = super::progress(quiet, "produce", jobs);
    let started = tokio::time::Instant::now();
    for i in 0..jobs {
        tokio::time::sleep_until(started + period * i as u32).await;
        // `request` stamps the payload with the time just before the call.
        client.enqueue(&request(&queue, i)).await?;
        bar.inc(1);
    }
    let producing = started.elapsed();
    bar.finish_and_clear();
    let measured = |i: usize| i < jobs;
    let waited = wait_for(&starts, jobs, measured, deadline).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await??;
    }
    waited?;

    let mut latencies: Vec<f64> = starts
        .latencies_ms
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(i, _)| measured(*i))
        .map(|(_, ms)| *ms)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
    Ok(LatencyReport {
        rate: args.rate,
        seconds: args.seconds,
        jobs,
        workers: args.workers,
        achieved_rate: super::rate(jobs, producing),
        p50_ms: round(percentile(&latencies, 50.0)),
        p99_ms: round(percentile(&latencies, 99.0)),
        max_ms: round(latencies.last().copied().unwrap_or_default()),
    })
}

pub async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    if args.rate == 0 || args.seconds == 0 || args.workers == 0 {
        bail!("--rate, --seconds and --workers must be positive");
    }
    let endpoint = Endpoint::new(&args.target, true)?;
    let client = Client::new(&endpoint.url, &endpoint.key)?;
    let report = measure(&client, &args, args.target.json).await?;
    if args.target.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "| schedule-to-start at {} jobs/s for {} s ({} jobs) | ms |\n|---|---:|",
            report.rate, report.seconds, report.jobs
        );
        println!(
            "| p50 | {:.3} |\n| p99 | {:.3} |\n| max | {:.3} |",
            report.p50_ms, report.p99_ms, report.max_ms
        );
        println!("(producer achieved {:.1} jobs/s)", report.achieved_rate);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
