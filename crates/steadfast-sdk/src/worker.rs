//! The worker runtime: lease, run handlers with bounded concurrency,
//! heartbeat, report, and shut down gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::{Client, Error, JobContext, JobError, wire};

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Box<RawValue>, JobError>> + Send>>;
type Handler = Arc<dyn Fn(JobContext) -> HandlerFuture + Send + Sync>;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shown in each attempt's history.
    pub worker_id: String,
    /// Most jobs running at once.
    pub concurrency: usize,
    /// How long one lease request waits for work (at most 30 s).
    pub poll_wait: Duration,
    /// On shutdown, how long in-flight jobs may take to finish; the rest are
    /// abandoned and their leases expire.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: format!("worker-{}", std::process::id()),
            concurrency: 8,
            poll_wait: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Runs handlers for the queues it serves.
///
/// ```no_run
/// # async fn example() -> Result<(), steadfast_sdk::Error> {
/// use steadfast_sdk::{Client, JobError, Worker};
/// let client = Client::new("http://127.0.0.1:8650", "sfk_...")?;
/// Worker::new(client, Default::default())
///     .handle("emails", |ctx| async move {
///         let to: String = ctx.payload::<serde_json::Value>()?["to"].as_str().unwrap_or_default().to_owned();
///         let receipt = ctx.step("send", |key| async move {
///             // pass `key` as the mail provider's idempotency key
///             Ok::<_, JobError>(format!("sent to {to} with key {key}"))
///         }).await?;
///         Ok(serde_json::json!({ "receipt": receipt }))
///     })
///     .run()
///     .await
/// # }
/// ```
pub struct Worker {
    client: Client,
    config: WorkerConfig,
    handlers: HashMap<String, Handler>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("queues", &self.handlers.keys())
            .finish()
    }
}

impl Worker {
    pub fn new(client: Client, config: WorkerConfig) -> Worker {
        Worker {
            client,
            config,
            handlers: HashMap::new(),
        }
    }

    /// Serves `queue` with `handler`. Its `Ok` value becomes the job's output.
    pub fn handle<F, Fut, T>(mut self, queue: &str, handler: F) -> Worker
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, JobError>> + Send + 'static,
        T: serde::Serialize,
    {
        let handler = Arc::new(handler);
        self.handlers.insert(
            queue.to_owned(),
            Arc::new(move |ctx| {
                let run = handler(ctx);
                Box::pin(async move {
                    let value = run.await?;
                    Ok(serde_json::value::to_raw_value(&value)?)
                })
            }),
        );
        self
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await
    }

    /// Runs until `shutdown` resolves: then stops leasing, lets in-flight jobs
    /// finish within the grace period, and abandons the rest (their leases expire).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Worker {
            client,
            config,
            handlers,
        } = self;
        let handlers = Arc::new(handlers);
        let queues: Vec<String> = handlers.keys().cloned().collect();
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let mut running = JoinSet::new();
        let completer = Completer::start(client.clone(), config.concurrency.max(1));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let first = tokio::select! {
                () = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            };
            // Jobs that ended together free their slots together: let them,
            // so one lease asks for all of them rather than one at a time.
            tokio::task::yield_now().await;
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            let request = wire::LeaseRequest {
                queues: queues.clone(),
                max_jobs: Some(permits.len() as u32),
                wait_ms: Some(config.poll_wait.as_millis() as u64),
                worker_id: config.worker_id.clone(),
            };
            let leased = tokio::select! {
                () = &mut shutdown => break,
                leased = client.lease(&request) => leased,
            };
            let jobs = match leased {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::warn!(%error, "lease failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for job in jobs {
                let permit = permits.pop().expect("no more jobs than permits");
                let handler = handlers.get(&job.queue).cloned();
                let (client, completer) = (client.clone(), completer.clone());
                running.spawn(run_job(client, completer, handler, job, permit));
            }
            // Reap finished tasks so the set does not grow.
            while running.try_join_next().is_some() {}
        }
        tracing::info!(in_flight = running.len(), "worker stopping: no new leases");
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = running.len(),
                "grace period over; abandoning jobs, their leases will expire"
            );
            running.abort_all();
        }
        Ok(())
    }
}

/// Most completions one request carries.
const MAX_COMPLETIONS_PER_REQUEST: usize = 100;
/// Most output bytes one batch carries, well under the server's default
/// 1 MiB body limit; a larger output goes in a request of its own.
const MAX_BATCH_OUTPUT_BYTES: usize = 256 * 1024;

struct PendingCompletion {
    completion: wire::Completion,
    /// The job's client (in the job's trace), for a completion sent alone.
    client: Client,
    done: oneshot::Sender<Result<(), String>>,
}

/// Gathers the completions of running jobs: whatever queued up while the
/// previous request was in flight goes out in one
/// `POST /v1/jobs/batch/complete`; a lone completion goes alone, on the
/// job's own route and in its trace. Nothing waits to fill a batch.
#[derive(Clone)]
struct Completer {
    queue: mpsc::Sender<PendingCompletion>,
}

impl Completer {
    /// `capacity`: at most one pending completion per running job.
    fn start(client: Client, capacity: usize) -> Completer {
        let (queue, pending) = mpsc::channel(capacity);
        tokio::spawn(complete_in_batches(client, pending));
        Completer { queue }
    }

    /// Queues a completion; the answer comes on the returned channel.
    async fn complete(
        &self,
        client: &Client,
        id: uuid::Uuid,
        lease_token: String,
        output: wire::Json,
    ) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let (done, result) = oneshot::channel();
        let pending = PendingCompletion {
            completion: wire::Completion {
                id,
                lease_token,
                output: Some(output),
            },
            client: client.clone(),
            done,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| "the worker is stopping".to_owned())?;
        Ok(result)
    }
}

/// Batch requests in flight at once: while one commits, the next gathers.
const CONCURRENT_BATCHES: usize = 2;

async fn complete_in_batches(client: Client, mut pending: mpsc::Receiver<PendingCompletion>) {
    let in_flight = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
    let output_bytes = |p: &PendingCompletion| p.completion.output.as_ref().map_or(0, |o| o.get().len());
    while let Some(first) = pending.recv().await {
        let slot = in_flight.clone().acquire_owned().await.expect("never closed");
        let mut bytes = output_bytes(&first);
        let mut batch = vec![first];
        let mut held = None;
        // Jobs leased together tend to end together: give the others a
        // scheduler turn to queue theirs before the batch is cut (no timer:
        // an idle worker still sends a lone completion at once).
        let mut turns = 0;
        while batch.len() < MAX_COMPLETIONS_PER_REQUEST && bytes < MAX_BATCH_OUTPUT_BYTES && held.is_none() {
            match pending.try_recv() {
                Ok(next) => {
                    bytes += output_bytes(&next);
                    if bytes > MAX_BATCH_OUTPUT_BYTES {
                        held = Some(next);
                    } else {
                        batch.push(next);
                    }
                }
                Err(_) if turns < 2 => {
                    turns += 1;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        let client = client.clone();
        tokio::spawn(async move {
            send_completions(&client, batch).await;
            if let Some(next) = held {
                send_completions(&client, vec![next]).await;
            }
            drop(slot);
        });
    }
}

/// One completion goes alone, on the job's route and in its trace; more go
/// in one batch request. If the server refuses the batch as a whole (too
/// large for its limits, an older server without the route, unreachable),
/// each completion is retried alone so no job loses its result to another.
async fn send_completions(client: &Client, batch: Vec<PendingCompletion>) {
    if batch.len() > 1 {
        let completions = batch.iter().map(|p| p.completion.clone()).collect();
        if let Ok(results) = client.complete_batch(completions).await
            && results.len() == batch.len()
        {
            for (result, pending) in results.into_iter().zip(batch) {
                let outcome = result
                    .error
                    .map_or(Ok(()), |e| Err(format!("{}: {}", e.code, e.message)));
                let _ = pending.done.send(outcome);
            }
            return;
        }
    }
    for pending in batch {
        let PendingCompletion {
            completion,
            client,
            done,
        } = pending;
        let result = client
            .complete(&completion.id.to_string(), &completion.lease_token, completion.output)
            .await;
        let _ = done.send(result.map(|_| ()).map_err(|e| e.to_string()));
    }
}

/// Runs one leased job to its end: heartbeats while the handler runs, then
/// completes, fails, or (suspended, lease lost) reports nothing.
/// The permit (a concurrency slot) is given back once the handler has ended
/// and its result is queued, not when the server has answered: a finished job
/// is not running, and the next lease need not wait for the commit.
async fn run_job(
    client: Client,
    completer: Completer,
    handler: Option<Handler>,
    job: wire::LeasedJob,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    // Every call made for this job joins the job's trace.
    let client = client.with_traceparent(job.traceparent.as_deref());
    let id = job.id.to_string();
    let token = job.lease_token.clone();
    let Some(handler) = handler else {
        let error = wire::ErrorInfo {
            message: format!("no handler for queue {}", job.queue),
            kind: None,
        };
        let _ = client.fail(&id, &token, error, true).await;
        return;
    };
    let every = Duration::from_millis((job.lease_ttl_ms / 3).max(100));
    let heartbeat = {
        let (client, id, token) = (client.clone(), id.clone(), token.clone());
        async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(error) = client.heartbeat(&id, &token).await
                    && error.code() == Some("lease_lost")
                {
                    return;
                }
            }
        }
    };
    let job_id = job.id;
    let context = JobContext::new(client.clone(), job);
    let outcome = tokio::select! {
        outcome = AssertUnwindSafe(handler(context)).catch_unwind() => outcome
            .unwrap_or_else(|_| Err(JobError::retryable("the handler panicked"))),
        () = heartbeat => Err(JobError::LeaseLost),
    };
    let reported = match outcome {
        Ok(output) => match completer.complete(&client, job_id, token.clone(), output).await {
            Ok(answer) => {
                drop(permit);
                answer
                    .await
                    .unwrap_or_else(|_| Err("the worker is stopping".to_owned()))
            }
            Err(error) => Err(error),
        },
        Err(JobError::Failed {
            message,
            kind,
            retryable,
        }) => client
            .fail(&id, &token, wire::ErrorInfo { message, kind }, retryable)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(JobError::Client(error)) => {
            let error = wire::ErrorInfo {
                message: error.to_string(),
                kind: Some("steadfast_client".into()),
            };
            client
                .fail(&id, &token, error, true)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Err(JobError::Suspended | JobError::LeaseLost) => Ok(()),
    };
    if let Err(error) = reported {
        // lease_lost here means another attempt owns the job now: nothing to do.
        tracing::debug!(job = %id, %error, "could not report the job's outcome");
    }
}
