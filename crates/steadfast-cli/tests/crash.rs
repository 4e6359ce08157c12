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

/// A bulk retry of 100,000 dead jobs killed with SIGKILL halfway: after a
/// restart it finishes, every job is queued again, and each was retried
/// exactly once (one `job.retried` record naming the operation, counted in
/// the database file itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_retry_of_100000_dead_jobs_killed_halfway_finishes_after_a_restart_acting_once_per_job() {
    const JOBS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let http = reqwest::Client::new();
    // Leases lapse after a second: an attempt that is never reported ends
    // the job (one attempt allowed) without a call per job.
    let flags = ["--lease-ttl-secs", "1"];
    let mut server = ServerProcess::start_with(&data_dir, &flags);
    let key = server.admin_key();
    let post = |url: String, body: Value| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            let response = http.post(url).bearer_auth(&key).json(&body).send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.json::<Value>().await.unwrap()
        }
    };
    for chunk in 0..JOBS / 1000 {
        let jobs: Vec<Value> = (0..1000)
            .map(|n| json!({"queue": "bulk", "payload": {"n": chunk * 1000 + n}, "max_attempts": 1}))
            .collect();
        post(format!("{}/v1/jobs/batch", server.url), json!({"jobs": jobs})).await;
    }
    let mut leased = 0;
    while leased < JOBS {
        let body = json!({"queues": ["bulk"], "worker_id": "vanishing", "max_jobs": 1000});
        leased += post(format!("{}/v1/lease", server.url), body).await["jobs"]
            .as_array()
            .unwrap()
            .len();
    }
    let counts = |url: String| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            let queues: Value = http
                .get(format!("{url}/v1/queues"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            queues["queues"]
                .as_array()
                .unwrap()
                .iter()
                .find(|queue| queue["queue"] == "bulk")
                .map(|queue| queue["counts"].clone())
                .unwrap_or(Value::Null)
        }
    };
    // The queue lists unfinished jobs only: it is gone once every job is dead.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !counts(server.url.clone()).await.is_null() {
        assert!(Instant::now() < deadline, "the leases did not lapse");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = post(
        format!("{}/v1/jobs/bulk", server.url),
        json!({"action": "retry", "filter": {"queue": "bulk", "state": "dead"}, "reason": "the downstream is back"}),
    )
    .await;
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
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = progress(server.url.clone()).await["done"].as_u64().unwrap();
        if done > 0 {
            assert!(done < JOBS as u64, "the kill must land halfway");
            break;
        }
        assert!(Instant::now() < deadline, "the operation never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_9();
    // Halfway by what the database holds, not by an answer read before the kill.
    let done_at_kill: i64 = rusqlite::Connection::open_with_flags(
        data_dir.join("steadfast.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
    .query_row("SELECT done FROM bulk_operations WHERE id = ?1", [&id], |row| {
        row.get(0)
    })
    .unwrap();
    assert!(
        done_at_kill < JOBS as i64,
        "the kill landed after the operation finished"
    );

    let server = ServerProcess::start_with(&data_dir, &flags);
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = loop {
        let now = progress(server.url.clone()).await;
        if now["status"] == "completed" {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the operation did not finish after the restart: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (finished["done"].as_u64(), finished["failed"].as_u64()),
        (Some(JOBS as u64), Some(0))
    );
    let now = counts(server.url.clone()).await;
    assert_eq!(now["queued"].as_u64(), Some(JOBS as u64), "{now}");
    drop(server);

    // Each job's retry records, straight from the file the server wrote.
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join("steadfast.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (jobs, most, tagged): (i64, i64, i64) = db
        .query_row(
            "SELECT count(*), max(n), sum(tagged) FROM ( \
                 SELECT json_extract(r.value, '$.job_id') AS job, count(*) AS n, \
                 sum(json_extract(json_extract(r.value, '$.summary'), '$.bulk_operation') = ?1) AS tagged \
                 FROM audit_batches b, json_each(b.records) r \
                 WHERE json_extract(r.value, '$.action') = 'job.retried' GROUP BY job)",
            [&id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(jobs, JOBS as i64, "every job has its record");
    assert_eq!(most, 1, "no job was retried twice");
    assert_eq!(tagged, JOBS as i64, "each record names the operation");
}
