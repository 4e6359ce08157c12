//! The dashboard's reads (see `steadfast_store::dashboard`), each in a
//! transaction with a statement timeout.

use std::time::Duration;

use async_trait::async_trait;
use steadfast_core::{Job, JobId, JobState, QueueName, StepName, TenantId, Timestamp, WorkerId};
use steadfast_store::dashboard::{
    self, Attention, DashboardStore, DeadGroup, LapsedAttempt, MAX_DEAD_GROUPS, MAX_SUMMARY_QUEUES, QueueSummary,
    UncertainStepRow,
};
use steadfast_store::{StoreError, TenantScope};
use tokio_postgres::Row;

use crate::rows::{JOB_COLUMNS, job_from_row, millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, Transaction, pg_error, statement};

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn state(text: String) -> Result<JobState, StoreError> {
    text.parse().map_err(corrupt)
}

fn queue(text: String) -> Result<QueueName, StoreError> {
    QueueName::new(text).map_err(corrupt)
}

/// Runs `read` in a transaction of `scope`'s tenant whose statements stop
/// after `time_limit` (then `Unavailable`).
async fn bounded<T>(
    store: &PostgresStore,
    scope: &TenantScope,
    time_limit: Duration,
    read: impl AsyncFnOnce(&Transaction, TenantId) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tenant = scope.tenant_id();
    store
        .transaction(Some(tenant), Durability::Durable, async |tx| {
            let ms = time_limit.as_millis().max(1).to_string();
            tx.execute("SELECT set_config('statement_timeout', $1, true)", &[&ms])
                .await
                .map_err(pg_error)?;
            read(tx, tenant).await
        })
        .await
}

async fn rows(
    tx: &Transaction,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    tx.query(&statement(tx, sql).await?, params).await.map_err(pg_error)
}

/// Unfinished counts of every queue, and what each finished since
/// `since`, each read riding an index as the embedded store's do: queued
/// jobs from `jobs_ready`, the other unfinished states (bounded by workers
/// and waits) by state, and the last hour of each queue found by skipping
/// through `jobs_finished` queue to queue.
async fn summaries(tx: &Transaction, tenant: TenantId, since: Timestamp) -> Result<Vec<QueueSummary>, StoreError> {
    let queued = rows(
        tx,
        "SELECT queue, 'queued', count(*), min(run_at) FROM jobs WHERE tenant_id = $1 AND state = 'queued' \
         GROUP BY queue \
         UNION ALL SELECT queue, state, count(*), NULL FROM jobs \
         WHERE tenant_id = $1 AND state IN ('scheduled', 'running', 'waiting') GROUP BY queue, state",
        &[&tenant.0],
    )
    .await?;
    let unfinished = queued
        .into_iter()
        .map(|row| {
            let oldest = optional_timestamp(row.get(3))?;
            Ok((
                queue(row.get(0))?,
                state(row.get(1))?,
                row.get::<_, i64>(2) as u64,
                oldest,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let finished = rows(
        tx,
        "WITH RECURSIVE q(queue) AS ( \
           SELECT (SELECT min(queue) FROM jobs WHERE tenant_id = $1 AND finished_at IS NOT NULL) \
           UNION ALL SELECT (SELECT min(queue) FROM jobs WHERE tenant_id = $1 AND finished_at IS NOT NULL \
                             AND queue > q.queue) FROM q WHERE q.queue IS NOT NULL) \
         SELECT q.queue, c.state, c.n FROM (SELECT queue FROM q WHERE queue IS NOT NULL LIMIT $3) q \
         CROSS JOIN LATERAL (SELECT state, count(*) AS n FROM jobs \
                             WHERE tenant_id = $1 AND queue = q.queue AND finished_at >= $2 GROUP BY state) c",
        &[&tenant.0, &millis(since), &(MAX_SUMMARY_QUEUES as i64)],
    )
    .await?
    .into_iter()
    .map(|row| Ok((queue(row.get(0))?, state(row.get(1))?, row.get::<_, i64>(2) as u64)))
    .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(dashboard::summaries(unfinished, finished))
}

async fn jobs_where(tx: &Transaction, tenant: TenantId, filter: &str, limit: i64) -> Result<Vec<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND {filter} ORDER BY seq DESC LIMIT $2");
    rows(tx, &sql, &[&tenant.0, &limit])
        .await?
        .iter()
        .map(|row| job_from_row(row).map(|(_, job)| job))
        .collect()
}

async fn attention(tx: &Transaction, tenant: TenantId, since: Timestamp, limit: u32) -> Result<Attention, StoreError> {
    let limit = i64::from(limit);
    let uncertain_steps = rows(
        tx,
        "SELECT s.job_id, j.queue, j.state, s.name, s.attempt, s.started_at FROM steps s \
         JOIN jobs j ON j.tenant_id = s.tenant_id AND j.id = s.job_id \
         WHERE s.tenant_id = $1 AND s.completed_at IS NULL AND NOT (j.state = 'running' AND j.attempt = s.attempt) \
         ORDER BY s.started_at DESC LIMIT $2",
        &[&tenant.0, &limit],
    )
    .await?
    .into_iter()
    .map(|row| {
        Ok(UncertainStepRow {
            job_id: JobId(row.get(0)),
            queue: queue(row.get(1))?,
            job_state: state(row.get(2))?,
            step: StepName::new(row.get::<_, String>(3)).map_err(corrupt)?,
            attempt: row.get::<_, i32>(4) as u32,
            started_at: timestamp(row.get(5))?,
        })
    })
    .collect::<Result<_, StoreError>>()?;
    let lapsed = rows(
        tx,
        "SELECT a.job_id, j.queue, a.number, a.worker_id, a.ended_at, a.outcome FROM attempts a \
         JOIN jobs j ON j.tenant_id = a.tenant_id AND j.id = a.job_id \
         WHERE a.tenant_id = $1 AND a.outcome IN ('lease_expired', 'timed_out') AND a.ended_at >= $2 \
         ORDER BY a.ended_at DESC LIMIT $3",
        &[&tenant.0, &millis(since), &limit],
    )
    .await?
    .into_iter()
    .map(|row| {
        Ok(LapsedAttempt {
            job_id: JobId(row.get(0)),
            queue: queue(row.get(1))?,
            attempt: row.get::<_, i32>(2) as u32,
            worker_id: WorkerId::new(row.get::<_, String>(3)).map_err(corrupt)?,
            ended_at: timestamp(row.get(4))?,
            outcome: row.get::<_, String>(5).parse().map_err(corrupt)?,
        })
    })
    .collect::<Result<_, StoreError>>()?;
    Ok(Attention {
        dead: jobs_where(tx, tenant, "state = 'dead'", limit).await?,
        uncertain_steps,
        awaiting_signals: jobs_where(tx, tenant, "state = 'waiting' AND wait_signal IS NOT NULL", limit).await?,
        lapsed,
    })
}

async fn dead_groups(tx: &Transaction, tenant: TenantId) -> Result<Vec<DeadGroup>, StoreError> {
    rows(
        tx,
        "SELECT last_error_kind, count(*) AS n, max(finished_at) FROM jobs WHERE tenant_id = $1 AND state = 'dead' \
         GROUP BY last_error_kind ORDER BY n DESC, last_error_kind LIMIT $2",
        &[&tenant.0, &(MAX_DEAD_GROUPS as i64)],
    )
    .await?
    .into_iter()
    .map(|row| {
        Ok(DeadGroup {
            kind: row.get(0),
            count: row.get::<_, i64>(1) as u64,
            latest: optional_timestamp(row.get(2))?.unwrap_or(Timestamp::UNIX_EPOCH),
        })
    })
    .collect()
}

#[async_trait]
impl DashboardStore for PostgresStore {
    async fn queue_summaries(
        &self,
        scope: &TenantScope,
        since: Timestamp,
        time_limit: Duration,
    ) -> Result<Vec<QueueSummary>, StoreError> {
        bounded(self, scope, time_limit, async |tx, tenant| {
            summaries(tx, tenant, since).await
        })
        .await
    }

    async fn attention(
        &self,
        scope: &TenantScope,
        since: Timestamp,
        limit: u32,
        time_limit: Duration,
    ) -> Result<Attention, StoreError> {
        bounded(self, scope, time_limit, async |tx, tenant| {
            attention(tx, tenant, since, limit).await
        })
        .await
    }

    async fn dead_groups(&self, scope: &TenantScope, time_limit: Duration) -> Result<Vec<DeadGroup>, StoreError> {
        bounded(self, scope, time_limit, async |tx, tenant| {
            dead_groups(tx, tenant).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use steadfast_store::StoreError;

    use super::bounded;
    use crate::test_support::fresh_store;

    #[tokio::test]
    async fn a_read_past_its_time_limit_is_stopped() {
        let (store, _database) = fresh_store().await;
        let scope = steadfast_store::auth::system_for(steadfast_core::TenantId(uuid::Uuid::now_v7()));
        let stopped = bounded(&store, &scope, Duration::from_millis(20), async |tx, _| {
            tx.execute("SELECT pg_sleep(5)", &[]).await.map_err(crate::pg_error)
        })
        .await;
        assert!(
            matches!(stopped, Err(StoreError::Unavailable(ref why)) if why.starts_with("57014")),
            "{stopped:?}"
        );
    }
}
