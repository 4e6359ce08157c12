//! Transactional enqueue is PostgreSQL's: an embedded store shares no
//! database with the application, so its outbox is always empty.

use std::time::Duration;

use async_trait::async_trait;
use steadfast_core::{JobId, Timestamp};
use steadfast_store::outbox::{OutboxEntry, OutboxRecord, OutboxStore};
use steadfast_store::{StoreError, TenantScope};

use crate::SqliteStore;

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn claim_outbox(&self, _: Timestamp, _: Duration, _: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(Vec::new())
    }

    async fn finish_outbox(&self, _: &TenantScope, _: JobId) -> Result<(), StoreError> {
        Err(StoreError::NotFound)
    }

    async fn refuse_outbox(&self, _: &TenantScope, _: JobId, _: &str, _: &str, _: Timestamp) -> Result<(), StoreError> {
        Err(StoreError::NotFound)
    }

    async fn list_outbox(&self, _: &TenantScope, _: u32) -> Result<Vec<OutboxRecord>, StoreError> {
        Ok(Vec::new())
    }
}
