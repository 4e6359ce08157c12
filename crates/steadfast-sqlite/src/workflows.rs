use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::lifecycle::{self, Checkpoint, Delivery, StepStart, WaitOutcome};
use steadfast_core::{Job, JobId, Signal, SignalName, Step, StepName, TenantId, Timestamp, WaitFor};
use steadfast_store::audit::drafts;
use steadfast_store::{
    Enqueued, NewJob, SignalRecord, Signalled, StoreError, TenantScope, Waited, WorkflowLimits, WorkflowStore,
};

use crate::audit::append_for;
use crate::rows::{
    JOB_COLUMNS, insert_attempt, insert_job, job_from_row, load_job, millis, optional_timestamp, query_all, save_job,
    timestamp,
};
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
pub(crate) fn steps_of(conn: &Connection, job: &Job) -> Result<Vec<Step>, StoreError> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM steps WHERE job_id = ?1 AND tenant_id = ?2 ORDER BY position");
    query_all(
        conn,
        &sql,
        params![job.id.to_string(), job.tenant_id.to_string()],
        step_from_row,
    )
}

fn load_step(conn: &Connection, job: &Job, name: &StepName) -> Result<Option<Step>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE job_id = ?1 AND name = ?2"
    ))
    .and_then(|mut select| {
        select
            .query_row(params![job.id.to_string(), name.as_str()], step_from_row)
            .optional()
    })
    .map_err(sqlite_error)
}

fn count(conn: &Connection, sql: &str, job_id: JobId) -> Result<u32, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut select| select.query_row([job_id.to_string()], |row| row.get(0)))
        .map_err(sqlite_error)
}

/// Refuses a new step once the job has `max_steps`.
fn check_step_room(conn: &Connection, job: &Job, limits: WorkflowLimits) -> Result<(), StoreError> {
    let steps = count(conn, "SELECT COUNT(*) FROM steps WHERE job_id = ?1", job.id)?;
    if steps >= limits.max_steps {
        return Err(StoreError::LimitExceeded {
            what: "steps",
            limit: limits.max_steps,
        });
    }
    Ok(())
}

pub(crate) fn save_step(conn: &Connection, job: &Job, step: &Step) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO steps (job_id, name, tenant_id, attempt, started_at, completed_at, output, position) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT COALESCE(MAX(position), 0) + 1 FROM steps WHERE job_id = ?1)) \
         ON CONFLICT (job_id, name) DO UPDATE SET attempt = excluded.attempt, started_at = excluded.started_at, \
         completed_at = excluded.completed_at, output = excluded.output WHERE steps.completed_at IS NULL",
    )
    .and_then(|mut upsert| {
        upsert.execute(params![
            job.id.to_string(),
            step.name.as_str(),
            job.tenant_id.to_string(),
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
pub(crate) fn signals_of(conn: &Connection, job: &Job) -> Result<Vec<SignalRecord>, StoreError> {
    query_all(
        conn,
        "SELECT name, payload, received_at, consumed_at FROM signals WHERE job_id = ?1 AND tenant_id = ?2 ORDER BY seq",
        params![job.id.to_string(), job.tenant_id.to_string()],
        signal_from_row,
    )
}

fn oldest_pending_signal(conn: &Connection, job: &Job, name: &SignalName) -> Result<Option<(i64, Signal)>, StoreError> {
    conn.prepare_cached(
        "SELECT name, payload, received_at, consumed_at, seq FROM signals \
         WHERE job_id = ?1 AND name = ?2 AND consumed_at IS NULL ORDER BY seq LIMIT 1",
    )
    .and_then(|mut select| {
        select
            .query_row(params![job.id.to_string(), name.as_str()], |row| {
                Ok((row.get(4)?, signal_from_row(row)?.signal))
            })
            .optional()
    })
    .map_err(sqlite_error)
}

fn insert_signal(
    conn: &Connection,
    job: &Job,
    signal: &Signal,
    consumed_at: Option<Timestamp>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO signals (job_id, seq, tenant_id, name, payload, received_at, consumed_at) VALUES \
         (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM signals WHERE job_id = ?1), ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            job.id.to_string(),
            job.tenant_id.to_string(),
            signal.name.as_str(),
            signal.payload,
            millis(signal.received_at),
            consumed_at.map(millis),
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

/// Jobs enqueued by a job's steps, oldest first.
pub(crate) fn children_of(conn: &Connection, job: &Job) -> Result<Vec<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND parent_id = ?2 ORDER BY seq");
    let rows = query_all(
        conn,
        &sql,
        params![job.tenant_id.to_string(), job.id.to_string()],
        job_from_row,
    )?;
    Ok(rows.into_iter().map(|(_, job)| job).collect())
}

fn child_of(conn: &Connection, parent: &Job, step: &StepName) -> Result<Option<Job>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND parent_id = ?2 AND parent_step = ?3"
    ))
    .and_then(|mut select| {
        select
            .query_row(
                params![parent.tenant_id.to_string(), parent.id.to_string(), step.as_str()],
                job_from_row,
            )
            .optional()
    })
    .map(|found| found.map(|(_, job)| job))
    .map_err(sqlite_error)
}

fn job_in(conn: &Connection, tenant_id: TenantId, id: JobId) -> Result<Job, StoreError> {
    load_job(conn, tenant_id, id)?.ok_or(StoreError::NotFound)
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
        let (scope, token) = (scope.clone(), token.to_owned());
        self.writer()
            .write(move |conn| {
                let job = job_in(conn, scope.tenant_id(), id)?;
                let existing = load_step(conn, &job, &step)?;
                let started = lifecycle::start_step(&job, &token, existing.as_ref(), step, now)?;
                if let StepStart::Started(step) = &started {
                    if existing.is_none() {
                        check_step_room(conn, &job, limits)?;
                    }
                    save_step(conn, &job, step)?;
                    append_for(conn, &scope, now, [drafts::step_started(&job, step)])?;
                }
                Ok(started)
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
        let (scope, token) = (scope.clone(), token.to_owned());
        self.writer()
            .write(move |conn| {
                let job = job_in(conn, scope.tenant_id(), id)?;
                let existing = load_step(conn, &job, &step)?;
                let checkpoint = lifecycle::checkpoint(&job, &token, existing.as_ref(), step, output, now)?;
                if checkpoint.first {
                    if existing.is_none() {
                        check_step_room(conn, &job, limits)?;
                    }
                    save_step(conn, &job, &checkpoint.step)?;
                    append_for(conn, &scope, now, [drafts::step_completed(&job, &checkpoint.step)])?;
                }
                Ok(checkpoint)
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
        let (scope, token) = (scope.clone(), token.to_owned());
        self.writer()
            .write(move |conn| {
                let job = job_in(conn, scope.tenant_id(), id)?;
                let existing = load_step(conn, &job, &step)?;
                let pending = match &wait_for {
                    WaitFor::Signal { name, .. } => oldest_pending_signal(conn, &job, name)?,
                    WaitFor::Until(_) => None,
                };
                let outcome = lifecycle::wait(
                    &job,
                    &token,
                    step,
                    wait_for,
                    existing.as_ref(),
                    pending.as_ref().map(|(_, signal)| signal),
                    now,
                )?;
                if existing.is_none() && !matches!(outcome, WaitOutcome::AlreadyCompleted(_)) {
                    check_step_room(conn, &job, limits)?;
                }
                match outcome {
                    WaitOutcome::AlreadyCompleted(step) => Ok(Waited::Completed(step)),
                    WaitOutcome::Resolved { step, consumed_signal } => {
                        save_step(conn, &job, &step)?;
                        if let (true, Some((seq, _))) = (consumed_signal, pending) {
                            conn.execute(
                                "UPDATE signals SET consumed_at = ?3 WHERE job_id = ?1 AND seq = ?2",
                                params![job.id.to_string(), seq, millis(now)],
                            )
                            .map_err(sqlite_error)?;
                        }
                        append_for(conn, &scope, now, [drafts::step_completed(&job, &step)])?;
                        Ok(Waited::Completed(step))
                    }
                    WaitOutcome::Suspended(transition) => {
                        save_job(conn, &transition.job)?;
                        if let Some(attempt) = &transition.ended_attempt {
                            insert_attempt(conn, &transition.job, attempt)?;
                        }
                        append_for(conn, &scope, now, [drafts::job_waiting(&job, &transition.job)])?;
                        Ok(Waited::Suspended(Box::new(transition.job)))
                    }
                }
            })
            .await
    }

    async fn signal(
        &self,
        scope: &TenantScope,
        id: JobId,
        name: SignalName,
        payload: String,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<Signalled, StoreError> {
        let scope = scope.clone();
        self.writer()
            .write(move |conn| {
                let job = job_in(conn, scope.tenant_id(), id)?;
                let signal = Signal {
                    name,
                    payload,
                    received_at: now,
                };
                match lifecycle::deliver_signal(&job, signal.clone(), now)? {
                    Delivery::Woke { job, step } => {
                        save_job(conn, &job)?;
                        save_step(conn, &job, &step)?;
                        insert_signal(conn, &job, &signal, Some(now))?;
                        let draft = drafts::signal_received(&job, signal.name.as_str(), &signal.payload, true);
                        append_for(conn, &scope, now, [draft])?;
                        Ok(Signalled { job: *job, woke: true })
                    }
                    Delivery::Stored => {
                        let pending = count(
                            conn,
                            "SELECT COUNT(*) FROM signals WHERE job_id = ?1 AND consumed_at IS NULL",
                            job.id,
                        )?;
                        if pending >= limits.max_pending_signals {
                            return Err(StoreError::LimitExceeded {
                                what: "pending signals",
                                limit: limits.max_pending_signals,
                            });
                        }
                        insert_signal(conn, &job, &signal, None)?;
                        let draft = drafts::signal_received(&job, signal.name.as_str(), &signal.payload, false);
                        append_for(conn, &scope, now, [draft])?;
                        Ok(Signalled { job, woke: false })
                    }
                }
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
        let (scope, token) = (scope.clone(), token.to_owned());
        self.writer()
            .write(move |conn| {
                let parent = job_in(conn, scope.tenant_id(), parent)?;
                // The lease is checked first: a fenced worker learns nothing, not even the child.
                let candidate = lifecycle::spawn_child(&parent, &token, step.clone(), child.id, child.spec, now)?;
                if let Some(existing) = child_of(conn, &parent, &step)? {
                    return Ok(Enqueued {
                        job: existing,
                        replayed: true,
                    });
                }
                let children: u32 = conn
                    .query_row(
                        "SELECT COUNT(*) FROM jobs WHERE tenant_id = ?1 AND parent_id = ?2",
                        params![parent.tenant_id.to_string(), parent.id.to_string()],
                        |row| row.get(0),
                    )
                    .map_err(sqlite_error)?;
                if children >= limits.max_children {
                    return Err(StoreError::LimitExceeded {
                        what: "children",
                        limit: limits.max_children,
                    });
                }
                insert_job(conn, &candidate)?;
                let records = [
                    drafts::job_enqueued(&candidate),
                    drafts::child_spawned(&parent, &candidate),
                ];
                append_for(conn, &scope, now, records)?;
                Ok(Enqueued {
                    job: candidate,
                    replayed: false,
                })
            })
            .await
    }
}
