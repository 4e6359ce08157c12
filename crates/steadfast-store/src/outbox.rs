//! Transactional enqueue (PostgreSQL): requests an application wrote with
//! `steadfast.enqueue(...)` inside its own transaction, waiting in the
//! outbox until a node makes their jobs.

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use steadfast_core::{JobId, TenantId};

use crate::{StoreError, TenantScope};

/// A request waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub tenant_id: TenantId,
    /// The job's id to be (what `steadfast.enqueue` returned).
    pub id: JobId,
    /// The API key it was sent with.
    pub key_id: String,
    /// JSON in the shape of `POST /v1/jobs`.
    pub request: String,
    /// Claims so far, this one included.
    pub attempts: u32,
}

/// An entry as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub id: JobId,
    pub key_id: String,
    pub request: String,
    pub created_at: Timestamp,
    pub attempts: u32,
    /// Set when it was refused for good.
    pub failed: Option<(Timestamp, String, String)>,
}

#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// For the engine's duty, across tenants: up to `limit` pending entries,
    /// oldest first, each claimed for `claim_for` (a node that dies
    /// holding one leaves it to another after that).
    async fn claim_outbox(
        &self,
        now: Timestamp,
        claim_for: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// The entry's job exists: the entry goes.
    async fn finish_outbox(&self, scope: &TenantScope, id: JobId) -> Result<(), StoreError>;

    /// The entry's job was refused for good (`code`, `message`): it stays,
    /// failed, for an operator to see.
    async fn refuse_outbox(
        &self,
        scope: &TenantScope,
        id: JobId,
        code: &str,
        message: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// The tenant's entries still in the outbox (pending or refused), oldest first.
    async fn list_outbox(&self, scope: &TenantScope, limit: u32) -> Result<Vec<OutboxRecord>, StoreError>;
}
