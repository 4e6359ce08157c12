//! `steadfast bench steps`: what checkpoints cost. The same jobs are drained
//! twice by the SDK's `Worker`, once with no-op handlers and once with
//! handlers that run `--steps` memoized steps each (every step is a start
//! mark and a checkpoint: two durable writes). Drain time runs from the
//! first handler start to the last handler end, as the peers measure it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use steadfast_sdk::{Client, JobError, Worker, WorkerConfig, wire};

use super::{Endpoint, rate, request};
use crate::cli::StepsArgs;

#[derive(Debug, Serialize)]
struct StepsReport {
    jobs: usize,
    steps_per_job: u32,
    concurrency: usize,
    /// Drain with no-op handlers.
    drain_plain_jobs_per_sec: f64,
    /// Drain with `steps_per_job` checkpointed steps per job.
    drain_steps_jobs_per_sec: f64,
    steps_per_sec: f64,
}

/// First start and last end of any handler, and how many have ended.
#[derive(Default)]
struct Span {
    first_start: Mutex<Option<Instant>>,
    last_end: Mutex<Option<Instant>>,
    ended: AtomicUsize,
}

impl Span {
    fn start(&self) {
        self.first_start
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(Instant::now);
    }

    fn end(&self) {
        *self.last_end.lock().expect("not poisoned") = Some(Instant::now());
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    fn elapsed(&self) -> Duration {
        let first = self
            .first_start
            .lock()
            .expect("not poisoned")
            .expect("a handler started");
        let last = self.last_end.lock().expect("not poisoned").expect("a handler ended");
        last - first
    }
}

async fn drain(client: &Client, args: &StepsArgs, steps: u32, deadline: Instant) -> anyhow::Result<Duration> {
    let queue = format!("bench-steps-{steps}-{}", uuid::Uuid::now_v7().simple());
    let mut i = 0;
    while i < args.jobs {
        let end = (i + 1000).min(args.jobs);
        let jobs = (i..end).map(|i| request(&queue, i)).collect();
        client.enqueue_batch(&wire::BatchEnqueueRequest { jobs }).await?;
        i = end;
    }
    let span = Arc::new(Span::default());
    let config = WorkerConfig {
        worker_id: format!("bench-steps-{steps}"),
        concurrency: args.concurrency,
        poll_wait: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(10),
    };
    let worker = Worker::new(client.clone(), config).handle(&queue, {
        let span = span.clone();
        move |ctx| {
            let span = span.clone();
            async move {
                span.start();
                for step in 0..steps {
                    ctx.step(&format!("step-{step}"), |_| async move { Ok::<_, JobError>(step) })
                        .await?;
                }
                span.end();
                Ok(())
            }
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let phase = if steps == 0 {
        "no-op handlers".to_owned()
    } else {
        format!("{steps} steps per job")
    };
    let bar = super::progress(args.target.json, &phase, args.jobs);
    while span.ended.load(Ordering::Relaxed) < args.jobs {
        bar.set_position(span.ended.load(Ordering::Relaxed) as u64);
        if Instant::now() > deadline {
            let _ = stop.send(());
            bail!(
                "the benchmark ran out of time: {} of {} jobs ran",
                span.ended.load(Ordering::Relaxed),
                args.jobs
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bar.finish_and_clear();
    let _ = stop.send(());
    running.await??;
    Ok(span.elapsed())
}

pub async fn run(args: StepsArgs) -> anyhow::Result<()> {
    if args.jobs == 0 || args.concurrency == 0 || args.steps == 0 || args.steps > 100 {
        bail!("--jobs and --concurrency must be positive and --steps between 1 and 100");
    }
    let endpoint = Endpoint::new(&args.target, true)?;
    let client = Client::new(&endpoint.url, &endpoint.key)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let plain = drain(&client, &args, 0, deadline).await?;
    let stepped = drain(&client, &args, args.steps, deadline).await?;
    let report = StepsReport {
        jobs: args.jobs,
        steps_per_job: args.steps,
        concurrency: args.concurrency,
        drain_plain_jobs_per_sec: rate(args.jobs, plain),
        drain_steps_jobs_per_sec: rate(args.jobs, stepped),
        steps_per_sec: rate(args.jobs * args.steps as usize, stepped),
    };
    if args.target.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "| drain ({} jobs, concurrency {}) | jobs/s |\n|---|---:|",
            report.jobs, report.concurrency
        );
        println!("| no-op handlers | {:.0} |", report.drain_plain_jobs_per_sec);
        println!(
            "| {} checkpointed steps per job | {:.0} ({:.0} steps/s) |",
            report.steps_per_job, report.drain_steps_jobs_per_sec, report.steps_per_sec
        );
    }
    Ok(())
}
