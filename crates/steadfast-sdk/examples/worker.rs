//! A durable workflow end to end: enqueue a job, run a worker for it, wait
//! until it succeeds.
//!
//! Start a server (`steadfast serve`), then:
//!
//! ```sh
//! STEADFAST_KEY=$(cat steadfast-data/admin.key) cargo run -p steadfast-sdk --example worker
//! ```
//!
//! The handler runs three memoized steps and a durable one-second sleep in
//! between: the sleep parks the job (no lease, no worker held), and the next
//! attempt replays the finished steps instead of running them again. Kill the
//! example at any point and run it again with the same job: nothing repeats.

use std::time::Duration;

use serde_json::json;
use steadfast_sdk::{Client, JobError, Worker, WorkerConfig, wire};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("STEADFAST_URL").unwrap_or_else(|_| "http://127.0.0.1:8650".into());
    let key = std::env::var("STEADFAST_KEY").map_err(|_| anyhow::anyhow!("set STEADFAST_KEY (an admin key)"))?;
    let client = Client::new(&url, &key)?;

    let job = client
        .enqueue(&wire::EnqueueRequest {
            queue: "greetings".into(),
            payload: serde_json::value::to_raw_value(&json!({"name": "Ada"}))?,
            idempotency_key: Some("example-greeting-1".into()),
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
        })
        .await?
        .job;
    println!("job {} is {:?}", job.id, job.state);

    let worker = Worker::new(
        client.clone(),
        WorkerConfig {
            concurrency: 2,
            poll_wait: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .handle("greetings", |ctx| async move {
        let name: String = ctx.payload::<serde_json::Value>()?["name"]
            .as_str()
            .unwrap_or("world")
            .to_owned();
        let greeting = ctx
            .step("compose", |_key| async { Ok::<_, JobError>(format!("Hello, {name}!")) })
            .await?;
        ctx.sleep("pause", Duration::from_secs(1)).await?;
        let receipt = ctx
            .step("deliver", |key| async move {
                // A real step would call a provider here, passing `key` as its
                // idempotency key, so a retried delivery is harmless.
                Ok::<_, JobError>(format!("delivered with idempotency key {key}"))
            })
            .await?;
        Ok(json!({ "greeting": greeting, "receipt": receipt }))
    });

    let id = job.id.to_string();
    let watcher = client.clone();
    worker
        .run_until(async move {
            loop {
                match watcher.get_job(&id).await {
                    Ok(job) if job.state == wire::JobState::Succeeded => {
                        println!("output: {}", job.output.map(|o| o.get().to_owned()).unwrap_or_default());
                        return;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
        .await?;
    Ok(())
}
