//! What each tenant may hold and how fast it may go: tenants' own limits
//! (cached, refreshed every few seconds, so a change reaches every node
//! within [`REFRESH_EVERY`]), the cap on unfinished jobs, and the pruning
//! of finished jobs past their retention.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use steadfast_core::{QueueName, TenantId};
use steadfast_store::{QueueRetention, Retention, StoreError, TenantLimits, auth, decide};

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
/// created since, plus what it is creating now.
#[derive(Debug, Default, Clone, Copy)]
struct Unfinished {
    counted: u64,
    /// Created (committed) since the count was started.
    created_since: u64,
    /// Reserved by enqueues that have not answered yet.
    in_flight: u64,
}

impl Unfinished {
    fn held(&self) -> u64 {
        self.counted + self.created_since + self.in_flight
    }
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

    /// Reserves room for `adding` jobs, or refuses them if the tenant would
    /// hold more unfinished jobs than it may. Held = the last count (at most
    /// [`REFRESH_EVERY`] old) + what this node created since + what it is
    /// creating now, checked and reserved under one lock: one node never
    /// goes over (a job counted and also created-since is counted twice,
    /// which errs on the safe side until the next count). On PostgreSQL
    /// other nodes' enqueues since the last count are not seen: they may go
    /// over by that much. Jobs that finished count until the next count.
    pub(super) fn reserve_quota(&self, tenant: TenantId, adding: usize) -> Result<(), StoreError> {
        let limit = self.max_unfinished_jobs(tenant);
        let mut unfinished = self.inner.tenants.unfinished.lock().expect("never poisoned");
        let held = unfinished.entry(tenant).or_default();
        if held.held().saturating_add(adding as u64) > limit {
            return Err(StoreError::QuotaExceeded { limit });
        }
        held.in_flight += adding as u64;
        Ok(())
    }

    /// Settles a reservation of `reserved` jobs once the enqueue answered:
    /// `created` of them became jobs, the rest (a failure, replays) free
    /// their room.
    pub(super) fn settle_quota(&self, tenant: TenantId, reserved: usize, created: usize) {
        let mut unfinished = self.inner.tenants.unfinished.lock().expect("never poisoned");
        let held = unfinished.entry(tenant).or_default();
        held.in_flight = held.in_flight.saturating_sub(reserved as u64);
        held.created_since += created as u64;
    }

    /// Reads tenants' own limits and unfinished counts again. What was
    /// created before the count started is in it; what is created after
    /// stays on top; reservations in flight are untouched.
    pub async fn refresh_tenant_state(&self) -> Result<(), StoreError> {
        let limits = self.store().tenant_limits().await?;
        *self.inner.tenants.own_limits.write().expect("never poisoned") = limits.into_iter().collect();
        let before: HashMap<TenantId, u64> = {
            let unfinished = self.inner.tenants.unfinished.lock().expect("never poisoned");
            unfinished
                .iter()
                .map(|(tenant, held)| (*tenant, held.created_since))
                .collect()
        };
        let counts: HashMap<TenantId, u64> = self.store().unfinished_counts().await?.into_iter().collect();
        let mut unfinished = self.inner.tenants.unfinished.lock().expect("never poisoned");
        for (tenant, held) in unfinished.iter_mut() {
            held.counted = counts.get(tenant).copied().unwrap_or(0);
            held.created_since = held
                .created_since
                .saturating_sub(before.get(tenant).copied().unwrap_or(0));
        }
        for (tenant, counted) in counts {
            unfinished.entry(tenant).or_insert(Unfinished {
                counted,
                ..Unfinished::default()
            });
        }
        unfinished.retain(|_, held| held.held() > 0);
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
        let mut slo_windows: HashMap<(TenantId, QueueName), Duration> = HashMap::new();
        for tenant in self.store().list_tenants().await? {
            for record in self.store().list_slos(&auth::system(&tenant)).await? {
                let window = slo_windows.entry((tenant.id, record.slo.queue)).or_default();
                *window = (*window).max(record.slo.window);
            }
        }
        let defaults = self.inner.config.tenants.retention;
        let mut removed = 0;
        for (tenant, queue) in self.store().job_queues().await? {
            let pair = (tenant, queue);
            let retention = own.get(&pair).copied().unwrap_or_default();
            let slo_window = slo_windows.get(&pair).copied();
            let (tenant, queue) = pair;
            let cutoffs = decide::prune_cutoffs(defaults, retention, slo_window, self.now());
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
