//! What the dashboard reads that the API does not: a tenant's queues at a
//! glance, what needs someone's attention, and dead jobs grouped by why.
//! Every read here is bounded (a limit, or the number of queues) and
//! served by an index, so a page costs the same with a million jobs.

use std::time::Duration;

use async_trait::async_trait;
use steadfast_core::{AttemptOutcome, Job, JobId, JobState, QueueName, StepName, Timestamp, WorkerId};

use crate::{StoreError, TenantScope};

/// One queue at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    pub queue: QueueName,
    /// Unfinished jobs by state; states without jobs are left out.
    pub unfinished: Vec<(JobState, u64)>,
    /// The earliest `run_at` among its queued jobs: how long the oldest
    /// ready job has waited.
    pub oldest_queued: Option<Timestamp>,
    /// Jobs that finished since the summary's `since`, by end state.
    pub finished: Vec<(JobState, u64)>,
}

impl QueueSummary {
    pub fn unfinished(&self, state: JobState) -> u64 {
        count_of(&self.unfinished, state)
    }

    pub fn finished(&self, state: JobState) -> u64 {
        count_of(&self.finished, state)
    }
}

/// Unfinished jobs of a queue in a state, and the earliest `run_at` among them.
pub type UnfinishedRow = (QueueName, JobState, u64, Option<Timestamp>);
/// Jobs of a queue that finished in a state since the summary's `since`.
pub type FinishedRow = (QueueName, JobState, u64);

/// The summaries of every queue in `unfinished` or `finished` (grouped
/// counts, as both backends read them), by name, at most
/// [`MAX_SUMMARY_QUEUES`].
pub fn summaries(unfinished: Vec<UnfinishedRow>, finished: Vec<FinishedRow>) -> Vec<QueueSummary> {
    let mut names: Vec<QueueName> = unfinished
        .iter()
        .map(|(q, ..)| q.clone())
        .chain(finished.iter().map(|(q, ..)| q.clone()))
        .collect();
    names.sort();
    names.dedup();
    names.truncate(MAX_SUMMARY_QUEUES);
    names
        .into_iter()
        .map(|name| {
            let mine = unfinished.iter().filter(|(q, ..)| *q == name);
            QueueSummary {
                oldest_queued: mine
                    .clone()
                    .find(|(_, s, ..)| *s == JobState::Queued)
                    .and_then(|(.., o)| *o),
                unfinished: mine.map(|(_, s, n, _)| (*s, *n)).collect(),
                finished: finished
                    .iter()
                    .filter(|(q, ..)| *q == name)
                    .map(|(_, s, n)| (*s, *n))
                    .collect(),
                queue: name,
            }
        })
        .collect()
}

fn count_of(counts: &[(JobState, u64)], state: JobState) -> u64 {
    counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n)
}

/// A step started by an attempt that ended before its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncertainStepRow {
    pub job_id: JobId,
    pub queue: QueueName,
    pub job_state: JobState,
    pub step: StepName,
    /// The attempt that started it.
    pub attempt: u32,
    pub started_at: Timestamp,
}

/// An attempt Steadfast ended because its worker stopped answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapsedAttempt {
    pub job_id: JobId,
    pub queue: QueueName,
    pub attempt: u32,
    pub worker_id: WorkerId,
    pub ended_at: Timestamp,
    /// `lease_expired` or `timed_out`.
    pub outcome: AttemptOutcome,
}

/// What needs someone, newest first, at most `limit` of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attention {
    pub dead: Vec<Job>,
    pub uncertain_steps: Vec<UncertainStepRow>,
    /// Jobs parked until a signal arrives (approvals and the like).
    pub awaiting_signals: Vec<Job>,
    /// Attempts that lapsed since `since`.
    pub lapsed: Vec<LapsedAttempt>,
}

/// Dead jobs that failed with one kind of error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadGroup {
    /// `None`: the worker gave no kind.
    pub kind: Option<String>,
    pub count: u64,
    /// When the latest of them died.
    pub latest: Timestamp,
}

/// The most queues the overview lists, and dead-letter groups it shows.
pub const MAX_SUMMARY_QUEUES: usize = 1000;
pub const MAX_DEAD_GROUPS: usize = 200;

/// Every read takes a `time_limit`: a read still running then is stopped
/// and fails `Unavailable` (a statement timeout), so a slow page never
/// holds the database.
#[async_trait]
pub trait DashboardStore {
    /// Every queue that has unfinished jobs or finished some since `since`
    /// (at most [`MAX_SUMMARY_QUEUES`], by name).
    async fn queue_summaries(
        &self,
        scope: &TenantScope,
        since: Timestamp,
        time_limit: Duration,
    ) -> Result<Vec<QueueSummary>, StoreError>;

    /// What needs attention: at most `limit` of each kind, newest first.
    async fn attention(
        &self,
        scope: &TenantScope,
        since: Timestamp,
        limit: u32,
        time_limit: Duration,
    ) -> Result<Attention, StoreError>;

    /// Dead jobs grouped by error kind, the largest groups first (at most
    /// [`MAX_DEAD_GROUPS`]).
    async fn dead_groups(&self, scope: &TenantScope, time_limit: Duration) -> Result<Vec<DeadGroup>, StoreError>;
}
