//! Bounds on what a tenant keeps: how long finished jobs stay (retention,
//! per queue where set) and how many unfinished jobs a tenant may hold
//! (quota), with the per-tenant request rate beside them.

use std::time::Duration;

use async_trait::async_trait;
use steadfast_core::{QueueName, TenantId, Timestamp};

use crate::{StoreError, TenantScope};

/// How long finished jobs are kept, by how they finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub succeeded: Duration,
    /// Dead and cancelled jobs.
    pub failed: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            succeeded: Duration::from_secs(7 * 86_400),
            failed: Duration::from_secs(30 * 86_400),
        }
    }
}

/// A queue's own retention, where set (`None`: the server's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueRetention {
    pub succeeded: Option<Duration>,
    pub failed: Option<Duration>,
}

impl QueueRetention {
    /// How both backends store it: milliseconds, NULL for the default.
    pub fn columns(self) -> (Option<i64>, Option<i64>) {
        let ms = |kept: Option<Duration>| kept.map(|kept| kept.as_millis() as i64);
        (ms(self.succeeded), ms(self.failed))
    }

    /// The inverse of [`QueueRetention::columns`].
    pub fn from_columns(succeeded_ms: Option<i64>, failed_ms: Option<i64>) -> QueueRetention {
        let kept = |ms: Option<i64>| ms.map(|ms| Duration::from_millis(ms.max(0) as u64));
        QueueRetention {
            succeeded: kept(succeeded_ms),
            failed: kept(failed_ms),
        }
    }
}

/// Finished jobs older than these are pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneCutoffs {
    pub succeeded_before: Timestamp,
    pub failed_before: Timestamp,
}

/// A tenant's own limits, where set (`None`: the server's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantLimits {
    /// Requests per second per key, and the burst.
    pub key_rate: Option<(u32, u32)>,
    pub max_unfinished_jobs: Option<u64>,
}

#[async_trait]
pub trait LimitStore {
    /// Sets a tenant's own limits (a local operator action, audited in the
    /// tenant's chain). `NotFound` for an unknown tenant.
    async fn set_tenant_limits(&self, tenant: TenantId, limits: TenantLimits, now: Timestamp)
    -> Result<(), StoreError>;

    /// Every tenant that has limits of its own (for the engine's cache).
    async fn tenant_limits(&self) -> Result<Vec<(TenantId, TenantLimits)>, StoreError>;

    /// Sets a queue's own retention (audited).
    async fn set_queue_retention(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        retention: QueueRetention,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// A queue's own retention (all `None` when it has none).
    async fn queue_retention(&self, scope: &TenantScope, queue: &QueueName) -> Result<QueueRetention, StoreError>;

    /// Every queue with a retention of its own, across tenants (for pruning).
    async fn queue_retentions(&self) -> Result<Vec<(TenantId, QueueName, QueueRetention)>, StoreError>;

    /// The (tenant, queue) pairs that hold jobs, across tenants: one index
    /// seek per pair, not a scan of the jobs.
    async fn job_queues(&self) -> Result<Vec<(TenantId, QueueName)>, StoreError>;

    /// Removes up to `limit` of the queue's finished jobs that finished
    /// before their cutoff, with their attempts, steps, signals and
    /// idempotency key, in one short transaction with one audit record
    /// (`jobs.pruned`). Kept whatever their age: a child whose parent is
    /// still there, and a job whose idempotency key is live at `now`.
    /// Returns how many jobs it removed.
    async fn prune_jobs(
        &self,
        tenant: TenantId,
        queue: &QueueName,
        cutoffs: PruneCutoffs,
        limit: usize,
        now: Timestamp,
    ) -> Result<usize, StoreError>;

    /// Unfinished jobs (scheduled, queued, running, waiting) per tenant that has any.
    async fn unfinished_counts(&self) -> Result<Vec<(TenantId, u64)>, StoreError>;
}
