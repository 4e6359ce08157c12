//! Background duties: promote scheduled jobs whose time has come, expire
//! lapsed leases, forget idempotency keys past their window, link waiting
//! audit records into their chains, log checkpoints, evaluate SLOs, deliver
//! their notifications, refresh planner statistics and prune the audit log.
//!
//! Each duty runs in its own task. The sweeps ask the store when the next
//! thing is due and sleep until then (at most [`MAX_IDLE`]), or until the
//! engine nudges them. Tests with a manual clock call
//! [`Engine::run_duties_once`] instead.

use std::collections::HashMap;
use std::time::Duration;

use steadfast_core::{TenantId, Timestamp};
use steadfast_store::{StoreError, auth};

use tokio::task::JoinSet;

use super::Engine;
use super::deliveries::Deliveries;

/// Longest sleep between two looks, whatever the store says.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Most jobs one sweep changes in one write.
const SWEEP_BATCH: usize = 1000;
/// How often expired idempotency keys are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often SLOs are evaluated.
const SLO_EVERY: Duration = Duration::from_secs(60);
/// How often the store may refresh its planner statistics (each call is a
/// catalog read unless a table changed much; see `Maintenance::refresh_statistics`).
const STATISTICS_EVERY: Duration = Duration::from_secs(1);
/// How often pending notifications are delivered.
const DELIVER_EVERY: Duration = Duration::from_secs(5);
/// How often audit records past retention are pruned.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Pause between two passes of the audit chainer that found less than a full batch.
const CHAIN_EVERY: Duration = Duration::from_millis(50);
/// Most waiting audit records one pass links per chain.
const CHAIN_BATCH: usize = 5000;

/// What one pass of the duties did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DutyReport {
    pub promoted: usize,
    pub expired: usize,
}

impl Engine {
    /// One pass: everything due at the clock's now.
    pub async fn run_duties_once(&self) -> Result<DutyReport, StoreError> {
        let mut report = DutyReport::default();
        let store = self.store();
        loop {
            let now = self.now();
            let promoted = store.fire_timers(now, SWEEP_BATCH).await?;
            let expired = store
                .expire_leases(now, self.inner.config.retry, self.random(), SWEEP_BATCH)
                .await?;
            for (job, attempt) in &expired.ended {
                self.observe_end(job, Some(attempt));
            }
            for (tenant, queue) in promoted.ready_queues.iter().chain(&expired.ready_queues) {
                self.inner.wakeups.wake(*tenant, queue);
            }
            report.promoted += promoted.count;
            report.expired += expired.count;
            if !promoted.more && !expired.more {
                return Ok(report);
            }
        }
    }

    /// Logs a signed checkpoint of every chain that grew since the last one,
    /// so anyone who keeps the logs can later detect a truncated tail.
    pub async fn log_audit_checkpoints(&self, logged: &mut HashMap<TenantId, u64>) -> Result<(), StoreError> {
        let Some(signer) = &self.inner.config.audit_signer else {
            return Ok(());
        };
        for tenant in self.store().list_tenants().await? {
            let scope = auth::local_operator(&tenant);
            let Some(head) = self.store().audit_head(&scope).await? else {
                continue;
            };
            if logged.get(&tenant.id) == Some(&head.seq) {
                continue;
            }
            let checkpoint = signer.sign(tenant.id, head, self.now());
            tracing::info!(
                tenant = %tenant.name,
                tenant_id = %tenant.id,
                seq = checkpoint.seq,
                hash = %checkpoint.hash,
                at = %checkpoint.at,
                public_key = %checkpoint.public_key,
                signature = %checkpoint.signature,
                "audit checkpoint"
            );
            logged.insert(tenant.id, head.seq);
        }
        Ok(())
    }

    /// Links waiting audit records into their chains until the engine
    /// drains (see [`steadfast_store::Maintenance::chain_audit`]): at once
    /// again after a full batch, else after a short pause.
    pub async fn run_audit_chaining(self) {
        let mut draining = self.inner.draining.subscribe();
        while !*draining.borrow_and_update() {
            let pause = match self.store().chain_audit(CHAIN_BATCH).await {
                Ok(linked) if linked >= CHAIN_BATCH => Duration::ZERO,
                Ok(_) => CHAIN_EVERY,
                Err(error) => {
                    tracing::warn!(%error, "linking audit records failed; retrying");
                    MAX_IDLE
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = draining.changed() => {}
            }
        }
    }

    /// Runs the duties until the engine drains, each in its own task: a
    /// slow one (a receiver that never answers, a long prune) delays only
    /// its own next run, never the timers, the lease expiry or another
    /// tenant's work.
    pub async fn run_duties(self) {
        let mut duties = JoinSet::new();
        duties.spawn(self.clone().run_sweeps());
        duties.spawn(self.clone().run_audit_chaining());
        duties.spawn(self.clone().run_deliveries());
        duties.spawn(self.clone().run_bulk());
        duties.spawn(self.clone().run_schedules());
        duties.spawn(self.clone().run_outbox());
        duties.spawn(self.clone().every(PRUNE_EVERY, PRUNE_EVERY, async |engine| {
            match engine.store().prune_idempotency_keys(engine.now(), 10_000).await {
                Ok(pruned) if pruned > 0 => tracing::debug!(pruned, "pruned expired idempotency keys"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "pruning idempotency keys failed"),
            }
            match engine.prune_events().await {
                Ok(pruned) if pruned > 0 => tracing::debug!(pruned, "pruned webhook events past their dedup window"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "pruning webhook events failed"),
            }
            match engine.store().prune_flow_keys(engine.now(), 10_000).await {
                Ok(pruned) if pruned > 0 => tracing::debug!(pruned, "forgot per-key rate limits that hold nothing"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "pruning per-key rate limits failed"),
            }
        }));
        let mut logged = HashMap::new();
        let checkpoint_every = self.inner.config.audit_checkpoint_every;
        duties.spawn(
            self.clone()
                .every(Duration::ZERO, checkpoint_every, async move |engine| {
                    if let Err(error) = engine.log_audit_checkpoints(&mut logged).await {
                        tracing::warn!(%error, "logging audit checkpoints failed");
                    }
                }),
        );
        duties.spawn(self.clone().every(Duration::ZERO, SLO_EVERY, async |engine| {
            if let Err(error) = engine.evaluate_slos().await {
                tracing::warn!(%error, "evaluating SLOs failed");
            }
        }));
        duties.spawn(self.clone().every(Duration::ZERO, STATISTICS_EVERY, async |engine| {
            match engine.store().refresh_statistics().await {
                Ok(0) => {}
                Ok(tables) => tracing::debug!(tables, "refreshed planner statistics"),
                Err(error) => tracing::warn!(%error, "refreshing planner statistics failed"),
            }
        }));
        duties.spawn(self.clone().every(Duration::ZERO, RETENTION_EVERY, async |engine| {
            let before = engine
                .now()
                .checked_sub(engine.inner.config.audit_retention)
                .unwrap_or(Timestamp::MIN);
            match engine.store().prune_audit(before, 10_000, engine.now()).await {
                Ok(removed) if removed > 0 => tracing::info!(removed, "audit retention pruned old records"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "audit retention failed"),
            }
        }));
        duties.spawn(
            self.clone()
                .every(Duration::ZERO, super::tenancy::REFRESH_EVERY, async |engine| {
                    if let Err(error) = engine.refresh_tenant_state().await {
                        tracing::warn!(%error, "reading tenants' limits and unfinished jobs failed");
                    }
                }),
        );
        let prune_every = super::tenancy::PRUNE_JOBS_EVERY;
        duties.spawn(self.clone().every(prune_every, prune_every, async |engine| {
            match engine.prune_finished_jobs().await {
                Ok(removed) if removed > 0 => tracing::info!(removed, "pruned finished jobs past their retention"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "pruning finished jobs failed"),
            }
        }));
        let record_every = self.inner.config.abuse.auth_failure_record_every;
        duties.spawn(self.clone().every(record_every, record_every, async |engine| {
            if let Err(error) = engine.auth_upkeep().await {
                tracing::warn!(%error, "recording failed authentications failed");
            }
        }));
        while duties.join_next().await.is_some() {}
    }

    /// Promotes due timers and expires lapsed leases, as soon as the store
    /// says something is due (or the engine nudges), until the engine drains.
    async fn run_sweeps(self) {
        let mut draining = self.inner.draining.subscribe();
        while !*draining.borrow_and_update() {
            if let Err(error) = self.run_duties_once().await {
                tracing::warn!(%error, "background duties failed; retrying");
            }
            let sleep = match self.store().next_due().await {
                Ok(Some(due)) => {
                    let until = self.now().duration_until(due);
                    until.try_into().unwrap_or(Duration::ZERO).min(MAX_IDLE)
                }
                _ => MAX_IDLE,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.inner.duties_nudge.notified() => {}
                _ = draining.changed() => {}
            }
        }
    }

    /// Starts deliveries of pending notifications as they are enqueued and
    /// every [`DELIVER_EVERY`] (retries that came due, slots that freed),
    /// without waiting for those in flight. Once the engine drains, waits
    /// for those (each bounded by its timeout) unless aborted first, as
    /// `serve` does at shutdown: an interrupted delivery is made again
    /// (notifications are delivered at least once).
    async fn run_deliveries(self) {
        let http = self.outbound_http();
        let mut deliveries = Deliveries::default();
        let mut draining = self.inner.draining.subscribe();
        while !*draining.borrow_and_update() {
            deliveries.reap();
            if let Err(error) = self.start_deliveries(&http, &mut deliveries).await {
                tracing::warn!(%error, "delivering notifications failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(DELIVER_EVERY) => {}
                _ = self.inner.deliveries_nudge.notified() => {}
                _ = draining.changed() => {}
            }
        }
        deliveries.wait_all().await;
    }

    /// Runs `duty` after `first`, then every `period`, until the engine
    /// drains. (`duty`'s future must be `Send`: the caller spawns this.)
    async fn every(self, first: Duration, period: Duration, mut duty: impl AsyncFnMut(&Engine) + Send) {
        let mut draining = self.inner.draining.subscribe();
        let mut wait = first;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = draining.changed() => {}
            }
            if *draining.borrow_and_update() {
                return;
            }
            duty(&self).await;
            wait = period;
        }
    }
}
