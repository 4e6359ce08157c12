//! What each tenant may hold and how fast it may go: tenants' own limits
//! (cached, refreshed every few seconds, so a change reaches every node
//! within [`REFRESH_EVERY`]), the cap on unfinished jobs, and the pruning
//! of finished jobs past their retention.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use steadfast_core::{QueueName, TenantId};
use steadfast_store::{QueueRetention, Retention, StoreError, TenantLimits, decide};

use super::Engine;
use super::rate_limits::Rate;

/// How often tenants' own limits and unfinished counts are read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How often finished jobs past their retention are pruned.
pub const PRUNE_JOBS_EVERY: Duration = Duration::from_secs(60);
/// Jobs removed per transaction: short enough never to hold the writer
/// (or a PostgreSQL connection) long.
const PRUNE_BATCH: usize = 500;
/// Batches per queue per pass, so one huge backlog does not starve the others.
const PRUNE_BATCHES_PER_QUEUE: usize = 20;

/// What a tenant holds and may hold: the server's defaults, with each
/// tenant's own limits over them.
#[derive(Debug, Clone, Copy)]
pub struct TenantDefaults {
    pub retention: Retention,
    pub max_unfinished_jobs: u64,
}

impl Default for TenantDefaults {
    fn default() -> Self {
        TenantDefaults {
            retention: Retention::default(),
            max_unfinished_jobs: 1_000_000,
        }
    }
}

/// Unfinished jobs of a tenant: as last counted, plus what this node
/// created since.
#[derive(Debug, Default, Clone, Copy)]
struct Unfinished {
    counted: u64,
    created_since: u64,
}

#[derive(Debug, Default)]
pub(super) struct TenantState {
    own_limits: RwLock<HashMap<TenantId, TenantLimits>>,
    unfinished: Mutex<HashMap<TenantId, Unfinished>>,
}

impl Engine {
    /// The rate each of the tenant's keys may make requests at.
    pub(super) fn key_rate(&self, tenant: TenantId) -> Rate {
        let own = self.own_limits(tenant).key_rate;
        own.and_then(|(rate, burst)| Rate::new(rate, burst))
            .unwrap_or(self.inner.config.abuse.key_rate)
    }

    fn own_limits(&self, tenant: TenantId) -> TenantLimits {
        let limits = self.inner.tenants.own_limits.read().expect("never poisoned");
        limits.get(&tenant).copied().unwrap_or_default()
    }

    /// The most unfinished jobs the tenant may hold.
    pub fn max_unfinished_jobs(&self, tenant: TenantId) -> u64 {
        self.own_limits(tenant)
            .max_unfinished_jobs
            .unwrap_or(self.inner.config.tenants.max_unfinished_jobs)
    }

    /// Refuses `adding` more jobs if the tenant would hold more unfinished
    /// jobs than it may. The count is the last one taken (at most
    /// [`REFRESH_EVERY`] old) plus what this node created since: exact on
    /// one node, and on PostgreSQL over by at most what other nodes created
    /// since the last count.
    pub(super) fn check_quota(&self, tenant: TenantId, adding: usize) -> Result<(), StoreError> {
        let limit = self.max_unfinished_jobs(tenant);
        let unfinished = self.inner.tenants.unfinished.lock().expect("never poisoned");
        let held = unfinished.get(&tenant).map_or(0, |n| n.counted + n.created_since);
        if held.saturating_add(adding as u64) > limit {
            return Err(StoreError::QuotaExceeded { limit });
        }
        Ok(())
    }

    pub(super) fn count_created(&self, tenant: TenantId, created: usize) {
        let mut unfinished = self.inner.tenants.unfinished.lock().expect("never poisoned");
        unfinished.entry(tenant).or_default().created_since += created as u64;
    }

    /// Reads tenants' own limits and unfinished counts again.
    pub async fn refresh_tenant_state(&self) -> Result<(), StoreError> {
        let limits = self.store().tenant_limits().await?;
        *self.inner.tenants.own_limits.write().expect("never poisoned") = limits.into_iter().collect();
        let counts = self.store().unfinished_counts().await?;
        *self.inner.tenants.unfinished.lock().expect("never poisoned") = counts
            .into_iter()
            .map(|(tenant, counted)| {
                let fresh = Unfinished {
                    counted,
                    created_since: 0,
                };
                (tenant, fresh)
            })
            .collect();
        Ok(())
    }

    /// Prunes every queue's finished jobs past their retention, in bounded
    /// batches; how many jobs it removed.
    pub async fn prune_finished_jobs(&self) -> Result<usize, StoreError> {
        let own: HashMap<(TenantId, QueueName), QueueRetention> = self
            .store()
            .queue_retentions()
            .await?
            .into_iter()
            .map(|(tenant, queue, retention)| ((tenant, queue), retention))
            .collect();
        let defaults = self.inner.config.tenants.retention;
        let mut removed = 0;
        for (tenant, queue) in self.store().job_queues().await? {
            let retention = own.get(&(tenant, queue.clone())).copied().unwrap_or_default();
            let cutoffs = decide::prune_cutoffs(defaults, retention, self.now());
            for _ in 0..PRUNE_BATCHES_PER_QUEUE {
                let batch = self
                    .store()
                    .prune_jobs(tenant, &queue, cutoffs, PRUNE_BATCH, self.now())
                    .await?;
                removed += batch;
                if batch < PRUNE_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }
}
