use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::lifecycle::{Checkpoint, StepResolution, StepStart};
use steadfast_core::{Job, JobId, Reason, Signal, SignalName, Step, StepName, TenantId, Timestamp, WaitFor};
use steadfast_store::decide::{
    self, Author, ConsumedSignal, ForgottenStep, PendingSignal, SignalWrite, StepRows, StepWrite,
};
use steadfast_store::{
    Enqueued, NewJob, SignalRecord, Signalled, StepDone, StepOp, StoreError, TenantScope, Waited, WorkflowLimits,
    WorkflowStore,
};

use crate::rows::{JOB_COLUMNS, job_from_row, load_job, millis, optional_timestamp, query_all, timestamp};
use crate::writer::Durability;
use crate::{SqliteStore, sqlite_error};

fn text_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

const STEP_COLUMNS: &str = "name, attempt, started_at, completed_at, output";

fn step_from_row(row: &Row<'_>) -> rusqlite::Result<Step> {
    Ok(Step {
        name: StepName::new(row.get::<_, String>(0)?).map_err(text_error)?,
        attempt: row.get(1)?,
        started_at: timestamp(row.get(2)?)?,
        completed_at: optional_timestamp(row.get(3)?)?,
        output: row.get(4)?,
    })
}

/// A job's steps in the order they were first recorded.
pub(crate) fn steps_of(conn: &Connection, tenant: TenantId, job_id: JobId) -> Result<Vec<Step>, StoreError> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM steps WHERE job_id = ?1 AND tenant_id = ?2 ORDER BY position");
    query_all(
        conn,
        &sql,
        params![job_id.to_string(), tenant.to_string()],
        step_from_row,
    )
}

/// What a step operation decides on: the job, its step `name`, and how many
/// steps it has.
fn step_rows(conn: &Connection, tenant: TenantId, id: JobId, name: &StepName) -> Result<StepRows, StoreError> {
    let job = load_job(conn, tenant, id)?;
    let (step, step_count) = match &job {
        None => (None, 0),
        Some(_) => {
            let step = conn
                .prepare_cached(&format!(
                    "SELECT {STEP_COLUMNS} FROM steps WHERE job_id = ?1 AND name = ?2"
                ))
                .and_then(|mut select| {
                    select
                        .query_row(params![id.to_string(), name.as_str()], step_from_row)
                        .optional()
                })
                .map_err(sqlite_error)?;
            (step, count(conn, "SELECT COUNT(*) FROM steps WHERE job_id = ?1", id)?)
        }
    };
    Ok(StepRows { job, step, step_count })
}

fn count(conn: &Connection, sql: &str, job_id: JobId) -> Result<u32, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut select| select.query_row([job_id.to_string()], |row| row.get(0)))
        .map_err(sqlite_error)
}

/// Records a step; a completed step is never overwritten (the first checkpoint wins).
pub(crate) fn save_step(conn: &Connection, write: &StepWrite) -> Result<(), StoreError> {
    let step = &write.step;
    conn.prepare_cached(
        "INSERT INTO steps (job_id, name, tenant_id, attempt, started_at, completed_at, output, position) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT COALESCE(MAX(position), 0) + 1 FROM steps WHERE job_id = ?1)) \
         ON CONFLICT (job_id, name) DO UPDATE SET attempt = excluded.attempt, started_at = excluded.started_at, \
         completed_at = excluded.completed_at, output = excluded.output WHERE steps.completed_at IS NULL",
    )
    .and_then(|mut upsert| {
        upsert.execute(params![
            write.job_id.to_string(),
            step.name.as_str(),
            write.tenant_id.to_string(),
            step.attempt,
            millis(step.started_at),
            step.completed_at.map(millis),
            step.output,
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

fn signal_from_row(row: &Row<'_>) -> rusqlite::Result<SignalRecord> {
    Ok(SignalRecord {
        signal: Signal {
            name: SignalName::new(row.get::<_, String>(0)?).map_err(text_error)?,
            payload: row.get(1)?,
            received_at: timestamp(row.get(2)?)?,
        },
        consumed_at: optional_timestamp(row.get(3)?)?,
    })
}

/// Signals delivered to a job, oldest first.
pub(crate) fn signals_of(conn: &Connection, tenant: TenantId, job_id: JobId) -> Result<Vec<SignalRecord>, StoreError> {
    query_all(
        conn,
        "SELECT name, payload, received_at, consumed_at FROM signals WHERE job_id = ?1 AND tenant_id = ?2 ORDER BY seq",
        params![job_id.to_string(), tenant.to_string()],
        signal_from_row,
    )
}

fn oldest_pending_signal(
    conn: &Connection,
    job_id: JobId,
    name: &SignalName,
) -> Result<Option<PendingSignal>, StoreError> {
    conn.prepare_cached(
        "SELECT name, payload, received_at, consumed_at, seq FROM signals \
         WHERE job_id = ?1 AND name = ?2 AND consumed_at IS NULL ORDER BY seq LIMIT 1",
    )
    .and_then(|mut select| {
        select
            .query_row(params![job_id.to_string(), name.as_str()], |row| {
                Ok(PendingSignal {
                    seq: row.get(4)?,
                    signal: signal_from_row(row)?.signal,
                })
            })
            .optional()
    })
    .map_err(sqlite_error)
}

/// Removes an uncompleted step's marker; a completed step never goes.
pub(crate) fn forget_step(conn: &Connection, forgotten: &ForgottenStep) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM steps WHERE job_id = ?1 AND name = ?2 AND completed_at IS NULL")
        .and_then(|mut delete| delete.execute(params![forgotten.job_id.to_string(), forgotten.name.as_str()]))
        .map_err(sqlite_error)?;
    Ok(())
}

pub(crate) fn consume_signal(conn: &Connection, consumed: &ConsumedSignal) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE signals SET consumed_at = ?3 WHERE job_id = ?1 AND seq = ?2")
        .and_then(|mut update| update.execute(params![consumed.job_id.to_string(), consumed.seq, millis(consumed.at)]))
        .map_err(sqlite_error)?;
    Ok(())
}

/// Appends a signal to its job's queue.
pub(crate) fn insert_signal(conn: &Connection, write: &SignalWrite) -> Result<(), StoreError> {
    let signal = &write.signal;
    conn.prepare_cached(
        "INSERT INTO signals (job_id, seq, tenant_id, name, payload, received_at, consumed_at) VALUES \
         (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM signals WHERE job_id = ?1), ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            write.job_id.to_string(),
            write.tenant_id.to_string(),
            signal.name.as_str(),
            signal.payload,
            millis(signal.received_at),
            write.consumed_at.map(millis),
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

/// Jobs enqueued by a job's steps, oldest first.
pub(crate) fn children_of(conn: &Connection, tenant: TenantId, job_id: JobId) -> Result<Vec<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND parent_id = ?2 ORDER BY seq");
    let rows = query_all(
        conn,
        &sql,
        params![tenant.to_string(), job_id.to_string()],
        job_from_row,
    )?;
    Ok(rows.into_iter().map(|(_, job)| job).collect())
}

fn child_of(conn: &Connection, tenant: TenantId, parent: JobId, step: &StepName) -> Result<Option<Job>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND parent_id = ?2 AND parent_step = ?3"
    ))
    .and_then(|mut select| {
        select
            .query_row(
                params![tenant.to_string(), parent.to_string(), step.as_str()],
                job_from_row,
            )
            .optional()
    })
    .map(|found| found.map(|(_, job)| job))
    .map_err(sqlite_error)
}

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn start_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<StepStart, StoreError> {
        let (tenant, token) = (scope.tenant_id(), token.to_owned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let rows = step_rows(conn, tenant, id, &step)?;
            decide::start_step(rows, &token, step, limits, now)
        })
        .await
    }

    async fn checkpoint_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
        output: String,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Checkpoint, StoreError> {
        let (tenant, token) = (scope.tenant_id(), token.to_owned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let rows = step_rows(conn, tenant, id, &step)?;
            decide::checkpoint_step(rows, &token, step, output, limits, now)
        })
        .await
    }

    async fn step_many(
        &self,
        scope: &TenantScope,
        ops: Vec<StepOp>,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Vec<Result<StepDone, StoreError>>, StoreError> {
        let tenant = scope.tenant_id();
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let rows = ops
                .iter()
                .map(|op| step_rows(conn, tenant, op.id, &op.step))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(decide::step_many(ops, rows, limits, now))
        })
        .await
    }

    async fn wait(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
        wait_for: WaitFor,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Waited, StoreError> {
        let (tenant, token) = (scope.tenant_id(), token.to_owned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let rows = step_rows(conn, tenant, id, &step)?;
            let pending = match (&wait_for, &rows.job) {
                (WaitFor::Signal { name, .. }, Some(_)) => oldest_pending_signal(conn, id, name)?,
                _ => None,
            };
            decide::wait(rows, pending, &token, step, wait_for, limits, now)
        })
        .await
    }

    async fn signal(
        &self,
        scope: &TenantScope,
        id: JobId,
        name: SignalName,
        payload: String,
        reason: Option<&Reason>,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Signalled, StoreError> {
        let (tenant, reason) = (scope.tenant_id(), reason.cloned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let job = load_job(conn, tenant, id)?;
            let pending = count(
                conn,
                "SELECT COUNT(*) FROM signals WHERE job_id = ?1 AND consumed_at IS NULL",
                id,
            )?;
            decide::signal(job, pending, name, payload, reason.as_ref(), limits, now)
        })
        .await
    }

    async fn resolve_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        step: StepName,
        resolution: StepResolution,
        reason: &Reason,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        let (tenant, reason) = (scope.tenant_id(), reason.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let rows = step_rows(conn, tenant, id, &step)?;
            decide::resolve_step(rows.job, rows.step, &resolution, &reason, now)
        })
        .await
    }

    async fn spawn_child(
        &self,
        scope: &TenantScope,
        parent: JobId,
        token: &str,
        step: StepName,
        child: NewJob,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Enqueued, StoreError> {
        let (tenant, token) = (scope.tenant_id(), token.to_owned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let parent_job = load_job(conn, tenant, parent)?;
            let existing = child_of(conn, tenant, parent, &step)?;
            let children: u32 = conn
                .prepare_cached("SELECT COUNT(*) FROM jobs WHERE tenant_id = ?1 AND parent_id = ?2")
                .and_then(|mut select| {
                    select.query_row(params![tenant.to_string(), parent.to_string()], |row| row.get(0))
                })
                .map_err(sqlite_error)?;
            decide::spawn_child(parent_job, existing, children, &token, step, child, limits, now)
        })
        .await
    }
}
