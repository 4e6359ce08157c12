//! The dashboard's reads (see `steadfast_store::dashboard`), each on a
//! reader connection with a time limit.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, Row, params};
use steadfast_core::{JobId, JobState, QueueName, StepName, TenantId, Timestamp, WorkerId};
use steadfast_store::dashboard::{
    self, Attention, DashboardStore, DeadGroup, LapsedAttempt, MAX_DEAD_GROUPS, MAX_SUMMARY_QUEUES, QueueSummary,
    UncertainStepRow,
};
use steadfast_store::{StoreError, TenantScope};

use crate::SqliteStore;
use crate::rows::{JOB_COLUMNS, job_from_row, millis, optional_timestamp, parsed, query_all, timestamp};

fn state(text: String) -> rusqlite::Result<JobState> {
    parsed(text, |s| s.parse::<JobState>())
}

fn queue(text: String) -> rusqlite::Result<QueueName> {
    parsed(text, QueueName::new)
}

/// Unfinished counts of every queue, and what each finished since
/// `since`. Each read rides an index: queued jobs (the big backlog) are
/// counted from `jobs_ready` alone; the other unfinished states, which
/// workers and waits bound, through `jobs_by_state`; queues that finished
/// jobs are found by skipping through `jobs_finished`, queue to queue, and
/// each one's last hour is a range of it.
fn summaries(conn: &Connection, tenant: TenantId, since: Timestamp) -> Result<Vec<QueueSummary>, StoreError> {
    let t = tenant.to_string();
    let mut unfinished = query_all(
        conn,
        "SELECT queue, count(*), min(run_at) FROM jobs INDEXED BY jobs_ready \
         WHERE tenant_id = ?1 AND state = 'queued' GROUP BY queue",
        params![t],
        |row| {
            let oldest = optional_timestamp(row.get(2)?)?;
            Ok((
                queue(row.get(0)?)?,
                JobState::Queued,
                row.get::<_, i64>(1)? as u64,
                oldest,
            ))
        },
    )?;
    unfinished.extend(query_all(
        conn,
        "SELECT queue, state, count(*) FROM jobs INDEXED BY jobs_by_state \
         WHERE tenant_id = ?1 AND state IN ('scheduled', 'running', 'waiting') GROUP BY queue, state",
        params![t],
        |row| {
            Ok((
                queue(row.get(0)?)?,
                state(row.get(1)?)?,
                row.get::<_, i64>(2)? as u64,
                None,
            ))
        },
    )?);
    let finishing = query_all(
        conn,
        "WITH RECURSIVE q(queue) AS ( \
           SELECT (SELECT min(queue) FROM jobs WHERE tenant_id = ?1 AND finished_at IS NOT NULL) \
           UNION ALL SELECT (SELECT min(queue) FROM jobs WHERE tenant_id = ?1 AND finished_at IS NOT NULL \
                             AND queue > q.queue) FROM q WHERE q.queue IS NOT NULL) \
         SELECT queue FROM q WHERE queue IS NOT NULL LIMIT ?2",
        params![t, MAX_SUMMARY_QUEUES as i64],
        |row| queue(row.get(0)?),
    )?;
    let mut finished = Vec::new();
    for name in finishing {
        finished.extend(query_all(
            conn,
            "SELECT state, count(*) FROM jobs INDEXED BY jobs_finished \
             WHERE tenant_id = ?1 AND queue = ?2 AND finished_at >= ?3 GROUP BY state",
            params![t, name.as_str(), millis(since)],
            |row| Ok((name.clone(), state(row.get(0)?)?, row.get::<_, i64>(1)? as u64)),
        )?);
    }
    Ok(dashboard::summaries(unfinished, finished))
}

fn jobs_where(
    conn: &Connection,
    tenant: TenantId,
    filter: &str,
    limit: u32,
) -> Result<Vec<steadfast_core::Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND {filter} ORDER BY seq DESC LIMIT ?2");
    let rows = query_all(conn, &sql, params![tenant.to_string(), limit], job_from_row)?;
    Ok(rows.into_iter().map(|(_, job)| job).collect())
}

fn uncertain_step(row: &Row<'_>) -> rusqlite::Result<UncertainStepRow> {
    Ok(UncertainStepRow {
        job_id: parsed(row.get(0)?, |s| s.parse::<JobId>())?,
        queue: queue(row.get(1)?)?,
        job_state: state(row.get(2)?)?,
        step: parsed(row.get(3)?, StepName::new)?,
        attempt: row.get(4)?,
        started_at: timestamp(row.get(5)?)?,
    })
}

fn lapsed(row: &Row<'_>) -> rusqlite::Result<LapsedAttempt> {
    Ok(LapsedAttempt {
        job_id: parsed(row.get(0)?, |s| s.parse::<JobId>())?,
        queue: queue(row.get(1)?)?,
        attempt: row.get(2)?,
        worker_id: parsed(row.get(3)?, WorkerId::new)?,
        ended_at: timestamp(row.get(4)?)?,
        outcome: parsed(row.get(5)?, |s| s.parse())?,
    })
}

fn attention(conn: &Connection, tenant: TenantId, since: Timestamp, limit: u32) -> Result<Attention, StoreError> {
    let t = tenant.to_string();
    // A step is uncertain when its attempt is not the one running now.
    let uncertain_steps = query_all(
        conn,
        "SELECT s.job_id, j.queue, j.state, s.name, s.attempt, s.started_at FROM steps s \
         JOIN jobs j ON j.id = s.job_id \
         WHERE s.tenant_id = ?1 AND s.completed_at IS NULL AND NOT (j.state = 'running' AND j.attempt = s.attempt) \
         ORDER BY s.started_at DESC LIMIT ?2",
        params![t, limit],
        uncertain_step,
    )?;
    let lapsed = query_all(
        conn,
        "SELECT a.job_id, j.queue, a.number, a.worker_id, a.ended_at, a.outcome FROM attempts a \
         JOIN jobs j ON j.id = a.job_id \
         WHERE a.tenant_id = ?1 AND a.outcome IN ('lease_expired', 'timed_out') AND a.ended_at >= ?2 \
         ORDER BY a.ended_at DESC LIMIT ?3",
        params![t, millis(since), limit],
        lapsed,
    )?;
    Ok(Attention {
        dead: jobs_where(conn, tenant, "state = 'dead'", limit)?,
        uncertain_steps,
        awaiting_signals: jobs_where(conn, tenant, "state = 'waiting' AND wait_signal IS NOT NULL", limit)?,
        lapsed,
    })
}

fn dead_groups(conn: &Connection, tenant: TenantId) -> Result<Vec<DeadGroup>, StoreError> {
    query_all(
        conn,
        "SELECT last_error_kind, count(*) AS n, max(finished_at) FROM jobs INDEXED BY jobs_dead_by_kind \
         WHERE tenant_id = ?1 AND state = 'dead' GROUP BY last_error_kind ORDER BY n DESC, last_error_kind LIMIT ?2",
        params![tenant.to_string(), MAX_DEAD_GROUPS as i64],
        |row| {
            Ok(DeadGroup {
                kind: row.get(0)?,
                count: row.get::<_, i64>(1)? as u64,
                latest: timestamp(row.get(2)?)?,
            })
        },
    )
}

#[async_trait]
impl DashboardStore for SqliteStore {
    async fn queue_summaries(
        &self,
        scope: &TenantScope,
        since: Timestamp,
        time_limit: Duration,
    ) -> Result<Vec<QueueSummary>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read_within(time_limit, move |conn| summaries(conn, tenant, since))
            .await
    }

    async fn attention(
        &self,
        scope: &TenantScope,
        since: Timestamp,
        limit: u32,
        time_limit: Duration,
    ) -> Result<Attention, StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read_within(time_limit, move |conn| attention(conn, tenant, since, limit))
            .await
    }

    async fn dead_groups(&self, scope: &TenantScope, time_limit: Duration) -> Result<Vec<DeadGroup>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read_within(time_limit, move |conn| dead_groups(conn, tenant))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use steadfast_store::StoreError;

    use crate::SqliteStore;

    #[tokio::test]
    async fn a_read_past_its_time_limit_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("steadfast.db")).unwrap();
        let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
        let stopped = store
            .readers()
            .read_within(Duration::from_millis(20), move |conn| {
                conn.query_row(endless, [], |row| row.get::<_, i64>(0))
                    .map_err(crate::sqlite_error)
            })
            .await;
        assert!(
            matches!(stopped, Err(StoreError::Unavailable(ref why)) if why.contains("time limit")),
            "{stopped:?}"
        );
        // The connection goes back to work without the limit.
        let quick = store
            .readers()
            .read(|conn| {
                conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                    .map_err(crate::sqlite_error)
            })
            .await;
        assert_eq!(quick, Ok(1));
    }
}
