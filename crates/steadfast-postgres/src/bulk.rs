//! Bulk operations (see `steadfast_store::bulk`): the operation rows, the
//! SQL of a filter, and each batch in one transaction that holds the
//! operation's row, so two nodes never run the same batch.

use async_trait::async_trait;
use steadfast_core::{JobId, JobState, TenantId, Timestamp};
use steadfast_store::bulk::{
    BulkAction, BulkFilter, BulkOperation, BulkStatus, BulkStepped, BulkStore, ConditionValue, MAX_KEPT_PER_TENANT,
    NewBulk,
};
use steadfast_store::decide::{self, BulkCandidate, Decision};
use steadfast_store::{StoreError, TenantScope};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::jobs::{lock_singletons, singleton_held_once_locked};
use crate::rows::{load_jobs, millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, Transaction, pg_error, statement};

const COLUMNS: &str = "id, tenant_id, spec, status, matched, done, failed, failures, through_seq, cursor_seq, \
                       created_at, updated_at, finished_at";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("bulk operation: {what}"))
}

fn operation_from_row(row: &Row) -> Result<BulkOperation, StoreError> {
    let status: String = row.get(3);
    Ok(BulkOperation {
        id: row.get(0),
        tenant_id: TenantId(row.get(1)),
        spec: serde_json::from_str(row.get(2)).map_err(corrupt)?,
        status: BulkStatus::parse(&status).ok_or_else(|| corrupt(status))?,
        matched: row.get::<_, i64>(4) as u64,
        done: row.get::<_, i64>(5) as u64,
        failed: row.get::<_, i64>(6) as u64,
        failures: serde_json::from_str(row.get(7)).map_err(corrupt)?,
        through_seq: row.get(8),
        cursor_seq: row.get(9),
        created_at: timestamp(row.get(10))?,
        updated_at: timestamp(row.get(11))?,
        finished_at: optional_timestamp(row.get(12))?,
    })
}

/// How a batch reads its operation's row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    None,
    /// Held to the end of the transaction.
    Wait,
    /// Held, unless another node holds it (then `None` is answered).
    Skip,
}

async fn load(
    tx: &Transaction,
    tenant: TenantId,
    id: uuid::Uuid,
    lock: Lock,
) -> Result<Option<BulkOperation>, StoreError> {
    let lock = match lock {
        Lock::None => "",
        Lock::Wait => " FOR UPDATE",
        Lock::Skip => " FOR UPDATE SKIP LOCKED",
    };
    let sql = format!("SELECT {COLUMNS} FROM bulk_operations WHERE tenant_id = $1 AND id = $2{lock}");
    tx.query_opt(&statement(tx, &sql).await?, &[&tenant.0, &id])
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(operation_from_row)
        .transpose()
}

/// Upserts the operations a decision started or moved on.
pub(crate) async fn save(tx: &Transaction, operations: &[BulkOperation]) -> Result<(), StoreError> {
    for operation in operations {
        tx.execute(
            &statement(
                tx,
                "INSERT INTO bulk_operations (tenant_id, id, spec, status, matched, done, failed, failures, \
                 through_seq, cursor_seq, created_at, updated_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET status = excluded.status, done = excluded.done, \
                 failed = excluded.failed, failures = excluded.failures, cursor_seq = excluded.cursor_seq, \
                 updated_at = excluded.updated_at, finished_at = excluded.finished_at",
            )
            .await?,
            &[
                &operation.tenant_id.0,
                &operation.id,
                &spec_text(operation),
                &operation.status.as_str(),
                &(operation.matched as i64),
                &(operation.done as i64),
                &(operation.failed as i64),
                &failures_text(operation),
                &operation.through_seq,
                &operation.cursor_seq,
                &millis(operation.created_at),
                &millis(operation.updated_at),
                &operation.finished_at.map(millis),
            ],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}

fn spec_text(operation: &BulkOperation) -> String {
    serde_json::to_string(&operation.spec).expect("a bulk operation's spec serialises")
}

fn failures_text(operation: &BulkOperation) -> String {
    serde_json::to_string(&operation.failures).expect("a bulk operation's failures serialise")
}

/// The jobs in `states` that `filter` matches for `action`: a `WHERE`
/// clause whose parameters start at `$1` (the tenant), and their values.
fn matching(
    tenant: TenantId,
    action: BulkAction,
    filter: &BulkFilter,
    states: &[JobState],
    started: Timestamp,
) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let states: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    let mut sql = format!("tenant_id = $1 AND state IN ({})", states.join(", "));
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(tenant.0)];
    for condition in filter.conditions(action, started) {
        values.push(match condition.value {
            ConditionValue::Text(text) => Box::new(text),
            ConditionValue::Millis(millis) => Box::new(millis),
        });
        sql.push_str(&format!(" AND {} {} ${}", condition.column, condition.op, values.len()));
    }
    (sql, values)
}

fn refs(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect()
}

async fn count(
    tx: &Transaction,
    tenant: TenantId,
    action: BulkAction,
    filter: &BulkFilter,
    started: Timestamp,
) -> Result<u64, StoreError> {
    let (clause, values) = matching(tenant, action, filter, &filter.states(action), started);
    let sql = format!("SELECT count(*) FROM jobs WHERE {clause}");
    let row = tx
        .query_one(&statement(tx, &sql).await?, &refs(&values))
        .await
        .map_err(pg_error)?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The next `batch` matching jobs after the cursor, in `seq` order (the
/// first `batch` of each state, merged), locked in id order as every
/// multi-job transaction locks them, their singleton keys locked in the
/// order enqueues take them.
async fn walk(tx: &Transaction, operation: &BulkOperation, batch: u32) -> Result<Vec<BulkCandidate>, StoreError> {
    let spec = &operation.spec;
    let mut walked: Vec<(i64, JobId)> = Vec::new();
    for state in spec.filter.states(spec.action) {
        let (clause, mut values) = matching(
            operation.tenant_id,
            spec.action,
            &spec.filter,
            &[state],
            operation.created_at,
        );
        let n = values.len();
        values.push(Box::new(operation.cursor_seq));
        values.push(Box::new(operation.through_seq));
        values.push(Box::new(i64::from(batch)));
        let sql = format!(
            "SELECT seq, id FROM jobs WHERE {clause} AND seq > ${} AND seq <= ${} ORDER BY seq LIMIT ${}",
            n + 1,
            n + 2,
            n + 3
        );
        let rows = tx
            .query(&statement(tx, &sql).await?, &refs(&values))
            .await
            .map_err(pg_error)?;
        walked.extend(rows.iter().map(|row| (row.get::<_, i64>(0), JobId(row.get(1)))));
    }
    walked.sort_by_key(|(seq, _)| *seq);
    walked.truncate(batch as usize);
    let ids: Vec<JobId> = walked.iter().map(|(_, id)| *id).collect();
    let locked = load_jobs(tx, crate::TenantFilter::Enforced, operation.tenant_id, &ids, true).await?;
    let retry = spec.action == BulkAction::Retry;
    if retry {
        lock_singletons(tx, operation.tenant_id, &locked.iter().collect::<Vec<_>>()).await?;
    }
    let mut candidates = Vec::with_capacity(walked.len());
    for (seq, id) in walked {
        // Gone since the walk read it (retention): the step counts it failed.
        let job = locked.iter().find(|job| job.id == id).cloned();
        let singleton_taken = match &job {
            Some(job) if retry => singleton_held_once_locked(tx, job).await?,
            _ => false,
        };
        candidates.push(BulkCandidate {
            seq,
            id,
            job,
            singleton_taken,
        });
    }
    Ok(candidates)
}

#[async_trait]
impl BulkStore for PostgresStore {
    async fn count_bulk(
        &self,
        scope: &TenantScope,
        action: BulkAction,
        filter: &BulkFilter,
        time_limit: Option<std::time::Duration>,
    ) -> Result<u64, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            if let Some(limit) = time_limit {
                let ms = limit.as_millis().max(1).to_string();
                tx.execute("SELECT set_config('statement_timeout', $1, true)", &[&ms])
                    .await
                    .map_err(pg_error)?;
            }
            count(tx, tenant, action, filter, Timestamp::MAX).await
        })
        .await
    }

    async fn start_bulk(&self, scope: &TenantScope, new: NewBulk, now: Timestamp) -> Result<BulkOperation, StoreError> {
        let tenant = scope.tenant_id();
        let started = self
            .decided(Some(scope), Durability::Durable, now, async |tx| {
                // One start at a time per tenant, so the running count holds.
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('bulk-operations/' || $1, 0))",
                    &[&tenant.0.to_string()],
                )
                .await
                .map_err(pg_error)?;
                let matched = count(tx, tenant, new.spec.action, &new.spec.filter, now).await?;
                let through_seq: i64 = tx
                    .query_one(
                        "SELECT coalesce(max(seq), 0) FROM jobs WHERE tenant_id = $1",
                        &[&tenant.0],
                    )
                    .await
                    .map_err(pg_error)?
                    .get(0);
                let running: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM bulk_operations WHERE tenant_id = $1 AND status = 'running'",
                        &[&tenant.0],
                    )
                    .await
                    .map_err(pg_error)?
                    .get(0);
                decide::start_bulk(tenant, new, matched, through_seq, running as u64, now)
            })
            .await?;
        // The oldest finished operations past the tenant's bound are forgotten.
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            tx.execute(
                "DELETE FROM bulk_operations WHERE tenant_id = $1 AND id IN (SELECT id FROM bulk_operations \
                 WHERE tenant_id = $1 AND status <> 'running' ORDER BY created_at DESC OFFSET $2)",
                &[&tenant.0, &(MAX_KEPT_PER_TENANT as i64)],
            )
            .await
            .map_err(pg_error)
        })
        .await?;
        Ok(started)
    }

    async fn bulk(&self, scope: &TenantScope, id: uuid::Uuid) -> Result<Option<BulkOperation>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            load(tx, tenant, id, Lock::None).await
        })
        .await
    }

    async fn list_bulk(&self, scope: &TenantScope, limit: u32) -> Result<Vec<BulkOperation>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let sql = format!(
                "SELECT {COLUMNS} FROM bulk_operations WHERE tenant_id = $1 ORDER BY created_at DESC, id LIMIT $2"
            );
            tx.query(&statement(tx, &sql).await?, &[&tenant.0, &i64::from(limit)])
                .await
                .map_err(pg_error)?
                .iter()
                .map(operation_from_row)
                .collect()
        })
        .await
    }

    async fn cancel_bulk(
        &self,
        scope: &TenantScope,
        id: uuid::Uuid,
        now: Timestamp,
    ) -> Result<BulkOperation, StoreError> {
        let tenant = scope.tenant_id();
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            decide::cancel_bulk(load(tx, tenant, id, Lock::Wait).await?, now)
        })
        .await
    }

    async fn step_bulk(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
        batch: u32,
        now: Timestamp,
    ) -> Result<BulkStepped, StoreError> {
        // Who started it is fixed: its records name that key.
        let started = self
            .transaction(Some(tenant), Durability::Durable, async |tx| {
                load(tx, tenant, id, Lock::None).await
            })
            .await?
            .ok_or(StoreError::NotFound)?;
        let scope = steadfast_store::auth::bulk_operation(&started);
        self.decided(Some(&scope), Durability::Durable, now, async |tx| {
            // Another node is running this operation's batch: leave it to it.
            let Some(operation) = load(tx, tenant, id, Lock::Skip).await? else {
                return Ok(Decision::read_only(BulkStepped {
                    operation: started.clone(),
                    ready: Vec::new(),
                }));
            };
            let candidates = if operation.status == BulkStatus::Running {
                walk(tx, &operation, batch).await?
            } else {
                Vec::new()
            };
            let Decision { answer, writes } = decide::bulk_step(operation, candidates, batch, now)?;
            let ready = writes.ready_queues().into_iter().map(|(_, queue)| queue).collect();
            Ok(Decision {
                answer: BulkStepped {
                    operation: answer,
                    ready,
                },
                writes,
            })
        })
        .await
    }

    async fn running_bulk(&self, limit: u32) -> Result<Vec<(TenantId, uuid::Uuid)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant_id, id FROM steadfast_running_bulk($1)",
                &[&i64::from(limit)],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|row| (TenantId(row.get(0)), row.get(1))).collect())
    }
}
