//! Workflow steps and signals: the nouns. Their transitions live in
//! `lifecycle::steps`, `lifecycle::wait` and `lifecycle::signal`.

use crate::{Job, JobId, JobState, SignalName, StepName, Timestamp};

/// A step's stored record. At most one per (job, step name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: StepName,
    /// The attempt that last started the step, or that completed it.
    pub attempt: u32,
    pub started_at: Timestamp,
    /// Present once the step is checkpointed; then the step never changes.
    pub completed_at: Option<Timestamp>,
    /// JSON text; present exactly when completed.
    pub output: Option<String>,
}

/// What is known about a step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Checkpointed: its output is final and is replayed to every later attempt.
    Completed,
    /// Marked started by the attempt that is running now.
    Started,
    /// Marked started by an attempt that ended before the checkpoint: its side
    /// effect may or may not have happened. The next attempt must reconcile.
    Uncertain,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Completed => "completed",
            StepState::Started => "started",
            StepState::Uncertain => "uncertain",
        }
    }
}

impl Step {
    pub fn is_completed(&self) -> bool {
        self.completed_at.is_some()
    }

    /// The step's state as seen from `job` now.
    pub fn state(&self, job: &Job) -> StepState {
        if self.is_completed() {
            StepState::Completed
        } else if job.state == JobState::Running && job.attempt == self.attempt {
            StepState::Started
        } else {
            StepState::Uncertain
        }
    }
}

/// The idempotency key of a step's side effect: the same in every attempt of
/// the job, different for every step. Hand it to downstream APIs that honour
/// idempotency keys (a payment provider's `Idempotency-Key`).
pub fn step_key(job: JobId, step: &StepName) -> String {
    format!("{job}/{step}")
}

/// A signal delivered to a job; a wait for its name consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub name: SignalName,
    /// JSON text.
    pub payload: String,
    pub received_at: Timestamp,
}
