//! The retry-storm drill: a downstream that fails every call for a while,
//! and N jobs that call it, run twice on one real server: once as most
//! queues run them (retries with backoff, nothing else), once with a
//! circuit breaker on the downstream and a retry budget on the queue. The
//! downstream counts every call it gets; that count, not the server's, is
//! the verdict.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use steadfast_sdk::{Client, JobError, Worker, WorkerConfig, wire};

use super::drill::{key_for, spawn_logged, wait_ready};
use crate::cli::StormArgs;

/// The resource the protected run's jobs name.
const RESOURCE: &str = "storm-downstream";
/// The breaker: open once half of at least 10 calls in 10 s failed; probe
/// with one lease every 2 s while open.
const BREAKER: wire::BreakerConfig = wire::BreakerConfig {
    failure_ratio: 0.5,
    min_requests: 10,
    window_secs: 10,
    open_secs: 2,
    half_open_probes: 1,
};
/// Retries at most a tenth of first attempts, plus ten a second.
const BUDGET: wire::RetryBudget = wire::RetryBudget {
    ratio: 0.1,
    min_per_sec: Some(10.0),
};

/// The drill's verdict; printed as its last line.
#[derive(Debug, Serialize)]
struct Verdict {
    jobs: usize,
    downstream_calls_with: u64,
    downstream_calls_without: u64,
    drain_secs_with: f64,
    drain_secs_without: f64,
    lost: usize,
}

/// What one run measured.
struct Run {
    calls: u64,
    /// Distinct jobs the downstream served successfully.
    served: usize,
    drain: Duration,
}

/// The downstream: fails every call until `recovers_at`, then answers.
/// It keeps its own books: every call, and each job it served.
#[derive(Clone)]
struct Downstream {
    recovers_at: Instant,
    calls: Arc<AtomicU64>,
    served: Arc<Mutex<HashSet<String>>>,
}

async fn call(State(downstream): State<Downstream>, job: String) -> StatusCode {
    downstream.calls.fetch_add(1, Ordering::Relaxed);
    if Instant::now() < downstream.recovers_at {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    downstream.served.lock().expect("not poisoned").insert(job);
    StatusCode::OK
}

async fn start_downstream(outage: Duration) -> anyhow::Result<(String, Downstream)> {
    let downstream = Downstream {
        recovers_at: Instant::now() + outage,
        calls: Arc::default(),
        served: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/call", axum::routing::post(call))
        .with_state(downstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/call", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, downstream))
}

pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    if args.jobs == 0 || args.concurrency == 0 {
        bail!("--jobs and --concurrency must be positive");
    }
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    let exe = std::env::current_exe().context("cannot find the steadfast binary")?;
    let data_dir = tempfile::Builder::new().prefix("steadfast-storm-").tempdir()?;
    let log: PathBuf = data_dir.path().join("server.log");
    say(format!(
        "storm drill: {} jobs, a downstream outage of {} s, run twice (server log: {})",
        args.jobs,
        args.outage_secs,
        log.display()
    ));

    // One real server for both runs, with the eager retries (100 ms
    // doubling to 2 s) that turn an outage into a storm.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    let serve_args: Vec<String> = [
        "serve",
        "--data-dir",
        &data_dir.path().join("data").display().to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--retry-base-ms",
        "100",
        "--retry-cap-secs",
        "2",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let _server = spawn_logged(&exe, &serve_args, &log)?;
    wait_ready(&url, Instant::now() + Duration::from_secs(30)).await?;
    let admin = std::fs::read_to_string(data_dir.path().join("data").join("admin.key"))?
        .trim()
        .to_owned();
    let worker_key = key_for(&exe, &data_dir.path().join("data"), "worker")?;
    let client = Client::new(&url, &admin)?;

    let without = storm(&args, &client, &url, &worker_key, "storm-without", None).await?;
    say(format!(
        "without: {} downstream calls for {} jobs, drained in {:.1} s",
        without.calls,
        args.jobs,
        without.drain.as_secs_f64()
    ));
    client
        .put_resource(
            RESOURCE,
            &wire::ResourceRequest {
                breaker: Some(BREAKER),
                ..wire::ResourceRequest::default()
            },
        )
        .await?;
    let policy = wire::QueuePolicyRequest {
        retry_budget: Some(Some(BUDGET)),
        ..wire::QueuePolicyRequest::default()
    };
    client.set_queue_policy("storm-with", &policy).await?;
    let with = storm(&args, &client, &url, &worker_key, "storm-with", Some(RESOURCE)).await?;
    say(format!(
        "with a breaker and a retry budget: {} downstream calls, drained in {:.1} s",
        with.calls,
        with.drain.as_secs_f64()
    ));
    let lost = (args.jobs - without.served) + (args.jobs - with.served);
    if with.calls > 0 {
        say(format!(
            "the downstream took {:.1}x fewer calls with the breaker and the budget; {lost} jobs lost",
            without.calls as f64 / with.calls as f64
        ));
    }
    let verdict = Verdict {
        jobs: args.jobs,
        downstream_calls_with: with.calls,
        downstream_calls_without: without.calls,
        drain_secs_with: round(with.drain),
        drain_secs_without: round(without.drain),
        lost,
    };
    println!("{}", serde_json::to_string(&verdict)?);
    if lost > 0 {
        bail!("{lost} jobs were not served by the downstream");
    }
    Ok(())
}

fn round(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10.0).round() / 10.0
}

/// One run: a fresh downstream (its outage starting now), `jobs` jobs on
/// `queue`, a worker until the downstream has served every job or the
/// time is up.
async fn storm(
    args: &StormArgs,
    client: &Client,
    url: &str,
    worker_key: &str,
    queue: &str,
    resource: Option<&str>,
) -> anyhow::Result<Run> {
    let (downstream_url, downstream) = start_downstream(Duration::from_secs(args.outage_secs)).await?;
    let started = Instant::now();
    for chunk in (0..args.jobs).collect::<Vec<_>>().chunks(1000) {
        let jobs = chunk
            .iter()
            .map(|i| wire::EnqueueRequest {
                queue: queue.to_owned(),
                payload: serde_json::value::to_raw_value(&serde_json::json!({ "n": i })).expect("serialisable"),
                idempotency_key: None,
                // Enough that no job dies in the outage: both runs must
                // finish every job, so the calls are what differs.
                max_attempts: Some(1000),
                timeout_secs: Some(30),
                run_at: None,
                priority: None,
                flow_key: None,
                resource: resource.map(str::to_owned),
                singleton: None,
                debounce_ms: None,
                debounce_max_ms: None,
                schema_version: None,
                producer: None,
            })
            .collect();
        client.enqueue_batch(&wire::BatchEnqueueRequest { jobs }).await?;
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let config = WorkerConfig {
        worker_id: format!("storm-{queue}"),
        concurrency: args.concurrency,
        poll_wait: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(5),
    };
    let target = downstream_url.clone();
    let worker = Worker::new(Client::new(url, worker_key)?, config).handle(queue, move |ctx| {
        let (http, target) = (http.clone(), target.clone());
        async move {
            let answer = http.post(&target).body(ctx.id().to_string()).send().await;
            match answer {
                Ok(response) if response.status().is_success() => Ok(()),
                _ => Err(JobError::Failed {
                    message: "the downstream is unavailable".into(),
                    kind: Some("downstream_unavailable".into()),
                    retryable: true,
                }),
            }
        }
    });
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let served = |downstream: &Downstream| downstream.served.lock().expect("not poisoned").len();
    let finished = {
        let downstream = downstream.clone();
        let jobs = args.jobs;
        async move {
            while served(&downstream) < jobs && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    worker.run_until(finished).await?;
    Ok(Run {
        calls: downstream.calls.load(Ordering::Relaxed),
        served: served(&downstream),
        drain: started.elapsed(),
    })
}
