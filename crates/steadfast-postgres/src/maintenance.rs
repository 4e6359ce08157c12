use async_trait::async_trait;
use steadfast_core::audit::Actor;
use steadfast_core::lifecycle;
use steadfast_core::retry::jitter_sample;
use steadfast_core::{JobId, QueueName, RetryPolicy, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::{Maintenance, QueueStat, ReadyCallback, StoreError, Swept};
use tokio_postgres::Transaction;

use crate::audit::append;
use crate::jobs::ReadyQueues;
use crate::rows::{insert_attempt, load_job, millis, optional_timestamp, save_job};
use crate::workflows::save_step;
use crate::{PostgresStore, TenantFilter, pg_error, set_tenant};

/// Locks up to `limit` due jobs of `kind` for this transaction; other nodes'
/// sweeps skip them.
async fn lock_due(
    tx: &Transaction<'_>,
    kind: &str,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(TenantId, JobId)>, StoreError> {
    let rows = tx
        .query(
            "SELECT tenant_id, id FROM steadfast_lock_due($1, $2, $3)",
            &[&kind, &millis(now), &(limit as i32)],
        )
        .await
        .map_err(pg_error)?;
    let mut due: Vec<_> = rows
        .iter()
        .map(|row| (TenantId(row.get(0)), JobId(row.get(1))))
        .collect();
    // Tenant by tenant: one tenant switch per run of a tenant's jobs.
    due.sort();
    Ok(due)
}

#[async_trait]
impl Maintenance for PostgresStore {
    async fn fire_timers(&self, now: Timestamp, limit: usize) -> Result<Swept, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut swept = Swept::default();
        let mut ready = ReadyQueues::default();
        let scheduled = lock_due(&tx, "scheduled", now, limit).await?;
        swept.more = scheduled.len() == limit;
        for (tenant, id) in scheduled {
            set_tenant(&tx, tenant).await?;
            let Some(job) = load_job(&tx, TenantFilter::Enforced, tenant, id, false).await? else {
                continue;
            };
            // A rejection means another transition got there first: nothing to do.
            let Ok(promoted) = lifecycle::promote(&job, now) else {
                continue;
            };
            save_job(&tx, &promoted).await?;
            append(
                &tx,
                tenant,
                &Actor::System,
                None,
                now,
                [drafts::job_queued(&job, &promoted)],
            )
            .await?;
            swept.count += 1;
            ready.note(&promoted);
        }
        let waits = lock_due(&tx, "waiting", now, limit).await?;
        swept.more |= waits.len() == limit;
        for (tenant, id) in waits {
            set_tenant(&tx, tenant).await?;
            let Some(job) = load_job(&tx, TenantFilter::Enforced, tenant, id, false).await? else {
                continue;
            };
            let Ok((woken, step)) = lifecycle::fire_wait_timer(&job, now) else {
                continue;
            };
            save_job(&tx, &woken).await?;
            save_step(&tx, &woken, &step).await?;
            append(
                &tx,
                tenant,
                &Actor::System,
                None,
                now,
                [drafts::job_woken(&job, &woken, &step)],
            )
            .await?;
            swept.count += 1;
            ready.note(&woken);
        }
        tx.commit().await.map_err(pg_error)?;
        swept.ready_queues = ready.announce(self);
        Ok(swept)
    }

    async fn expire_leases(
        &self,
        now: Timestamp,
        policy: RetryPolicy,
        jitter_seed: u64,
        limit: usize,
    ) -> Result<Swept, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut swept = Swept::default();
        let mut ready = ReadyQueues::default();
        let expired = lock_due(&tx, "expired", now, limit).await?;
        swept.more = expired.len() == limit;
        for (tenant, id) in expired {
            set_tenant(&tx, tenant).await?;
            let Some(job) = load_job(&tx, TenantFilter::Enforced, tenant, id, false).await? else {
                continue;
            };
            let sample = jitter_sample(jitter_seed, job.id.0.as_bytes());
            let Ok(transition) = lifecycle::expire(&job, &policy, sample, now) else {
                continue;
            };
            save_job(&tx, &transition.job).await?;
            if let Some(attempt) = &transition.ended_attempt {
                insert_attempt(&tx, &transition.job, attempt).await?;
                let draft = drafts::job_expired(&job, &transition.job, attempt.outcome);
                append(&tx, tenant, &Actor::System, None, now, [draft]).await?;
                swept.ended.push((transition.job.clone(), attempt.clone()));
            }
            swept.count += 1;
            ready.note(&transition.job);
        }
        tx.commit().await.map_err(pg_error)?;
        swept.ready_queues = ready.announce(self);
        Ok(swept)
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

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT steadfast_next_due()", &[])
            .await
            .map_err(pg_error)?;
        optional_timestamp(row.get(0))
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
