//! `steadfast bench`: a load generator that drives a real server over HTTP
//! with the Rust SDK. Every loop is bounded in count and in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use steadfast_core::{Role, TenantId, TenantName};
use steadfast_sdk::{Client, wire};
use steadfast_server::{Clock, Engine, EngineConfig, SystemClock};
use steadfast_store::{Store, auth};

use crate::admin::generate_key;
use crate::cli::{BenchTarget, ThroughputArgs};
use crate::serve::open_store;

/// The audit signing key of benchmark servers on PostgreSQL (the same in
/// `bench/peer/peer.sh` and `bench/w2.sh`): a benchmark database outlives
/// one run, and every run must present the key it registered.
pub const BENCH_AUDIT_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

mod inbox;
mod latency;
mod peer;
mod scale;
mod steps;

pub use inbox::run as inbox;
pub use latency::run as latency;
pub use peer::run as peer;
pub use scale::run as scale;
pub use steps::run as steps;

/// The server a benchmark drives: the one given with `--url` and `--key`,
/// or a fresh local one that lives as long as this (on a fresh embedded data
/// dir, or in a fresh tenant of `--database-url`).
struct Endpoint {
    url: String,
    key: String,
    _local: Option<LocalServer>,
}

impl Endpoint {
    fn new(target: &BenchTarget, record_metrics: bool) -> anyhow::Result<Endpoint> {
        Ok(match (&target.url, &target.key) {
            (Some(url), Some(key)) => Endpoint {
                url: url.clone(),
                key: key.clone(),
                _local: None,
            },
            _ => {
                let local = start_local_server(target.database_url.clone(), record_metrics)?;
                Endpoint {
                    url: local.url.clone(),
                    key: local.key.clone(),
                    _local: Some(local),
                }
            }
        })
    }
}

/// A server on a fresh temporary data dir, on its own runtime thread.
struct LocalServer {
    url: String,
    key: String,
    _data_dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn start_local_server(database_url: Option<String>, record_metrics: bool) -> anyhow::Result<LocalServer> {
    let data_dir = tempfile::Builder::new().prefix("steadfast-bench-").tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-server")
        .build()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let path = data_dir.path().to_owned();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let setup = async {
                let store: Arc<dyn Store> = match &database_url {
                    Some(url) => Arc::new(steadfast_postgres::PostgresStore::connect(url).await?),
                    None => Arc::new(open_store(&path)?),
                };
                // Unique, so runs can share a PostgreSQL database.
                let name = TenantName::new(format!("bench-{}", uuid::Uuid::now_v7().simple())).expect("valid");
                let tenant = store
                    .create_tenant(TenantId(uuid::Uuid::now_v7()), &name, SystemClock.now())
                    .await?;
                let (secret, key) = generate_key(Role::Admin, "bench");
                store
                    .create_key(&auth::local_operator(&tenant), key, SystemClock.now())
                    .await?;
                let config = EngineConfig {
                    record_metrics,
                    // `bench inbox` measures ingest, not the per-source and
                    // in-flight limits.
                    inbox: steadfast_server::engine::InboxLimits {
                        source_rate: steadfast_server::engine::Rate::new(1_000_000, 1_000_000).expect("non-zero"),
                        max_in_flight: 100_000,
                        ..Default::default()
                    },
                    ..EngineConfig::default()
                };
                let engine = Engine::new(store, Arc::new(SystemClock), config);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}", listener.local_addr()?);
                anyhow::Ok((engine, listener, url, secret.reveal()))
            };
            match setup.await {
                Ok((engine, listener, url, key)) => {
                    let _ = ready_tx.send(Ok((url, key)));
                    tokio::spawn(engine.clone().run_duties());
                    let app = steadfast_server::router(engine);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await;
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                }
            }
        })
    });
    let (url, key) = ready_rx.recv().context("the benchmark server thread died")??;
    Ok(LocalServer {
        url,
        key,
        _data_dir: data_dir,
        _stop: stop_tx,
    })
}

fn backend(target: &BenchTarget) -> &'static str {
    match (&target.url, &target.database_url) {
        (Some(_), _) => "remote",
        (None, Some(_)) => "postgres",
        (None, None) => "sqlite",
    }
}

/// A progress bar on stderr for a phase of `len` jobs. Hidden with `--json`,
/// and by indicatif itself when stderr is not a terminal.
fn progress(json: bool, phase: &str, len: usize) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("  {msg:<20} [{bar:40}] {pos}/{len} ({per_sec})")
        .expect("a valid template")
        .progress_chars("=> ");
    ProgressBar::new(len as u64)
        .with_style(style)
        .with_message(phase.to_owned())
}

/// About 100 bytes, like the peers' benchmark payload.
fn payload(i: i64) -> wire::Json {
    serde_json::value::to_raw_value(&serde_json::json!({"i": i, "t": unix_now(), "pad": "x".repeat(60)}))
        .expect("serialisable")
}

/// What a worker reads back from [`payload`]: the job's number and its enqueue time.
#[derive(Debug, serde::Deserialize)]
struct Stamp {
    i: i64,
    t: f64,
}

/// Wall-clock seconds since the Unix epoch, as the peers' records carry it.
fn unix_now() -> f64 {
    jiff::Timestamp::now().as_microsecond() as f64 / 1e6
}

/// A no-op job numbered `i` (any integer; the harness uses negative ids for warm-up jobs).
fn request(queue: &str, i: impl TryInto<i64>) -> wire::EnqueueRequest {
    let i = i.try_into().unwrap_or(i64::MAX);
    wire::EnqueueRequest {
        queue: queue.to_owned(),
        payload: payload(i),
        idempotency_key: None,
        max_attempts: None,
        timeout_secs: None,
        run_at: None,
        priority: None,
        flow_key: None,
        resource: None,
        singleton: None,
        debounce_ms: None,
        debounce_max_ms: None,
        schema_version: None,
        producer: None,
    }
}

#[derive(Debug, Serialize)]
struct ThroughputReport {
    /// `sqlite` or `postgres` for the benchmark's own server, `remote` with `--url`.
    backend: &'static str,
    jobs: usize,
    workers: usize,
    lease_batch: u32,
    producers: usize,
    batch_size: usize,
    /// Whether the server collected metrics (false with --no-metrics).
    metrics: bool,
    /// Whether drain completed each lease's jobs in one request.
    batch_complete: bool,
    enqueue_jobs_per_sec: f64,
    enqueue_batched_jobs_per_sec: f64,
    /// Drain of the jobs enqueued one by one.
    drain_jobs_per_sec: f64,
    /// Drain of the jobs enqueued in batches.
    drain_after_batched_jobs_per_sec: f64,
}

fn rate(jobs: usize, elapsed: Duration) -> f64 {
    (jobs as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0
}

async fn enqueue_one_by_one(
    client: &Client,
    queue: &str,
    args: &ThroughputArgs,
    deadline: Instant,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        let (client, queue, next, jobs, bar) = (client.clone(), queue.to_owned(), next.clone(), args.jobs, bar.clone());
        producers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs || Instant::now() > deadline {
                    return anyhow::Ok(());
                }
                client.enqueue(&request(&queue, i)).await?;
                bar.inc(1);
            }
        }));
    }
    for producer in producers {
        producer.await??;
    }
    if Instant::now() > deadline {
        bail!("the benchmark ran out of time while enqueueing");
    }
    Ok(started.elapsed())
}

async fn enqueue_batched(
    client: &Client,
    queue: &str,
    args: &ThroughputArgs,
    deadline: Instant,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut i = 0;
    while i < args.jobs {
        if Instant::now() > deadline {
            bail!("the benchmark ran out of time while enqueueing batches");
        }
        let end = (i + args.batch_size).min(args.jobs);
        let jobs = (i..end).map(|i| request(queue, i)).collect();
        client.enqueue_batch(&wire::BatchEnqueueRequest { jobs }).await?;
        bar.inc((end - i) as u64);
        i = end;
    }
    Ok(started.elapsed())
}

/// Drains exactly `jobs` jobs (a deeper queue keeps the rest); the time runs
/// from the first lease to the last completion.
async fn drain(
    client: &Client,
    queue: &str,
    args: &ThroughputArgs,
    deadline: Instant,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let done = Arc::new(AtomicUsize::new(0));
    // Jobs not yet claimed by a worker's lease request.
    let unclaimed = Arc::new(AtomicUsize::new(args.jobs));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.workers {
        let bar = bar.clone();
        let (client, queue, done, unclaimed, jobs, lease_batch, batch_complete) = (
            client.clone(),
            queue.to_owned(),
            done.clone(),
            unclaimed.clone(),
            args.jobs,
            args.lease_batch as usize,
            args.batch_complete,
        );
        workers.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < jobs && Instant::now() < deadline {
                let claim = unclaimed
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        Some(left - left.min(lease_batch))
                    })
                    .map_or(0, |left| left.min(lease_batch));
                if claim == 0 {
                    // The others hold the rest; wait for them to finish.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let lease = wire::LeaseRequest {
                    queues: vec![queue.clone()],
                    max_jobs: Some(claim as u32),
                    wait_ms: Some(100),
                    worker_id: format!("bench-worker-{w}"),
                };
                let leased = client.lease(&lease).await?;
                unclaimed.fetch_add(claim.saturating_sub(leased.len()), Ordering::Relaxed);
                if batch_complete && !leased.is_empty() {
                    let completions = leased
                        .iter()
                        .map(|job| wire::Completion {
                            id: job.id,
                            lease_token: job.lease_token.clone(),
                            output: None,
                        })
                        .collect();
                    for result in client.complete_batch(completions).await? {
                        if let Some(error) = result.error {
                            bail!("completing {} failed: {}", result.id, error.code);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        bar.inc(1);
                    }
                    continue;
                }
                let completions = futures::stream::iter(leased)
                    .map(|job| {
                        let client = &client;
                        async move { client.complete(&job.id.to_string(), &job.lease_token, None).await }
                    })
                    .buffer_unordered(16)
                    .collect::<Vec<_>>()
                    .await;
                for completion in completions {
                    completion?;
                    done.fetch_add(1, Ordering::Relaxed);
                    bar.inc(1);
                }
            }
            anyhow::Ok(())
        }));
    }
    // The first worker to fail ends the drain at once with its error (the
    // others would otherwise wait for its unreturned claim until the deadline).
    futures::future::try_join_all(workers.into_iter().map(|worker| async move { worker.await? })).await?;
    let elapsed = started.elapsed();
    let finished = done.load(Ordering::Relaxed);
    if finished < args.jobs {
        bail!(
            "the benchmark ran out of time: drained {finished} of {} jobs",
            args.jobs
        );
    }
    Ok(elapsed)
}

pub async fn throughput(args: ThroughputArgs) -> anyhow::Result<()> {
    if args.jobs == 0 || args.workers == 0 || args.producers == 0 || args.batch_size == 0 || args.lease_batch == 0 {
        bail!("--jobs, --workers, --producers, --batch-size and --lease-batch must be positive");
    }
    let endpoint = Endpoint::new(&args.target, !args.no_metrics)?;
    let client = Client::new(&endpoint.url, &endpoint.key)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let queue = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let say = |line: String| {
        if !args.target.json {
            eprintln!("{line}");
        }
    };
    say(format!(
        "steadfast bench throughput: {} jobs per phase, {} workers, server {}",
        args.jobs, args.workers, endpoint.url
    ));

    let json = args.target.json;
    let bar = progress(json, "enqueue, one by one", args.jobs);
    let enqueue = enqueue_one_by_one(&client, &queue, &args, deadline, &bar).await?;
    bar.finish_and_clear();
    say(format!(
        "  enqueued {} one by one in {:.2}s",
        args.jobs,
        enqueue.as_secs_f64()
    ));
    let bar = progress(json, "drain", args.jobs);
    let drain_first = drain(&client, &queue, &args, deadline, &bar).await?;
    bar.finish_and_clear();
    say(format!("  drained in {:.2}s", drain_first.as_secs_f64()));
    let bar = progress(json, "enqueue, batched", args.jobs);
    let batched = enqueue_batched(&client, &queue, &args, deadline, &bar).await?;
    bar.finish_and_clear();
    say(format!(
        "  enqueued {} in batches of {} in {:.2}s",
        args.jobs,
        args.batch_size,
        batched.as_secs_f64()
    ));
    let bar = progress(json, "drain", args.jobs);
    let drain_second = drain(&client, &queue, &args, deadline, &bar).await?;
    bar.finish_and_clear();
    say(format!("  drained in {:.2}s", drain_second.as_secs_f64()));

    let report = ThroughputReport {
        backend: backend(&args.target),
        jobs: args.jobs,
        workers: args.workers,
        lease_batch: args.lease_batch,
        producers: args.producers,
        batch_size: args.batch_size,
        metrics: !args.no_metrics,
        batch_complete: args.batch_complete,
        enqueue_jobs_per_sec: rate(args.jobs, enqueue),
        enqueue_batched_jobs_per_sec: rate(args.jobs, batched),
        drain_jobs_per_sec: rate(args.jobs, drain_first),
        drain_after_batched_jobs_per_sec: rate(args.jobs, drain_second),
    };
    if args.target.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("| measure | jobs/s |\n|---|---:|");
        println!(
            "| enqueue, one by one ({} producers) | {:.0} |",
            args.producers, report.enqueue_jobs_per_sec
        );
        println!(
            "| enqueue, batches of {} | {:.0} |",
            args.batch_size, report.enqueue_batched_jobs_per_sec
        );
        println!(
            "| drain ({} workers, lease batch {}) | {:.0} |",
            args.workers, args.lease_batch, report.drain_jobs_per_sec
        );
        println!(
            "| drain after batched enqueue | {:.0} |",
            report.drain_after_batched_jobs_per_sec
        );
    }
    Ok(())
}
