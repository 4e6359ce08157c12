use std::time::Duration;

use async_trait::async_trait;
use steadfast_core::lifecycle::{Failure, JobSpec};
use steadfast_core::{
    Attempt, Job, JobId, JobState, KeyId, QueueName, Reason, RetryPolicy, Signal, Step, Timestamp, WorkerId,
};

use crate::{StoreError, TenantScope};

/// A job to create; the engine chose its id.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub spec: JobSpec,
}

/// The result of enqueueing one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub job: Job,
    /// The idempotency key matched an earlier request: `job` is that request's job.
    pub replayed: bool,
    /// The singleton key had an unfinished job: `job` is that job, skipped
    /// to or given the new payload.
    pub singleton: Option<SingletonOutcome>,
}

/// What a singleton enqueue did with the key's unfinished job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingletonOutcome {
    Skipped,
    Replaced,
}

impl SingletonOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SingletonOutcome::Skipped => "skipped",
            SingletonOutcome::Replaced => "replaced",
        }
    }
}

impl Enqueued {
    /// An earlier request's job, answered again.
    pub fn replayed(job: Job) -> Enqueued {
        Enqueued {
            job,
            replayed: true,
            singleton: None,
        }
    }

    /// Whether this enqueue made a new job.
    pub fn created(&self) -> bool {
        !self.replayed && self.singleton.is_none()
    }
}

/// A job after a transition, and the attempt that transition ended (if any):
/// what metrics need to time attempts. Derefs to the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub job: Job,
    pub attempt: Option<Attempt>,
}

impl std::ops::Deref for Ended {
    type Target = Job;

    fn deref(&self) -> &Job {
        &self.job
    }
}

/// One item of [`JobStore::complete_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completing {
    pub id: JobId,
    pub token: String,
    /// JSON text.
    pub output: String,
}

/// A job with everything that happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub job: Job,
    /// Finished attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// Workflow steps, in the order they were first recorded.
    pub steps: Vec<Step>,
    /// Signals delivered to the job, oldest first.
    pub signals: Vec<SignalRecord>,
    /// Jobs its steps enqueued, oldest first.
    pub children: Vec<Job>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalRecord {
    pub signal: Signal,
    /// When a wait consumed it; pending until then.
    pub consumed_at: Option<Timestamp>,
}

/// A job just leased, with what its workflow needs to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedJob {
    pub job: Job,
    /// Every recorded step: completed ones are replayed, the others are uncertain.
    pub steps: Vec<Step>,
    /// The ended attempts that started the uncertain steps.
    pub uncertain_attempts: Vec<Attempt>,
}

impl JobRecord {
    /// Whether `key_id` ever held a lease on this job.
    pub fn was_leased_by(&self, key_id: &KeyId) -> bool {
        self.attempts.iter().any(|attempt| &attempt.key_id == key_id)
            || self.job.lease.as_ref().is_some_and(|lease| &lease.key_id == key_id)
    }
}

/// What a lease answers: the jobs it granted, in lease order, with what
/// flow control did besides. Derefs to the jobs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leased {
    pub jobs: Vec<LeasedJob>,
    /// Retries their queue's retry budget deferred, per queue.
    pub deferred: Vec<(QueueName, u32)>,
    /// When a rate limit that held jobs back next admits one.
    pub retry_at: Option<Timestamp>,
}

impl std::ops::Deref for Leased {
    type Target = Vec<LeasedJob>;

    fn deref(&self) -> &Vec<LeasedJob> {
        &self.jobs
    }
}

impl std::ops::DerefMut for Leased {
    fn deref_mut(&mut self) -> &mut Vec<LeasedJob> {
        &mut self.jobs
    }
}

impl IntoIterator for Leased {
    type Item = LeasedJob;
    type IntoIter = std::vec::IntoIter<LeasedJob>;

    fn into_iter(self) -> Self::IntoIter {
        self.jobs.into_iter()
    }
}

/// A position in a job listing (newest first). Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor(pub i64);

/// A page of one tenant's jobs, newest first, each filter optional.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub queue: Option<QueueName>,
    pub state: Option<JobState>,
    /// Only jobs whose last error has this kind.
    pub error_kind: Option<String>,
    /// Only jobs created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Only jobs created before this time.
    pub created_before: Option<Timestamp>,
    pub limit: u32,
    pub after: Option<JobCursor>,
    /// Stop the read after this long (`Unavailable`): the dashboard's
    /// statement timeout. `None`: the store's usual bounds.
    pub time_limit: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Present when more jobs may follow.
    pub next_cursor: Option<JobCursor>,
}

impl JobPage {
    /// A page from rows fetched newest first with one row more than
    /// `limit`: that extra row only says another page follows.
    pub fn from_rows(mut rows: Vec<(i64, Job)>, limit: u32) -> JobPage {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = rows.last().filter(|_| more).map(|(seq, _)| JobCursor(*seq));
        JobPage {
            jobs: rows.into_iter().map(|(_, job)| job).collect(),
            next_cursor,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub queues: Vec<QueueName>,
    pub max_jobs: u32,
    pub worker_id: WorkerId,
    pub key_id: KeyId,
    pub ttl: Duration,
    /// The random part of each lease token is derived from this.
    pub token_seed: u64,
}

/// The retry policy for a failure, with the seed its random backoff is drawn from.
#[derive(Debug, Clone, Copy)]
pub struct RetryPlan {
    pub policy: RetryPolicy,
    pub jitter_seed: u64,
}

impl LeaseRequest {
    /// The lease this request grants on `job`; the token's random part is
    /// derived from the request's seed and the job.
    pub fn grant(&self, job: &Job) -> steadfast_core::lifecycle::LeaseGrant {
        steadfast_core::lifecycle::LeaseGrant {
            worker_id: self.worker_id.clone(),
            key_id: self.key_id.clone(),
            ttl: self.ttl,
            token_random: steadfast_core::retry::jitter_sample(self.token_seed, job.id.0.as_bytes()),
        }
    }
}

/// Jobs, always within one tenant.
#[async_trait]
pub trait JobStore {
    /// Creates the jobs, all or none. A job whose idempotency key matches a
    /// live key of this tenant with the same fingerprint is not created again:
    /// its entry is the original job with `replayed`. A matching key with a
    /// different fingerprint fails the whole batch with `IdempotencyKeyReused`.
    /// Keys older than `dedup_window` no longer match.
    async fn enqueue(
        &self,
        scope: &TenantScope,
        jobs: Vec<NewJob>,
        dedup_window: Duration,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError>;

    async fn job(&self, scope: &TenantScope, id: JobId) -> Result<Option<JobRecord>, StoreError>;

    /// Newest first.
    async fn list_jobs(&self, scope: &TenantScope, query: JobQuery) -> Result<JobPage, StoreError>;

    /// Leases up to `max_jobs` queued jobs from `queues` that their
    /// queues' flow rules admit: highest priority first, then earliest
    /// `run_at`, then first enqueued (key by key, in turns, in a queue
    /// with per-key rules). Never blocks.
    async fn lease(&self, scope: &TenantScope, request: LeaseRequest, now: Timestamp) -> Result<Leased, StoreError>;

    async fn heartbeat(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Job, StoreError>;

    /// `output` is JSON text.
    async fn complete(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        output: String,
        now: Timestamp,
    ) -> Result<Ended, StoreError>;

    /// Completes several leased jobs in one transaction: one commit and one
    /// audit append for the batch. Each item succeeds or is rejected on its
    /// own (a lost lease rejects only that item; results are in `items`'
    /// order); the outer error means nothing in the batch changed.
    async fn complete_many(
        &self,
        scope: &TenantScope,
        items: Vec<Completing>,
        now: Timestamp,
    ) -> Result<Vec<Result<Ended, StoreError>>, StoreError>;

    async fn fail(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        failure: Failure,
        retry: RetryPlan,
        now: Timestamp,
    ) -> Result<Ended, StoreError>;

    /// The worker hands its job back unfinished: `queued` again at once,
    /// the attempt ended `released` and not spent.
    async fn release(&self, scope: &TenantScope, id: JobId, token: &str, now: Timestamp) -> Result<Ended, StoreError>;

    /// Operator action: a dead or cancelled job goes back to `queued`. The
    /// `reason`, when given, goes into the audit record.
    async fn retry(
        &self,
        scope: &TenantScope,
        id: JobId,
        reason: Option<&Reason>,
        now: Timestamp,
    ) -> Result<Job, StoreError>;

    /// Operator action: an unfinished job becomes `cancelled`.
    async fn cancel(
        &self,
        scope: &TenantScope,
        id: JobId,
        reason: Option<&Reason>,
        now: Timestamp,
    ) -> Result<Ended, StoreError>;

    /// Operator action: the new job `replay` runs job `id` again (with
    /// `payload`, or the original's), linked to it; the original does not
    /// change. See [`crate::decide::replay_job`].
    async fn replay(
        &self,
        scope: &TenantScope,
        id: JobId,
        replay: JobId,
        payload: Option<(String, Option<u32>)>,
        reason: &Reason,
        now: Timestamp,
    ) -> Result<Job, StoreError>;
}
