use async_trait::async_trait;
use steadfast_core::audit::Actor;
use steadfast_core::{QueueName, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::{LimitStore, PruneCutoffs, QueueRetention, StoreError, TenantLimits, TenantScope};
use tokio_postgres::Row;

use crate::audit::{append, append_for};
use crate::rows::millis;
use crate::{Durability, PostgresStore, pg_error};

fn queue_name(text: String) -> Result<QueueName, StoreError> {
    QueueName::new(text).map_err(|error| StoreError::Corrupt(error.to_string()))
}

/// Reads (retain_succeeded_ms, retain_failed_ms) from columns `at` and `at + 1`.
fn retention_at(row: &Row, at: usize) -> QueueRetention {
    QueueRetention::from_columns(row.get(at), row.get(at + 1))
}

#[async_trait]
impl LimitStore for PostgresStore {
    async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        limits: TenantLimits,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let found: bool = tx
                .query_one(
                    "SELECT steadfast_set_tenant_limits($1, $2, $3, $4)",
                    &[
                        &tenant.0,
                        &limits.key_rate.map(|(rate, _)| rate as i32),
                        &limits.key_rate.map(|(_, burst)| burst as i32),
                        &limits.max_unfinished_jobs.map(|max| max as i64),
                    ],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            if !found {
                return Err(StoreError::NotFound);
            }
            append(
                tx,
                tenant,
                &Actor::Operator,
                None,
                now,
                [drafts::tenant_limits_set(limits)],
            )
            .await
        })
        .await
    }

    async fn tenant_limits(&self) -> Result<Vec<(TenantId, TenantLimits)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant_id, key_rate_limit, key_rate_burst, max_unfinished_jobs FROM steadfast_tenant_limits()",
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|row| {
                let rate: Option<i32> = row.get(1);
                let burst: Option<i32> = row.get(2);
                let max: Option<i64> = row.get(3);
                (
                    TenantId(row.get(0)),
                    TenantLimits {
                        key_rate: rate
                            .zip(burst)
                            .map(|(rate, burst)| (rate.max(0) as u32, burst.max(0) as u32)),
                        max_unfinished_jobs: max.map(|max| max.max(0) as u64),
                    },
                )
            })
            .collect())
    }

    async fn set_queue_retention(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        retention: QueueRetention,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            tx.execute(
                "INSERT INTO queue_settings (tenant_id, queue, retain_succeeded_ms, retain_failed_ms, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, queue) DO UPDATE SET \
                 retain_succeeded_ms = excluded.retain_succeeded_ms, retain_failed_ms = excluded.retain_failed_ms, \
                 updated_at = excluded.updated_at",
                &[
                    &scope.tenant_id().0,
                    &queue.as_str(),
                    &retention.columns().0,
                    &retention.columns().1,
                    &millis(now),
                ],
            )
            .await
            .map_err(pg_error)?;
            append_for(tx, scope, now, [drafts::queue_retention_set(queue, retention)]).await
        })
        .await
    }

    async fn queue_retention(&self, scope: &TenantScope, queue: &QueueName) -> Result<QueueRetention, StoreError> {
        self.transaction(Some(scope.tenant_id()), Durability::Durable, async |tx| {
            let row = tx
                .query_opt(
                    "SELECT retain_succeeded_ms, retain_failed_ms FROM queue_settings WHERE tenant_id = $1 AND queue = $2",
                    &[&scope.tenant_id().0, &queue.as_str()],
                )
                .await
                .map_err(pg_error)?;
            Ok(row.map(|row| retention_at(&row, 0)).unwrap_or_default())
        })
        .await
    }

    async fn queue_retentions(&self) -> Result<Vec<(TenantId, QueueName, QueueRetention)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant_id, queue, retain_succeeded_ms, retain_failed_ms FROM steadfast_queue_retentions()",
                &[],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| Ok((TenantId(row.get(0)), queue_name(row.get(1))?, retention_at(row, 2))))
            .collect()
    }

    async fn job_queues(&self) -> Result<Vec<(TenantId, QueueName)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT tenant_id, queue FROM steadfast_job_queues()", &[])
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| Ok((TenantId(row.get(0)), queue_name(row.get(1))?)))
            .collect()
    }

    async fn prune_jobs(
        &self,
        tenant: TenantId,
        queue: &QueueName,
        cutoffs: PruneCutoffs,
        limit: usize,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let removed: i32 = tx
                .query_one(
                    "SELECT steadfast_prune_jobs($1, $2, $3, $4, $5, $6)",
                    &[
                        &tenant.0,
                        &queue.as_str(),
                        &millis(cutoffs.succeeded_before),
                        &millis(cutoffs.failed_before),
                        &(limit as i32),
                        &millis(now),
                    ],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            let removed = removed as usize;
            if removed > 0 {
                let draft = drafts::jobs_pruned(queue, removed, cutoffs);
                append(tx, tenant, &Actor::System, None, now, [draft]).await?;
            }
            Ok(removed)
        })
        .await
    }

    async fn unfinished_counts(&self) -> Result<Vec<(TenantId, u64)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT tenant_id, unfinished FROM steadfast_unfinished_counts()", &[])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|row| (TenantId(row.get(0)), row.get::<_, i64>(1).max(0) as u64))
            .collect())
    }
}
