//! Bulk operations (see `steadfast_store::bulk`): the operation rows, the
//! SQL of a filter, and each batch in the writer's transaction.

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params};
use steadfast_core::{JobState, TenantId, Timestamp};
use steadfast_store::bulk::{
    BulkAction, BulkFilter, BulkOperation, BulkStatus, BulkStepped, BulkStore, ConditionValue, MAX_KEPT_PER_TENANT,
    NewBulk,
};
use steadfast_store::decide::{self, Author, BulkCandidate, Decision};
use steadfast_store::{StoreError, TenantScope};

use crate::jobs::singleton_held_by_another;
use crate::rows::{JOB_COLUMNS, job_from_row, millis, optional_timestamp, query_all, timestamp};
use crate::writer::Durability;
use crate::{SqliteStore, sqlite_error};

const COLUMNS: &str = "id, tenant_id, spec, status, matched, done, failed, failures, through_seq, cursor_seq, \
                       created_at, updated_at, finished_at";

fn corrupt(what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, what.to_string().into())
}

fn operation_from_row(row: &Row<'_>) -> rusqlite::Result<BulkOperation> {
    let status: String = row.get(3)?;
    Ok(BulkOperation {
        id: row.get::<_, String>(0)?.parse().map_err(corrupt)?,
        tenant_id: row.get::<_, String>(1)?.parse().map_err(corrupt)?,
        spec: serde_json::from_str(&row.get::<_, String>(2)?).map_err(corrupt)?,
        status: BulkStatus::parse(&status).ok_or_else(|| corrupt(status))?,
        matched: row.get::<_, i64>(4)? as u64,
        done: row.get::<_, i64>(5)? as u64,
        failed: row.get::<_, i64>(6)? as u64,
        failures: serde_json::from_str(&row.get::<_, String>(7)?).map_err(corrupt)?,
        through_seq: row.get(8)?,
        cursor_seq: row.get(9)?,
        created_at: timestamp(row.get(10)?)?,
        updated_at: timestamp(row.get(11)?)?,
        finished_at: optional_timestamp(row.get(12)?)?,
    })
}

fn load(conn: &Connection, tenant: TenantId, id: uuid::Uuid) -> Result<Option<BulkOperation>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM bulk_operations WHERE tenant_id = ?1 AND id = ?2"
    ))
    .and_then(|mut select| {
        select
            .query_row(params![tenant.to_string(), id.to_string()], operation_from_row)
            .optional()
    })
    .map_err(sqlite_error)
}

pub(crate) fn save(conn: &Connection, operation: &BulkOperation) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO bulk_operations (id, tenant_id, spec, status, matched, done, failed, failures, through_seq, \
         cursor_seq, created_at, updated_at, finished_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, done = excluded.done, failed = excluded.failed, \
         failures = excluded.failures, cursor_seq = excluded.cursor_seq, updated_at = excluded.updated_at, \
         finished_at = excluded.finished_at",
    )
    .and_then(|mut upsert| {
        upsert.execute(params![
            operation.id.to_string(),
            operation.tenant_id.to_string(),
            spec_text(operation),
            operation.status.as_str(),
            operation.matched as i64,
            operation.done as i64,
            operation.failed as i64,
            failures_text(operation),
            operation.through_seq,
            operation.cursor_seq,
            millis(operation.created_at),
            millis(operation.updated_at),
            operation.finished_at.map(millis),
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

fn spec_text(operation: &BulkOperation) -> String {
    serde_json::to_string(&operation.spec).expect("a bulk operation's spec serialises")
}

fn failures_text(operation: &BulkOperation) -> String {
    serde_json::to_string(&operation.failures).expect("a bulk operation's failures serialise")
}

/// The jobs in `states` that `filter` matches for `action`, as a `WHERE`
/// clause and its named parameters (callers add their own).
fn matching(
    tenant: TenantId,
    action: BulkAction,
    filter: &BulkFilter,
    states: &[JobState],
    started: Timestamp,
) -> (String, Vec<(String, SqlValue)>) {
    let states: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    let mut sql = format!("tenant_id = :tenant AND state IN ({})", states.join(", "));
    let mut values = vec![(":tenant".to_owned(), SqlValue::Text(tenant.to_string()))];
    for (n, condition) in filter.conditions(action, started).into_iter().enumerate() {
        let name = format!(":c{n}");
        sql.push_str(&format!(" AND {} {} {name}", condition.column, condition.op));
        values.push((
            name,
            match condition.value {
                ConditionValue::Text(text) => SqlValue::Text(text),
                ConditionValue::Millis(millis) => SqlValue::Integer(millis),
            },
        ));
    }
    (sql, values)
}

fn bind(values: &[(String, SqlValue)]) -> Vec<(&str, &dyn rusqlite::ToSql)> {
    values
        .iter()
        .map(|(name, value)| (name.as_str(), value as &dyn rusqlite::ToSql))
        .collect()
}

fn count(
    conn: &Connection,
    tenant: TenantId,
    action: BulkAction,
    filter: &BulkFilter,
    started: Timestamp,
) -> Result<u64, StoreError> {
    let (clause, values) = matching(tenant, action, filter, &filter.states(action), started);
    conn.prepare_cached(&format!("SELECT count(*) FROM jobs WHERE {clause}"))
        .and_then(|mut select| select.query_row(bind(&values).as_slice(), |row| row.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(sqlite_error)
}

/// The next `batch` matching jobs after the cursor, in `seq` order: the
/// first `batch` of each state (a range of `jobs_by_state` each), merged.
fn walk(conn: &Connection, operation: &BulkOperation, batch: u32) -> Result<Vec<BulkCandidate>, StoreError> {
    let spec = &operation.spec;
    let mut walked = Vec::new();
    for state in spec.filter.states(spec.action) {
        let (clause, mut values) = matching(
            operation.tenant_id,
            spec.action,
            &spec.filter,
            &[state],
            operation.created_at,
        );
        values.push((":through".to_owned(), SqlValue::Integer(operation.through_seq)));
        values.push((":cursor".to_owned(), SqlValue::Integer(operation.cursor_seq)));
        values.push((":batch".to_owned(), SqlValue::Integer(i64::from(batch))));
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_by_state WHERE {clause} \
             AND seq > :cursor AND seq <= :through ORDER BY seq LIMIT :batch"
        );
        walked.extend(query_all(conn, &sql, bind(&values).as_slice(), job_from_row)?);
    }
    walked.sort_by_key(|(seq, _)| *seq);
    walked.truncate(batch as usize);
    walked
        .into_iter()
        .map(|(seq, job)| {
            let singleton_taken = spec.action == BulkAction::Retry && singleton_held_by_another(conn, &job)?;
            Ok(BulkCandidate {
                seq,
                id: job.id,
                job: Some(job),
                singleton_taken,
            })
        })
        .collect()
}

#[async_trait]
impl BulkStore for SqliteStore {
    async fn count_bulk(
        &self,
        scope: &TenantScope,
        action: BulkAction,
        filter: &BulkFilter,
        time_limit: Option<std::time::Duration>,
    ) -> Result<u64, StoreError> {
        let (tenant, filter) = (scope.tenant_id(), filter.clone());
        let read = move |conn: &Connection| count(conn, tenant, action, &filter, Timestamp::MAX);
        match time_limit {
            Some(limit) => self.readers().read_within(limit, read).await,
            None => self.readers().read(read).await,
        }
    }

    async fn start_bulk(&self, scope: &TenantScope, new: NewBulk, now: Timestamp) -> Result<BulkOperation, StoreError> {
        let tenant = scope.tenant_id();
        // Counted on a reader, not in the writer's transaction: a count of a
        // large backlog must not hold up every write. (It is what the
        // operation reports as matched; the walk itself decides each job.)
        let (action, filter) = (new.spec.action, new.spec.filter.clone());
        let matched = self
            .readers()
            .read(move |conn| count(conn, tenant, action, &filter, now))
            .await?;
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let through_seq = conn
                .query_row("SELECT coalesce(max(seq), 0) FROM jobs", [], |row| row.get(0))
                .map_err(sqlite_error)?;
            let running = conn
                .prepare_cached("SELECT count(*) FROM bulk_operations WHERE tenant_id = ?1 AND status = 'running'")
                .and_then(|mut select| select.query_row([tenant.to_string()], |row| row.get::<_, i64>(0)))
                .map_err(sqlite_error)? as u64;
            let decision = decide::start_bulk(tenant, new, matched, through_seq, running, now)?;
            // The oldest finished operations past the tenant's bound are forgotten.
            conn.prepare_cached(
                "DELETE FROM bulk_operations WHERE id IN (SELECT id FROM bulk_operations \
                 WHERE tenant_id = ?1 AND status != 'running' ORDER BY created_at DESC LIMIT -1 OFFSET ?2)",
            )
            .and_then(|mut delete| delete.execute(params![tenant.to_string(), MAX_KEPT_PER_TENANT as i64]))
            .map_err(sqlite_error)?;
            Ok(decision)
        })
        .await
    }

    async fn bulk(&self, scope: &TenantScope, id: uuid::Uuid) -> Result<Option<BulkOperation>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers().read(move |conn| load(conn, tenant, id)).await
    }

    async fn list_bulk(&self, scope: &TenantScope, limit: u32) -> Result<Vec<BulkOperation>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read(move |conn| {
                let sql = format!(
                    "SELECT {COLUMNS} FROM bulk_operations WHERE tenant_id = ?1 ORDER BY created_at DESC, id LIMIT ?2"
                );
                query_all(conn, &sql, params![tenant.to_string(), limit], operation_from_row)
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
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            decide::cancel_bulk(load(conn, tenant, id)?, now)
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
            .readers()
            .read(move |conn| load(conn, tenant, id))
            .await?
            .ok_or(StoreError::NotFound)?;
        let scope = steadfast_store::auth::bulk_operation(&started);
        self.decided(Author::of(&scope), Durability::Durable, now, move |conn| {
            let operation = load(conn, tenant, id)?.ok_or(StoreError::NotFound)?;
            let candidates = if operation.status == BulkStatus::Running {
                walk(conn, &operation, batch)?
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
        self.readers()
            .read(move |conn| {
                query_all(
                    conn,
                    "SELECT tenant_id, id FROM bulk_operations WHERE status = 'running' ORDER BY created_at LIMIT ?1",
                    [limit],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?.parse().map_err(corrupt)?,
                            row.get::<_, String>(1)?.parse().map_err(corrupt)?,
                        ))
                    },
                )
            })
            .await
    }
}
