//! Mapping between rows and core types, and the job queries every module uses.

use std::time::Duration;

use crate::Transaction;
use steadfast_core::{
    Attempt, AttemptError, FlowKey, IdempotencyKey, Job, JobId, KeyId, Lease, ParentLink, QueueName, ResourceName,
    SignalName, StepName, TenantId, Timestamp, Wait, WaitFor, WorkerId,
};
use steadfast_store::decide::EndedAttempt;
use steadfast_store::{StoreError, wait_columns};
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
     created_at, updated_at, finished_at, wait_step, wait_signal, wait_until, parent_id, parent_step, traceparent, \
     flow_key, resource, singleton_key, replay_of, schema_version";

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
        flow_key: row
            .get::<_, Option<String>>(31)
            .map(FlowKey::new)
            .transpose()
            .map_err(corrupt)?,
        resource: row
            .get::<_, Option<String>>(32)
            .map(ResourceName::new)
            .transpose()
            .map_err(corrupt)?,
        singleton_key: row
            .get::<_, Option<String>>(33)
            .map(FlowKey::new)
            .transpose()
            .map_err(corrupt)?,
        replay_of: row.get::<_, Option<uuid::Uuid>>(34).map(JobId),
        schema_version: row.get::<_, Option<i32>>(35).map(|version| version as u32),
    };
    Ok((row.get(0), job))
}

/// The three wait columns of a job: step, awaited signal, deadline.
/// Inserts new jobs of `tenant` in one statement, in the given order (their
/// `seq`, the FIFO order). A new job has no lease, output, error or wait yet.
pub async fn insert_jobs(tx: &Transaction, tenant: TenantId, jobs: &[Job]) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let fresh = |job: &&Job| {
        job.tenant_id == tenant
            && job.lease.is_none()
            && job.output.is_none()
            && job.last_error.is_none()
            && job.finished_at.is_none()
            && job.wait.is_none()
    };
    if let Some(job) = jobs.iter().find(|job| !fresh(job)) {
        // The statement below would drop what this job carries.
        return Err(corrupt(format!("job {} is not new", job.id)));
    }
    tx.execute(
        &statement(
            tx,
            "INSERT INTO jobs (tenant_id, id, queue, payload, state, priority, run_at, attempt, uncounted_attempts, \
             max_attempts, timeout_ms, idempotency_key, created_at, updated_at, parent_id, parent_step, traceparent, \
             flow_key, resource, singleton_key, replay_of, schema_version) \
             SELECT $1, n.id, n.queue, n.payload, n.state, n.priority, n.run_at, n.attempt, n.uncounted_attempts, \
             n.max_attempts, n.timeout_ms, n.idempotency_key, n.created_at, n.updated_at, n.parent_id, n.parent_step, \
             n.traceparent, n.flow_key, n.resource, n.singleton_key, n.replay_of, n.schema_version \
             FROM unnest($2::uuid[], $3::text[], \
             $4::text[], $5::text[], $6::integer[], $7::bigint[], $8::integer[], $9::integer[], $10::integer[], \
             $11::bigint[], $12::text[], $13::bigint[], $14::bigint[], $15::uuid[], $16::text[], $17::text[], \
             $18::text[], $19::text[], $20::text[], $21::uuid[], $22::integer[]) \
             WITH ORDINALITY AS n(id, queue, payload, state, priority, run_at, attempt, uncounted_attempts, \
             max_attempts, timeout_ms, idempotency_key, created_at, updated_at, parent_id, parent_step, traceparent, \
             flow_key, resource, singleton_key, replay_of, schema_version, position) ORDER BY n.position",
        )
        .await?,
        &[
            &tenant.0,
            &jobs.iter().map(|j| j.id.0).collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.queue.as_str()).collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.payload.as_str()).collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.state.as_str()).collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.priority).collect::<Vec<_>>(),
            &jobs.iter().map(|j| millis(j.run_at)).collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.attempt as i32).collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.uncounted_attempts as i32).collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.max_attempts as i32).collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.timeout.as_millis() as i64).collect::<Vec<_>>(),
            &jobs
                .iter()
                .map(|j| j.idempotency_key.as_ref().map(|k| k.as_str()))
                .collect::<Vec<_>>(),
            &jobs.iter().map(|j| millis(j.created_at)).collect::<Vec<_>>(),
            &jobs.iter().map(|j| millis(j.updated_at)).collect::<Vec<_>>(),
            &jobs
                .iter()
                .map(|j| j.parent.as_ref().map(|p| p.job_id.0))
                .collect::<Vec<_>>(),
            &jobs
                .iter()
                .map(|j| j.parent.as_ref().map(|p| p.step.as_str()))
                .collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.traceparent.as_deref()).collect::<Vec<_>>(),
            &jobs
                .iter()
                .map(|j| j.flow_key.as_ref().map(|k| k.as_str()))
                .collect::<Vec<_>>(),
            &jobs
                .iter()
                .map(|j| j.resource.as_ref().map(|r| r.as_str()))
                .collect::<Vec<_>>(),
            &jobs
                .iter()
                .map(|j| j.singleton_key.as_ref().map(|k| k.as_str()))
                .collect::<Vec<_>>(),
            &jobs.iter().map(|j| j.replay_of.map(|id| id.0)).collect::<Vec<_>>(),
            &jobs
                .iter()
                .map(|j| j.schema_version.map(|version| version as i32))
                .collect::<Vec<_>>(),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Writes the fields transitions changed, for many jobs of `tenant` in one
/// statement (one execution, however many jobs).
pub async fn save_jobs(tx: &Transaction, tenant: TenantId, jobs: &[Job]) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    debug_assert!(
        jobs.iter()
            .all(|job| job.tenant_id == tenant && job.check_invariants().is_ok())
    );
    let lease = |f: fn(&Lease) -> &str| -> Vec<Option<&str>> { jobs.iter().map(|j| j.lease.as_ref().map(f)).collect() };
    let lease_at = |f: fn(&Lease) -> Timestamp| -> Vec<Option<i64>> {
        jobs.iter().map(|j| j.lease.as_ref().map(|l| millis(f(l)))).collect()
    };
    let waits: Vec<_> = jobs.iter().map(|job| wait_columns(job)).collect();
    let updated = tx
        .execute(
            &statement(
                tx,
                "UPDATE jobs SET state = u.state, run_at = u.run_at, attempt = u.attempt, \
                 uncounted_attempts = u.uncounted_attempts, lease_token = u.lease_token, \
                 lease_worker_id = u.lease_worker_id, lease_key_id = u.lease_key_id, \
                 lease_started_at = u.lease_started_at, lease_expires_at = u.lease_expires_at, \
                 lease_deadline = u.lease_deadline, output = u.output, last_error_message = u.last_error_message, \
                 last_error_kind = u.last_error_kind, updated_at = u.updated_at, finished_at = u.finished_at, \
                 wait_step = u.wait_step, wait_signal = u.wait_signal, wait_until = u.wait_until \
                 FROM unnest($2::uuid[], $3::text[], $4::bigint[], $5::integer[], $6::integer[], $7::text[], \
                 $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::text[], \
                 $15::text[], $16::bigint[], $17::bigint[], $18::text[], $19::text[], $20::bigint[]) \
                 AS u(id, state, run_at, attempt, uncounted_attempts, lease_token, lease_worker_id, lease_key_id, \
                 lease_started_at, lease_expires_at, lease_deadline, output, last_error_message, last_error_kind, \
                 updated_at, finished_at, wait_step, wait_signal, wait_until) \
                 WHERE jobs.tenant_id = $1 AND jobs.id = u.id",
            )
            .await?,
            &[
                &tenant.0,
                &jobs.iter().map(|j| j.id.0).collect::<Vec<_>>(),
                &jobs.iter().map(|j| j.state.as_str()).collect::<Vec<_>>(),
                &jobs.iter().map(|j| millis(j.run_at)).collect::<Vec<_>>(),
                &jobs.iter().map(|j| j.attempt as i32).collect::<Vec<_>>(),
                &jobs.iter().map(|j| j.uncounted_attempts as i32).collect::<Vec<_>>(),
                &lease(|l| l.token.as_str()),
                &lease(|l| l.worker_id.as_str()),
                &lease(|l| l.key_id.as_str()),
                &lease_at(|l| l.started_at),
                &lease_at(|l| l.expires_at),
                &lease_at(|l| l.deadline),
                &jobs.iter().map(|j| j.output.as_deref()).collect::<Vec<_>>(),
                &jobs
                    .iter()
                    .map(|j| j.last_error.as_ref().map(|e| e.message.as_str()))
                    .collect::<Vec<_>>(),
                &jobs
                    .iter()
                    .map(|j| j.last_error.as_ref().and_then(|e| e.kind.as_deref()))
                    .collect::<Vec<_>>(),
                &jobs.iter().map(|j| millis(j.updated_at)).collect::<Vec<_>>(),
                &jobs.iter().map(|j| j.finished_at.map(millis)).collect::<Vec<_>>(),
                &waits.iter().map(|w| w.0).collect::<Vec<_>>(),
                &waits.iter().map(|w| w.1).collect::<Vec<_>>(),
                &waits.iter().map(|w| w.2).collect::<Vec<_>>(),
            ],
        )
        .await
        .map_err(pg_error)?;
    if updated != jobs.len() as u64 {
        return Err(corrupt(format!(
            "{} of {} jobs vanished during a transition",
            jobs.len() as u64 - updated.min(jobs.len() as u64),
            jobs.len()
        )));
    }
    Ok(())
}

/// `tenant`'s jobs among `ids` in id order; locked for the transaction
/// when `for_update` (in that order, so two transactions locking
/// overlapping sets never wait on each other in a cycle). Unknown ids are
/// simply absent.
pub async fn load_jobs(
    tx: &Transaction,
    filter: TenantFilter,
    tenant: TenantId,
    ids: &[JobId],
    for_update: bool,
) -> Result<Vec<Job>, StoreError> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let rows = match filter {
        TenantFilter::Enforced => {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id{lock}");
            tx.query(&statement(tx, &sql).await?, &[&tenant.0, &ids]).await
        }
        TenantFilter::DisabledForTests => {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1) ORDER BY id{lock}");
            tx.query(&statement(tx, &sql).await?, &[&ids]).await
        }
    }
    .map_err(pg_error)?;
    rows.iter().map(|row| job_from_row(row).map(|(_, job)| job)).collect()
}

/// A tenant's job by id, locked for the transaction when `for_update`.
pub async fn load_job(
    tx: &Transaction,
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

/// Records ended attempts of `tenant`'s jobs in one statement.
pub async fn insert_attempts(tx: &Transaction, tenant: TenantId, ended: &[EndedAttempt]) -> Result<(), StoreError> {
    if ended.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Attempt) -> Option<&str>| ended.iter().map(|e| f(&e.attempt)).collect::<Vec<_>>();
    tx.execute(
        &statement(
            tx,
            "INSERT INTO attempts (tenant_id, job_id, number, worker_id, key_id, started_at, ended_at, outcome, \
             error_message, error_kind) SELECT $1, * FROM unnest($2::uuid[], $3::integer[], $4::text[], $5::text[], \
             $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::text[])",
        )
        .await?,
        &[
            &tenant.0,
            &ended.iter().map(|e| e.job_id.0).collect::<Vec<_>>(),
            &ended.iter().map(|e| e.attempt.number as i32).collect::<Vec<_>>(),
            &column(|a| Some(a.worker_id.as_str())),
            &column(|a| Some(a.key_id.as_str())),
            &ended.iter().map(|e| millis(e.attempt.started_at)).collect::<Vec<_>>(),
            &ended.iter().map(|e| millis(e.attempt.ended_at)).collect::<Vec<_>>(),
            &column(|a| Some(a.outcome.as_str())),
            &column(|a| a.error.as_ref().map(|e| e.message.as_str())),
            &column(|a| a.error.as_ref().and_then(|e| e.kind.as_deref())),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub async fn attempts_of(tx: &Transaction, tenant: TenantId, job_id: JobId) -> Result<Vec<Attempt>, StoreError> {
    let rows = tx
        .query(
            &statement(
                tx,
                "SELECT number, worker_id, key_id, started_at, ended_at, outcome, error_message, error_kind \
             FROM attempts WHERE tenant_id = $1 AND job_id = $2 ORDER BY number",
            )
            .await?,
            &[&tenant.0, &job_id.0],
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
