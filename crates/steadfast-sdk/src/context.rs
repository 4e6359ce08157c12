//! What a handler sees of its job: the payload, and durable building blocks.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use tokio::sync::oneshot;

use crate::batch::{self, Batcher};
use crate::{Client, Error, ErrorCode, wire};

/// Why a handler stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job failed. `retryable: false` sends it to `dead` at once.
    #[error("{message}")]
    Failed {
        message: String,
        kind: Option<String>,
        retryable: bool,
    },
    /// The workflow parked the job (a sleep or a signal wait): not a failure.
    /// Propagate it with `?`; the job resumes in a later attempt.
    #[error("the job is waiting")]
    Suspended,
    /// The lease was lost (expired, superseded, cancelled): stop, report nothing.
    #[error("the lease was lost")]
    LeaseLost,
    /// A call to Steadfast failed.
    #[error(transparent)]
    Client(Error),
}

impl JobError {
    /// A failure worth retrying (a timeout, a 503 from a dependency).
    pub fn retryable(message: impl fmt::Display) -> JobError {
        JobError::Failed {
            message: message.to_string(),
            kind: None,
            retryable: true,
        }
    }

    /// A failure no retry will fix (invalid input): the job goes to `dead`.
    pub fn fatal(message: impl fmt::Display) -> JobError {
        JobError::Failed {
            message: message.to_string(),
            kind: None,
            retryable: false,
        }
    }
}

impl From<Error> for JobError {
    fn from(error: Error) -> JobError {
        if error.code() == Some(ErrorCode::LeaseLost) {
            JobError::LeaseLost
        } else {
            JobError::Client(error)
        }
    }
}

impl From<serde_json::Error> for JobError {
    fn from(error: serde_json::Error) -> JobError {
        JobError::fatal(format!("cannot (de)serialise step data: {error}"))
    }
}

/// What a step's code gets: the step's idempotency key (the same in every
/// attempt: pass it to downstream APIs that honour idempotency keys) and, if
/// an earlier attempt started the step and vanished before its checkpoint,
/// what is known of that attempt, so the code can ask the downstream whether
/// the effect already happened before acting again.
#[derive(Debug, Clone)]
pub struct StepKey {
    key: String,
    uncertain: Option<wire::UncertainStep>,
}

impl StepKey {
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// Set when the step's outcome is uncertain: reconcile first.
    pub fn uncertain(&self) -> Option<&wire::UncertainStep> {
        self.uncertain.as_ref()
    }
}

impl Deref for StepKey {
    type Target = str;

    fn deref(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// Gathers the step starts and checkpoints of running jobs into
/// `POST /v1/jobs/batch/steps` requests (see [`crate::batch`]).
pub(crate) type Stepper = Batcher<PendingStep>;

pub(crate) struct PendingStep {
    operation: wire::StepOperation,
    /// The job's client (in the job's trace), for an operation sent alone.
    client: Client,
    done: oneshot::Sender<Result<wire::StepInfo, Error>>,
}

impl batch::Item for PendingStep {
    const MAX_PER_REQUEST: usize = 250;

    fn bytes(&self) -> usize {
        self.operation.output.as_ref().map_or(0, |o| o.get().len())
    }

    /// One operation goes alone, on its step's route; more go in one batch
    /// request, each with its job's trace context. If the server refuses
    /// the batch as a whole with a 4xx (too large for its limits, an older
    /// server without the route, a bad step name), each is retried alone;
    /// if storage or the network failed, each fails alike.
    async fn send(client: Client, batch: Vec<PendingStep>) {
        if batch.len() > 1 {
            let operations = batch.iter().map(|p| p.operation.clone()).collect();
            let results = match client.steps_batch(operations).await {
                Err(error) if !batch::retry_alone(&error) => {
                    let code = error.code();
                    for pending in batch {
                        let _ = pending.done.send(Err(Error::Item {
                            code,
                            message: error.to_string(),
                        }));
                    }
                    return;
                }
                other => other,
            };
            if let Ok(results) = results
                && results.len() == batch.len()
            {
                for (result, pending) in results.into_iter().zip(batch) {
                    let answer = match (result.info, result.error) {
                        (Some(info), None) => Ok(info),
                        (_, Some(e)) => Err(Error::Item {
                            code: Some(e.code),
                            message: e.message,
                        }),
                        (None, None) => Err(Error::Item {
                            code: Some(ErrorCode::Unknown),
                            message: "the server answered neither a step nor an error".into(),
                        }),
                    };
                    let _ = pending.done.send(answer);
                }
                return;
            }
        }
        for PendingStep {
            operation,
            client,
            done,
        } in batch
        {
            let (id, step, token) = (operation.id.to_string(), operation.step, operation.lease_token);
            let answer = match operation.action {
                wire::StepAction::Start => client.start_step(&id, &step, &token).await,
                wire::StepAction::Checkpoint => client.checkpoint_step(&id, &step, &token, operation.output).await,
            };
            let _ = done.send(answer);
        }
    }
}

/// A leased job, as its handler sees it.
pub struct JobContext {
    client: Client,
    stepper: Stepper,
    job: wire::LeasedJob,
    /// Completed steps: from the lease, plus those checkpointed in this attempt.
    completed: Mutex<BTreeMap<String, Box<RawValue>>>,
}

fn to_raw(value: &impl Serialize) -> Result<Box<RawValue>, JobError> {
    Ok(serde_json::value::to_raw_value(value)?)
}

fn from_raw<T: DeserializeOwned>(raw: &RawValue) -> Result<T, JobError> {
    Ok(serde_json::from_str(raw.get())?)
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    pub(crate) fn new(client: Client, stepper: Stepper, job: wire::LeasedJob) -> JobContext {
        let completed = Mutex::new(job.steps.clone());
        JobContext {
            client,
            stepper,
            job,
            completed,
        }
    }

    pub fn id(&self) -> uuid::Uuid {
        self.job.id
    }

    pub fn queue(&self) -> &str {
        &self.job.queue
    }

    /// 1 for the first attempt.
    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }

    /// The version of the queue's payload schema the payload passed.
    pub fn schema_version(&self) -> Option<u32> {
        self.job.schema_version
    }

    pub fn lease_token(&self) -> &str {
        &self.job.lease_token
    }

    /// The payload, decoded. A payload that does not decode is a fatal error.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_str(self.job.payload.get())
            .map_err(|e| JobError::fatal(format!("the payload does not decode: {e}")))
    }

    fn id_string(&self) -> String {
        self.job.id.to_string()
    }

    fn completed_output(&self, step: &str) -> Option<Box<RawValue>> {
        self.completed.lock().expect("not poisoned").get(step).cloned()
    }

    fn remember(&self, step: &str, output: Box<RawValue>) {
        self.completed
            .lock()
            .expect("not poisoned")
            .insert(step.to_owned(), output);
    }

    /// Runs a memoized step. If an earlier attempt checkpointed `name`, its
    /// output is returned and `run` is not called. Otherwise the step is
    /// marked started, `run` gets the step's key, and its result is
    /// checkpointed; if another checkpoint won, that stored output is returned.
    pub async fn step<T, F, Fut>(&self, name: &str, run: F) -> Result<T, JobError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(StepKey) -> Fut,
        Fut: Future<Output = Result<T, JobError>>,
    {
        if let Some(output) = self.completed_output(name) {
            return from_raw(&output);
        }
        let started = self.step_call(name, wire::StepAction::Start, None).await?;
        if let (wire::StepState::Completed, Some(output)) = (started.state, started.output) {
            self.remember(name, output.clone());
            return from_raw(&output);
        }
        let key = StepKey {
            key: started.idempotency_key,
            uncertain: self.job.uncertain_steps.get(name).cloned(),
        };
        let value = run(key).await?;
        let stored = self
            .step_call(name, wire::StepAction::Checkpoint, Some(to_raw(&value)?))
            .await?;
        let output = stored.output.unwrap_or(to_raw(&serde_json::Value::Null)?);
        self.remember(name, output.clone());
        from_raw(&output)
    }

    /// Starts or checkpoints step `name`, batched with other running jobs'.
    async fn step_call(
        &self,
        name: &str,
        action: wire::StepAction,
        output: Option<Box<RawValue>>,
    ) -> Result<wire::StepInfo, JobError> {
        let (done, answer) = oneshot::channel();
        let pending = PendingStep {
            operation: wire::StepOperation {
                id: self.job.id,
                lease_token: self.job.lease_token.clone(),
                step: name.to_owned(),
                action,
                output,
                traceparent: self.client.traceparent().map(str::to_owned),
            },
            client: self.client.clone(),
            done,
        };
        self.stepper.push(pending).await.map_err(JobError::retryable)?;
        match answer.await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(JobError::retryable("the worker is stopping")),
        }
    }

    async fn wait(&self, step: String, request: wire::WaitRequest) -> Result<Box<RawValue>, JobError> {
        if let Some(output) = self.completed_output(&step) {
            return Ok(output);
        }
        let response = self.client.wait(&self.id_string(), &request).await?;
        match response.step.and_then(|s| s.output) {
            Some(output) if !response.suspended => {
                self.remember(&step, output.clone());
                Ok(output)
            }
            _ => Err(JobError::Suspended),
        }
    }

    /// A durable sleep. The first time, the job is parked (the handler gets
    /// [`JobError::Suspended`]: propagate it with `?`) and resumes in a new
    /// attempt once `duration` has passed; then this returns at once.
    pub async fn sleep(&self, name: &str, duration: Duration) -> Result<(), JobError> {
        let step = format!("sleep:{name}");
        let request = wire::WaitRequest {
            lease_token: self.lease_token().to_owned(),
            step: step.clone(),
            sleep_ms: Some(duration.as_millis() as u64),
            until: None,
            signal: None,
            timeout_secs: None,
        };
        self.wait(step, request).await.map(|_| ())
    }

    /// Waits for the signal `name` (a human approval, an external event),
    /// parking the job meanwhile. Returns the signal's payload, or `None` when
    /// `timeout` passed first.
    pub async fn wait_for_signal<T: DeserializeOwned>(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<T>, JobError> {
        let step = format!("signal:{name}");
        let request = wire::WaitRequest {
            lease_token: self.lease_token().to_owned(),
            step: step.clone(),
            sleep_ms: None,
            until: None,
            signal: Some(name.to_owned()),
            timeout_secs: timeout.map(|t| t.as_secs().max(1)),
        };
        #[derive(serde::Deserialize)]
        struct Outcome {
            outcome: String,
            payload: Option<Box<RawValue>>,
        }
        let outcome: Outcome = from_raw(&self.wait(step, request).await?)?;
        match (outcome.outcome.as_str(), outcome.payload) {
            ("signal", Some(payload)) => Ok(Some(from_raw(&payload)?)),
            _ => Ok(None),
        }
    }

    /// Enqueues a child job from step `step`, once: every attempt gets the same child.
    pub async fn spawn(&self, step: &str, job: wire::EnqueueRequest) -> Result<wire::Job, JobError> {
        let request = wire::SpawnRequest {
            lease_token: self.lease_token().to_owned(),
            step: step.to_owned(),
            job,
        };
        Ok(self.client.spawn_child(&self.id_string(), &request).await?)
    }
}
