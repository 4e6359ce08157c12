//! Mapping between rows and core types, and the job queries every module uses.

use std::time::Duration;

use deadpool_postgres::Transaction;
use steadfast_core::{
    Attempt, AttemptError, IdempotencyKey, Job, JobId, KeyId, Lease, ParentLink, QueueName, SignalName, StepName,
    TenantId, Timestamp, Wait, WaitFor, WorkerId,
};
use steadfast_store::StoreError;
use tokio_postgres::Row;

use crate::{TenantFilter, pg_error, statement};

pub fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub fn timestamp(millis: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(millis).map_err(corrupt)
}

pub fn optional_timestamp(millis: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    millis.map(timestamp).transpose()
}

/// The columns `job_from_row` reads, in order.
pub const JOB_COLUMNS: &str = "seq, id, tenant_id, queue, payload, state, priority, run_at, attempt, \
     uncounted_attempts, max_attempts, timeout_ms, idempotency_key, lease_token, lease_worker_id, lease_key_id, \
     lease_started_at, lease_expires_at, lease_deadline, output, last_error_message, last_error_kind, \
     created_at, updated_at, finished_at, wait_step, wait_signal, wait_until, parent_id, parent_step, traceparent";

fn wait_from_row(row: &Row) -> Result<Option<Wait>, StoreError> {
    let Some(step) = row.get::<_, Option<String>>(25) else {
        return Ok(None);
    };
    let until = optional_timestamp(row.get(27))?;
    let wait_for = match row.get::<_, Option<String>>(26) {
        Some(name) => WaitFor::Signal {
            name: SignalName::new(name).map_err(corrupt)?,
            deadline: until,
        },
        None => WaitFor::Until(until.ok_or_else(|| corrupt("a sleep without a wake-up time"))?),
    };
    Ok(Some(Wait {
        step: StepName::new(step).map_err(corrupt)?,
        wait_for,
    }))
}

pub fn job_from_row(row: &Row) -> Result<(i64, Job), StoreError> {
    let lease = match row.get::<_, Option<String>>(13) {
        Some(token) => Some(Lease {
            token,
            worker_id: WorkerId::new(row.get::<_, String>(14)).map_err(corrupt)?,
            key_id: KeyId::parse(row.get(15)).map_err(corrupt)?,
            started_at: timestamp(row.get(16))?,
            expires_at: timestamp(row.get(17))?,
            deadline: timestamp(row.get(18))?,
        }),
        None => None,
    };
    let last_error = row.get::<_, Option<String>>(20).map(|message| AttemptError {
        message,
        kind: row.get(21),
    });
    let job = Job {
        id: JobId(row.get(1)),
        tenant_id: TenantId(row.get(2)),
        queue: QueueName::new(row.get::<_, String>(3)).map_err(corrupt)?,
        payload: row.get(4),
        state: row.get::<_, String>(5).parse().map_err(corrupt)?,
        priority: row.get(6),
        run_at: timestamp(row.get(7))?,
        attempt: row.get::<_, i32>(8) as u32,
        uncounted_attempts: row.get::<_, i32>(9) as u32,
        max_attempts: row.get::<_, i32>(10) as u32,
        timeout: Duration::from_millis(row.get::<_, i64>(11).max(0) as u64),
        idempotency_key: row
            .get::<_, Option<String>>(12)
            .map(IdempotencyKey::new)
            .transpose()
            .map_err(corrupt)?,
        lease,
        output: row.get(19),
        last_error,
        created_at: timestamp(row.get(22))?,
        updated_at: timestamp(row.get(23))?,
        finished_at: optional_timestamp(row.get(24))?,
        wait: wait_from_row(row)?,
        parent: match row.get::<_, Option<uuid::Uuid>>(28) {
            Some(job_id) => Some(ParentLink {
                job_id: JobId(job_id),
                step: StepName::new(row.get::<_, String>(29)).map_err(corrupt)?,
            }),
            None => None,
        },
        traceparent: row.get(30),
    };
    Ok((row.get(0), job))
}

/// The three wait columns of a job: step, awaited signal, deadline.
fn wait_columns(job: &Job) -> (Option<&str>, Option<&str>, Option<i64>) {
    match &job.wait {
        None => (None, None, None),
        Some(wait) => {
            let signal = match &wait.wait_for {
                WaitFor::Signal { name, .. } => Some(name.as_str()),
                WaitFor::Until(_) => None,
            };
            (Some(wait.step.as_str()), signal, wait.deadline().map(millis))
        }
    }
}

pub async fn insert_job(tx: &Transaction<'_>, job: &Job) -> Result<(), StoreError> {
    let lease = job.lease.as_ref();
    let (wait_step, wait_signal, wait_until) = wait_columns(job);
    tx.execute(
        &statement(
            tx,
            "INSERT INTO jobs (id, tenant_id, queue, payload, state, priority, run_at, attempt, uncounted_attempts, \
         max_attempts, timeout_ms, idempotency_key, lease_token, lease_worker_id, lease_key_id, lease_started_at, \
         lease_expires_at, lease_deadline, output, last_error_message, last_error_kind, created_at, updated_at, \
         finished_at, wait_step, wait_signal, wait_until, parent_id, parent_step, traceparent) VALUES ($1, $2, $3, $4, \
         $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, \
         $28, $29, $30)",
        )
        .await?,
        &[
            &job.id.0,
            &job.tenant_id.0,
            &job.queue.as_str(),
            &job.payload,
            &job.state.as_str(),
            &job.priority,
            &millis(job.run_at),
            &(job.attempt as i32),
            &(job.uncounted_attempts as i32),
            &(job.max_attempts as i32),
            &(job.timeout.as_millis() as i64),
            &job.idempotency_key.as_ref().map(|k| k.as_str()),
            &lease.map(|l| l.token.as_str()),
            &lease.map(|l| l.worker_id.as_str()),
            &lease.map(|l| l.key_id.as_str()),
            &lease.map(|l| millis(l.started_at)),
            &lease.map(|l| millis(l.expires_at)),
            &lease.map(|l| millis(l.deadline)),
            &job.output,
            &job.last_error.as_ref().map(|e| e.message.as_str()),
            &job.last_error.as_ref().and_then(|e| e.kind.as_deref()),
            &millis(job.created_at),
            &millis(job.updated_at),
            &job.finished_at.map(millis),
            &wait_step,
            &wait_signal,
            &wait_until,
            &job.parent.as_ref().map(|p| p.job_id.0),
            &job.parent.as_ref().map(|p| p.step.as_str()),
            &job.traceparent,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Writes the fields a transition may change.
pub async fn save_job(tx: &Transaction<'_>, job: &Job) -> Result<(), StoreError> {
    debug_assert_eq!(job.check_invariants(), Ok(()));
    let lease = job.lease.as_ref();
    let (wait_step, wait_signal, wait_until) = wait_columns(job);
    let updated = tx
        .execute(
            &statement(
                tx,
                "UPDATE jobs SET state = $3, run_at = $4, attempt = $5, uncounted_attempts = $6, lease_token = $7, \
             lease_worker_id = $8, lease_key_id = $9, lease_started_at = $10, lease_expires_at = $11, \
             lease_deadline = $12, output = $13, last_error_message = $14, last_error_kind = $15, updated_at = $16, \
             finished_at = $17, wait_step = $18, wait_signal = $19, wait_until = $20 WHERE tenant_id = $1 AND id = $2",
            )
            .await?,
            &[
                &job.tenant_id.0,
                &job.id.0,
                &job.state.as_str(),
                &millis(job.run_at),
                &(job.attempt as i32),
                &(job.uncounted_attempts as i32),
                &lease.map(|l| l.token.as_str()),
                &lease.map(|l| l.worker_id.as_str()),
                &lease.map(|l| l.key_id.as_str()),
                &lease.map(|l| millis(l.started_at)),
                &lease.map(|l| millis(l.expires_at)),
                &lease.map(|l| millis(l.deadline)),
                &job.output,
                &job.last_error.as_ref().map(|e| e.message.as_str()),
                &job.last_error.as_ref().and_then(|e| e.kind.as_deref()),
                &millis(job.updated_at),
                &job.finished_at.map(millis),
                &wait_step,
                &wait_signal,
                &wait_until,
            ],
        )
        .await
        .map_err(pg_error)?;
    if updated != 1 {
        return Err(corrupt(format!("job {} vanished during a transition", job.id)));
    }
    Ok(())
}

/// A tenant's job by id, locked for the transaction when `for_update`.
pub async fn load_job(
    tx: &Transaction<'_>,
    filter: TenantFilter,
    tenant: TenantId,
    id: JobId,
    for_update: bool,
) -> Result<Option<Job>, StoreError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let row = match filter {
        TenantFilter::Enforced => {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2{lock}");
            tx.query_opt(&statement(tx, &sql).await?, &[&tenant.0, &id.0]).await
        }
        TenantFilter::DisabledForTests => {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1{lock}");
            tx.query_opt(&statement(tx, &sql).await?, &[&id.0]).await
        }
    }
    .map_err(pg_error)?;
    row.map(|row| job_from_row(&row).map(|(_, job)| job)).transpose()
}

pub async fn insert_attempt(tx: &Transaction<'_>, job: &Job, attempt: &Attempt) -> Result<(), StoreError> {
    tx.execute(
        &statement(
            tx,
            "INSERT INTO attempts (tenant_id, job_id, number, worker_id, key_id, started_at, ended_at, outcome, \
         error_message, error_kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?,
        &[
            &job.tenant_id.0,
            &job.id.0,
            &(attempt.number as i32),
            &attempt.worker_id.as_str(),
            &attempt.key_id.as_str(),
            &millis(attempt.started_at),
            &millis(attempt.ended_at),
            &attempt.outcome.as_str(),
            &attempt.error.as_ref().map(|e| e.message.as_str()),
            &attempt.error.as_ref().and_then(|e| e.kind.as_deref()),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub async fn attempts_of(tx: &Transaction<'_>, job: &Job) -> Result<Vec<Attempt>, StoreError> {
    let rows = tx
        .query(
            &statement(
                tx,
                "SELECT number, worker_id, key_id, started_at, ended_at, outcome, error_message, error_kind \
             FROM attempts WHERE tenant_id = $1 AND job_id = $2 ORDER BY number",
            )
            .await?,
            &[&job.tenant_id.0, &job.id.0],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|row| {
            Ok(Attempt {
                number: row.get::<_, i32>(0) as u32,
                worker_id: WorkerId::new(row.get::<_, String>(1)).map_err(corrupt)?,
                key_id: KeyId::parse(row.get(2)).map_err(corrupt)?,
                started_at: timestamp(row.get(3))?,
                ended_at: timestamp(row.get(4))?,
                outcome: row.get::<_, String>(5).parse().map_err(corrupt)?,
                error: row.get::<_, Option<String>>(6).map(|message| AttemptError {
                    message,
                    kind: row.get(7),
                }),
            })
        })
        .collect()
}
