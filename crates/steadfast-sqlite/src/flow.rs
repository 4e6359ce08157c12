//! Flow control: queue policies, and what a lease loads for
//! [`decide::lease`] and writes back of the rules' state.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use steadfast_core::{Job, JobState, QueueName, ResourceName, TenantId, Timestamp};
use steadfast_store::decide::flow::{self, Blocked, Candidates, FlowWrite, KeyedJobs, QueueLease, ResourceLease};
use steadfast_store::decide::{self, Author, Decision, Writes};
use steadfast_store::flow::{BUSIEST_KEYS, BreakerState, Cursor, ReadyCounts, Resource, ResourceConfig, ResourceState};
use steadfast_store::{
    FlowStore, PolicyPatch, QueueFlow, QueueFlowState, QueueOverview, QueuePolicy, StoreError, TenantScope,
};

use crate::rows::{JOB_COLUMNS, job_from_row, millis, optional_timestamp, query_all, timestamp};
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

/// Everything [`decide::lease`] needs about each requested queue and the
/// resources their candidates name, read in the lease's transaction (the
/// writer's: nothing else writes meanwhile).
pub(crate) fn lease_inputs(
    conn: &Connection,
    tenant: TenantId,
    queues: &[QueueName],
    max_jobs: u32,
    now: Timestamp,
) -> Result<(Vec<QueueLease>, Vec<ResourceLease>, Blocked), StoreError> {
    let blocked = blocked_resources(conn, tenant, now)?;
    let leases = queues
        .iter()
        .map(|queue| queue_lease(conn, tenant, queue, max_jobs, &blocked.names))
        .collect::<Result<Vec<_>, _>>()?;
    let resources = resource_leases(conn, tenant, &leases)?;
    Ok((leases, resources, blocked))
}

/// The tenant's resources that hold their jobs back now (see
/// [`flow::blocked_resources`]): those whose breaker is not closed or that
/// have a concurrency or rate limit (few, if any; this reads nothing for a
/// tenant without them), with the running jobs of the limited ones.
fn blocked_resources(conn: &Connection, tenant: TenantId, now: Timestamp) -> Result<Blocked, StoreError> {
    let rows = query_all(
        conn,
        &format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant_id = ?1 AND (breaker_state <> 'closed' \
             OR config LIKE '%\"concurrency\"%' OR config LIKE '%\"rate\"%') ORDER BY name LIMIT 1000"
        ),
        params![tenant.to_string()],
        resource_from_row,
    )?;
    let resources = rows.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut running = HashMap::new();
    for resource in resources.iter().filter(|r| r.config.concurrency.is_some()) {
        let n = count(
            conn,
            "SELECT count(*) FROM jobs WHERE tenant_id = ?1 AND resource = ?2 AND state = 'running'",
            params![tenant.to_string(), resource.name.as_str()],
        )?;
        running.insert(resource.name.to_string(), n);
    }
    Ok(flow::blocked_resources(&resources, &running, now))
}

/// The configured resources the candidates name, with their running jobs
/// counted where a concurrency limit needs them.
fn resource_leases(
    conn: &Connection,
    tenant: TenantId,
    leases: &[QueueLease],
) -> Result<Vec<ResourceLease>, StoreError> {
    let names = flow::candidate_resources(leases);
    let mut resources = Vec::new();
    for name in names {
        let Some(resource) = load_resource(conn, tenant, name)? else {
            continue;
        };
        let running = if resource.config.concurrency.is_some() {
            count(
                conn,
                "SELECT count(*) FROM jobs WHERE tenant_id = ?1 AND resource = ?2 AND state = 'running'",
                params![tenant.to_string(), name],
            )?
        } else {
            0
        };
        resources.push(ResourceLease { resource, running });
    }
    Ok(resources)
}

fn queue_lease(
    conn: &Connection,
    tenant: TenantId,
    queue: &QueueName,
    max_jobs: u32,
    blocked: &[String],
) -> Result<QueueLease, StoreError> {
    let flow = queue_flow(conn, tenant, queue)?;
    let loading = flow::loading(&flow.policy, max_jobs);
    let candidates = match loading.keys {
        None => Candidates::Ordered(heads(conn, tenant, queue, max_jobs, blocked)?),
        Some(keys) => Candidates::ByKey(by_key(conn, tenant, queue, &flow, keys, max_jobs, blocked)?),
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
/// never a scan. Jobs of `blocked` resources are passed over (a walk of
/// the index past them, only while a breaker is open).
fn heads(
    conn: &Connection,
    tenant: TenantId,
    queue: &QueueName,
    limit: u32,
    blocked: &[String],
) -> Result<Vec<(i64, Job)>, StoreError> {
    if blocked.is_empty() {
        return query_all(
            conn,
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND state = 'queued' \
                 ORDER BY priority DESC, run_at, seq LIMIT ?3"
            ),
            params![tenant.to_string(), queue.as_str(), i64::from(limit)],
            job_from_row,
        );
    }
    let blocked = serde_json::to_string(blocked).expect("names serialize");
    query_all(
        conn,
        &format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND state = 'queued' \
             AND (resource IS NULL OR resource NOT IN (SELECT value FROM json_each(?4))) \
             ORDER BY priority DESC, run_at, seq LIMIT ?3"
        ),
        params![tenant.to_string(), queue.as_str(), i64::from(limit), blocked],
        job_from_row,
    )
}

const RESOURCE_COLUMNS: &str = "name, config, breaker_state, window_started_at, window_requests, window_failures, \
     opened_at, probes_granted, rate_tat_ns, created_at, updated_at";

fn resource_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Resource, StoreError>> {
    let name: String = row.get(0)?;
    let config: String = row.get(1)?;
    let breaker: String = row.get(2)?;
    let window_started_at = timestamp(row.get(3)?)?;
    let (window_requests, window_failures) = (row.get(4)?, row.get(5)?);
    let opened_at = optional_timestamp(row.get(6)?)?;
    let (probes_granted, rate_tat_ns) = (row.get(7)?, row.get(8)?);
    let (created_at, updated_at) = (timestamp(row.get(9)?)?, timestamp(row.get(10)?)?);
    let corrupt = |e: steadfast_core::InvalidName| StoreError::Corrupt(e.to_string());
    Ok(ResourceName::new(name).map_err(corrupt).and_then(|name| {
        Ok(Resource {
            name,
            config: ResourceConfig::from_column(&config)?,
            state: ResourceState {
                breaker: BreakerState::parse(&breaker)?,
                window_started_at,
                window_requests,
                window_failures,
                opened_at,
                probes_granted,
                rate_tat_ns,
            },
            created_at,
            updated_at,
        })
    }))
}

fn load_resource(conn: &Connection, tenant: TenantId, name: &str) -> Result<Option<Resource>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant_id = ?1 AND name = ?2"
    ))
    .and_then(|mut select| {
        select
            .query_row(params![tenant.to_string(), name], resource_from_row)
            .optional()
    })
    .map_err(sqlite_error)?
    .transpose()
}

/// The breakers `writes` report outcomes to, after those outcomes: loaded,
/// decided and added to `writes` before they are persisted.
pub(crate) fn record_outcomes(conn: &Connection, writes: &mut Writes, now: Timestamp) -> Result<(), StoreError> {
    let outcomes = flow::resource_outcomes(writes);
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut named: Vec<(TenantId, &ResourceName)> = outcomes.iter().map(|r| (r.tenant_id, &r.resource)).collect();
    named.sort();
    named.dedup();
    let mut resources = Vec::new();
    for (tenant, name) in named {
        if let Some(resource) = load_resource(conn, tenant, name.as_str())? {
            resources.push((tenant, resource));
        }
    }
    writes.flow.extend(flow::record_outcomes(resources, &outcomes, now));
    Ok(())
}

fn save_resource(
    conn: &Connection,
    tenant: TenantId,
    name: &ResourceName,
    state: &ResourceState,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE resources SET breaker_state = ?3, window_started_at = ?4, window_requests = ?5, \
         window_failures = ?6, opened_at = ?7, probes_granted = ?8, rate_tat_ns = ?9 \
         WHERE tenant_id = ?1 AND name = ?2",
    )?
    .execute(params![
        tenant.to_string(),
        name.as_str(),
        state.breaker.as_str(),
        millis(state.window_started_at),
        state.window_requests,
        state.window_failures,
        state.opened_at.map(millis),
        state.probes_granted,
        state.rate_tat_ns,
    ])
}

/// The tenant's queues with their policies and live state (see
/// [`FlowStore::queue_overviews`]).
fn overviews(conn: &Connection, tenant: TenantId, now: Timestamp) -> Result<Vec<QueueOverview>, StoreError> {
    let t = tenant.to_string();
    let counts = query_all(
        conn,
        // Queued jobs (the backlog) from the ready index alone; the other
        // unfinished states, which workers and waits keep small, by state.
        "SELECT queue, 'queued', count(*) FROM jobs INDEXED BY jobs_ready WHERE tenant_id = ?1 \
         AND state = 'queued' GROUP BY queue \
         UNION ALL SELECT queue, state, count(*) FROM jobs INDEXED BY jobs_by_state WHERE tenant_id = ?1 \
         AND state IN ('scheduled', 'running', 'waiting') GROUP BY queue, state",
        params![t],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        },
    )?;
    let flows = query_all(
        conn,
        &format!("SELECT queue, {FLOW_COLUMNS} FROM queue_settings WHERE tenant_id = ?1 AND policy IS NOT NULL"),
        params![t],
        |row| Ok((row.get::<_, String>(0)?, flow_from_row(row, 1)?)),
    )?;
    let mut flows: HashMap<String, QueueFlow> = flows
        .into_iter()
        .map(|(queue, flow)| flow.map(|flow| (queue, flow)))
        .collect::<Result<_, _>>()?;
    let blocked_names = blocked_resources(conn, tenant, now)?.names;
    let blocked = serde_json::to_string(&blocked_names).expect("names serialize");
    let names = flow::listed_queues(&counts, flows.keys());
    let mut overviews = Vec::with_capacity(names.len());
    for name in names {
        let queue = QueueName::new(name.as_str()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let of = |state: JobState| flow::count_of(&counts, &name, state);
        // Only a queue with running jobs has busy keys.
        let busiest = if of(JobState::Running) == 0 {
            Vec::new()
        } else {
            query_all(
                conn,
                "SELECT flow_key, count(*) AS n FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND state = 'running' \
             AND flow_key IS NOT NULL GROUP BY flow_key ORDER BY n DESC, flow_key LIMIT ?3",
                params![t, name, BUSIEST_KEYS as i64],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64)),
            )?
        };
        let flow = flows.remove(&name).unwrap_or_default();
        // Without rules or an open breaker, nothing is held.
        let held = if flow.policy.is_empty() && blocked_names.is_empty() {
            Default::default()
        } else {
            let count_queued = |condition: &str, extra: &dyn rusqlite::ToSql| -> Result<u64, StoreError> {
                let sql = format!(
                    "SELECT count(*) FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND state = 'queued' AND {condition}"
                );
                Ok(u64::from(count(conn, &sql, params![t, name, extra])?))
            };
            let key_rate_held = match &flow.policy.key_rate {
                None => Vec::new(),
                Some(_) => {
                    let tats = query_all(
                        conn,
                        "SELECT flow_key, rate_tat_ns FROM flow_keys WHERE tenant_id = ?1 AND queue = ?2 \
                         AND rate_tat_ns > ?3",
                        params![t, name, now.as_nanosecond() as i64],
                        |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                    )?;
                    flow::rate_held_keys(&flow.policy, tats, now)
                }
            };
            let ready = ReadyCounts {
                queued: of(JobState::Queued),
                running: of(JobState::Running),
                of_blocked_resources: count_queued("resource IN (SELECT value FROM json_each(?3))", &blocked)?,
                of_saturated_keys: match flow.policy.key_concurrency {
                    None => 0,
                    Some(limit) => count_queued(
                        "flow_key IN (SELECT flow_key FROM jobs WHERE tenant_id = ?1 AND queue = ?2 \
                         AND state = 'running' AND flow_key IS NOT NULL GROUP BY flow_key HAVING count(*) >= ?3)",
                        &limit,
                    )?,
                },
                of_rate_held_keys: count_queued(
                    "flow_key IN (SELECT value FROM json_each(?3))",
                    &serde_json::to_string(&key_rate_held).expect("keys serialize"),
                )?,
                retries: match flow.policy.retry_budget {
                    Some(budget) if flow::balance(&budget, flow.state.budget, now) < 1.0 => {
                        count_queued("attempt > uncounted_attempts AND ?3", &true)?
                    }
                    _ => 0,
                },
            };
            flow::held(&flow, &ready, now)
        };
        overviews.push(QueueOverview {
            counts: flow::unfinished_counts(&counts, &name),
            queue,
            policy: flow.policy,
            busiest_keys: busiest,
            held,
        });
    }
    Ok(overviews)
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
    blocked: &[String],
) -> Result<KeyedJobs, StoreError> {
    let blocked = serde_json::to_string(blocked).expect("names serialize");
    let start = flow
        .state
        .cursor
        .as_ref()
        .map(|cursor| cursor.key.as_str())
        .unwrap_or("");
    let unkeyed = unkeyed_heads(conn, tenant, queue, max_jobs, &blocked)?;
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
                         AND flow_key = ?3 AND (resource IS NULL OR resource NOT IN (SELECT value FROM json_each(?5))) \
                         ORDER BY priority DESC, run_at, seq LIMIT ?4"
                    ),
                    params![tenant.to_string(), queue.as_str(), key, i64::from(limit), blocked],
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
    blocked: &str,
) -> Result<Vec<(i64, Job)>, StoreError> {
    query_all(
        conn,
        &format!(
            "SELECT {JOB_COLUMNS} FROM (SELECT * FROM jobs WHERE tenant_id = ?1 AND queue = ?2 \
             AND state = 'queued' ORDER BY priority DESC, run_at, seq LIMIT ?3) \
             WHERE flow_key IS NULL AND (resource IS NULL OR resource NOT IN (SELECT value FROM json_each(?5))) \
             ORDER BY priority DESC, run_at, seq LIMIT ?4"
        ),
        params![
            tenant.to_string(),
            queue.as_str(),
            UNKEYED_WINDOW,
            i64::from(limit),
            blocked
        ],
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
        FlowWrite::Resource { tenant_id, name, state } => save_resource(conn, *tenant_id, name, state),
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
            // Workers waiting on the queue, on any node, ask again under the new rules.
            decision.writes.woken.push((tenant, queue.clone()));
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

    async fn put_resource(
        &self,
        scope: &TenantScope,
        name: &ResourceName,
        config: ResourceConfig,
        now: Timestamp,
    ) -> Result<Resource, StoreError> {
        let (tenant, name) = (scope.tenant_id(), name.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let existing = load_resource(conn, tenant, name.as_str())?;
            let (resource, draft) = decide::flow::put_resource(&name, existing, config, now)?;
            let state = &resource.state;
            conn.prepare_cached(
                "INSERT INTO resources (tenant_id, name, config, breaker_state, window_started_at, window_requests, \
                 window_failures, opened_at, probes_granted, rate_tat_ns, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (tenant_id, name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
            )
            .and_then(|mut upsert| {
                upsert.execute(params![
                    tenant.to_string(),
                    name.as_str(),
                    resource.config.to_column(),
                    state.breaker.as_str(),
                    millis(state.window_started_at),
                    state.window_requests,
                    state.window_failures,
                    state.opened_at.map(millis),
                    state.probes_granted,
                    state.rate_tat_ns,
                    millis(resource.created_at),
                    millis(resource.updated_at),
                ])
            })
            .map_err(sqlite_error)?;
            let mut decision = Decision::read_only(resource);
            decision.writes.audit.push((tenant, draft));
            Ok(decision)
        })
        .await
    }

    async fn resource(
        &self,
        scope: &TenantScope,
        name: &ResourceName,
        now: Timestamp,
    ) -> Result<Option<Resource>, StoreError> {
        let (tenant, name) = (scope.tenant_id(), name.clone());
        self.readers()
            .read(move |conn| Ok(load_resource(conn, tenant, name.as_str())?.map(|r| flow::resource_at(r, now))))
            .await
    }

    async fn queue_overviews(&self, scope: &TenantScope, now: Timestamp) -> Result<Vec<QueueOverview>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers().read(move |conn| overviews(conn, tenant, now)).await
    }

    async fn resources(&self, scope: &TenantScope, now: Timestamp) -> Result<Vec<Resource>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read(move |conn| {
                let rows = query_all(
                    conn,
                    &format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant_id = ?1 ORDER BY name LIMIT 1000"),
                    params![tenant.to_string()],
                    resource_from_row,
                )?;
                rows.into_iter()
                    .map(|row| row.map(|r| flow::resource_at(r, now)))
                    .collect()
            })
            .await
    }

    async fn delete_resource(
        &self,
        scope: &TenantScope,
        name: &ResourceName,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (tenant, name) = (scope.tenant_id(), name.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM resources WHERE tenant_id = ?1 AND name = ?2")
                .and_then(|mut delete| delete.execute(params![tenant.to_string(), name.as_str()]))
                .map_err(sqlite_error)?;
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            let mut decision = Decision::read_only(());
            decision
                .writes
                .audit
                .push((tenant, steadfast_store::audit::drafts::resource_deleted(&name)));
            Ok(decision)
        })
        .await
    }
}
