//! `steadfast bench inbox`: webhook ingest. Deliveries are signed like
//! Stripe's (a fresh timestamp and HMAC each), every one a new event, so
//! each is verified and committed with its job before its `200`.
//!
//! Two phases: the most deliveries per second `--senders` concurrent
//! senders get through (closed loop), then latency at a steady `--rate`
//! (open loop: each delivery is sent at its scheduled time whatever the
//! earlier ones are doing, and timed from then, so a stall shows in the
//! tail instead of slowing the sender).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use steadfast_sdk::{Client, wire};

use super::Endpoint;
use crate::cli::InboxArgs;

const SECRET: &str = "whsec_bench_0123456789abcdef0123456789";
/// Deliveries in flight at once in the open-loop phase, at most.
const MAX_IN_FLIGHT: usize = 4096;

#[derive(Debug, Serialize)]
struct InboxReport {
    backend: &'static str,
    events: usize,
    senders: usize,
    /// Closed loop: verified, stored and acknowledged per second.
    throughput_events_per_sec: f64,
    rate: u32,
    seconds: u64,
    /// What the open-loop sender achieved.
    achieved_rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// A Stripe-style delivery of event `id`, signed now.
fn delivery(id: &str) -> (String, String) {
    let body = format!(r#"{{"id":"{id}","object":"event","type":"charge.succeeded","data":{{"amount":2000}}}}"#);
    let t = jiff::Timestamp::now().as_second();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body.as_bytes());
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    (body, signature)
}

async fn deliver(http: &reqwest::Client, hook: &str, id: &str) -> anyhow::Result<()> {
    let (body, signature) = delivery(id);
    let response = http
        .post(hook)
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await?;
    if status != 200 || answer["duplicate"] != false {
        bail!("delivery {id} answered {status}: {answer}");
    }
    Ok(())
}

async fn throughput(http: &reqwest::Client, hook: &str, events: usize, senders: usize) -> anyhow::Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (http, hook, next) = (http.clone(), hook.to_owned(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= events {
                        return anyhow::Ok(());
                    }
                    deliver(&http, &hook, &format!("evt_throughput_{i}")).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(super::rate(events, started.elapsed()))
}

/// Latencies in ms of deliveries sent at `rate` for `seconds`.
async fn steady(http: &reqwest::Client, hook: &str, rate: u32, seconds: u64) -> anyhow::Result<(Vec<f64>, f64)> {
    let count = usize::try_from(u64::from(rate) * seconds)?;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = started + period * i as u32;
        tokio::time::sleep_until(due).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (http, hook) = (http.clone(), hook.to_owned());
        tasks.push(tokio::spawn(async move {
            deliver(&http, &hook, &format!("evt_steady_{i}")).await?;
            drop(permit);
            anyhow::Ok(due.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let sending = started.elapsed();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.push(task.await??);
    }
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, super::rate(count, sending)))
}

pub async fn run(args: InboxArgs) -> anyhow::Result<()> {
    if args.rate == 0 || args.seconds == 0 || args.senders == 0 || args.events == 0 {
        bail!("--events, --senders, --rate and --seconds must be positive");
    }
    if u64::from(args.rate) * args.seconds > 1_000_000 {
        bail!("--rate x --seconds must be at most 1,000,000 deliveries");
    }
    let endpoint = Endpoint::new(&args.target, true)?;
    let client = Client::new(&endpoint.url, &endpoint.key)?;
    let source = client
        .create_source(&wire::SourceRequest {
            name: format!("bench-{}", uuid::Uuid::now_v7().simple()),
            kind: wire::SourceKind::Stripe,
            queue: "bench-inbox".into(),
            secret: Some(SECRET.into()),
            tolerance_secs: None,
            dedup_window_secs: None,
            config: None,
        })
        .await
        .context("creating the benchmark's source")?;
    let hook = format!("{}{}", endpoint.url.trim_end_matches('/'), source.ingest_path);
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
    let throughput = throughput(&http, &hook, args.events, args.senders).await?;
    let (latencies, achieved_rate) = steady(&http, &hook, args.rate, args.seconds).await?;
    let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
    let report = InboxReport {
        backend: super::backend(&args.target),
        events: args.events,
        senders: args.senders,
        throughput_events_per_sec: throughput,
        rate: args.rate,
        seconds: args.seconds,
        achieved_rate,
        p50_ms: round(super::latency::percentile(&latencies, 50.0)),
        p99_ms: round(super::latency::percentile(&latencies, 99.0)),
        max_ms: round(latencies.last().copied().unwrap_or_default()),
    };
    if args.target.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("| webhook ingest ({}) | |\n|---|---:|", report.backend);
        println!(
            "| deliveries/s, {} senders, {} events | {:.1} |",
            report.senders, report.events, report.throughput_events_per_sec
        );
        println!(
            "| at {}/s for {} s: p50 ms | {:.3} |\n| p99 ms | {:.3} |\n| max ms | {:.3} |",
            report.rate, report.seconds, report.p50_ms, report.p99_ms, report.max_ms
        );
        println!("(sender achieved {:.1}/s)", report.achieved_rate);
    }
    Ok(())
}
