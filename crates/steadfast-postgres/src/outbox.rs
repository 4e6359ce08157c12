//! Transactional enqueue (see `steadfast_store::outbox` and schema 15's
//! `steadfast.enqueue`).

use std::time::Duration;

use async_trait::async_trait;
use steadfast_core::{JobId, TenantId, Timestamp};
use steadfast_store::outbox::{OutboxEntry, OutboxRecord, OutboxStore};
use steadfast_store::{StoreError, TenantScope};

use crate::rows::{millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, pg_error, statement};

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn claim_outbox(
        &self,
        now: Timestamp,
        claim_for: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.transaction(None, Durability::Durable, async |tx| {
            tx.query(
                &statement(
                    tx,
                    "SELECT tenant_id, id, key_id, request, attempts FROM steadfast_claim_outbox($1, $2, $3)",
                )
                .await?,
                &[&millis(now), &(claim_for.as_millis() as i64), &i64::from(limit)],
            )
            .await
            .map_err(pg_error)
            .map(|rows| {
                rows.iter()
                    .map(|row| OutboxEntry {
                        tenant_id: TenantId(row.get(0)),
                        id: JobId(row.get(1)),
                        key_id: row.get(2),
                        request: row.get(3),
                        attempts: row.get::<_, i32>(4).max(0) as u32,
                    })
                    .collect()
            })
        })
        .await
    }

    async fn finish_outbox(&self, scope: &TenantScope, id: JobId) -> Result<(), StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            tx.execute(
                &statement(tx, "DELETE FROM outbox WHERE tenant_id = $1 AND id = $2").await?,
                &[&tenant.0, &id.0],
            )
            .await
            .map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    async fn refuse_outbox(
        &self,
        scope: &TenantScope,
        id: JobId,
        code: &str,
        message: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            tx.execute(
                &statement(
                    tx,
                    "UPDATE outbox SET failed_at = $3, error_code = $4, error_message = $5, claimed_until = NULL \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .await?,
                &[&tenant.0, &id.0, &millis(now), &code, &message],
            )
            .await
            .map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    async fn list_outbox(&self, scope: &TenantScope, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            tx.query(
                &statement(
                    tx,
                    "SELECT id, key_id, request, created_at, attempts, failed_at, error_code, error_message \
                     FROM outbox WHERE tenant_id = $1 ORDER BY created_at, id LIMIT $2",
                )
                .await?,
                &[&tenant.0, &i64::from(limit)],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| {
                let failed = optional_timestamp(row.get(5))?.map(|at| {
                    (
                        at,
                        row.get::<_, Option<String>>(6).unwrap_or_default(),
                        row.get::<_, Option<String>>(7).unwrap_or_default(),
                    )
                });
                Ok(OutboxRecord {
                    id: JobId(row.get(0)),
                    key_id: row.get(1),
                    request: row.get(2),
                    created_at: timestamp(row.get(3))?,
                    attempts: row.get::<_, i32>(4).max(0) as u32,
                    failed,
                })
            })
            .collect()
        })
        .await
    }
}
