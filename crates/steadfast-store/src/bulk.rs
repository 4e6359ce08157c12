//! Bulk operations: retry or cancel every job a filter matches, not one
//! page. An operation is a stored object (who, when, the filter, the
//! reason, and what succeeded and what failed) that the engine works
//! through in bounded batches in the background; each batch is one
//! transaction that moves the jobs, audits each with the operation's id
//! and reason, and advances the operation's cursor, so a restart resumes
//! where the last committed batch ended and no job is acted on twice.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use steadfast_core::{JobState, Reason, TenantId, Timestamp};

use crate::{StoreError, TenantScope};

/// What a bulk operation does to each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Dead or cancelled jobs go back to the queue.
    Retry,
    /// Unfinished jobs are cancelled.
    Cancel,
}

impl BulkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Cancel => "cancel",
        }
    }

    /// The states of the jobs it applies to.
    pub fn states(self) -> &'static [JobState] {
        match self {
            BulkAction::Retry => &[JobState::Cancelled, JobState::Dead],
            BulkAction::Cancel => &[
                JobState::Queued,
                JobState::Running,
                JobState::Scheduled,
                JobState::Waiting,
            ],
        }
    }
}

/// Which jobs: every field optional, all must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// One of the action's states; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
}

impl BulkFilter {
    /// The states a job must be in: the filter's, if the action applies to
    /// it, else all the action's.
    pub fn states(&self, action: BulkAction) -> Vec<JobState> {
        action
            .states()
            .iter()
            .copied()
            .filter(|s| self.state.as_deref().is_none_or(|wanted| wanted == s.as_str()))
            .collect()
    }
}

/// A value a condition compares a column with: text, or a time as the
/// Unix milliseconds both backends store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionValue {
    Text(String),
    Millis(i64),
}

/// One condition a matching job meets: `column op value`. Both backends
/// render the same list, each in its own placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub column: &'static str,
    pub op: &'static str,
    pub value: ConditionValue,
}

impl BulkFilter {
    /// What a job of the right tenant and state must also meet for
    /// `action`, in an operation started at `started`.
    pub fn conditions(&self, action: BulkAction, started: Timestamp) -> Vec<Condition> {
        let condition = |column, op, value| Condition { column, op, value };
        let millis = |at: Timestamp| ConditionValue::Millis(at.as_millisecond());
        let mut conditions = Vec::new();
        if action == BulkAction::Retry {
            // Finished jobs change only by an operator's hand: one retried
            // (by anyone) after the start is left to whoever retried it.
            conditions.push(condition("updated_at", "<=", millis(started)));
        }
        if let Some(queue) = &self.queue {
            conditions.push(condition("queue", "=", ConditionValue::Text(queue.clone())));
        }
        if let Some(kind) = &self.error_kind {
            conditions.push(condition("last_error_kind", "=", ConditionValue::Text(kind.clone())));
        }
        if let Some(at) = self.created_after {
            conditions.push(condition("created_at", ">=", millis(at)));
        }
        if let Some(at) = self.created_before {
            conditions.push(condition("created_at", "<", millis(at)));
        }
        conditions
    }
}

/// What an operation was asked to do, by whom; fixed once started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkSpec {
    pub action: BulkAction,
    pub filter: BulkFilter,
    pub reason: String,
    /// The key that started it (recorded as the actor of every change).
    pub key_id: String,
    pub key_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkStatus {
    Running,
    /// Every matching job was acted on (some may have failed).
    Completed,
    /// Stopped by `POST /v1/bulk/{id}/cancel`; what was done stays done.
    Cancelled,
}

impl BulkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkStatus::Running => "running",
            BulkStatus::Completed => "completed",
            BulkStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<BulkStatus> {
        [BulkStatus::Running, BulkStatus::Completed, BulkStatus::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A job the operation could not act on, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkFailure {
    pub job_id: String,
    pub error: String,
}

/// The most failures an operation keeps (the count goes on).
pub const MAX_KEPT_FAILURES: usize = 100;
/// The most operations a tenant may run at once.
pub const MAX_RUNNING_PER_TENANT: u64 = 10;
/// The most operations a tenant keeps; starting one more forgets the oldest finished.
pub const MAX_KEPT_PER_TENANT: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkOperation {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub spec: BulkSpec,
    pub status: BulkStatus,
    /// Jobs the filter matched when it started.
    pub matched: u64,
    pub done: u64,
    pub failed: u64,
    /// The first [`MAX_KEPT_FAILURES`] failures.
    pub failures: Vec<BulkFailure>,
    /// Jobs created after the operation started (a higher seq) are left alone.
    pub through_seq: i64,
    /// The walk visits jobs in `seq` order, each once: every matching job
    /// up to this one has been visited. A job's `seq` never changes, so a
    /// job that moves between matching states is still ahead of the cursor
    /// or already behind it, never skipped.
    pub cursor_seq: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

impl BulkOperation {
    /// The reason it was started with (checked then, so stored data that
    /// fails the check is corrupt).
    pub fn reason(&self) -> Result<Reason, StoreError> {
        Reason::new(&self.spec.reason).map_err(|e| StoreError::Corrupt(format!("bulk operation {}: {e}", self.id)))
    }
}

/// One step's result: the operation afterwards, and the queues that gained
/// ready jobs (their waiting workers are woken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkStepped {
    pub operation: BulkOperation,
    pub ready: Vec<steadfast_core::QueueName>,
}

/// A new operation, before its jobs are counted.
#[derive(Debug, Clone)]
pub struct NewBulk {
    pub id: uuid::Uuid,
    pub spec: BulkSpec,
}

#[async_trait]
pub trait BulkStore {
    /// How many jobs `filter` matches for `action` now: a dry run's
    /// answer, stopped after `time_limit` when one is given.
    async fn count_bulk(
        &self,
        scope: &TenantScope,
        action: BulkAction,
        filter: &BulkFilter,
        time_limit: Option<std::time::Duration>,
    ) -> Result<u64, StoreError>;

    /// Counts the matching jobs and records the operation, `running`
    /// (audited `bulk.started`). `LimitExceeded` when the tenant already
    /// runs [`MAX_RUNNING_PER_TENANT`].
    async fn start_bulk(&self, scope: &TenantScope, new: NewBulk, now: Timestamp) -> Result<BulkOperation, StoreError>;

    async fn bulk(&self, scope: &TenantScope, id: uuid::Uuid) -> Result<Option<BulkOperation>, StoreError>;

    /// The tenant's operations, newest first.
    async fn list_bulk(&self, scope: &TenantScope, limit: u32) -> Result<Vec<BulkOperation>, StoreError>;

    /// Stops a running operation (audited `bulk.cancelled`); what it did
    /// stays done. A finished one is answered as it is.
    async fn cancel_bulk(
        &self,
        scope: &TenantScope,
        id: uuid::Uuid,
        now: Timestamp,
    ) -> Result<BulkOperation, StoreError>;

    /// Acts on the operation's next `batch` jobs in one transaction, as
    /// [`crate::decide::bulk_step`] decides; the operation afterwards.
    async fn step_bulk(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
        batch: u32,
        now: Timestamp,
    ) -> Result<BulkStepped, StoreError>;

    /// Running operations across tenants, oldest first (for the engine's duty).
    async fn running_bulk(&self, limit: u32) -> Result<Vec<(TenantId, uuid::Uuid)>, StoreError>;
}
