//! Flow control: queue policies, and what a lease loads for
//! [`decide::lease`] and writes back of the rules' state.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use steadfast_core::{Job, QueueName, TenantId, Timestamp};
use steadfast_store::decide::flow::{self, Candidates, FlowWrite, KeyedJobs, QueueLease};
use steadfast_store::decide::{self, Author, Decision};
use steadfast_store::flow::Cursor;
use steadfast_store::{FlowStore, PolicyPatch, QueueFlow, QueueFlowState, QueuePolicy, StoreError, TenantScope};

use crate::rows::{JOB_COLUMNS, job_from_row, millis, query_all, timestamp};
use crate::writer::Durability;
use crate::{SqliteStore, sqlite_error};

/// How far down a queue with per-key rules a lease looks for jobs without a key.
const UNKEYED_WINDOW: i64 = 256;

const FLOW_COLUMNS: &str = "policy, rate_tat_ns, cursor_key, cursor_served, budget_tokens, budget_at";

fn flow_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Result<QueueFlow, StoreError>> {
    let policy: Option<String> = row.get(at)?;
    let cursor = row
        .get::<_, Option<String>>(at + 2)?
        .map(|key| -> rusqlite::Result<Cursor> {
            Ok(Cursor {
                key,
                served: row.get(at + 3)?,
            })
        });
    let budget = match (row.get::<_, Option<f64>>(at + 4)?, row.get::<_, Option<i64>>(at + 5)?) {
        (Some(tokens), Some(at)) => Some((tokens, timestamp(at)?)),
        _ => None,
    };
    Ok(QueuePolicy::from_column(policy.as_deref()).and_then(|policy| {
        Ok(QueueFlow {
            policy,
            state: QueueFlowState {
                rate_tat_ns: row.get(at + 1).map_err(sqlite_error)?,
                cursor: cursor.transpose().map_err(sqlite_error)?,
                budget,
            },
        })
    }))
}

/// The policy and flow state of `queue` (the default when it has none).
fn queue_flow(conn: &Connection, tenant: TenantId, queue: &QueueName) -> Result<QueueFlow, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {FLOW_COLUMNS} FROM queue_settings WHERE tenant_id = ?1 AND queue = ?2"
    ))
    .and_then(|mut select| {
        select
            .query_row(params![tenant.to_string(), queue.as_str()], |row| flow_from_row(row, 0))
            .optional()
    })
    .map_err(sqlite_error)?
    .transpose()
    .map(Option::unwrap_or_default)
}

/// Everything [`decide::lease`] needs about each requested queue, read in
/// the lease's transaction (the writer's: nothing else writes meanwhile).
pub(crate) fn queue_leases(
    conn: &Connection,
    tenant: TenantId,
    queues: &[QueueName],
    max_jobs: u32,
) -> Result<Vec<QueueLease>, StoreError> {
    queues
        .iter()
        .map(|queue| queue_lease(conn, tenant, queue, max_jobs))
        .collect()
}

fn queue_lease(
    conn: &Connection,
    tenant: TenantId,
    queue: &QueueName,
    max_jobs: u32,
) -> Result<QueueLease, StoreError> {
    let flow = queue_flow(conn, tenant, queue)?;
    let loading = flow::loading(&flow.policy, max_jobs);
    let candidates = match loading.keys {
        None => Candidates::Ordered(heads(conn, tenant, queue, max_jobs)?),
        Some(keys) => Candidates::ByKey(by_key(conn, tenant, queue, &flow, keys, max_jobs)?),
    };
    let keys: Vec<&str> = match &candidates {
        Candidates::ByKey(keys) => keys
            .iter()
            .map(|(key, _)| key.as_str())
            .filter(|k| !k.is_empty())
            .collect(),
        Candidates::Ordered(_) => Vec::new(),
    };
    let running = if loading.running {
        count(
            conn,
            "SELECT count(*) FROM jobs WHERE tenant_id = ?1 AND state = 'running' AND queue = ?2",
            params![tenant.to_string(), queue.as_str()],
        )?
    } else {
        0
    };
    let mut key_running = HashMap::new();
    let mut key_tats = HashMap::new();
    for key in keys {
        if loading.key_running {
            let running = count(
                conn,
                "SELECT count(*) FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND flow_key = ?3 \
                 AND state = 'running'",
                params![tenant.to_string(), queue.as_str(), key],
            )?;
            key_running.insert(key.to_owned(), running);
        }
        if loading.key_rates {
            let tat: Option<i64> = conn
                .prepare_cached(
                    "SELECT rate_tat_ns FROM flow_keys WHERE tenant_id = ?1 AND queue = ?2 AND flow_key = ?3",
                )
                .and_then(|mut select| {
                    select
                        .query_row(params![tenant.to_string(), queue.as_str(), key], |row| row.get(0))
                        .optional()
                })
                .map_err(sqlite_error)?;
            if let Some(tat) = tat {
                key_tats.insert(key.to_owned(), tat);
            }
        }
    }
    Ok(QueueLease {
        queue: queue.clone(),
        flow,
        running,
        key_running,
        key_tats,
        candidates,
    })
}

fn count(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<u32, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut select| select.query_row(params, |row| row.get::<_, i64>(0)))
        .map(|n| n.clamp(0, i64::from(u32::MAX)) as u32)
        .map_err(sqlite_error)
}

/// The queue's heads, read from the ready index: exactly the index order,
/// never a scan.
fn heads(conn: &Connection, tenant: TenantId, queue: &QueueName, limit: u32) -> Result<Vec<(i64, Job)>, StoreError> {
    query_all(
        conn,
        &format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND state = 'queued' \
             ORDER BY priority DESC, run_at, seq LIMIT ?3"
        ),
        params![tenant.to_string(), queue.as_str(), i64::from(limit)],
        job_from_row,
    )
}

/// Up to `max_keys` keys with ready jobs, in rotation order from the
/// cursor's key on (wrapping; `""`, the jobs without a key, comes first in
/// a round), each with its first jobs. Each key is one seek of
/// `jobs_ready_keys` (a loose index scan), however many jobs it has.
fn by_key(
    conn: &Connection,
    tenant: TenantId,
    queue: &QueueName,
    flow: &QueueFlow,
    max_keys: u32,
    max_jobs: u32,
) -> Result<KeyedJobs, StoreError> {
    let start = flow
        .state
        .cursor
        .as_ref()
        .map(|cursor| cursor.key.as_str())
        .unwrap_or("");
    let unkeyed = unkeyed_heads(conn, tenant, queue, max_jobs)?;
    let from_start = distinct_keys(conn, tenant, queue, start, None, max_keys)?;
    let before_start = if start.is_empty() {
        Vec::new()
    } else {
        distinct_keys(conn, tenant, queue, "", Some(start), max_keys)?
    };
    let keys = flow::rotation(start, !unkeyed.is_empty(), from_start, before_start, max_keys);
    let found = keys.len();
    let mut unkeyed = Some(unkeyed);
    keys.into_iter()
        .map(|key| {
            let limit = flow::jobs_per_key(&flow.policy, &key, found, max_jobs);
            let jobs = if key.is_empty() {
                let mut jobs = unkeyed.take().unwrap_or_default();
                jobs.truncate(limit as usize);
                jobs
            } else {
                query_all(
                    conn,
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND state = 'queued' \
                         AND flow_key = ?3 ORDER BY priority DESC, run_at, seq LIMIT ?4"
                    ),
                    params![tenant.to_string(), queue.as_str(), key, i64::from(limit)],
                    job_from_row,
                )?
            };
            Ok((key, jobs))
        })
        .collect()
}

/// Up to `limit` distinct keys of the queue's ready jobs from `from` on
/// (inclusive), below `before` when given: one seek of `jobs_ready_keys`
/// per key (a loose index scan).
fn distinct_keys(
    conn: &Connection,
    tenant: TenantId,
    queue: &QueueName,
    from: &str,
    before: Option<&str>,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let next = |after: &str, inclusive: bool| -> Result<Option<String>, StoreError> {
        let sql = if inclusive {
            "SELECT flow_key FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND state = 'queued' \
             AND flow_key IS NOT NULL AND flow_key >= ?3 ORDER BY flow_key LIMIT 1"
        } else {
            "SELECT flow_key FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND state = 'queued' \
             AND flow_key IS NOT NULL AND flow_key > ?3 ORDER BY flow_key LIMIT 1"
        };
        conn.prepare_cached(sql)
            .and_then(|mut select| {
                select
                    .query_row(params![tenant.to_string(), queue.as_str(), after], |row| row.get(0))
                    .optional()
            })
            .map_err(sqlite_error)
    };
    let mut keys = Vec::new();
    let mut key = next(from, true)?;
    while let Some(found) = key.take() {
        if keys.len() >= limit as usize || before.is_some_and(|before| found.as_str() >= before) {
            break;
        }
        key = next(&found, false)?;
        keys.push(found);
    }
    Ok(keys)
}

/// The first ready jobs without a key, among the queue's first
/// [`UNKEYED_WINDOW`] ready jobs (a bounded read of the ready index).
fn unkeyed_heads(
    conn: &Connection,
    tenant: TenantId,
    queue: &QueueName,
    limit: u32,
) -> Result<Vec<(i64, Job)>, StoreError> {
    query_all(
        conn,
        &format!(
            "SELECT {JOB_COLUMNS} FROM (SELECT * FROM jobs WHERE tenant_id = ?1 AND queue = ?2 \
             AND state = 'queued' ORDER BY priority DESC, run_at, seq LIMIT ?3) \
             WHERE flow_key IS NULL ORDER BY priority DESC, run_at, seq LIMIT ?4"
        ),
        params![tenant.to_string(), queue.as_str(), UNKEYED_WINDOW, i64::from(limit)],
        job_from_row,
    )
}

/// Writes the flow state a lease moved.
pub(crate) fn save_flow(conn: &Connection, write: &FlowWrite) -> Result<(), StoreError> {
    match write {
        FlowWrite::Queue {
            tenant_id,
            queue,
            state,
        } => conn
            .prepare_cached(
                "UPDATE queue_settings SET rate_tat_ns = ?3, cursor_key = ?4, cursor_served = ?5, \
                 budget_tokens = ?6, budget_at = ?7 WHERE tenant_id = ?1 AND queue = ?2",
            )
            .and_then(|mut update| {
                update.execute(params![
                    tenant_id.to_string(),
                    queue.as_str(),
                    state.rate_tat_ns,
                    state.cursor.as_ref().map(|c| c.key.as_str()),
                    state.cursor.as_ref().map_or(0, |c| c.served),
                    state.budget.map(|(tokens, _)| tokens),
                    state.budget.map(|(_, at)| millis(at)),
                ])
            }),
        FlowWrite::KeyRate {
            tenant_id,
            queue,
            key,
            tat_ns,
        } => conn
            .prepare_cached(
                "INSERT INTO flow_keys (tenant_id, queue, flow_key, rate_tat_ns) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (tenant_id, queue, flow_key) DO UPDATE SET rate_tat_ns = excluded.rate_tat_ns",
            )
            .and_then(|mut upsert| upsert.execute(params![tenant_id.to_string(), queue.as_str(), key, tat_ns])),
    }
    .map_err(sqlite_error)?;
    Ok(())
}

#[async_trait]
impl FlowStore for SqliteStore {
    async fn set_queue_policy(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        patch: PolicyPatch,
        now: Timestamp,
    ) -> Result<QueuePolicy, StoreError> {
        let (tenant, queue) = (scope.tenant_id(), queue.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let stored = queue_flow(conn, tenant, &queue)?.policy;
            let (policy, draft) = decide::flow::set_policy(&queue, stored, patch)?;
            conn.prepare_cached(
                "INSERT INTO queue_settings (tenant_id, queue, policy, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (tenant_id, queue) DO UPDATE SET policy = excluded.policy, \
                 updated_at = excluded.updated_at",
            )
            .and_then(|mut upsert| {
                upsert.execute(params![
                    tenant.to_string(),
                    queue.as_str(),
                    policy.to_column(),
                    millis(now)
                ])
            })
            .map_err(sqlite_error)?;
            let mut decision = Decision::read_only(policy);
            decision.writes.audit.push((tenant, draft));
            Ok(decision)
        })
        .await
    }

    async fn queue_policy(&self, scope: &TenantScope, queue: &QueueName) -> Result<QueuePolicy, StoreError> {
        let (tenant, queue) = (scope.tenant_id(), queue.clone());
        self.readers()
            .read(move |conn| Ok(queue_flow(conn, tenant, &queue)?.policy))
            .await
    }
}
