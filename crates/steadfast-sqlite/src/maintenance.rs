use async_trait::async_trait;
use rusqlite::{Connection, params};
use steadfast_core::{Job, QueueName, RetryPolicy, TenantId, Timestamp};
use steadfast_store::decide::{self, Author};
use steadfast_store::{Maintenance, QueueStat, StoreError, Swept};

use crate::rows::{JOB_COLUMNS, job_from_row, millis, optional_timestamp, query_all};
use crate::writer::Durability;
use crate::{SqliteStore, sqlite_error};

fn due_jobs(conn: &Connection, sql: &str, now: Timestamp, limit: usize) -> Result<Vec<Job>, StoreError> {
    let rows = query_all(conn, sql, params![millis(now), limit as i64], job_from_row)?;
    Ok(rows.into_iter().map(|(_, job)| job).collect())
}

#[async_trait]
impl Maintenance for SqliteStore {
    async fn fire_timers(&self, now: Timestamp, limit: usize) -> Result<Swept, StoreError> {
        self.decided(Author::system(), Durability::Durable, now, move |conn| {
            let scheduled = due_jobs(
                conn,
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'scheduled' AND run_at <= ?1 ORDER BY run_at LIMIT ?2"
                ),
                now,
                limit,
            )?;
            let waiting = due_jobs(
                conn,
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'waiting' AND wait_until <= ?1 \
                     ORDER BY wait_until LIMIT ?2"
                ),
                now,
                limit,
            )?;
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
        self.decided(Author::system(), Durability::Durable, now, move |conn| {
            let due = due_jobs(
                conn,
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_expires_at <= ?1 \
                     ORDER BY lease_expires_at LIMIT ?2"
                ),
                now,
                limit,
            )?;
            Ok(decide::expire_leases(due, &policy, jitter_seed, limit, now))
        })
        .await
    }

    async fn prune_idempotency_keys(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        self.writer()
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM idempotency_keys WHERE (tenant_id, key) IN \
                     (SELECT tenant_id, key FROM idempotency_keys WHERE expires_at <= ?1 LIMIT ?2)",
                    params![millis(now), limit as i64],
                )
                .map_err(sqlite_error)
            })
            .await
    }

    async fn chain_audit(&self, _limit: usize) -> Result<usize, StoreError> {
        // The single writer links each record into its chain as it appends.
        Ok(0)
    }

    async fn refresh_statistics(&self) -> Result<usize, StoreError> {
        // No collected statistics: SQLite plans from the indexes alone.
        Ok(0)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.readers()
            .read(|conn| {
                let due: [Option<i64>; 3] = conn
                    .query_row(
                        "SELECT (SELECT MIN(run_at) FROM jobs WHERE state = 'scheduled'), \
                                (SELECT MIN(lease_expires_at) FROM jobs WHERE state = 'running'), \
                                (SELECT MIN(wait_until) FROM jobs WHERE state = 'waiting')",
                        [],
                        |row| Ok([row.get(0)?, row.get(1)?, row.get(2)?]),
                    )
                    .map_err(sqlite_error)?;
                let earliest = due.into_iter().flatten().min();
                optional_timestamp(earliest).map_err(sqlite_error)
            })
            .await
    }

    async fn prune_flow_keys(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        self.writer()
            .write(move |conn| {
                conn.prepare_cached(
                    "DELETE FROM flow_keys WHERE (tenant_id, queue, flow_key) IN \
                     (SELECT tenant_id, queue, flow_key FROM flow_keys WHERE rate_tat_ns < ?1 LIMIT ?2)",
                )
                .and_then(|mut delete| delete.execute(params![now.as_nanosecond() as i64, limit as i64]))
                .map_err(sqlite_error)
            })
            .await
    }

    async fn flow_tenants(&self, limit: usize) -> Result<Vec<TenantId>, StoreError> {
        self.readers()
            .read(move |conn| {
                let ids = query_all(
                    conn,
                    "SELECT tenant_id FROM queue_settings WHERE policy IS NOT NULL \
                     UNION SELECT tenant_id FROM resources ORDER BY 1 LIMIT ?1",
                    [limit as i64],
                    |row| row.get::<_, String>(0),
                )?;
                ids.into_iter()
                    .map(|id| {
                        id.parse()
                            .map_err(|_| StoreError::Corrupt(format!("bad tenant id {id}")))
                    })
                    .collect()
            })
            .await
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError> {
        self.readers()
            .read(|conn| {
                let sql = "SELECT queue, state, count(*), min(run_at) FROM jobs \
                           WHERE state IN ('scheduled', 'queued', 'running', 'waiting') GROUP BY queue, state";
                let rows = query_all(conn, sql, [], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                    ))
                })?;
                rows.into_iter()
                    .map(|(queue, state, count, oldest)| {
                        let corrupt = |e: String| StoreError::Corrupt(e);
                        Ok(QueueStat {
                            queue: QueueName::new(queue).map_err(|e| corrupt(e.to_string()))?,
                            state: state
                                .parse()
                                .map_err(|e: steadfast_core::job::UnknownState| corrupt(e.to_string()))?,
                            count: count as u64,
                            oldest_run_at: optional_timestamp(oldest).map_err(sqlite_error)?,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers()
            .read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(sqlite_error))
            .await
    }
}
