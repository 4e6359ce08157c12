//! The Rust SDK's worker runtime against a real server: under load it
//! gathers completions into batch requests, and every job still ends once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::ServerProcess;
use steadfast_sdk::{Client, ListJobs, Worker, WorkerConfig, wire};

fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Enqueues `jobs` jobs on `queue`, payload `{"n": i}`, in batches.
async fn enqueue_many(client: &Client, queue: &str, jobs: usize) {
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(200) {
        let batch = chunk
            .iter()
            .map(|n| serde_json::from_value(serde_json::json!({"queue": queue, "payload": {"n": n}})).unwrap())
            .collect();
        client
            .enqueue_batch(&wire::BatchEnqueueRequest { jobs: batch })
            .await
            .unwrap();
    }
}

/// Polls until `jobs` jobs of `queue` succeeded (a minute at most); returns them.
async fn all_succeeded(client: &Client, queue: &str, jobs: usize) -> Vec<wire::Job> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let succeeded = ListJobs {
        queue: Some(queue.into()),
        state: Some(wire::JobState::Succeeded),
        limit: Some(500),
        cursor: None,
    };
    loop {
        let done = client.list_jobs(&succeeded).await.unwrap().jobs;
        if done.len() == jobs {
            return done;
        }
        assert!(Instant::now() < deadline, "{} of {jobs} jobs succeeded", done.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests the server counted on `route`, by its metrics.
async fn requests_on(server: &ServerProcess, key: &str, route: &str) -> f64 {
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    counter(&metrics, &format!(r#"steadfast_http_requests_total{{route="{route}""#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_batches_its_completions_and_finishes_every_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let client = Client::new(&server.url, &key).unwrap();
    let jobs = 400;
    enqueue_many(&client, "busy", jobs).await;

    let ran = Arc::new(AtomicUsize::new(0));
    let config = WorkerConfig {
        concurrency: 64,
        poll_wait: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(client.clone(), config).handle("busy", {
        let ran = ran.clone();
        move |_ctx| {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    all_succeeded(&client, "busy", jobs).await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), jobs, "each job ran once");

    let batched = requests_on(&server, &key, "/v1/jobs/batch/complete").await;
    let single = requests_on(&server, &key, "/v1/jobs/{id}/complete").await;
    assert!(batched >= 1.0, "no batched completion request");
    assert!(
        batched + single < jobs as f64,
        "{batched} batched + {single} single requests for {jobs} completions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_batches_its_steps_and_each_step_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let client = Client::new(&server.url, &key).unwrap();
    let jobs = 300;
    enqueue_many(&client, "stepped", jobs).await;

    let runs = Arc::new(std::sync::Mutex::new(
        std::collections::HashMap::<(i64, u32), u32>::new(),
    ));
    let config = WorkerConfig {
        concurrency: 64,
        poll_wait: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(client.clone(), config).handle("stepped", {
        let runs = runs.clone();
        move |ctx| {
            let runs = runs.clone();
            async move {
                let n = ctx.payload::<serde_json::Value>()?["n"].as_i64().unwrap_or(-1);
                let mut total = 0;
                for step in 0..2u32 {
                    let runs = runs.clone();
                    total += ctx
                        .step(&format!("s{step}"), |_| async move {
                            *runs.lock().unwrap().entry((n, step)).or_default() += 1;
                            Ok::<_, steadfast_sdk::JobError>(n * 10 + i64::from(step))
                        })
                        .await?;
                }
                Ok(total)
            }
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let done = all_succeeded(&client, "stepped", jobs).await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2 * jobs, "every step of every job ran");
    assert!(runs.values().all(|&count| count == 1), "no step ran twice");
    for listed in &done {
        let job = client.get_job(&listed.id.to_string()).await.unwrap();
        let n = serde_json::from_str::<serde_json::Value>(job.payload.get()).unwrap()["n"]
            .as_i64()
            .unwrap();
        let output = job.output.as_ref().map(|o| o.get().to_owned());
        assert_eq!(
            output,
            Some((n * 20 + 1).to_string()),
            "the handler saw each step's output"
        );
        let steps: Vec<_> = job
            .steps
            .unwrap_or_default()
            .iter()
            .map(|s| (s.name.clone(), s.output.as_ref().map(|o| o.get().to_owned())))
            .collect();
        assert_eq!(
            steps,
            [
                ("s0".to_owned(), Some((n * 10).to_string())),
                ("s1".to_owned(), Some((n * 10 + 1).to_string()))
            ]
        );
    }

    let batched = requests_on(&server, &key, "/v1/jobs/batch/steps").await;
    let single = requests_on(&server, &key, "/v1/jobs/{id}/steps/{name}/start").await
        + requests_on(&server, &key, "/v1/jobs/{id}/steps/{name}").await;
    assert!(batched >= 1.0, "no batched step request");
    assert!(
        batched + single < (4 * jobs) as f64,
        "{batched} batched + {single} single requests for {} step operations",
        4 * jobs
    );
}

/// Jobs of one state in `queue`, their payloads' `n`.
async fn numbers(client: &Client, queue: &str, state: wire::JobState) -> Vec<i64> {
    let filter = ListJobs {
        queue: Some(queue.into()),
        state: Some(state),
        limit: Some(100),
        cursor: None,
    };
    let mut found: Vec<i64> = client
        .list_jobs(&filter)
        .await
        .unwrap()
        .jobs
        .iter()
        .map(|job| {
            serde_json::from_str::<serde_json::Value>(job.payload.get()).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    found.sort();
    found
}

async fn enqueue_numbers(client: &Client, queue: &str, numbers: std::ops::RangeInclusive<i64>) {
    for n in numbers {
        let request = serde_json::from_value(serde_json::json!({"queue": queue, "payload": {"n": n}})).unwrap();
        client.enqueue(&request).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_jobs_are_leased_ahead_and_still_run_when_the_worker_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let client = Client::new(&server.url, &server.admin_key()).unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let config = WorkerConfig {
        concurrency: 1,
        poll_wait: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(client.clone(), config).handle("ahead", {
        let (gate, ran) = (gate.clone(), ran.clone());
        move |ctx| {
            let (gate, ran) = (gate.clone(), ran.clone());
            async move {
                let n = ctx.payload::<serde_json::Value>()?["n"].as_i64().unwrap_or(-1);
                if n == 1 {
                    // Held until the test has seen the job leased ahead.
                    let _ = gate.acquire().await.unwrap();
                }
                ran.lock().unwrap().push(n);
                Ok(())
            }
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));

    // One quick job tells the worker how long its jobs take.
    enqueue_numbers(&client, "ahead", 0..=0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while numbers(&client, "ahead", wire::JobState::Succeeded).await != [0] {
        assert!(Instant::now() < deadline, "job 0 did not succeed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // With one slot, busy in job 1, the worker holds job 2 leased ahead.
    enqueue_numbers(&client, "ahead", 1..=3).await;
    while numbers(&client, "ahead", wire::JobState::Running).await != [1, 2] {
        assert!(Instant::now() < deadline, "job 2 was not leased ahead");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(numbers(&client, "ahead", wire::JobState::Queued).await, [3]);

    // Stopping runs what was leased ahead instead of leaving its lease to lapse.
    let _ = stop.send(());
    gate.add_permits(1);
    running.await.unwrap().unwrap();
    assert_eq!(*ran.lock().unwrap(), [0, 1, 2]);
    assert_eq!(numbers(&client, "ahead", wire::JobState::Succeeded).await, [0, 1, 2]);
    assert!(numbers(&client, "ahead", wire::JobState::Running).await.is_empty());
    assert_eq!(numbers(&client, "ahead", wire::JobState::Queued).await, [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_still_running_when_the_grace_runs_out_are_handed_back_unspent() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let client = Client::new(&server.url, &server.admin_key()).unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let config = WorkerConfig {
        concurrency: 1,
        poll_wait: Duration::from_millis(200),
        shutdown_grace: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(client.clone(), config).handle("stuck", {
        let started = started.clone();
        move |_ctx| {
            let started = started.clone();
            async move {
                started.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    });
    enqueue_numbers(&client, "stuck", 1..=1).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    started.notified().await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();

    let listed = client.list_jobs(&ListJobs::default()).await.unwrap();
    let job = client.get_job(&listed.jobs[0].id.to_string()).await.unwrap();
    assert_eq!(job.state, wire::JobState::Queued, "ready again at once");
    assert_eq!(job.attempts_left, job.max_attempts, "the attempt was not spent");
    let outcomes: Vec<_> = job.attempts.unwrap().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Some(wire::AttemptOutcome::Released)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_queue_refuses_fails_the_job_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let client = Client::new(&server.url, &server.admin_key()).unwrap();
    let schema = |value: serde_json::Value| serde_json::value::to_raw_value(&value).unwrap();
    let request = wire::PutSchemaRequest {
        schema: schema(serde_json::json!({"type": "object"})),
        output_schema: Some(schema(serde_json::json!({"type": "object", "required": ["receipt"]}))),
        force: None,
        reason: None,
    };
    client.put_schema("charges", 1, &request).await.unwrap();
    enqueue_many(&client, "charges", 4).await;
    let config = WorkerConfig {
        poll_wait: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(client.clone(), config).handle("charges", |ctx| async move {
        let n = ctx.payload::<serde_json::Value>()?["n"].as_u64().unwrap_or(0);
        Ok(if n % 2 == 0 {
            serde_json::json!({"receipt": n})
        } else {
            serde_json::json!({"oops": n})
        })
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let dead = ListJobs {
            queue: Some("charges".into()),
            state: Some(wire::JobState::Dead),
            limit: Some(10),
            cursor: None,
        };
        let dead = client.list_jobs(&dead).await.unwrap().jobs;
        if dead.len() == 2 {
            break dead;
        }
        assert!(Instant::now() < deadline, "{} jobs dead", dead.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    all_succeeded(&client, "charges", 2).await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    for job in dead {
        let error = job.last_error.unwrap();
        assert_eq!(error.kind.as_deref(), Some("output_invalid"), "{}", error.message);
        assert_eq!(job.attempt, 1, "not retried");
    }
}
