use async_trait::async_trait;
use deadpool_postgres::Transaction;
use steadfast_core::lifecycle::{self, Checkpoint, Delivery, StepStart, WaitOutcome};
use steadfast_core::{Job, JobId, Signal, SignalName, Step, StepName, TenantId, Timestamp, WaitFor};
use steadfast_store::audit::drafts;
use steadfast_store::{
    Enqueued, NewJob, SignalRecord, Signalled, StoreError, TenantScope, Waited, WorkflowLimits, WorkflowStore,
};
use tokio_postgres::Row;

use crate::audit::append_for;
use crate::jobs::ReadyQueues;
use crate::rows::{
    JOB_COLUMNS, insert_attempt, insert_job, job_from_row, load_job, millis, optional_timestamp, save_job, timestamp,
};
use crate::{PostgresStore, pg_error, scoped, settle};

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
pub(crate) async fn steps_of(tx: &Transaction<'_>, job: &Job) -> Result<Vec<Step>, StoreError> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM steps WHERE tenant_id = $1 AND job_id = $2 ORDER BY position");
    let rows = tx.query(&sql, &[&job.tenant_id.0, &job.id.0]).await.map_err(pg_error)?;
    rows.iter().map(step_from_row).collect()
}

async fn load_step(tx: &Transaction<'_>, job: &Job, name: &StepName) -> Result<Option<Step>, StoreError> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM steps WHERE tenant_id = $1 AND job_id = $2 AND name = $3");
    let row = tx
        .query_opt(&sql, &[&job.tenant_id.0, &job.id.0, &name.as_str()])
        .await
        .map_err(pg_error)?;
    row.as_ref().map(step_from_row).transpose()
}

async fn count(tx: &Transaction<'_>, sql: &str, job: &Job) -> Result<u32, StoreError> {
    let row = tx
        .query_one(sql, &[&job.tenant_id.0, &job.id.0])
        .await
        .map_err(pg_error)?;
    Ok(row.get::<_, i64>(0) as u32)
}

async fn check_step_room(tx: &Transaction<'_>, job: &Job, limits: WorkflowLimits) -> Result<(), StoreError> {
    if count(
        tx,
        "SELECT count(*) FROM steps WHERE tenant_id = $1 AND job_id = $2",
        job,
    )
    .await?
        >= limits.max_steps
    {
        return Err(StoreError::LimitExceeded {
            what: "steps",
            limit: limits.max_steps,
        });
    }
    Ok(())
}

pub(crate) async fn save_step(tx: &Transaction<'_>, job: &Job, step: &Step) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO steps (tenant_id, job_id, name, attempt, started_at, completed_at, output, position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, \
                 (SELECT coalesce(max(position), 0) + 1 FROM steps WHERE tenant_id = $1 AND job_id = $2)) \
         ON CONFLICT (tenant_id, job_id, name) DO UPDATE SET attempt = excluded.attempt, \
         started_at = excluded.started_at, completed_at = excluded.completed_at, output = excluded.output \
         WHERE steps.completed_at IS NULL",
        &[
            &job.tenant_id.0,
            &job.id.0,
            &step.name.as_str(),
            &(step.attempt as i32),
            &millis(step.started_at),
            &step.completed_at.map(millis),
            &step.output,
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

pub(crate) async fn signals_of(tx: &Transaction<'_>, job: &Job) -> Result<Vec<SignalRecord>, StoreError> {
    let rows = tx
        .query(
            "SELECT name, payload, received_at, consumed_at FROM signals WHERE tenant_id = $1 AND job_id = $2 ORDER BY seq",
            &[&job.tenant_id.0, &job.id.0],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(signal_from_row).collect()
}

async fn oldest_pending_signal(
    tx: &Transaction<'_>,
    job: &Job,
    name: &SignalName,
) -> Result<Option<(i32, Signal)>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT name, payload, received_at, consumed_at, seq FROM signals \
             WHERE tenant_id = $1 AND job_id = $2 AND name = $3 AND consumed_at IS NULL ORDER BY seq LIMIT 1",
            &[&job.tenant_id.0, &job.id.0, &name.as_str()],
        )
        .await
        .map_err(pg_error)?;
    row.map(|row| Ok((row.get(4), signal_from_row(&row)?.signal)))
        .transpose()
}

async fn insert_signal(
    tx: &Transaction<'_>,
    job: &Job,
    signal: &Signal,
    consumed_at: Option<Timestamp>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO signals (tenant_id, job_id, seq, name, payload, received_at, consumed_at) VALUES ($1, $2, \
         (SELECT coalesce(max(seq), 0) + 1 FROM signals WHERE tenant_id = $1 AND job_id = $2), $3, $4, $5, $6)",
        &[
            &job.tenant_id.0,
            &job.id.0,
            &signal.name.as_str(),
            &signal.payload,
            &millis(signal.received_at),
            &consumed_at.map(millis),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn children_of(tx: &Transaction<'_>, job: &Job) -> Result<Vec<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND parent_id = $2 ORDER BY seq");
    let rows = tx.query(&sql, &[&job.tenant_id.0, &job.id.0]).await.map_err(pg_error)?;
    rows.iter().map(|row| job_from_row(row).map(|(_, job)| job)).collect()
}

async fn child_of(tx: &Transaction<'_>, parent: &Job, step: &StepName) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND parent_id = $2 AND parent_step = $3");
    let row = tx
        .query_opt(&sql, &[&parent.tenant_id.0, &parent.id.0, &step.as_str()])
        .await
        .map_err(pg_error)?;
    row.map(|row| job_from_row(&row).map(|(_, job)| job)).transpose()
}

impl PostgresStore {
    async fn locked_job(&self, tx: &Transaction<'_>, tenant: TenantId, id: JobId) -> Result<Job, StoreError> {
        load_job(tx, self.filter, tenant, id, true)
            .await?
            .ok_or(StoreError::NotFound)
    }
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
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.tenant_id()).await?;
        let result = async {
            let job = self.locked_job(&tx, scope.tenant_id(), id).await?;
            let existing = load_step(&tx, &job, &step).await?;
            let started = lifecycle::start_step(&job, token, existing.as_ref(), step, now)?;
            if let StepStart::Started(step) = &started {
                if existing.is_none() {
                    check_step_room(&tx, &job, limits).await?;
                }
                save_step(&tx, &job, step).await?;
                append_for(&tx, scope, now, [drafts::step_started(&job, step)]).await?;
            }
            Ok::<_, StoreError>(started)
        }
        .await;
        settle(tx, result).await
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
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.tenant_id()).await?;
        let result = async {
            let job = self.locked_job(&tx, scope.tenant_id(), id).await?;
            let existing = load_step(&tx, &job, &step).await?;
            let checkpoint = lifecycle::checkpoint(&job, token, existing.as_ref(), step, output, now)?;
            if checkpoint.first {
                if existing.is_none() {
                    check_step_room(&tx, &job, limits).await?;
                }
                save_step(&tx, &job, &checkpoint.step).await?;
                append_for(&tx, scope, now, [drafts::step_completed(&job, &checkpoint.step)]).await?;
            }
            Ok::<_, StoreError>(checkpoint)
        }
        .await;
        settle(tx, result).await
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
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.tenant_id()).await?;
        let result = async {
            let job = self.locked_job(&tx, scope.tenant_id(), id).await?;
            let existing = load_step(&tx, &job, &step).await?;
            let pending = match &wait_for {
                WaitFor::Signal { name, .. } => oldest_pending_signal(&tx, &job, name).await?,
                WaitFor::Until(_) => None,
            };
            let outcome = lifecycle::wait(
                &job,
                token,
                step,
                wait_for,
                existing.as_ref(),
                pending.as_ref().map(|(_, s)| s),
                now,
            )?;
            if existing.is_none() && !matches!(outcome, WaitOutcome::AlreadyCompleted(_)) {
                check_step_room(&tx, &job, limits).await?;
            }
            let waited = match outcome {
                WaitOutcome::AlreadyCompleted(step) => Waited::Completed(step),
                WaitOutcome::Resolved { step, consumed_signal } => {
                    save_step(&tx, &job, &step).await?;
                    if let (true, Some((seq, _))) = (consumed_signal, pending) {
                        tx.execute(
                            "UPDATE signals SET consumed_at = $4 WHERE tenant_id = $1 AND job_id = $2 AND seq = $3",
                            &[&job.tenant_id.0, &job.id.0, &seq, &millis(now)],
                        )
                        .await
                        .map_err(pg_error)?;
                    }
                    append_for(&tx, scope, now, [drafts::step_completed(&job, &step)]).await?;
                    Waited::Completed(step)
                }
                WaitOutcome::Suspended(transition) => {
                    save_job(&tx, &transition.job).await?;
                    if let Some(attempt) = &transition.ended_attempt {
                        insert_attempt(&tx, &transition.job, attempt).await?;
                    }
                    append_for(&tx, scope, now, [drafts::job_waiting(&job, &transition.job)]).await?;
                    Waited::Suspended(Box::new(transition.job))
                }
            };
            Ok::<_, StoreError>(waited)
        }
        .await;
        settle(tx, result).await
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
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.tenant_id()).await?;
        let result = async {
            let job = self.locked_job(&tx, scope.tenant_id(), id).await?;
            let signal = Signal {
                name,
                payload,
                received_at: now,
            };
            let signalled = match lifecycle::deliver_signal(&job, signal.clone(), now)? {
                Delivery::Woke { job, step } => {
                    save_job(&tx, &job).await?;
                    save_step(&tx, &job, &step).await?;
                    insert_signal(&tx, &job, &signal, Some(now)).await?;
                    let draft = drafts::signal_received(&job, signal.name.as_str(), &signal.payload, true);
                    append_for(&tx, scope, now, [draft]).await?;
                    Signalled { job: *job, woke: true }
                }
                Delivery::Stored => {
                    let pending = count(
                        &tx,
                        "SELECT count(*) FROM signals WHERE tenant_id = $1 AND job_id = $2 AND consumed_at IS NULL",
                        &job,
                    )
                    .await?;
                    if pending >= limits.max_pending_signals {
                        return Err(StoreError::LimitExceeded {
                            what: "pending signals",
                            limit: limits.max_pending_signals,
                        });
                    }
                    insert_signal(&tx, &job, &signal, None).await?;
                    let draft = drafts::signal_received(&job, signal.name.as_str(), &signal.payload, false);
                    append_for(&tx, scope, now, [draft]).await?;
                    Signalled { job, woke: false }
                }
            };
            Ok::<_, StoreError>(signalled)
        }
        .await;
        let signalled = settle(tx, result).await?;
        ReadyQueues::announce_job(self, &signalled.job);
        Ok(signalled)
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
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.tenant_id()).await?;
        let result = async {
            let parent = self.locked_job(&tx, scope.tenant_id(), parent).await?;
            // The lease is checked first: a fenced worker learns nothing, not even the child.
            let candidate = lifecycle::spawn_child(&parent, token, step.clone(), child.id, child.spec, now)?;
            let enqueued = match child_of(&tx, &parent, &step).await? {
                Some(existing) => Enqueued {
                    job: existing,
                    replayed: true,
                },
                None => {
                    let children = count(
                        &tx,
                        "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND parent_id = $2",
                        &parent,
                    )
                    .await?;
                    if children >= limits.max_children {
                        return Err(StoreError::LimitExceeded {
                            what: "children",
                            limit: limits.max_children,
                        });
                    }
                    insert_job(&tx, &candidate).await?;
                    let records = [
                        drafts::job_enqueued(&candidate),
                        drafts::child_spawned(&parent, &candidate),
                    ];
                    append_for(&tx, scope, now, records).await?;
                    Enqueued {
                        job: candidate,
                        replayed: false,
                    }
                }
            };
            Ok::<_, StoreError>(enqueued)
        }
        .await;
        let enqueued = settle(tx, result).await?;
        if !enqueued.replayed {
            ReadyQueues::announce_job(self, &enqueued.job);
        }
        Ok(enqueued)
    }
}
