//! `steadfast bench scale`: does a deep backlog slow Steadfast down? The
//! server runs as a child process (so its RSS is its own and it can be
//! killed); a backlog queue is filled to each level in turn, and at each
//! level the same batch of jobs is enqueued into the backlog and drained from
//! its head (the backlog is as deep after as before), then the latency
//! workload runs beside it. Finally the server is killed with SIGKILL and
//! restarted on the same storage: restart-to-ready is the time from spawning
//! the new process to `/readyz` answering 200, and to the first job leased.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use steadfast_sdk::{Client, wire};
use tokio::process::{Child, Command};

use super::latency::{self, LatencyReport};
use super::{drain, enqueue_batched, progress, rate};
use crate::cli::{BenchTarget, LatencyArgs, ScaleArgs, ThroughputArgs};

const BACKLOG: &str = "backlog";
const MAX_LEVEL: usize = 10_000_000;

#[derive(Debug, Serialize)]
struct Level {
    queued: usize,
    /// Filling the backlog up to this level, batches of 1,000.
    fill_jobs_per_sec: f64,
    enqueue_batched_jobs_per_sec: f64,
    drain_jobs_per_sec: f64,
    latency: LatencyReport,
    /// Highest VmRSS of the server process seen while at this level (sampled every 100 ms).
    server_peak_rss_mb: f64,
}

#[derive(Debug, Serialize)]
struct ScaleReport {
    backend: &'static str,
    jobs: usize,
    workers: usize,
    levels: Vec<Level>,
    /// Slowest drain over fastest drain, minus one: 0.1 means within 10%.
    drain_spread: f64,
    restart_queued: usize,
    /// From spawning the new process (after a SIGKILL) to `/readyz` answering 200.
    restart_to_ready_ms: f64,
    /// ... and to the first job leased from the backlog.
    restart_to_first_lease_ms: f64,
    server_rss_after_restart_mb: f64,
}

/// The server under test, as a child process on storage that outlives it.
struct ServerProcess {
    child: Child,
    url: String,
    pid: u32,
}

struct Storage {
    /// Embedded: a fresh data dir; PostgreSQL: the URL.
    data_dir: Option<tempfile::TempDir>,
    database_url: Option<String>,
    port: u16,
}

impl Storage {
    fn args(&self) -> Vec<String> {
        match (&self.data_dir, &self.database_url) {
            (Some(dir), _) => vec!["--data-dir".into(), dir.path().display().to_string()],
            (None, Some(url)) => vec!["--database-url".into(), url.clone()],
            (None, None) => unreachable!("one storage is always chosen"),
        }
    }

    fn log_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!("steadfast-bench-scale-{}.log", self.port))
    }

    async fn spawn(&self) -> anyhow::Result<ServerProcess> {
        let log = std::fs::File::create(self.log_path())?;
        let mut command = Command::new(std::env::current_exe()?);
        // A PostgreSQL node needs the deployment's audit signing key: the
        // operator's, if the environment gives one, else the benchmarks' own
        // (benchmark databases are throwaway).
        let keyed = ["STEADFAST_AUDIT_SIGNING_KEY", "STEADFAST_AUDIT_SIGNING_KEY_FILE"]
            .iter()
            .any(|name| std::env::var_os(name).is_some());
        if self.database_url.is_some() && !keyed {
            command.env("STEADFAST_AUDIT_SIGNING_KEY", super::BENCH_AUDIT_KEY);
        }
        let child = command
            .arg("serve")
            .args(self.args())
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the server")?;
        let pid = child.id().context("the server exited at once")?;
        Ok(ServerProcess {
            child,
            url: format!("http://127.0.0.1:{}", self.port),
            pid,
        })
    }

    /// An admin key: the one the embedded server created on first start, or
    /// a new one in a new tenant on PostgreSQL.
    async fn key(&self) -> anyhow::Result<String> {
        if let Some(dir) = &self.data_dir {
            return Ok(std::fs::read_to_string(dir.path().join("admin.key"))?.trim().to_owned());
        }
        let url = self.database_url.as_deref().expect("PostgreSQL");
        let tenant = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let exe = std::env::current_exe()?;
        let created = Command::new(&exe)
            .args(["tenant", "create", &tenant, "--database-url", url])
            .output()
            .await?;
        if !created.status.success() {
            bail!("creating a tenant: {}", String::from_utf8_lossy(&created.stderr));
        }
        let key = Command::new(&exe)
            .args([
                "key",
                "create",
                "--tenant",
                &tenant,
                "--role",
                "admin",
                "--database-url",
                url,
            ])
            .output()
            .await?;
        if !key.status.success() {
            bail!("creating a key: {}", String::from_utf8_lossy(&key.stderr));
        }
        Ok(String::from_utf8(key.stdout)?.trim().to_owned())
    }
}

impl ServerProcess {
    /// Polls `/readyz` until it answers 200; the time it took.
    async fn ready(&mut self, started: Instant) -> anyhow::Result<Duration> {
        let http = reqwest::Client::new();
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited with {status} before it was ready");
            }
            let answered = http
                .get(format!("{}/readyz", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if matches!(answered, Ok(response) if response.status().is_success()) {
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                bail!("the server was not ready after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// VmRSS of a process in MiB, from /proc.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Samples the server's RSS every 100 ms; `take` returns the peak since the last call.
struct RssSampler {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let (peak_kb, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (peak, stopped) = (peak_kb.clone(), stop.clone());
        tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                if let Some(mb) = rss_mb(pid) {
                    peak.fetch_max((mb * 1024.0) as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler { peak_kb, stop }
    }

    fn take(&self, pid: u32) -> f64 {
        let now = rss_mb(pid).map(|mb| (mb * 1024.0) as u64).unwrap_or_default();
        let peak = self.peak_kb.swap(0, Ordering::Relaxed).max(now);
        (peak as f64 / 1024.0 * 10.0).round() / 10.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    if args.levels.is_empty()
        || args.levels.windows(2).any(|pair| pair[0] >= pair[1])
        || args.levels.iter().any(|&level| level > MAX_LEVEL)
    {
        bail!("--levels must be ascending, at most {MAX_LEVEL}");
    }
    if args.jobs == 0 || args.workers == 0 || args.rate == 0 || args.seconds == 0 {
        bail!("--jobs, --workers, --rate and --seconds must be positive");
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let storage = Storage {
        data_dir: match args.database_url {
            Some(_) => None,
            None => Some(tempfile::Builder::new().prefix("steadfast-bench-scale-").tempdir()?),
        },
        database_url: args.database_url.clone(),
        port: free_port()?,
    };
    let say = |line: String| {
        if !args.json {
            eprintln!("{line}");
        }
    };
    let mut server = storage.spawn().await?;
    server.ready(Instant::now()).await?;
    let key = storage.key().await?;
    let client = Client::new(&server.url, &key)?;
    let sampler = RssSampler::start(server.pid);
    say(format!(
        "steadfast bench scale: levels {:?}, {} jobs per measure, server pid {} at {} (log {})",
        args.levels,
        args.jobs,
        server.pid,
        server.url,
        storage.log_path().display()
    ));

    let measure_args = |jobs: usize| ThroughputArgs {
        jobs,
        workers: args.workers,
        lease_batch: 100,
        producers: 1,
        batch_size: 1000,
        timeout_secs: args.timeout_secs,
        target: BenchTarget {
            url: None,
            key: None,
            database_url: None,
            json: args.json,
        },
        no_metrics: false,
        batch_complete: true,
    };
    let latency_args = LatencyArgs {
        rate: args.rate,
        seconds: args.seconds,
        workers: 8,
        timeout_secs: 60,
        target: BenchTarget {
            url: None,
            key: None,
            database_url: None,
            json: args.json,
        },
    };
    let mut queued = 0;
    let mut levels = Vec::new();
    for &level in &args.levels {
        let fill = measure_args(level - queued);
        let bar = progress(args.json, &format!("fill to {level}"), fill.jobs);
        let filled = enqueue_batched(&client, BACKLOG, &fill, deadline, &bar).await?;
        bar.finish_and_clear();
        let fill_rate = rate(fill.jobs, filled);
        queued = level;

        let batch = measure_args(args.jobs);
        let bar = progress(args.json, "enqueue, batched", batch.jobs);
        let enqueued = enqueue_batched(&client, BACKLOG, &batch, deadline, &bar).await?;
        bar.finish_and_clear();
        let bar = progress(args.json, "drain", batch.jobs);
        let drained = drain(&client, BACKLOG, &batch, deadline, &bar).await?;
        bar.finish_and_clear();
        let latency = latency::measure(&client, &latency_args, args.json).await?;
        let measured = Level {
            queued: level,
            fill_jobs_per_sec: fill_rate,
            enqueue_batched_jobs_per_sec: rate(batch.jobs, enqueued),
            drain_jobs_per_sec: rate(batch.jobs, drained),
            latency,
            server_peak_rss_mb: sampler.take(server.pid),
        };
        say(format!(
            "  {level} queued: enqueue {:.0}/s, drain {:.0}/s, p99 {:.2} ms, RSS {:.1} MB",
            measured.enqueue_batched_jobs_per_sec,
            measured.drain_jobs_per_sec,
            measured.latency.p99_ms,
            measured.server_peak_rss_mb
        ));
        levels.push(measured);
    }
    drop(sampler);

    // A crash, then a restart on the same storage with the whole backlog.
    server.child.start_kill()?;
    server.child.wait().await?;
    let spawned = Instant::now();
    let mut server = storage.spawn().await?;
    let ready = server.ready(spawned).await?;
    let client = Client::new(&server.url, &key)?;
    let lease = wire::LeaseRequest {
        queues: vec![BACKLOG.to_owned()],
        max_jobs: Some(1),
        wait_ms: Some(10_000),
        worker_id: "bench-scale-restart".into(),
    };
    if client.lease(&lease).await?.is_empty() {
        bail!("nothing could be leased from the backlog after the restart");
    }
    let first_lease = spawned.elapsed();
    let restart_rss = rss_mb(server.pid).unwrap_or_default();
    let drains: Vec<f64> = levels.iter().map(|level| level.drain_jobs_per_sec).collect();
    let fastest = drains.iter().copied().fold(f64::MIN, f64::max);
    let slowest = drains.iter().copied().fold(f64::MAX, f64::min);
    let report = ScaleReport {
        backend: if args.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        jobs: args.jobs,
        workers: args.workers,
        levels,
        drain_spread: ((fastest / slowest - 1.0) * 1000.0).round() / 1000.0,
        restart_queued: queued,
        restart_to_ready_ms: (ready.as_secs_f64() * 1e4).round() / 10.0,
        restart_to_first_lease_ms: (first_lease.as_secs_f64() * 1e4).round() / 10.0,
        server_rss_after_restart_mb: (restart_rss * 10.0).round() / 10.0,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "| queued | enqueue, batched jobs/s | drain jobs/s | p50 / p99 / max ms at {}/s | server RSS MB |",
            args.rate
        );
        println!("|---:|---:|---:|---|---:|");
        for level in &report.levels {
            println!(
                "| {} | {:.0} | {:.0} | {:.2} / {:.2} / {:.2} | {:.1} |",
                level.queued,
                level.enqueue_batched_jobs_per_sec,
                level.drain_jobs_per_sec,
                level.latency.p50_ms,
                level.latency.p99_ms,
                level.latency.max_ms,
                level.server_peak_rss_mb
            );
        }
        println!(
            "\ndrain spread {:.1}%; after kill -9 with {} queued: ready in {:.0} ms, first lease in {:.0} ms, RSS {:.1} MB",
            report.drain_spread * 100.0,
            report.restart_queued,
            report.restart_to_ready_ms,
            report.restart_to_first_lease_ms,
            report.server_rss_after_restart_mb
        );
    }
    let _ = server.child.start_kill();
    Ok(())
}
