//! Transactional enqueue (PostgreSQL): the duty that makes the jobs of
//! requests applications wrote with `steadfast.enqueue(...)` inside their
//! own transactions. Each becomes a job exactly as `POST /v1/jobs` would
//! make it, as the key it was sent with, with the id the function returned.

use std::time::Duration;

use steadfast_core::KeyId;
use steadfast_protocol as wire;
use steadfast_store::outbox::OutboxEntry;
use steadfast_store::{StoreError, TenantScope, auth};

use super::Engine;
use crate::api::convert;
use crate::api::error::ApiError;

/// How long a node holds an entry it is making a job of; after it, another
/// node may try (and finds the job if the first made it).
const CLAIM_FOR: Duration = Duration::from_secs(30);
/// Most entries one pass claims.
const PASS_LIMIT: u32 = 500;
/// Pause between passes that found nothing: how long a committed request
/// may wait before its job is made.
const IDLE: Duration = Duration::from_millis(100);

impl Engine {
    /// Makes the jobs of pending entries (at most [`PASS_LIMIT`]); how many it claimed.
    pub async fn run_outbox_once(&self) -> Result<usize, StoreError> {
        let entries = self.store().claim_outbox(self.now(), CLAIM_FOR, PASS_LIMIT).await?;
        let claimed = entries.len();
        for entry in entries {
            let id = entry.id;
            // Storage trouble leaves the entry claimed; it is tried again
            // once the claim lapses.
            if let Err(error) = self.make_outbox_job(entry).await {
                tracing::warn!(%error, job = %id, "could not make an outbox entry's job; retrying");
            }
        }
        Ok(claimed)
    }

    pub(super) async fn run_outbox(self) {
        let mut draining = self.inner.draining.subscribe();
        while !*draining.borrow_and_update() {
            let pause = match self.run_outbox_once().await {
                Ok(0) => IDLE,
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    tracing::warn!(%error, "reading the outbox failed; retrying");
                    IDLE
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = draining.changed() => {}
            }
        }
    }

    async fn make_outbox_job(&self, entry: OutboxEntry) -> Result<(), StoreError> {
        let scope = self.outbox_scope(&entry).await?;
        // An earlier claim may have made the job and died before the entry
        // went (and before its producer's number was recorded: that is
        // idempotent, so it is recorded again).
        if entry.attempts > 1 && self.store().job(&scope, entry.id).await?.is_some() {
            if let Ok(spec) = self.outbox_spec(&entry) {
                self.receive_sequences(&scope, super::producers::sequences_of(std::slice::from_ref(&spec)))
                    .await?;
            }
            return self.store().finish_outbox(&scope, entry.id).await;
        }
        let made = match self.outbox_spec(&entry) {
            Ok(spec) => self
                .enqueue_as(&scope, vec![entry.id], vec![spec])
                .await
                .map_err(ApiError::from),
            Err(refused) => Err(refused),
        };
        match made {
            Ok(_) => self.store().finish_outbox(&scope, entry.id).await,
            // Storage trouble, or the tenant's quota: the request stands,
            // and is tried again when the claim lapses.
            Err(error) if error.code.status() >= 500 || error.code.status() == 429 => {
                tracing::debug!(code = %error.code, job = %entry.id, "an outbox entry waits: {}", error.message);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(code = %error.code, job = %entry.id, "an outbox entry was refused: {}", error.message);
                if self.records_metrics() {
                    self.inner.metrics.outbox_refused.inc();
                }
                self.store()
                    .refuse_outbox(&scope, entry.id, error.code.as_str(), &error.message, self.now())
                    .await
            }
        }
    }

    /// The key the entry was sent with, as its actor.
    async fn outbox_scope(&self, entry: &OutboxEntry) -> Result<TenantScope, StoreError> {
        let key_id = KeyId::parse(&entry.key_id)
            .map_err(|_| StoreError::Corrupt(format!("outbox entry {} names no key", entry.id)))?;
        let name = match self.store().find_key(&key_id).await? {
            Some(key) if key.tenant_id == entry.tenant_id => key.name,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "outbox entry {} names another tenant's key",
                    entry.id
                )));
            }
        };
        Ok(auth::outbox_entry(entry.tenant_id, key_id, name))
    }

    /// The entry's request, read and checked as `POST /v1/jobs` reads it.
    fn outbox_spec(&self, entry: &OutboxEntry) -> Result<steadfast_core::lifecycle::JobSpec, ApiError> {
        let request: wire::EnqueueRequest = serde_json::from_str(&entry.request)
            .map_err(|error| ApiError::validation(format!("the request does not read: {error}")))?;
        convert::job_spec(request, None, self.limits(), self.now())
    }
}
