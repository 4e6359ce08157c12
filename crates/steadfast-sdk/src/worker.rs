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
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::batch::{self, Batcher};
use crate::context::Stepper;
use crate::{Client, Error, ErrorCode, JobContext, JobError, wire};

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Box<RawValue>, JobError>> + Send>>;
type Handler = Arc<dyn Fn(JobContext) -> HandlerFuture + Send + Sync>;
/// The lease request in flight.
type Leasing = Pin<Box<dyn Future<Output = Result<Vec<wire::LeasedJob>, Error>> + Send>>;

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
    /// handed back (released: ready again at once, their attempts unspent).
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
    /// finish within the grace period, and hands the rest back (released).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Worker {
            client,
            config,
            handlers,
        } = self;
        let handlers = Arc::new(handlers);
        let queues: Vec<String> = handlers.keys().cloned().collect();
        let concurrency = config.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut running = JoinSet::new();
        let pace = Arc::new(Pace::default());
        let shared = Shared {
            completer: Completer::start(client.clone(), concurrency),
            stepper: Stepper::start(client.clone(), concurrency),
            pace: pace.clone(),
            in_flight: InFlight::default(),
        };
        let mut local = LocalQueue::default();
        let mut leasing: Option<Leasing> = None;
        let spawn = |running: &mut JoinSet<()>, (job, leased_at): (wire::LeasedJob, tokio::time::Instant), permit| {
            // Registered before its task first runs: a grace that ends first
            // still hands it back.
            let job_client = client.with_traceparent(job.traceparent.as_deref());
            shared
                .in_flight
                .lock()
                .expect("not poisoned")
                .insert(job.id, (job_client, job.lease_token.clone()));
            let handler = handlers.get(&job.queue).cloned();
            running.spawn(run_job(client.clone(), shared.clone(), handler, job, leased_at, permit));
        };
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // Once asked to stop, ask the server for nothing more: the select
            // below may pick a freed slot over an already-resolved shutdown.
            let stopping = {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                shutdown.as_mut().poll(&mut cx).is_ready()
            };
            if stopping {
                break;
            }
            // Start what waits locally while slots are free.
            while let Some(permit) = local.ready().then(|| slots.clone().try_acquire_owned().ok()).flatten() {
                spawn(&mut running, local.pop().expect("the queue is not empty"), permit);
            }
            // Reap finished tasks so the set does not grow.
            while running.try_join_next().is_some() {}
            // Ask for more while nothing is asked: for every free slot, and
            // ahead of them while jobs are short (see `Pace`).
            let wanted = (slots.available_permits() + pace.lease_ahead(concurrency)).saturating_sub(local.len());
            if leasing.is_none() && wanted > 0 {
                let request = wire::LeaseRequest {
                    queues: queues.clone(),
                    max_jobs: Some(wanted.min(MAX_JOBS_PER_LEASE) as u32),
                    // The server answers at once when it has any job, and waits
                    // only while the queues are empty.
                    wait_ms: Some(config.poll_wait.as_millis() as u64),
                    worker_id: config.worker_id.clone(),
                };
                let client = client.clone();
                leasing = Some(Box::pin(async move { client.lease(&request).await }));
            }
            tokio::select! {
                () = &mut shutdown => break,
                leased = async { leasing.as_mut().expect("guarded").await }, if leasing.is_some() => {
                    leasing = None;
                    match leased {
                        Ok(jobs) => local.extend(jobs),
                        Err(error) => {
                            tracing::warn!(%error, "lease failed; retrying shortly");
                            tokio::select! {
                                () = &mut shutdown => break,
                                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                            }
                        }
                    }
                }
                // A slot freed: start a waiting job, or ask for more.
                permit = slots.clone().acquire_owned(), if local.ready() || leasing.is_none() => drop(permit),
            }
        }
        tracing::info!(
            in_flight = running.len(),
            leased_ahead = local.len(),
            "worker stopping: no new leases"
        );
        // Jobs leased ahead run too, as slots free within the grace period:
        // dropped, their leases would lapse and each would lose an attempt.
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            // A lease still in flight may already hold jobs on the server:
            // take its answer, and run those too.
            if let Some(leasing) = leasing.take()
                && let Ok(jobs) = leasing.await
            {
                local.extend(jobs);
            }
            // A job leaves the local queue only with a slot: one the grace
            // cuts short is still there to be handed back.
            while local.ready() {
                let permit = slots.clone().acquire_owned().await.expect("never closed");
                spawn(&mut running, local.pop().expect("ready"), permit);
            }
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // Hand back what is left, so it runs again at once with its
            // attempt unspent rather than after its lease lapses. Stop the
            // tasks first: a handler that ends meanwhile reports instead.
            running.abort_all();
            while running.join_next().await.is_some() {}
            let unfinished: Vec<_> = shared.in_flight.lock().expect("not poisoned").drain().collect();
            tracing::warn!(
                running = unfinished.len(),
                unstarted = local.len(),
                "grace period over; handing jobs back"
            );
            let unstarted = local.drain().map(|job| (job.id, (client.clone(), job.lease_token)));
            let releases = unfinished
                .into_iter()
                .chain(unstarted)
                .map(|(id, (client, token))| async move {
                    if let Err(error) = client.release(&id.to_string(), &token).await {
                        tracing::info!(job = %id, %error, "could not hand the job back; its lease will lapse");
                    }
                });
            futures::future::join_all(releases).await;
        }
        Ok(())
    }
}

/// Most jobs one lease request asks for (the server's own bound is 1,000).
const MAX_JOBS_PER_LEASE: usize = 1000;

/// Jobs leased but not started yet, oldest first, with when each was leased.
#[derive(Default)]
struct LocalQueue(std::collections::VecDeque<(wire::LeasedJob, tokio::time::Instant)>);

impl LocalQueue {
    fn extend(&mut self, jobs: Vec<wire::LeasedJob>) {
        let now = tokio::time::Instant::now();
        self.0.extend(jobs.into_iter().map(|job| (job, now)));
    }

    fn ready(&self) -> bool {
        !self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn pop(&mut self) -> Option<(wire::LeasedJob, tokio::time::Instant)> {
        self.0.pop_front()
    }

    fn drain(&mut self) -> impl Iterator<Item = wire::LeasedJob> + '_ {
        self.0.drain(..).map(|(job, _)| job)
    }
}

/// How long handlers take, to decide how far to lease ahead. A job leased
/// ahead waits locally for a slot while its lease runs down (it sends no
/// heartbeat until it starts; then the first goes at once if a third of
/// the lease has passed), and one whose lease lapsed meanwhile is not
/// started. So the worker leases ahead (up to its concurrency, a round of
/// work) only while handlers take under a tenth of the lease time on
/// average: a job then waits about one handler's time.
#[derive(Default)]
struct Pace {
    /// Moving average of handler time, microseconds; 0 until the first job ends.
    average_us: std::sync::atomic::AtomicU64,
    /// The lease time of the last job run, milliseconds.
    lease_ttl_ms: std::sync::atomic::AtomicU64,
}

impl Pace {
    fn record(&self, took: Duration, lease_ttl_ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let took = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let average = self.average_us.load(Relaxed);
        // Weight 1/8 to the newest: steady under noise, quick to notice slow jobs.
        let next = if average == 0 {
            took.max(1)
        } else {
            average - average / 8 + took / 8
        };
        self.average_us.store(next.max(1), Relaxed);
        self.lease_ttl_ms.store(lease_ttl_ms, Relaxed);
    }

    /// How many jobs to hold beyond the free slots.
    fn lease_ahead(&self, concurrency: usize) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let (average_us, ttl_ms) = (self.average_us.load(Relaxed), self.lease_ttl_ms.load(Relaxed));
        let short = average_us > 0 && average_us.saturating_mul(10) < ttl_ms.saturating_mul(1000);
        if short { concurrency } else { 0 }
    }
}

/// Gathers the completions of running jobs into
/// `POST /v1/jobs/batch/complete` requests (see [`crate::batch`]).
type Completer = Batcher<PendingCompletion>;

struct PendingCompletion {
    completion: wire::Completion,
    /// The job's client (in the job's trace), for a completion sent alone.
    client: Client,
    done: oneshot::Sender<Result<(), Refused>>,
}

/// Why a completion did not take: the server's code, if it answered one.
type Refused = (Option<ErrorCode>, String);

impl batch::Item for PendingCompletion {
    const MAX_PER_REQUEST: usize = 250;

    fn bytes(&self) -> usize {
        self.completion.output.as_ref().map_or(0, |o| o.get().len())
    }

    /// One completion goes alone, on the job's route and in its trace; more
    /// go in one batch request. If the server refuses the batch as a whole
    /// with a 4xx (too large for its limits, an older server without the
    /// route), each completion is retried alone so no job loses its result
    /// to another; if storage or the network failed, each fails alike (the
    /// job's lease lapses and it runs again).
    async fn send(client: Client, batch: Vec<PendingCompletion>) {
        if batch.len() > 1 {
            let completions = batch.iter().map(|p| p.completion.clone()).collect();
            match client.complete_batch(completions).await {
                Ok(results) if results.len() == batch.len() => {
                    for (result, pending) in results.into_iter().zip(batch) {
                        let outcome = result
                            .error
                            .map_or(Ok(()), |e| Err((Some(e.code), format!("{}: {}", e.code, e.message))));
                        let _ = pending.done.send(outcome);
                    }
                    return;
                }
                Err(error) if !batch::retry_alone(&error) => {
                    let reason = error.to_string();
                    for pending in batch {
                        let _ = pending.done.send(Err((None, reason.clone())));
                    }
                    return;
                }
                _ => {}
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
            let _ = done.send(result.map(|_| ()).map_err(|e| (e.code(), e.to_string())));
        }
    }
}

/// Queues a completion; the answer comes on the returned channel.
async fn complete(
    completer: &Completer,
    client: &Client,
    id: uuid::Uuid,
    lease_token: String,
    output: wire::Json,
) -> Result<oneshot::Receiver<Result<(), Refused>>, String> {
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
    completer.push(pending).await?;
    Ok(result)
}

/// What every job's task shares with the worker loop.
#[derive(Clone)]
struct Shared {
    completer: Completer,
    stepper: Stepper,
    pace: Arc<Pace>,
    in_flight: InFlight,
}

/// Jobs whose handler is running, with the client (in the job's trace) and
/// lease token to hand each back if the shutdown grace runs out.
type InFlight = Arc<std::sync::Mutex<HashMap<uuid::Uuid, (Client, String)>>>;

/// Runs one leased job to its end: heartbeats while the handler runs, then
/// completes, fails, or (suspended, lease lost) reports nothing.
/// The permit (a concurrency slot) is given back once the handler has ended
/// and its result is queued, not when the server has answered: a finished job
/// is not running, and the next lease need not wait for the commit.
async fn run_job(
    client: Client,
    Shared {
        completer,
        stepper,
        pace,
        in_flight,
    }: Shared,
    handler: Option<Handler>,
    job: wire::LeasedJob,
    leased_at: tokio::time::Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    // Every call made for this job joins the job's trace.
    let client = client.with_traceparent(job.traceparent.as_deref());
    let id = job.id.to_string();
    let token = job.lease_token.clone();
    let unregister = || in_flight.lock().expect("not poisoned").remove(&job.id);
    let Some(handler) = handler else {
        unregister();
        let error = wire::ErrorInfo {
            message: format!("no handler for queue {}", job.queue),
            kind: None,
        };
        let _ = client.fail(&id, &token, error, true).await;
        return;
    };
    let ttl = Duration::from_millis(job.lease_ttl_ms);
    if leased_at.elapsed() >= ttl {
        // Waited locally past its lease: another worker may hold it by now.
        unregister();
        return;
    }
    // Heartbeats keep the rhythm of the lease, counted from when it was
    // granted: a job that waited locally heartbeats soon after it starts.
    let every = Duration::from_millis((job.lease_ttl_ms / 3).max(100));
    let heartbeat = {
        let (client, id, token) = (client.clone(), id.clone(), token.clone());
        async move {
            let mut next = leased_at + every;
            loop {
                tokio::time::sleep_until(next).await;
                next += every;
                if let Err(error) = client.heartbeat(&id, &token).await
                    && error.code() == Some(ErrorCode::LeaseLost)
                {
                    return;
                }
            }
        }
    };
    let job_id = job.id;
    let lease_ttl_ms = job.lease_ttl_ms;
    let context = JobContext::new(client.clone(), stepper, job);
    let started = tokio::time::Instant::now();
    let outcome = tokio::select! {
        outcome = AssertUnwindSafe(handler(context)).catch_unwind() => outcome
            .unwrap_or_else(|_| Err(JobError::retryable("the handler panicked"))),
        () = heartbeat => Err(JobError::LeaseLost),
    };
    // Its handler has ended: from here on the job reports, and is not handed back.
    in_flight.lock().expect("not poisoned").remove(&job_id);
    pace.record(started.elapsed(), lease_ttl_ms);
    let reported = match outcome {
        Ok(output) => match complete(&completer, &client, job_id, token.clone(), output).await {
            Ok(answer) => {
                drop(permit);
                match answer.await {
                    Ok(Ok(())) => Ok(()),
                    // The queue's output schema refused the result: the same
                    // code would return the same result, so the attempt fails
                    // for good rather than waiting for its lease to lapse.
                    Ok(Err((Some(ErrorCode::OutputInvalid), message))) => {
                        let error = wire::ErrorInfo {
                            message: format!("the output fails the queue's output schema: {message}"),
                            kind: Some("output_invalid".into()),
                        };
                        client
                            .fail(&id, &token, error, false)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    Ok(Err((_, message))) => Err(message),
                    Err(_) => Err("the worker is stopping".to_owned()),
                }
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
