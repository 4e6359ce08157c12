use crate::Transaction;
use async_trait::async_trait;
use steadfast_core::{Job, JobId, QueueName, RetryPolicy, TenantId, Timestamp};
use steadfast_store::decide;
use steadfast_store::{Maintenance, QueueStat, ReadyCallback, StoreError, Swept};

use crate::rows::{load_jobs, millis, optional_timestamp};
use crate::{Durability, PostgresStore, TenantFilter, pg_error, set_tenant, statement};

/// Locks up to `limit` due jobs of `kind` for this transaction (other
/// nodes' sweeps skip them) and loads them, tenant by tenant: row-level
/// security shows each tenant's rows only under its own setting.
async fn due_jobs(tx: &Transaction, kind: &str, now: Timestamp, limit: usize) -> Result<Vec<Job>, StoreError> {
    let rows = tx
        .query(
            &statement(tx, "SELECT tenant_id, id FROM steadfast_lock_due($1, $2, $3)").await?,
            &[&kind, &millis(now), &(limit as i32)],
        )
        .await
        .map_err(pg_error)?;
    let mut due: Vec<(TenantId, JobId)> = rows
        .iter()
        .map(|row| (TenantId(row.get(0)), JobId(row.get(1))))
        .collect();
    due.sort();
    let mut jobs = Vec::with_capacity(due.len());
    for run in due.chunk_by(|a, b| a.0 == b.0) {
        let tenant = run[0].0;
        set_tenant(tx, tenant).await?;
        let ids: Vec<JobId> = run.iter().map(|(_, id)| *id).collect();
        jobs.extend(load_jobs(tx, TenantFilter::Enforced, tenant, &ids, true).await?);
    }
    Ok(jobs)
}

#[async_trait]
impl Maintenance for PostgresStore {
    async fn fire_timers(&self, now: Timestamp, limit: usize) -> Result<Swept, StoreError> {
        self.decided(None, Durability::Durable, now, async |tx| {
            let scheduled = due_jobs(tx, "scheduled", now, limit).await?;
            let waiting = due_jobs(tx, "waiting", now, limit).await?;
            Ok(decide::fire_timers(scheduled, waiting, limit, now))
        })
        .await
    }

    async fn expire_leases(
        &self,
        now: Timestamp,
        policy: RetryPolicy,
        jitter_seed: u64,
        limit: usize,
    ) -> Result<Swept, StoreError> {
        self.decided(None, Durability::Durable, now, async |tx| {
            let due = due_jobs(tx, "expired", now, limit).await?;
            Ok(decide::expire_leases(due, &policy, jitter_seed, limit, now))
        })
        .await
    }

    async fn prune_idempotency_keys(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT steadfast_prune_idempotency_keys($1, $2)",
                &[&millis(now), &(limit as i32)],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get::<_, i32>(0) as usize)
    }

    async fn chain_audit(&self, limit: usize) -> Result<usize, StoreError> {
        crate::audit::chain_waiting(self, limit).await
    }

    async fn refresh_statistics(&self) -> Result<usize, StoreError> {
        // One table per call, each in its own transaction (see
        // 0003_lease_plan.sql); at most one round over the tables it keeps.
        const TABLES: usize = 6;
        let client = self.client().await?;
        let mut visited = 0;
        while visited < TABLES {
            let row = client
                .query_one("SELECT steadfast_refresh_statistics()", &[])
                .await
                .map_err(pg_error)?;
            if row.get::<_, i32>(0) == 0 {
                break;
            }
            visited += 1;
        }
        Ok(visited)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT steadfast_next_due()", &[])
            .await
            .map_err(pg_error)?;
        optional_timestamp(row.get(0))
    }

    async fn prune_flow_keys(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT steadfast_prune_flow_keys($1, $2)",
                &[&(now.as_nanosecond() as i64), &(limit as i64)],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get::<_, i64>(0).max(0) as usize)
    }

    async fn flow_tenants(&self, limit: usize) -> Result<Vec<TenantId>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT tenant_id FROM steadfast_flow_tenants($1)", &[&(limit as i64)])
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|row| TenantId(row.get(0))).collect())
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT queue, state, jobs, oldest_run_at FROM steadfast_queue_stats()",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let corrupt = |e: String| StoreError::Corrupt(e);
        rows.iter()
            .map(|row| {
                Ok(QueueStat {
                    queue: QueueName::new(row.get::<_, String>(0)).map_err(|e| corrupt(e.to_string()))?,
                    state: row
                        .get::<_, String>(1)
                        .parse()
                        .map_err(|e: steadfast_core::job::UnknownState| corrupt(e.to_string()))?,
                    count: row.get::<_, i64>(2) as u64,
                    oldest_run_at: optional_timestamp(row.get(3))?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await.map_err(pg_error)?;
        Ok(())
    }

    fn subscribe_ready(&self, on_ready: ReadyCallback) {
        self.spawn_listener(on_ready);
    }
}
