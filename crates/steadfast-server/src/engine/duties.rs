//! Background duties: promote scheduled jobs whose time has come, expire
//! lapsed leases, forget idempotency keys past their window, link waiting
//! audit records into their chains.
//!
//! The loop asks the store when the next thing is due and sleeps until then
//! (at most [`MAX_IDLE`]), or until the engine nudges it. Tests with a manual
//! clock call [`Engine::run_duties_once`] instead.

use std::time::Duration;

use std::collections::HashMap;

use steadfast_core::{TenantId, Timestamp};
use steadfast_store::{StoreError, auth};

use super::Engine;

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
                .expire_leases(now, self.inner.config.retry, rand::random(), SWEEP_BATCH)
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

    /// Runs the duties until the engine drains.
    pub async fn run_duties(self) {
        let chaining = tokio::spawn(self.clone().run_audit_chaining());
        let mut draining = self.inner.draining.subscribe();
        let mut last_prune = tokio::time::Instant::now();
        let mut last_checkpoint: Option<tokio::time::Instant> = None;
        let mut last_retention: Option<tokio::time::Instant> = None;
        let mut logged = HashMap::new();
        let mut last_slo_evaluation: Option<tokio::time::Instant> = None;
        let mut last_delivery: Option<tokio::time::Instant> = None;
        let mut last_statistics: Option<tokio::time::Instant> = None;
        let http = reqwest::Client::new();
        while !*draining.borrow_and_update() {
            if let Err(error) = self.run_duties_once().await {
                tracing::warn!(%error, "background duties failed; retrying");
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                match self.store().prune_idempotency_keys(self.now(), 10_000).await {
                    Ok(pruned) if pruned > 0 => {
                        tracing::debug!(pruned, "pruned expired idempotency keys")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "pruning idempotency keys failed"),
                }
            }
            if last_checkpoint.is_none_or(|at| at.elapsed() >= self.inner.config.audit_checkpoint_every) {
                last_checkpoint = Some(tokio::time::Instant::now());
                if let Err(error) = self.log_audit_checkpoints(&mut logged).await {
                    tracing::warn!(%error, "logging audit checkpoints failed");
                }
            }
            if last_slo_evaluation.is_none_or(|at| at.elapsed() >= SLO_EVERY) {
                last_slo_evaluation = Some(tokio::time::Instant::now());
                if let Err(error) = self.evaluate_slos().await {
                    tracing::warn!(%error, "evaluating SLOs failed");
                }
            }
            if last_statistics.is_none_or(|at| at.elapsed() >= STATISTICS_EVERY) {
                last_statistics = Some(tokio::time::Instant::now());
                match self.store().refresh_statistics().await {
                    Ok(0) => {}
                    Ok(tables) => tracing::debug!(tables, "refreshed planner statistics"),
                    Err(error) => tracing::warn!(%error, "refreshing planner statistics failed"),
                }
            }
            if last_delivery.is_none_or(|at| at.elapsed() >= DELIVER_EVERY) {
                last_delivery = Some(tokio::time::Instant::now());
                if let Err(error) = self.deliver_notifications(&http).await {
                    tracing::warn!(%error, "delivering notifications failed");
                }
            }
            if last_retention.is_none_or(|at| at.elapsed() >= RETENTION_EVERY) {
                last_retention = Some(tokio::time::Instant::now());
                let before = self
                    .now()
                    .checked_sub(self.inner.config.audit_retention)
                    .unwrap_or(Timestamp::MIN);
                match self.store().prune_audit(before, 10_000, self.now()).await {
                    Ok(removed) if removed > 0 => tracing::info!(removed, "audit retention pruned old records"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "audit retention failed"),
                }
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
        let _ = chaining.await;
    }
}
