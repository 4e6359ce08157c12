//! The nouns: jobs, their states, leases and attempts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use uuid::Uuid;

use crate::{FlowKey, IdempotencyKey, KeyId, QueueName, ResourceName, SignalName, StepName, Timestamp, WorkerId};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A job's id: a UUIDv7 chosen by the engine at enqueue.
    JobId
);
uuid_id!(
    /// A tenant's id. Every job, key and record belongs to exactly one.
    TenantId
);

/// Where a job is in its life. These six names are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its `run_at` (first run, or the backoff before a retry).
    Scheduled,
    /// Ready to be leased.
    Queued,
    /// Leased by a worker; exactly then does the job have a [`Lease`].
    Running,
    /// Parked by its workflow until a time or a signal; exactly then does the
    /// job have a [`Wait`]. Holds no lease and costs no worker.
    Waiting,
    Succeeded,
    /// Out of attempts, or failed with `retryable: false`. History is kept.
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Waiting,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Waiting => "waiting",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Finished for good unless an operator retries it.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead | JobState::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// The right to run one attempt of a job, held by one worker until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Names the attempt; every call acting on the lease must present it.
    pub token: String,
    pub worker_id: WorkerId,
    /// The API key that took the lease (workers may read the jobs they leased).
    pub key_id: KeyId,
    pub started_at: Timestamp,
    /// When the lease lapses unless a heartbeat extends it.
    pub expires_at: Timestamp,
    /// The attempt's hard deadline (`timeout_secs` after it started); heartbeats never pass it.
    pub deadline: Timestamp,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    /// The worker stopped heartbeating (crashed, paused, partitioned).
    LeaseExpired,
    /// The attempt ran past its deadline (`timeout_secs`).
    TimedOut,
    /// An operator cancelled the job while this attempt ran.
    Cancelled,
    /// The workflow parked the job to wait for a time or a signal. Not a
    /// failure: it does not count against `max_attempts`.
    Suspended,
    /// The worker handed the job back unfinished (it was shutting down).
    /// Not a failure: it does not count against `max_attempts`.
    Released,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 7] = [
        AttemptOutcome::Succeeded,
        AttemptOutcome::Failed,
        AttemptOutcome::LeaseExpired,
        AttemptOutcome::TimedOut,
        AttemptOutcome::Cancelled,
        AttemptOutcome::Suspended,
        AttemptOutcome::Released,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::LeaseExpired => "lease_expired",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Suspended => "suspended",
            AttemptOutcome::Released => "released",
        }
    }
}

impl FromStr for AttemptOutcome {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttemptOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// What a worker (or the engine, for expiries) said went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub message: String,
    pub kind: Option<String>,
}

/// One finished attempt, as kept in the job's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based, never reused within a job.
    pub number: u32,
    pub worker_id: WorkerId,
    pub key_id: KeyId,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub outcome: AttemptOutcome,
    pub error: Option<AttemptError>,
}

/// What a waiting job waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// A durable timer: wake at this time.
    Until(Timestamp),
    /// A named signal, or the deadline, whichever comes first.
    Signal {
        name: SignalName,
        deadline: Option<Timestamp>,
    },
}

/// A parked workflow: the step that waits, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub step: StepName,
    pub wait_for: WaitFor,
}

impl Wait {
    /// When the duties must wake the job if nothing else does.
    pub fn deadline(&self) -> Option<Timestamp> {
        match &self.wait_for {
            WaitFor::Until(at) => Some(*at),
            WaitFor::Signal { deadline, .. } => *deadline,
        }
    }
}

/// The job and step that enqueued a child job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLink {
    pub job_id: JobId,
    pub step: StepName,
}

/// A job as the core sees it: everything a transition needs, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub queue: QueueName,
    /// The producer's JSON payload, kept as text: the core never looks inside.
    pub payload: String,
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Not before this time (also the end of a retry's backoff).
    pub run_at: Timestamp,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts that do not count against `max_attempts`: those before an
    /// operator's retry (which grants a fresh budget), and those that ended
    /// by suspending the workflow.
    pub uncounted_attempts: u32,
    pub max_attempts: u32,
    /// Each attempt's deadline, measured from its start.
    pub timeout: Duration,
    pub idempotency_key: Option<IdempotencyKey>,
    /// What the queue's per-key flow rules count this job under.
    pub flow_key: Option<FlowKey>,
    /// The downstream this job calls, whose limits and breaker hold it.
    pub resource: Option<ResourceName>,
    /// At most one unfinished job of the queue has this key.
    pub singleton_key: Option<FlowKey>,
    /// Present exactly while `state` is `Running`.
    /// The version of the queue's payload schema the payload was validated
    /// against; `None` when the queue had none.
    pub schema_version: Option<u32>,
    pub lease: Option<Lease>,
    /// Present exactly while `state` is `Waiting`.
    pub wait: Option<Wait>,
    /// Set when a workflow step enqueued this job.
    pub parent: Option<ParentLink>,
    /// Set when an operator made this job as a replay of another.
    pub replay_of: Option<JobId>,
    /// The W3C trace context of the enqueue, continued by every attempt.
    pub traceparent: Option<String>,
    pub output: Option<String>,
    pub last_error: Option<AttemptError>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Present exactly while `state` is terminal.
    pub finished_at: Option<Timestamp>,
}

impl Job {
    /// Attempts left in the current budget.
    pub fn attempts_left(&self) -> u32 {
        self.max_attempts.saturating_sub(self.attempt - self.uncounted_attempts)
    }

    /// The attempt that is running now, as it will appear in history once it ends.
    pub fn running_attempt(&self) -> Option<(u32, &Lease)> {
        self.lease.as_ref().map(|lease| (self.attempt, lease))
    }

    /// Checks the invariants every stored job satisfies. Storage calls this in
    /// debug builds and the property tests call it after every transition.
    pub fn check_invariants(&self) -> Result<(), String> {
        if (self.state == JobState::Running) != self.lease.is_some() {
            return Err(format!("state {} with lease {:?}", self.state, self.lease.is_some()));
        }
        if (self.state == JobState::Waiting) != self.wait.is_some() {
            return Err(format!("state {} with wait {:?}", self.state, self.wait.is_some()));
        }
        if self.state.is_terminal() != self.finished_at.is_some() {
            return Err(format!("state {} with finished_at {:?}", self.state, self.finished_at));
        }
        if self.attempt < self.uncounted_attempts {
            return Err("attempt below budget start".into());
        }
        if self.attempt - self.uncounted_attempts > self.max_attempts {
            return Err(format!(
                "{} attempts in a budget of {}",
                self.attempt - self.uncounted_attempts,
                self.max_attempts
            ));
        }
        if self.state == JobState::Succeeded && self.output.is_none() {
            return Err("succeeded without output".into());
        }
        if let Some(lease) = &self.lease
            && lease.expires_at > lease.deadline
        {
            return Err("lease outlives the attempt deadline".into());
        }
        Ok(())
    }
}
