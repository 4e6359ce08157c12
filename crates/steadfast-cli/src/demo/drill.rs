//! The claims-pipeline crash drill: a real server, real worker processes
//! SIGKILLed at random, two downstreams that keep their own books, and a
//! recount from those books at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use steadfast_sdk::{Client, ListJobs, wire};
use tokio::process::{Child, Command};

use super::pipeline::{APPROVAL_SIGNAL, APPROVAL_THRESHOLD, Claim, QUEUE};
use super::services::{self, ENRICHMENT_LEDGER, PAYMENTS_LEDGER};
use crate::cli::{ClaimsArgs, ClaimsWorkerKind};

/// The drill's verdict; printed as its last line.
#[derive(Debug, Serialize)]
struct Summary {
    claims: usize,
    finished: usize,
    enrichment_billed: usize,
    double_bills: usize,
    payments: usize,
    double_charges: usize,
    kills: usize,
}

pub(super) fn spawn_logged(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Ok(Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?)
}

pub(super) async fn wait_ready(url: &str, deadline: Instant) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    while Instant::now() < deadline {
        if http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the server at {url} did not become ready")
}

/// Pages through every job of `state` in the claims queue.
async fn jobs_in(client: &Client, state: wire::JobState) -> anyhow::Result<Vec<wire::Job>> {
    let mut jobs = Vec::new();
    let mut cursor = None;
    loop {
        let filter = ListJobs {
            queue: Some(QUEUE.into()),
            state: Some(state),
            limit: Some(500),
            cursor,
        };
        let page = client.list_jobs(&filter).await?;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(jobs),
        }
    }
}

pub(super) fn key_for(exe: &Path, data_dir: &Path, role: &str) -> anyhow::Result<String> {
    let output = std::process::Command::new(exe)
        .args([
            "key",
            "create",
            "--tenant",
            "default",
            "--role",
            role,
            "--name",
            "demo",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()?;
    if !output.status.success() {
        bail!(
            "creating a {role} key failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// The Python claims worker's module (in the `steadfast` distribution).
const PYTHON_WORKER: &str = "steadfast.demo.claims";

/// Fails early, and says how to fix it, when `python` cannot import the
/// Python worker: otherwise every worker process would die at start.
fn python_worker_installed(python: &Path) -> anyhow::Result<()> {
    let probe = std::process::Command::new(python)
        .args(["-c", &format!("import {PYTHON_WORKER}")])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !probe.status.success() {
        bail!(
            "{} cannot import {PYTHON_WORKER}: install the SDK with `{} -m pip install ./sdks/python` \
             (or pass --python with an interpreter that has it)\n{}",
            python.display(),
            python.display(),
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    }
    Ok(())
}

pub async fn run(args: ClaimsArgs) -> anyhow::Result<()> {
    if args.claims == 0 || args.workers == 0 || args.kill_interval_ms == 0 {
        bail!("--claims, --workers and --kill-interval-ms must be positive");
    }
    let exe = std::env::current_exe().context("cannot find the steadfast binary")?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let ledger_dir: PathBuf = match &args.ledger_dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new().prefix("steadfast-claims-").tempdir()?.keep(),
    };
    std::fs::create_dir_all(&ledger_dir)?;
    for ledger in [ENRICHMENT_LEDGER, PAYMENTS_LEDGER] {
        let _ = std::fs::remove_file(ledger_dir.join(ledger));
    }
    let data_dir = tempfile::Builder::new().prefix("steadfast-claims-data-").tempdir()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    println!(
        "claims drill: {} claims, {} {:?} worker processes, a SIGKILL every {} ms, seed {seed}",
        args.claims, args.workers, args.worker, args.kill_interval_ms
    );
    println!("ledgers in {}", ledger_dir.display());

    // A real server. Short leases so a killed worker's claims come back quickly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    let serve_args: Vec<String> = vec![
        "serve".into(),
        "--data-dir".into(),
        data_dir.path().display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--lease-ttl-secs".into(),
        "5".into(),
        "--retry-base-ms".into(),
        "100".into(),
        "--retry-cap-secs".into(),
        "2".into(),
    ];
    let mut server = spawn_logged(&exe, &serve_args, &ledger_dir.join("server.log"))?;
    wait_ready(&url, deadline).await?;
    let admin = std::fs::read_to_string(data_dir.path().join("admin.key"))?
        .trim()
        .to_owned();
    let worker_key = key_for(&exe, data_dir.path(), "worker")?;
    let client = Client::new(&url, &admin)?;
    let (enrichment_url, payments_url) = services::start(&ledger_dir).await?;

    // The claims, a fifth of them large enough to need a human approval.
    let mut claims = HashMap::new();
    for chunk in (0..args.claims).collect::<Vec<_>>().chunks(500) {
        let jobs = chunk
            .iter()
            .map(|i| {
                let large = rng.random_ratio(1, 5);
                let amount = if large {
                    rng.random_range(APPROVAL_THRESHOLD + 1..50_000)
                } else {
                    rng.random_range(100..=APPROVAL_THRESHOLD)
                };
                let claim = Claim {
                    claim_id: format!("claim-{i:06}"),
                    amount,
                };
                claims.insert(claim.claim_id.clone(), claim.clone());
                wire::EnqueueRequest {
                    queue: QUEUE.into(),
                    payload: serde_json::value::to_raw_value(&claim).expect("serialisable"),
                    idempotency_key: Some(claim.claim_id.clone()),
                    max_attempts: Some(100),
                    timeout_secs: Some(60),
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
            })
            .collect();
        client.enqueue_batch(&wire::BatchEnqueueRequest { jobs }).await?;
    }

    // Both kinds of worker take the same flags after their command.
    let (worker_program, worker_command): (PathBuf, Vec<String>) = match args.worker {
        ClaimsWorkerKind::Rust => (exe.clone(), vec!["demo".into(), "claims-worker".into()]),
        ClaimsWorkerKind::Python => {
            python_worker_installed(&args.python)?;
            (args.python.clone(), vec!["-m".into(), PYTHON_WORKER.into()])
        }
    };
    let worker_args = |n: usize| -> Vec<String> {
        let mut command = worker_command.clone();
        command.extend([
            "--url".into(),
            url.clone(),
            "--key".into(),
            worker_key.clone(),
            "--enrichment-url".into(),
            enrichment_url.clone(),
            "--payments-url".into(),
            payments_url.clone(),
            "--worker-id".into(),
            format!("claims-worker-{n}"),
        ]);
        command
    };
    let workers_log = ledger_dir.join("workers.log");
    let mut spawned = 0;
    let mut workers = Vec::new();
    for _ in 0..args.workers {
        workers.push(spawn_logged(&worker_program, &worker_args(spawned), &workers_log)?);
        spawned += 1;
    }

    let mut kills = 0;
    let mut approvals = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(args.kill_interval_ms);
    let mut finished = 0;
    let mut dead = 0;
    let mut resumed = 0;
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_kill {
            let victim = rng.random_range(0..workers.len());
            workers[victim].kill().await?;
            workers[victim] = spawn_logged(&worker_program, &worker_args(spawned), &workers_log)?;
            spawned += 1;
            kills += 1;
            next_kill += Duration::from_millis(args.kill_interval_ms);
        }
        // The human in the loop: approve every claim waiting for it.
        for job in jobs_in(&client, wire::JobState::Waiting).await? {
            let payload = serde_json::value::to_raw_value(&serde_json::json!({"by": "drill-approver"}))?;
            client
                .signal(&job.id.to_string(), APPROVAL_SIGNAL, Some(payload), None)
                .await?;
            approvals += 1;
        }
        let succeeded = jobs_in(&client, wire::JobState::Succeeded).await?;
        finished = succeeded.len();
        // A claim whose counted attempts exceed one lost a worker on the way.
        resumed = succeeded
            .iter()
            .filter(|job| job.attempts_left + 1 < job.max_attempts)
            .count();
        dead = jobs_in(&client, wire::JobState::Dead).await?.len();
        if finished + dead >= args.claims {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            println!(
                "  {:>5.1}s  finished {finished}/{}  kills {kills}  approvals sent {approvals}",
                started.elapsed().as_secs_f64(),
                args.claims
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stop the workers gracefully and the server too.
    for worker in &mut workers {
        if let Some(pid) = worker.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for worker in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), worker.wait()).await;
    }
    if let Some(pid) = server.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;

    // Recount from the downstreams' own books.
    let billed = services::tally(&ledger_dir.join(ENRICHMENT_LEDGER), "billed")?;
    let charged = services::tally(&ledger_dir.join(PAYMENTS_LEDGER), "charged")?;
    let summary = Summary {
        claims: args.claims,
        finished,
        enrichment_billed: billed.values().sum(),
        double_bills: billed.values().filter(|n| **n > 1).count(),
        payments: charged.values().sum(),
        double_charges: charged.values().filter(|n| **n > 1).count(),
        kills,
    };
    let unbilled = claims.keys().filter(|id| !billed.contains_key(*id)).count();
    let lookups = services::count_ops(&ledger_dir.join(ENRICHMENT_LEDGER), "lookup")?;
    let replayed_charges = services::count_lines(&ledger_dir.join(PAYMENTS_LEDGER))? - summary.payments;
    println!();
    println!(
        "finished     {} of {} claims in {:.1}s ({dead} dead)",
        summary.finished,
        summary.claims,
        started.elapsed().as_secs_f64()
    );
    println!(
        "kills        {} worker processes SIGKILLed; {resumed} claims resumed by another worker; {approvals} approvals sent",
        summary.kills
    );
    println!(
        "enrichment   {} billed calls, {} claims billed twice, {unbilled} never billed; {lookups} uncertain outcomes reconciled by asking first",
        summary.enrichment_billed, summary.double_bills
    );
    println!(
        "payments     {} charges, {} claims charged twice; {replayed_charges} retried charges absorbed by the idempotency key",
        summary.payments, summary.double_charges
    );
    println!(
        "ledgers      {} and {}",
        ledger_dir.join(ENRICHMENT_LEDGER).display(),
        ledger_dir.join(PAYMENTS_LEDGER).display()
    );
    let passed = summary.finished == summary.claims && summary.double_bills == 0 && summary.double_charges == 0;
    println!("verdict      {}", if passed { "PASS" } else { "FAIL" });
    println!("{}", serde_json::to_string(&summary)?);
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}
