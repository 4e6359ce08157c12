use std::sync::Arc;

use async_trait::async_trait;
use steadfast_core::{Attempt, Job, JobState, QueueName, RetryPolicy, TenantId, Timestamp};

use crate::StoreError;

/// What a background sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Jobs changed.
    pub count: usize,
    /// Queues that gained ready jobs, so long-polling workers can be woken.
    pub ready_queues: Vec<(TenantId, QueueName)>,
    /// The sweep stopped at its limit; more may be due.
    pub more: bool,
    /// Attempts the sweep ended (lease expiries), with their jobs after it.
    pub ended: Vec<(Job, Attempt)>,
}

/// Unfinished jobs of one queue in one state, across tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStat {
    pub queue: QueueName,
    pub state: JobState,
    pub count: u64,
    /// The earliest `run_at` among them.
    pub oldest_run_at: Option<Timestamp>,
}

/// Called when jobs became ready in a queue, on any node.
pub type ReadyCallback = Arc<dyn Fn(TenantId, QueueName) + Send + Sync>;

/// Background duties across all tenants. Only the engine's own timers call
/// these; no request reaches them.
#[async_trait]
pub trait Maintenance {
    /// Moves scheduled jobs whose `run_at` has come to `queued`, and wakes
    /// waiting jobs whose sleep ended or whose signal wait timed out.
    async fn fire_timers(&self, now: Timestamp, limit: usize) -> Result<Swept, StoreError>;

    /// Ends attempts whose lease lapsed and sends their jobs through the retry policy.
    async fn expire_leases(
        &self,
        now: Timestamp,
        policy: RetryPolicy,
        jitter_seed: u64,
        limit: usize,
    ) -> Result<Swept, StoreError>;

    /// Forgets idempotency keys whose dedup window has passed.
    async fn prune_idempotency_keys(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError>;

    /// The earliest time a sweep would find work: the next `run_at` of a
    /// scheduled job, wait deadline, or lease expiry.
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Links audit records that wait to join their chain (up to `limit` per
    /// chain) and returns how many it linked. Stores that link records as
    /// they append (the embedded store's single writer) have nothing to do;
    /// audit reads link what waits in their own chain first either way, so
    /// this only keeps the wait short.
    async fn chain_audit(&self, limit: usize) -> Result<usize, StoreError>;

    /// Brings the query planner's statistics up to date for the tables that
    /// changed much since they were last taken, and returns how many tables
    /// it visited. A store whose queries do not plan from collected
    /// statistics (the embedded store) has nothing to do.
    async fn refresh_statistics(&self) -> Result<usize, StoreError>;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Counts of unfinished jobs by queue and state, across tenants (for metrics).
    async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError>;

    /// Forgets up to `limit` per-key rate limiter states whose arrival time
    /// passed (they hold nothing back any more); how many it removed.
    async fn prune_flow_keys(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError>;

    /// The tenants with a queue policy or a resource (for the flow
    /// control gauges), at most `limit`.
    async fn flow_tenants(&self, limit: usize) -> Result<Vec<TenantId>, StoreError>;

    /// Calls `on_ready` whenever a node (this or another) makes jobs ready in
    /// a queue, so long-polling workers anywhere wake promptly. A single-node
    /// backend needs nothing: the engine wakes its own waiters after each commit.
    fn subscribe_ready(&self, on_ready: ReadyCallback) {
        let _ = on_ready;
    }
}
