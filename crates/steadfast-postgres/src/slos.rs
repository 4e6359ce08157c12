use std::time::Duration;

use crate::Transaction;
use async_trait::async_trait;
use steadfast_core::slo::{Counts, Severity, Slo, SloKind};
use steadfast_core::{QueueName, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::decide;
use steadfast_store::{SloRecord, SloStore, StoreError, TenantScope};
use tokio_postgres::Row;

use crate::audit::append_for;
use crate::rows::{millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, pg_error};

const COLUMNS: &str = "id, tenant_id, name, queue, kind, threshold_ms, objective, window_ms, notify_url, created_at, page_since, ticket_since";

fn record_from_row(row: &Row) -> Result<SloRecord, StoreError> {
    let slo = Slo {
        id: row.get(0),
        tenant_id: TenantId(row.get(1)),
        name: row.get(2),
        queue: QueueName::new(row.get::<_, String>(3)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        kind: SloKind::from_parts(row.get::<_, &str>(4), row.get(5)),
        objective: row.get(6),
        window: Duration::from_millis(row.get::<_, i64>(7).max(0) as u64),
        notify_url: row.get(8),
        created_at: timestamp(row.get(9))?,
    };
    Ok(SloRecord::new(
        slo,
        optional_timestamp(row.get(10))?,
        optional_timestamp(row.get(11))?,
    ))
}

async fn load(tx: &Transaction, scope: &TenantScope, id: uuid::Uuid) -> Result<SloRecord, StoreError> {
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM slos WHERE tenant_id = $1 AND id = $2 FOR UPDATE"),
            &[&scope.tenant_id().0, &id],
        )
        .await
        .map_err(pg_error)?
        .ok_or(StoreError::NotFound)?;
    record_from_row(&row)
}

#[async_trait]
impl SloStore for PostgresStore {
    async fn create_slo(&self, scope: &TenantScope, slo: Slo, now: Timestamp) -> Result<Slo, StoreError> {
        let (kind, threshold) = slo.kind.to_parts();
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO slos ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &slo.id,
                        &scope.tenant_id().0,
                        &slo.name,
                        &slo.queue.as_str(),
                        &kind,
                        &threshold,
                        &slo.objective,
                        &(slo.window.as_millis() as i64),
                        &slo.notify_url,
                        &millis(slo.created_at),
                    ],
                )
                .await
                .map_err(pg_error)?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists);
            }
            append_for(
                tx,
                scope,
                now,
                [drafts::slo_changed("slo.created", &slo, serde_json::json!({}))],
            )
            .await
        })
        .await?;
        Ok(slo)
    }

    async fn list_slos(&self, scope: &TenantScope) -> Result<Vec<SloRecord>, StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            let rows = tx
                .query(
                    &format!("SELECT {COLUMNS} FROM slos WHERE tenant_id = $1 ORDER BY name"),
                    &[&scope.tenant_id().0],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(record_from_row).collect()
        })
        .await
    }

    async fn delete_slo(&self, scope: &TenantScope, id: uuid::Uuid, now: Timestamp) -> Result<(), StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            let record = load(tx, scope, id).await?;
            tx.execute(
                "DELETE FROM slos WHERE tenant_id = $1 AND id = $2",
                &[&scope.tenant_id().0, &id],
            )
            .await
            .map_err(pg_error)?;
            append_for(
                tx,
                scope,
                now,
                [drafts::slo_changed("slo.deleted", &record.slo, serde_json::json!({}))],
            )
            .await
        })
        .await
    }

    async fn slo_counts(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        kind: SloKind,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Counts, StoreError> {
        let (_, threshold) = kind.to_parts();
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            let row = tx
                .query_one(
                    "SELECT count(*) FILTER (WHERE state = 'succeeded' AND ($5::bigint IS NULL OR finished_at - created_at <= $5)), \
                     count(*) FROM jobs WHERE tenant_id = $1 AND queue = $2 AND finished_at > $3 AND finished_at <= $4 \
                     AND state IN ('succeeded', 'dead')",
                    &[&scope.tenant_id().0, &queue.as_str(), &millis(since), &millis(until), &threshold],
                )
                .await
                .map_err(pg_error)?;
            Ok(Counts {
                good: row.get::<_, i64>(0) as u64,
                total: row.get::<_, i64>(1) as u64,
            })
        })
        .await
    }

    async fn set_slo_firing(
        &self,
        scope: &TenantScope,
        id: uuid::Uuid,
        firing: &[Severity],
        now: Timestamp,
    ) -> Result<Vec<(Severity, Timestamp)>, StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            let record = load(tx, scope, id).await?;
            let change = decide::slo_firing(&record, firing, now);
            tx.execute(
                "UPDATE slos SET page_since = $3, ticket_since = $4 WHERE tenant_id = $1 AND id = $2",
                &[
                    &scope.tenant_id().0,
                    &id,
                    &change.page_since.map(millis),
                    &change.ticket_since.map(millis),
                ],
            )
            .await
            .map_err(pg_error)?;
            if let Some((_, draft)) = change.audit {
                append_for(tx, scope, now, [draft]).await?;
            }
            Ok(record.firing)
        })
        .await
    }
}
