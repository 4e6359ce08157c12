//! kill -9 of a real server during a burst of concurrent enqueues: every
//! acknowledged job must be there after a restart, exactly once.
//!
//! Reported in the words of Jepsen's queue checker: acknowledged, lost,
//! recovered (outcome unknown to the client, but the job exists), unexpected
//! (a job nobody asked for) and duplicated.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ServerProcess;
use serde_json::{Value, json};

const ROUNDS: usize = 3;
const PRODUCERS: usize = 32;
/// Kill once this many enqueues of the round were acknowledged.
const KILL_AFTER_ACKS: usize = 300;
/// No producer sends more than this many requests in a round.
const MAX_REQUESTS_PER_ROUND: usize = 20_000;

struct Burst {
    /// idempotency key → job id, for every 2xx.
    acknowledged: Mutex<HashMap<String, String>>,
    /// Every key sent, answered or not.
    sent: Mutex<HashSet<String>>,
}

async fn enqueue(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    idempotency_key: &str,
    round: usize,
) -> Result<reqwest::Response, reqwest::Error> {
    http.post(format!("{url}/v1/jobs"))
        .bearer_auth(key)
        .json(&json!({"queue": "crash", "payload": {"round": round, "key": idempotency_key}, "idempotency_key": idempotency_key}))
        .send()
        .await
}

async fn all_jobs(http: &reqwest::Client, url: &str, key: &str) -> Vec<Value> {
    common::all_pages(http, url, key, "/v1/jobs", "jobs").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_enqueues_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut all_sent = HashSet::new();
    let mut all_acknowledged = HashMap::new();

    for round in 0..ROUNDS {
        let mut server = ServerProcess::start(&data_dir);
        let key = server.admin_key();
        let burst = Arc::new(Burst {
            acknowledged: Mutex::default(),
            sent: Mutex::default(),
        });
        let mut producers = Vec::new();
        for producer in 0..PRODUCERS {
            let (http, url, key, burst) = (http.clone(), server.url.clone(), key.clone(), burst.clone());
            producers.push(tokio::spawn(async move {
                for n in 0..MAX_REQUESTS_PER_ROUND / PRODUCERS {
                    let idempotency_key = format!("r{round}-p{producer}-n{n}");
                    burst.sent.lock().unwrap().insert(idempotency_key.clone());
                    match enqueue(&http, &url, &key, &idempotency_key, round).await {
                        Ok(response) if response.status().is_success() => {
                            let job: Value = match response.json().await {
                                Ok(job) => job,
                                Err(_) => return, // cut mid-body: outcome unknown
                            };
                            let id = job["id"].as_str().unwrap().to_owned();
                            burst.acknowledged.lock().unwrap().insert(idempotency_key, id);
                        }
                        Ok(response) => {
                            panic!("unexpected status {} during the burst", response.status())
                        }
                        Err(_) => return, // the server died: outcome unknown
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while burst.acknowledged.lock().unwrap().len() < KILL_AFTER_ACKS {
            assert!(Instant::now() < deadline, "the burst made no progress");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        server.kill_9();
        for producer in producers {
            producer.await.unwrap();
        }
        all_sent.extend(burst.sent.lock().unwrap().iter().cloned());
        all_acknowledged.extend(burst.acknowledged.lock().unwrap().clone());
    }

    // Restart and check everything ever acknowledged.
    let server = ServerProcess::start(&data_dir);
    let key = server.admin_key();
    let mut lost = 0;
    for (idempotency_key, id) in &all_acknowledged {
        let response = http
            .get(format!("{}/v1/jobs/{id}", server.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if !response.status().is_success() {
            lost += 1;
            eprintln!("LOST: {idempotency_key} -> {id}");
            continue;
        }
        let job: Value = response.json().await.unwrap();
        assert_eq!(job["payload"]["key"], idempotency_key.as_str());
    }
    let jobs = all_jobs(&http, &server.url, &key).await;
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for job in &jobs {
        *per_key
            .entry(job["payload"]["key"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let unexpected = per_key.keys().filter(|k| !all_sent.contains(*k)).count();
    let duplicated = per_key.values().filter(|n| **n > 1).count();
    let recovered = per_key
        .keys()
        .filter(|k| all_sent.contains(*k) && !all_acknowledged.contains_key(*k))
        .count();

    // A producer that retries with the same key after the crash gets the one job.
    let unanswered: Vec<_> = all_sent
        .iter()
        .filter(|k| !all_acknowledged.contains_key(*k))
        .take(50)
        .cloned()
        .collect();
    for idempotency_key in &unanswered {
        let round: usize = idempotency_key[1..idempotency_key.find('-').unwrap()].parse().unwrap();
        let response = enqueue(&http, &server.url, &key, idempotency_key, round).await.unwrap();
        assert!(response.status().is_success());
    }
    let after_retries = all_jobs(&http, &server.url, &key).await;
    let distinct: HashSet<_> = after_retries
        .iter()
        .map(|j| j["payload"]["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        distinct.len(),
        after_retries.len(),
        "retrying with the same key never duplicates"
    );

    println!(
        "kill -9 crash test, {ROUNDS} rounds: sent {}, acknowledged {}, lost {lost}, recovered {recovered}, unexpected {unexpected}, duplicated {duplicated}",
        all_sent.len(),
        all_acknowledged.len()
    );
    assert!(
        all_acknowledged.len() >= ROUNDS * KILL_AFTER_ACKS,
        "most of the run must have succeeded to count"
    );
    assert_eq!(lost, 0, "an acknowledged job was lost");
    assert_eq!(unexpected, 0);
    assert_eq!(duplicated, 0);
}

/// A bulk cancel killed with SIGKILL halfway: after a restart it finishes,
/// every matching job is cancelled, and each was acted on exactly once
/// (one `job.cancelled` record, naming the operation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_operation_killed_halfway_finishes_after_a_restart_acting_once_per_job() {
    const JOBS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let http = reqwest::Client::new();
    // Small batches, so the kill lands between many of them.
    let mut server = ServerProcess::start_with(&data_dir, &["--bulk-batch", "20"]);
    let key = server.admin_key();
    for chunk in 0..JOBS / 1000 {
        let jobs: Vec<Value> = (0..1000)
            .map(|n| json!({"queue": "bulk", "payload": {"n": chunk * 1000 + n}}))
            .collect();
        let created = http
            .post(format!("{}/v1/jobs/batch", server.url))
            .bearer_auth(&key)
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success());
    }
    let started: Value = http
        .post(format!("{}/v1/jobs/bulk", server.url))
        .bearer_auth(&key)
        .json(&json!({"action": "cancel", "filter": {"queue": "bulk"}, "reason": "a bad release"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(started["matched"], JOBS);
    let progress = |url: String| {
        let (http, key, id) = (http.clone(), key.clone(), id.clone());
        async move {
            http.get(format!("{url}/v1/bulk/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = progress(server.url.clone()).await["done"].as_u64().unwrap();
        if done > 0 {
            assert!(done < JOBS as u64, "the kill must land halfway; raise JOBS");
            break;
        }
        assert!(Instant::now() < deadline, "the operation never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_9();

    let server = ServerProcess::start_with(&data_dir, &["--bulk-batch", "20"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let now = progress(server.url.clone()).await;
        if now["status"] == "completed" {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the operation did not finish after the restart: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (finished["done"].as_u64(), finished["failed"].as_u64()),
        (Some(JOBS as u64), Some(0))
    );
    let jobs = all_jobs(&http, &server.url, &key).await;
    assert_eq!(jobs.len(), JOBS);
    assert!(jobs.iter().all(|job| job["state"] == "cancelled"));
    let records = common::all_pages(&http, &server.url, &key, "/v1/audit?action=job.cancelled", "records").await;
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for record in &records {
        assert_eq!(record["summary"]["bulk_operation"], id.as_str());
        *per_job
            .entry(record["job_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_job.len(), JOBS, "every job has its record");
    assert!(per_job.values().all(|n| *n == 1), "no job was cancelled twice");
}
