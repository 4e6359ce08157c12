//! Mapping between rows and core types.

use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::{
    Attempt, AttemptError, FlowKey, IdempotencyKey, Job, JobId, KeyId, Lease, ParentLink, QueueName, ResourceName,
    SignalName, StepName, TenantId, Timestamp, Wait, WaitFor, WorkerId,
};
use steadfast_store::decide::EndedAttempt;
use steadfast_store::{StoreError, wait_columns};

use crate::sqlite_error;

/// Runs a cached query and maps every row.
pub fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut select = conn.prepare_cached(sql).map_err(sqlite_error)?;
    let rows = select.query_map(params, map).map_err(sqlite_error)?;
    rows.collect::<Result<_, _>>().map_err(sqlite_error)
}

pub fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

pub fn timestamp(millis: i64) -> rusqlite::Result<Timestamp> {
    Timestamp::from_millisecond(millis).map_err(|e| conversion(Type::Integer, e))
}

fn conversion(kind: Type, error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, kind, Box::new(error))
}

pub(crate) fn parsed<T, E>(text: String, parse: impl FnOnce(String) -> Result<T, E>) -> rusqlite::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    parse(text).map_err(|e| conversion(Type::Text, e))
}

pub fn optional_timestamp(millis: Option<i64>) -> rusqlite::Result<Option<Timestamp>> {
    millis.map(timestamp).transpose()
}

/// The columns `job_from_row` reads, in order.
pub const JOB_COLUMNS: &str = "seq, id, tenant_id, queue, payload, state, priority, run_at, attempt, \
     uncounted_attempts, max_attempts, timeout_ms, idempotency_key, lease_token, lease_worker_id, lease_key_id, \
     lease_started_at, lease_expires_at, lease_deadline, output, last_error_message, last_error_kind, \
     created_at, updated_at, finished_at, wait_step, wait_signal, wait_until, parent_id, parent_step, traceparent, \
     flow_key, resource, singleton_key, replay_of, schema_version";

fn wait_from_row(row: &Row<'_>) -> rusqlite::Result<Option<Wait>> {
    let Some(step) = row.get::<_, Option<String>>(25)? else {
        return Ok(None);
    };
    let until = optional_timestamp(row.get(27)?)?;
    let wait_for = match row.get::<_, Option<String>>(26)? {
        Some(name) => WaitFor::Signal {
            name: parsed(name, SignalName::new)?,
            deadline: until,
        },
        None => WaitFor::Until(until.ok_or_else(|| conversion(Type::Null, InvalidWait))?),
    };
    Ok(Some(Wait {
        step: parsed(step, StepName::new)?,
        wait_for,
    }))
}

#[derive(Debug, thiserror::Error)]
#[error("a sleep without a wake-up time")]
struct InvalidWait;

/// The three wait columns of a job: step, awaited signal, deadline.
/// A job and its insertion order.
pub fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Job)> {
    let lease = match row.get::<_, Option<String>>(13)? {
        Some(token) => Some(Lease {
            token,
            worker_id: parsed(row.get(14)?, WorkerId::new)?,
            key_id: parsed(row.get(15)?, |s| KeyId::parse(&s))?,
            started_at: timestamp(row.get(16)?)?,
            expires_at: timestamp(row.get(17)?)?,
            deadline: timestamp(row.get(18)?)?,
        }),
        None => None,
    };
    let last_error = row
        .get::<_, Option<String>>(20)?
        .map(|message| -> rusqlite::Result<_> {
            Ok(AttemptError {
                message,
                kind: row.get(21)?,
            })
        })
        .transpose()?;
    let job = Job {
        id: parsed(row.get(1)?, |s| s.parse::<JobId>())?,
        tenant_id: parsed(row.get(2)?, |s| s.parse::<TenantId>())?,
        queue: parsed(row.get(3)?, QueueName::new)?,
        payload: row.get(4)?,
        state: parsed(row.get(5)?, |s| s.parse())?,
        priority: row.get(6)?,
        run_at: timestamp(row.get(7)?)?,
        attempt: row.get(8)?,
        uncounted_attempts: row.get(9)?,
        max_attempts: row.get(10)?,
        timeout: Duration::from_millis(row.get::<_, i64>(11)?.max(0) as u64),
        idempotency_key: row
            .get::<_, Option<String>>(12)?
            .map(|k| parsed(k, IdempotencyKey::new))
            .transpose()?,
        lease,
        output: row.get(19)?,
        last_error,
        created_at: timestamp(row.get(22)?)?,
        updated_at: timestamp(row.get(23)?)?,
        finished_at: optional_timestamp(row.get(24)?)?,
        wait: wait_from_row(row)?,
        parent: match row.get::<_, Option<String>>(28)? {
            Some(job_id) => Some(ParentLink {
                job_id: parsed(job_id, |s| s.parse::<JobId>())?,
                step: parsed(row.get(29)?, StepName::new)?,
            }),
            None => None,
        },
        traceparent: row.get(30)?,
        flow_key: row
            .get::<_, Option<String>>(31)?
            .map(|k| parsed(k, FlowKey::new))
            .transpose()?,
        resource: row
            .get::<_, Option<String>>(32)?
            .map(|r| parsed(r, ResourceName::new))
            .transpose()?,
        singleton_key: row
            .get::<_, Option<String>>(33)?
            .map(|k| parsed(k, FlowKey::new))
            .transpose()?,
        replay_of: row
            .get::<_, Option<String>>(34)?
            .map(|id| parsed(id, |s| s.parse::<JobId>()))
            .transpose()?,
        schema_version: row.get(35)?,
    };
    Ok((row.get(0)?, job))
}

pub fn insert_job(conn: &Connection, job: &Job) -> Result<(), StoreError> {
    let lease = job.lease.as_ref();
    conn.prepare_cached(
        "INSERT INTO jobs (id, tenant_id, queue, payload, state, priority, run_at, attempt, uncounted_attempts, \
         max_attempts, timeout_ms, idempotency_key, lease_token, lease_worker_id, lease_key_id, lease_started_at, \
         lease_expires_at, lease_deadline, output, last_error_message, last_error_kind, created_at, updated_at, \
         finished_at, wait_step, wait_signal, wait_until, parent_id, parent_step, traceparent, flow_key, resource, \
         singleton_key, replay_of, schema_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
         ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35)",
    )
    .and_then(|mut insert| {
        let (wait_step, wait_signal, wait_until) = wait_columns(job);
        insert.execute(params![
            job.id.to_string(),
            job.tenant_id.to_string(),
            job.queue.as_str(),
            job.payload,
            job.state.as_str(),
            job.priority,
            millis(job.run_at),
            job.attempt,
            job.uncounted_attempts,
            job.max_attempts,
            job.timeout.as_millis() as i64,
            job.idempotency_key.as_ref().map(|k| k.as_str()),
            lease.map(|l| l.token.as_str()),
            lease.map(|l| l.worker_id.as_str()),
            lease.map(|l| l.key_id.as_str()),
            lease.map(|l| millis(l.started_at)),
            lease.map(|l| millis(l.expires_at)),
            lease.map(|l| millis(l.deadline)),
            job.output,
            job.last_error.as_ref().map(|e| e.message.as_str()),
            job.last_error.as_ref().and_then(|e| e.kind.as_deref()),
            millis(job.created_at),
            millis(job.updated_at),
            job.finished_at.map(millis),
            wait_step,
            wait_signal,
            wait_until,
            job.parent.as_ref().map(|p| p.job_id.to_string()),
            job.parent.as_ref().map(|p| p.step.as_str()),
            job.traceparent,
            job.flow_key.as_ref().map(|k| k.as_str()),
            job.resource.as_ref().map(|r| r.as_str()),
            job.singleton_key.as_ref().map(|k| k.as_str()),
            job.replay_of.map(|id| id.to_string()),
            job.schema_version,
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

/// Writes the fields a transition may change. Identity, queue, payload and
/// options never change after enqueue, so their indexes are left alone.
pub fn save_job(conn: &Connection, job: &Job) -> Result<(), StoreError> {
    debug_assert_eq!(job.check_invariants(), Ok(()));
    let lease = job.lease.as_ref();
    let updated = conn
        .prepare_cached(
            "UPDATE jobs SET state = ?2, run_at = ?3, attempt = ?4, uncounted_attempts = ?5, lease_token = ?6, \
             lease_worker_id = ?7, lease_key_id = ?8, lease_started_at = ?9, lease_expires_at = ?10, \
             lease_deadline = ?11, output = ?12, last_error_message = ?13, last_error_kind = ?14, \
             updated_at = ?15, finished_at = ?16, wait_step = ?17, wait_signal = ?18, wait_until = ?19 WHERE id = ?1",
        )
        .and_then(|mut update| {
            let (wait_step, wait_signal, wait_until) = wait_columns(job);
            update.execute(params![
                job.id.to_string(),
                job.state.as_str(),
                millis(job.run_at),
                job.attempt,
                job.uncounted_attempts,
                lease.map(|l| l.token.as_str()),
                lease.map(|l| l.worker_id.as_str()),
                lease.map(|l| l.key_id.as_str()),
                lease.map(|l| millis(l.started_at)),
                lease.map(|l| millis(l.expires_at)),
                lease.map(|l| millis(l.deadline)),
                job.output,
                job.last_error.as_ref().map(|e| e.message.as_str()),
                job.last_error.as_ref().and_then(|e| e.kind.as_deref()),
                millis(job.updated_at),
                job.finished_at.map(millis),
                wait_step,
                wait_signal,
                wait_until,
            ])
        })
        .map_err(sqlite_error)?;
    if updated != 1 {
        return Err(StoreError::Corrupt(format!(
            "job {} vanished during a transition",
            job.id
        )));
    }
    Ok(())
}

/// A tenant's job by id; another tenant's job is simply not found.
pub fn load_job(conn: &Connection, tenant_id: TenantId, id: JobId) -> Result<Option<Job>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND tenant_id = ?2"
    ))
    .and_then(|mut select| {
        select
            .query_row(params![id.to_string(), tenant_id.to_string()], job_from_row)
            .optional()
    })
    .map(|found| found.map(|(_, job)| job))
    .map_err(sqlite_error)
}

pub fn insert_attempt(conn: &Connection, ended: &EndedAttempt) -> Result<(), StoreError> {
    let attempt = &ended.attempt;
    conn.prepare_cached(
        "INSERT INTO attempts (job_id, number, tenant_id, worker_id, key_id, started_at, ended_at, outcome, \
         error_message, error_kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            ended.job_id.to_string(),
            attempt.number,
            ended.tenant_id.to_string(),
            attempt.worker_id.as_str(),
            attempt.key_id.as_str(),
            millis(attempt.started_at),
            millis(attempt.ended_at),
            attempt.outcome.as_str(),
            attempt.error.as_ref().map(|e| e.message.as_str()),
            attempt.error.as_ref().and_then(|e| e.kind.as_deref()),
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

pub fn attempts_of(conn: &Connection, tenant: TenantId, job_id: JobId) -> Result<Vec<Attempt>, StoreError> {
    let mut select = conn
        .prepare_cached(
            "SELECT number, worker_id, key_id, started_at, ended_at, outcome, error_message, error_kind \
             FROM attempts WHERE job_id = ?1 AND tenant_id = ?2 ORDER BY number",
        )
        .map_err(sqlite_error)?;
    let rows = select
        .query_map(params![job_id.to_string(), tenant.to_string()], |row| {
            let error = row
                .get::<_, Option<String>>(6)?
                .map(|message| -> rusqlite::Result<_> {
                    Ok(AttemptError {
                        message,
                        kind: row.get(7)?,
                    })
                })
                .transpose()?;
            Ok(Attempt {
                number: row.get(0)?,
                worker_id: parsed(row.get(1)?, WorkerId::new)?,
                key_id: parsed(row.get(2)?, |s| KeyId::parse(&s))?,
                started_at: timestamp(row.get(3)?)?,
                ended_at: timestamp(row.get(4)?)?,
                outcome: parsed(row.get(5)?, |s| s.parse())?,
                error,
            })
        })
        .map_err(sqlite_error)?;
    rows.collect::<Result<_, _>>().map_err(sqlite_error)
}
