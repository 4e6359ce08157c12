use std::collections::HashMap;

use crate::Transaction;
use async_trait::async_trait;
use steadfast_core::lifecycle::{Checkpoint, StepResolution, StepStart};
use steadfast_core::{Job, JobId, Reason, Signal, SignalName, Step, StepName, TenantId, Timestamp, WaitFor};
use steadfast_store::decide::{self, ConsumedSignal, ForgottenStep, PendingSignal, SignalWrite, StepRows, StepWrite};
use steadfast_store::{
    Enqueued, NewJob, SignalRecord, Signalled, StepDone, StepOp, StoreError, TenantScope, Waited, WorkflowLimits,
    WorkflowStore,
};
use tokio_postgres::Row;

use crate::rows::{JOB_COLUMNS, job_from_row, load_job, load_jobs, millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, TenantFilter, pg_error, statement};

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

const STEP_COLUMNS: &str = "name, attempt, started_at, completed_at, output";

fn step_from_row(row: &Row) -> Result<Step, StoreError> {
    Ok(Step {
        name: StepName::new(row.get::<_, String>(0)).map_err(corrupt)?,
        attempt: row.get::<_, i32>(1) as u32,
        started_at: timestamp(row.get(2))?,
        completed_at: optional_timestamp(row.get(3))?,
        output: row.get(4),
    })
}

/// A job's steps in the order they were first recorded.
pub(crate) async fn steps_of(tx: &Transaction, tenant: TenantId, job_id: JobId) -> Result<Vec<Step>, StoreError> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM steps WHERE tenant_id = $1 AND job_id = $2 ORDER BY position");
    let rows = tx
        .query(&statement(tx, &sql).await?, &[&tenant.0, &job_id.0])
        .await
        .map_err(pg_error)?;
    rows.iter().map(step_from_row).collect()
}

/// What a step operation decides on: the job (locked), its step `name`,
/// and how many steps it has.
async fn step_rows(
    tx: &Transaction,
    filter: TenantFilter,
    tenant: TenantId,
    id: JobId,
    name: &StepName,
) -> Result<StepRows, StoreError> {
    let Some(job) = load_job(tx, filter, tenant, id, true).await? else {
        return Ok(StepRows {
            job: None,
            step: None,
            step_count: 0,
        });
    };
    let sql = format!("SELECT {STEP_COLUMNS} FROM steps WHERE tenant_id = $1 AND job_id = $2 AND name = $3");
    let step = tx
        .query_opt(&statement(tx, &sql).await?, &[&tenant.0, &id.0, &name.as_str()])
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(step_from_row)
        .transpose()?;
    let step_count = count(
        tx,
        "SELECT count(*) FROM steps WHERE tenant_id = $1 AND job_id = $2",
        tenant,
        id,
    )
    .await?;
    Ok(StepRows {
        job: Some(job),
        step,
        step_count,
    })
}

/// [`step_rows`] for every item of a batch, in three statements: the jobs
/// (locked in id order, as every batch locks them), the named steps, and
/// each job's step count.
async fn batch_step_rows(
    tx: &Transaction,
    filter: TenantFilter,
    tenant: TenantId,
    ops: &[StepOp],
) -> Result<Vec<StepRows>, StoreError> {
    let ids: Vec<JobId> = ops.iter().map(|op| op.id).collect();
    let jobs: HashMap<JobId, Job> = load_jobs(tx, filter, tenant, &ids, true)
        .await?
        .into_iter()
        .map(|job| (job.id, job))
        .collect();
    let job_ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    let names: Vec<&str> = ops.iter().map(|op| op.step.as_str()).collect();
    let sql = format!(
        "SELECT {STEP_COLUMNS}, job_id FROM steps WHERE tenant_id = $1 \
         AND (job_id, name) IN (SELECT * FROM unnest($2::uuid[], $3::text[]))"
    );
    let mut steps = HashMap::new();
    for row in tx
        .query(&statement(tx, &sql).await?, &[&tenant.0, &job_ids, &names])
        .await
        .map_err(pg_error)?
    {
        let step = step_from_row(&row)?;
        steps.insert((JobId(row.get(5)), step.name.clone()), step);
    }
    let sql = "SELECT job_id, count(*) FROM steps WHERE tenant_id = $1 AND job_id = ANY($2) GROUP BY job_id";
    let mut counts = HashMap::new();
    for row in tx
        .query(&statement(tx, sql).await?, &[&tenant.0, &job_ids])
        .await
        .map_err(pg_error)?
    {
        counts.insert(JobId(row.get(0)), row.get::<_, i64>(1) as u32);
    }
    Ok(ops
        .iter()
        .map(|op| match jobs.get(&op.id) {
            None => StepRows {
                job: None,
                step: None,
                step_count: 0,
            },
            Some(job) => StepRows {
                job: Some(job.clone()),
                step: steps.get(&(op.id, op.step.clone())).cloned(),
                step_count: counts.get(&op.id).copied().unwrap_or(0),
            },
        })
        .collect())
}

async fn count(tx: &Transaction, sql: &str, tenant: TenantId, id: JobId) -> Result<u32, StoreError> {
    let row = tx
        .query_one(&statement(tx, sql).await?, &[&tenant.0, &id.0])
        .await
        .map_err(pg_error)?;
    Ok(row.get::<_, i64>(0) as u32)
}

/// Removes uncompleted step markers, in one statement; a completed step never goes.
pub(crate) async fn forget_steps(
    tx: &Transaction,
    tenant: TenantId,
    steps: &[ForgottenStep],
) -> Result<(), StoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    tx.execute(
        &statement(
            tx,
            "DELETE FROM steps USING unnest($2::uuid[], $3::text[]) AS f(job_id, name) \
             WHERE steps.tenant_id = $1 AND steps.job_id = f.job_id AND steps.name = f.name \
             AND steps.completed_at IS NULL",
        )
        .await?,
        &[
            &tenant.0,
            &steps.iter().map(|s| s.job_id.0).collect::<Vec<_>>(),
            &steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Records steps in one statement. Writes for the same step (a start, then
/// its checkpoint, in one batch) become its last, which is what writing them
/// in order would leave: a completed step is never overwritten. Steps keep
/// the order of their first write, and a new one is numbered after the
/// job's last, as writing them one by one would number them.
pub(crate) async fn save_steps(tx: &Transaction, tenant: TenantId, writes: &[StepWrite]) -> Result<(), StoreError> {
    // Per step: the index of its first write, and its last write.
    let mut steps: Vec<(usize, &StepWrite)> = Vec::new();
    let mut index_of: HashMap<(JobId, &str), usize> = HashMap::new();
    for (n, write) in writes.iter().enumerate() {
        match index_of.get(&(write.job_id, write.step.name.as_str())) {
            Some(&at) => steps[at].1 = write,
            None => {
                index_of.insert((write.job_id, write.step.name.as_str()), steps.len());
                steps.push((n, write));
            }
        }
    }
    if steps.is_empty() {
        return Ok(());
    }
    let firsts: Vec<i64> = steps.iter().map(|(n, _)| *n as i64).collect();
    let job_ids: Vec<uuid::Uuid> = steps.iter().map(|(_, w)| w.job_id.0).collect();
    let names: Vec<&str> = steps.iter().map(|(_, w)| w.step.name.as_str()).collect();
    let attempts: Vec<i32> = steps.iter().map(|(_, w)| w.step.attempt as i32).collect();
    let started: Vec<i64> = steps.iter().map(|(_, w)| millis(w.step.started_at)).collect();
    let completed: Vec<Option<i64>> = steps.iter().map(|(_, w)| w.step.completed_at.map(millis)).collect();
    let outputs: Vec<Option<&str>> = steps.iter().map(|(_, w)| w.step.output.as_deref()).collect();
    // A step already stored keeps its position (the conflict branch leaves
    // it); only new ones are counted when numbering.
    tx.execute(
        &statement(
            tx,
            "INSERT INTO steps (tenant_id, job_id, name, attempt, started_at, completed_at, output, position) \
             SELECT $1, s.job_id, s.name, s.attempt, s.started_at, s.completed_at, s.output, \
                    coalesce((SELECT max(position) FROM steps p WHERE p.tenant_id = $1 AND p.job_id = s.job_id), 0) \
                    + count(*) FILTER (WHERE e.name IS NULL) \
                      OVER (PARTITION BY s.job_id ORDER BY s.first ROWS UNBOUNDED PRECEDING) \
             FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::int[], $6::bigint[], $7::bigint[], $8::text[]) \
                  AS s(first, job_id, name, attempt, started_at, completed_at, output) \
             LEFT JOIN steps e ON e.tenant_id = $1 AND e.job_id = s.job_id AND e.name = s.name \
             ORDER BY s.first \
             ON CONFLICT (tenant_id, job_id, name) DO UPDATE SET attempt = excluded.attempt, \
             started_at = excluded.started_at, completed_at = excluded.completed_at, output = excluded.output \
             WHERE steps.completed_at IS NULL",
        )
        .await?,
        &[
            &tenant.0, &firsts, &job_ids, &names, &attempts, &started, &completed, &outputs,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

fn signal_from_row(row: &Row) -> Result<SignalRecord, StoreError> {
    Ok(SignalRecord {
        signal: Signal {
            name: SignalName::new(row.get::<_, String>(0)).map_err(corrupt)?,
            payload: row.get(1),
            received_at: timestamp(row.get(2))?,
        },
        consumed_at: optional_timestamp(row.get(3))?,
    })
}

pub(crate) async fn signals_of(
    tx: &Transaction,
    tenant: TenantId,
    job_id: JobId,
) -> Result<Vec<SignalRecord>, StoreError> {
    let rows = tx
        .query(
            &statement(
                tx,
                "SELECT name, payload, received_at, consumed_at FROM signals WHERE tenant_id = $1 AND job_id = $2 \
                 ORDER BY seq",
            )
            .await?,
            &[&tenant.0, &job_id.0],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(signal_from_row).collect()
}

async fn oldest_pending_signal(
    tx: &Transaction,
    tenant: TenantId,
    job_id: JobId,
    name: &SignalName,
) -> Result<Option<PendingSignal>, StoreError> {
    let row = tx
        .query_opt(
            &statement(
                tx,
                "SELECT name, payload, received_at, consumed_at, seq FROM signals \
                 WHERE tenant_id = $1 AND job_id = $2 AND name = $3 AND consumed_at IS NULL ORDER BY seq LIMIT 1",
            )
            .await?,
            &[&tenant.0, &job_id.0, &name.as_str()],
        )
        .await
        .map_err(pg_error)?;
    row.map(|row| {
        Ok(PendingSignal {
            seq: i64::from(row.get::<_, i32>(4)),
            signal: signal_from_row(&row)?.signal,
        })
    })
    .transpose()
}

pub(crate) async fn consume_signal(tx: &Transaction, consumed: &ConsumedSignal) -> Result<(), StoreError> {
    let seq = i32::try_from(consumed.seq).map_err(corrupt)?;
    tx.execute(
        &statement(
            tx,
            "UPDATE signals SET consumed_at = $4 WHERE tenant_id = $1 AND job_id = $2 AND seq = $3",
        )
        .await?,
        &[&consumed.tenant_id.0, &consumed.job_id.0, &seq, &millis(consumed.at)],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Appends a signal to its job's queue.
pub(crate) async fn insert_signal(tx: &Transaction, write: &SignalWrite) -> Result<(), StoreError> {
    let signal = &write.signal;
    tx.execute(
        &statement(
            tx,
            "INSERT INTO signals (tenant_id, job_id, seq, name, payload, received_at, consumed_at) VALUES ($1, $2, \
             (SELECT coalesce(max(seq), 0) + 1 FROM signals WHERE tenant_id = $1 AND job_id = $2), $3, $4, $5, $6)",
        )
        .await?,
        &[
            &write.tenant_id.0,
            &write.job_id.0,
            &signal.name.as_str(),
            &signal.payload,
            &millis(signal.received_at),
            &write.consumed_at.map(millis),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn children_of(tx: &Transaction, tenant: TenantId, job_id: JobId) -> Result<Vec<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND parent_id = $2 ORDER BY seq");
    let rows = tx
        .query(&statement(tx, &sql).await?, &[&tenant.0, &job_id.0])
        .await
        .map_err(pg_error)?;
    rows.iter().map(|row| job_from_row(row).map(|(_, job)| job)).collect()
}

async fn child_of(
    tx: &Transaction,
    tenant: TenantId,
    parent: JobId,
    step: &StepName,
) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND parent_id = $2 AND parent_step = $3");
    let row = tx
        .query_opt(&statement(tx, &sql).await?, &[&tenant.0, &parent.0, &step.as_str()])
        .await
        .map_err(pg_error)?;
    row.map(|row| job_from_row(&row).map(|(_, job)| job)).transpose()
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn start_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
        limits: WorkflowLimits,
        now: Timestamp,
    ) -> Result<StepStart, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let rows = step_rows(tx, filter, tenant, id, &step).await?;
            decide::start_step(rows, token, step, limits, now)
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
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let rows = step_rows(tx, filter, tenant, id, &step).await?;
            decide::checkpoint_step(rows, token, step, output, limits, now)
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
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let rows = batch_step_rows(tx, filter, tenant, &ops).await?;
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
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let rows = step_rows(tx, filter, tenant, id, &step).await?;
            let pending = match (&wait_for, &rows.job) {
                (WaitFor::Signal { name, .. }, Some(_)) => oldest_pending_signal(tx, tenant, id, name).await?,
                _ => None,
            };
            decide::wait(rows, pending, token, step, wait_for, limits, now)
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
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let job = load_job(tx, filter, tenant, id, true).await?;
            let pending = count(
                tx,
                "SELECT count(*) FROM signals WHERE tenant_id = $1 AND job_id = $2 AND consumed_at IS NULL",
                tenant,
                id,
            )
            .await?;
            decide::signal(job, pending, name, payload, reason, limits, now)
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
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let rows = step_rows(tx, filter, tenant, id, &step).await?;
            decide::resolve_step(rows.job, rows.step, &resolution, reason, now)
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
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let parent_job = load_job(tx, filter, tenant, parent, true).await?;
            let existing = child_of(tx, tenant, parent, &step).await?;
            let children = count(
                tx,
                "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND parent_id = $2",
                tenant,
                parent,
            )
            .await?;
            decide::spawn_child(parent_job, existing, children, token, step, child, limits, now)
        })
        .await
    }
}
