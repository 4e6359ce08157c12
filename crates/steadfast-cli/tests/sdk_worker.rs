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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_batches_its_completions_and_finishes_every_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let client = Client::new(&server.url, &key).unwrap();
    let jobs = 400;
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(200) {
        let batch = chunk
            .iter()
            .map(|n| serde_json::from_value(serde_json::json!({"queue": "busy", "payload": {"n": n}})).unwrap())
            .collect();
        client
            .enqueue_batch(&wire::BatchEnqueueRequest { jobs: batch })
            .await
            .unwrap();
    }

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

    let deadline = Instant::now() + Duration::from_secs(60);
    let succeeded = ListJobs {
        queue: Some("busy".into()),
        state: Some(wire::JobState::Succeeded),
        limit: Some(500),
        cursor: None,
    };
    loop {
        let done = client.list_jobs(&succeeded).await.unwrap().jobs.len();
        if done == jobs {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {jobs} jobs succeeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), jobs, "each job ran once");

    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let batched = counter(
        &metrics,
        r#"steadfast_http_requests_total{route="/v1/jobs/batch/complete""#,
    );
    let single = counter(
        &metrics,
        r#"steadfast_http_requests_total{route="/v1/jobs/{id}/complete""#,
    );
    assert!(batched >= 1.0, "no batched completion request:\n{metrics}");
    assert!(
        batched + single < jobs as f64,
        "{batched} batched + {single} single requests for {jobs} completions"
    );
}
