//! Flow control: queue policies, and what a lease loads for
//! [`decide::lease`] and writes back of the rules' state.
//!
//! A queue whose rules count or remember ([`QueuePolicy::needs_turns`])
//! is leased by one transaction at a time across every node: the lease
//! holds the queue's `queue_settings` row (`FOR UPDATE`) before it counts
//! running jobs or reads the limiters, and keeps it until it commits, so
//! the next lease sees its grants. Hatchet's over-admission (#4778) came
//! from counting slots without such a turn.

use std::collections::HashMap;

use async_trait::async_trait;
use steadfast_core::{Job, JobState, QueueName, ResourceName, TenantId, Timestamp};
use steadfast_store::decide::flow::{self, Blocked, Candidates, FlowWrite, KeyedJobs, QueueLease, ResourceLease};
use steadfast_store::decide::{self, Decision, Writes};
use steadfast_store::flow::{BUSIEST_KEYS, BreakerState, Cursor, ReadyCounts, Resource, ResourceConfig, ResourceState};
use steadfast_store::{
    FlowStore, PolicyPatch, QueueFlow, QueueFlowState, QueueOverview, QueuePolicy, StoreError, TenantScope,
};
use tokio_postgres::Row;

use crate::rows::{JOB_COLUMNS, job_from_row, millis, optional_timestamp, timestamp};
use crate::{Durability, PostgresStore, Transaction, pg_error, statement};

/// How far down a queue with per-key rules a lease looks for jobs without a key.
const UNKEYED_WINDOW: i64 = 256;

const FLOW_COLUMNS: &str = "queue, policy, rate_tat_ns, cursor_key, cursor_served, budget_tokens, budget_at";

fn flow_from_row(row: &Row) -> Result<(String, QueueFlow), StoreError> {
    let policy = QueuePolicy::from_column(row.get::<_, Option<&str>>(1))?;
    let cursor = row.get::<_, Option<String>>(3).map(|key| Cursor {
        key,
        served: row.get::<_, i32>(4).max(0) as u32,
    });
    let budget = match (row.get::<_, Option<f64>>(5), row.get::<_, Option<i64>>(6)) {
        (Some(tokens), Some(at)) => Some((tokens, timestamp(at)?)),
        _ => None,
    };
    Ok((
        row.get(0),
        QueueFlow {
            policy,
            state: QueueFlowState {
                rate_tat_ns: row.get(2),
                cursor,
                budget,
            },
        },
    ))
}

/// The policies and flow states of `queues` that have a policy.
pub(crate) async fn queue_flows(
    tx: &Transaction,
    tenant: TenantId,
    queues: &[QueueName],
) -> Result<HashMap<String, QueueFlow>, StoreError> {
    let names: Vec<&str> = queues.iter().map(QueueName::as_str).collect();
    let sql = format!(
        "SELECT {FLOW_COLUMNS} FROM queue_settings WHERE tenant_id = $1 AND queue = ANY($2) AND policy IS NOT NULL"
    );
    let rows = tx
        .query(&statement(tx, &sql).await?, &[&tenant.0, &names])
        .await
        .map_err(pg_error)?;
    rows.iter().map(flow_from_row).collect()
}

/// The queue's policy and flow state, holding its row until the
/// transaction ends: this lease's turn.
async fn take_turn(tx: &Transaction, tenant: TenantId, queue: &QueueName) -> Result<QueueFlow, StoreError> {
    let sql = format!("SELECT {FLOW_COLUMNS} FROM queue_settings WHERE tenant_id = $1 AND queue = $2 FOR UPDATE");
    let row = tx
        .query_opt(&statement(tx, &sql).await?, &[&tenant.0, &queue.as_str()])
        .await
        .map_err(pg_error)?;
    Ok(row
        .map(|row| flow_from_row(&row))
        .transpose()?
        .map(|(_, flow)| flow)
        .unwrap_or_default())
}

/// What [`decide::lease`] needs about `queue`, given its flow as first read
/// and the heads read beside it (used as they are when the queue's rules
/// need no turn).
pub(crate) async fn queue_lease(
    tx: &Transaction,
    tenant: TenantId,
    queue: &QueueName,
    flow: QueueFlow,
    heads: Vec<(i64, Job)>,
    max_jobs: u32,
    blocked: &[String],
) -> Result<QueueLease, StoreError> {
    if !flow.policy.needs_turns() {
        return Ok(QueueLease {
            queue: queue.clone(),
            flow,
            running: 0,
            key_running: HashMap::new(),
            key_tats: HashMap::new(),
            candidates: Candidates::Ordered(heads),
        });
    }
    let flow = take_turn(tx, tenant, queue).await?;
    let loading = flow::loading(&flow.policy, max_jobs);
    let candidates = match loading.keys {
        // Read again: the heads read before the turn may be stale.
        None if blocked.is_empty() => Candidates::Ordered(crate::jobs::heads_of(tx, tenant, queue, max_jobs).await?),
        None => Candidates::Ordered(heads_without(tx, tenant, queue, max_jobs, blocked).await?),
        Some(keys) => Candidates::ByKey(by_key(tx, tenant, queue, &flow, keys, max_jobs, blocked).await?),
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
        let row = tx
            .query_one(
                &statement(
                    tx,
                    "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND state = 'running' AND queue = $2",
                )
                .await?,
                &[&tenant.0, &queue.as_str()],
            )
            .await
            .map_err(pg_error)?;
        row.get::<_, i64>(0).clamp(0, i64::from(u32::MAX)) as u32
    } else {
        0
    };
    let key_running = if loading.key_running && !keys.is_empty() {
        let rows = tx
            .query(
                &statement(
                    tx,
                    "SELECT flow_key, count(*) FROM jobs WHERE tenant_id = $1 AND queue = $2 \
                     AND state = 'running' AND flow_key = ANY($3) GROUP BY flow_key",
                )
                .await?,
                &[&tenant.0, &queue.as_str(), &keys],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| (row.get(0), row.get::<_, i64>(1).clamp(0, i64::from(u32::MAX)) as u32))
            .collect()
    } else {
        HashMap::new()
    };
    let key_tats = if loading.key_rates && !keys.is_empty() {
        let rows = tx
            .query(
                &statement(
                    tx,
                    "SELECT flow_key, rate_tat_ns FROM flow_keys WHERE tenant_id = $1 AND queue = $2 \
                     AND flow_key = ANY($3)",
                )
                .await?,
                &[&tenant.0, &queue.as_str(), &keys],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(|row| (row.get(0), row.get(1))).collect()
    } else {
        HashMap::new()
    };
    Ok(QueueLease {
        queue: queue.clone(),
        flow,
        running,
        key_running,
        key_tats,
        candidates,
    })
}

/// Up to `max_keys` keys with ready jobs, in rotation order from the
/// cursor's key on (wrapping; `""`, the jobs without a key, comes first in
/// a round), each with its first jobs, locked. Each key costs one seek of
/// `jobs_ready_keys` (a loose index scan), however many jobs it has.
async fn by_key(
    tx: &Transaction,
    tenant: TenantId,
    queue: &QueueName,
    flow: &QueueFlow,
    max_keys: u32,
    max_jobs: u32,
    blocked: &[String],
) -> Result<KeyedJobs, StoreError> {
    let start = flow
        .state
        .cursor
        .as_ref()
        .map(|cursor| cursor.key.as_str())
        .unwrap_or("");
    let unkeyed = unkeyed_heads(tx, tenant, queue, max_jobs, blocked).await?;
    let from_start = distinct_keys(tx, tenant, queue, start, None, i64::from(max_keys)).await?;
    let before_start = if start.is_empty() {
        Vec::new()
    } else {
        distinct_keys(tx, tenant, queue, "", Some(start), i64::from(max_keys)).await?
    };
    let keys = flow::rotation(start, !unkeyed.is_empty(), from_start, before_start, max_keys);
    let found = keys.len();
    let wanted: Vec<i64> = keys
        .iter()
        .map(|key| i64::from(flow::jobs_per_key(&flow.policy, key, found, max_jobs)))
        .collect();
    let keyed: Vec<&str> = keys.iter().map(String::as_str).filter(|key| !key.is_empty()).collect();
    let keyed_wanted: Vec<i64> = keys
        .iter()
        .zip(&wanted)
        .filter(|(key, _)| !key.is_empty())
        .map(|(_, n)| *n)
        .collect();
    let mut jobs: HashMap<String, Vec<(i64, Job)>> = HashMap::new();
    if !keyed.is_empty() {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM unnest($3::text[], $4::bigint[]) WITH ORDINALITY AS k(wanted_key, wanted, ord) \
             CROSS JOIN LATERAL (SELECT * FROM jobs WHERE tenant_id = $1 AND queue = $2 AND state = 'queued' \
             AND flow_key = k.wanted_key AND (resource IS NULL OR resource <> ALL($5)) \
             ORDER BY priority DESC, run_at, seq LIMIT k.wanted \
             FOR UPDATE SKIP LOCKED) AS j ORDER BY k.ord, j.priority DESC, j.run_at, j.seq"
        );
        let rows = tx
            .query(
                &statement(tx, &sql).await?,
                &[&tenant.0, &queue.as_str(), &keyed, &keyed_wanted, &blocked],
            )
            .await
            .map_err(pg_error)?;
        for row in &rows {
            let (seq, job) = job_from_row(row)?;
            let key = job.flow_key.as_ref().map(|k| k.as_str().to_owned()).unwrap_or_default();
            jobs.entry(key).or_default().push((seq, job));
        }
    }
    let mut unkeyed = Some(unkeyed);
    Ok(keys
        .into_iter()
        .zip(wanted)
        .map(|(key, wanted)| {
            let mut held = if key.is_empty() {
                unkeyed.take().unwrap_or_default()
            } else {
                jobs.remove(&key).unwrap_or_default()
            };
            held.truncate(wanted as usize);
            (key, held)
        })
        .collect())
}

/// Up to `limit` distinct keys of the queue's ready jobs from `from` on
/// (inclusive), below `before` when given: a loose index scan.
async fn distinct_keys(
    tx: &Transaction,
    tenant: TenantId,
    queue: &QueueName,
    from: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            &statement(
                tx,
                "WITH RECURSIVE k (key, n) AS ( \
                   (SELECT flow_key, 1::bigint FROM jobs WHERE tenant_id = $1 AND queue = $2 AND state = 'queued' \
                    AND flow_key IS NOT NULL AND flow_key >= $3 ORDER BY flow_key LIMIT 1) \
                   UNION ALL \
                   SELECT (SELECT j.flow_key FROM jobs j WHERE j.tenant_id = $1 AND j.queue = $2 \
                           AND j.state = 'queued' AND j.flow_key IS NOT NULL AND j.flow_key > k.key \
                           ORDER BY j.flow_key LIMIT 1), k.n + 1 \
                   FROM k WHERE k.key IS NOT NULL AND k.n < $4::bigint) \
                 SELECT key FROM k WHERE key IS NOT NULL AND ($5::text IS NULL OR key < $5) ORDER BY n",
            )
            .await?,
            &[&tenant.0, &queue.as_str(), &from, &limit, &before],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The first ready jobs without a key among the queue's first
/// [`UNKEYED_WINDOW`] ready jobs (a bounded read of the ready index), locked.
async fn unkeyed_heads(
    tx: &Transaction,
    tenant: TenantId,
    queue: &QueueName,
    limit: u32,
    blocked: &[String],
) -> Result<Vec<(i64, Job)>, StoreError> {
    let sql = format!(
        "WITH head AS (SELECT seq FROM jobs WHERE tenant_id = $1 AND queue = $2 AND state = 'queued' \
         ORDER BY priority DESC, run_at, seq LIMIT $3) \
         SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND seq IN (SELECT seq FROM head) \
         AND state = 'queued' AND flow_key IS NULL AND (resource IS NULL OR resource <> ALL($5)) \
         ORDER BY priority DESC, run_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED"
    );
    let rows = tx
        .query(
            &statement(tx, &sql).await?,
            &[&tenant.0, &queue.as_str(), &UNKEYED_WINDOW, &i64::from(limit), &blocked],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(job_from_row).collect()
}

const RESOURCE_COLUMNS: &str = "name, config, breaker_state, window_started_at, window_requests, window_failures, \
     opened_at, probes_granted, rate_tat_ns, created_at, updated_at";

fn resource_from_row(row: &Row) -> Result<Resource, StoreError> {
    Ok(Resource {
        name: ResourceName::new(row.get::<_, String>(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        config: ResourceConfig::from_column(row.get(1))?,
        state: ResourceState {
            breaker: BreakerState::parse(row.get(2))?,
            window_started_at: timestamp(row.get(3))?,
            window_requests: row.get::<_, i32>(4).max(0) as u32,
            window_failures: row.get::<_, i32>(5).max(0) as u32,
            opened_at: optional_timestamp(row.get(6))?,
            probes_granted: row.get::<_, i32>(7).max(0) as u32,
            rate_tat_ns: row.get(8),
        },
        created_at: timestamp(row.get(9))?,
        updated_at: timestamp(row.get(10))?,
    })
}

/// The tenant's resources that may hold their jobs back: those whose
/// breaker is not closed or that have a concurrency or rate limit (few, if
/// any; nothing for a tenant without them).
pub(crate) async fn limiting_resources(tx: &Transaction, tenant: TenantId) -> Result<Vec<Resource>, StoreError> {
    let sql = format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant_id = $1 AND (breaker_state <> 'closed' \
         OR config LIKE '%\"concurrency\"%' OR config LIKE '%\"rate\"%') ORDER BY name LIMIT 1000"
    );
    let rows = tx
        .query(&statement(tx, &sql).await?, &[&tenant.0])
        .await
        .map_err(pg_error)?;
    rows.iter().map(resource_from_row).collect()
}

/// Which of `resources` hold their jobs back now (see
/// [`flow::blocked_resources`]), counting the running jobs of those with a
/// concurrency limit.
pub(crate) async fn blocked_of(
    tx: &Transaction,
    tenant: TenantId,
    resources: &[Resource],
    now: Timestamp,
) -> Result<Blocked, StoreError> {
    let running = running_of(tx, tenant, resources).await?;
    Ok(flow::blocked_resources(resources, &running, now))
}

/// Running jobs of each of `resources` that has a concurrency limit.
async fn running_of(
    tx: &Transaction,
    tenant: TenantId,
    resources: &[Resource],
) -> Result<HashMap<String, u32>, StoreError> {
    let names: Vec<&str> = resources
        .iter()
        .filter(|resource| resource.config.concurrency.is_some())
        .map(|resource| resource.name.as_str())
        .collect();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = tx
        .query(
            &statement(
                tx,
                "SELECT resource, count(*) FROM jobs WHERE tenant_id = $1 AND state = 'running' \
                 AND resource = ANY($2) GROUP BY resource",
            )
            .await?,
            &[&tenant.0, &names],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get::<_, i64>(1).clamp(0, i64::from(u32::MAX)) as u32))
        .collect())
}

/// The named resources of `tenant` that exist, held until the transaction
/// ends (in name order, so transactions never wait on each other in a cycle).
async fn lock_resources(tx: &Transaction, tenant: TenantId, names: &[&str]) -> Result<Vec<Resource>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant_id = $1 AND name = ANY($2) ORDER BY name FOR UPDATE"
    );
    let rows = tx
        .query(&statement(tx, &sql).await?, &[&tenant.0, &names])
        .await
        .map_err(pg_error)?;
    rows.iter().map(resource_from_row).collect()
}

/// The configured resources the candidates name, held for this lease
/// (probes of a half-open breaker are granted once across nodes), with
/// running jobs counted where a concurrency limit needs them.
pub(crate) async fn resource_leases(
    tx: &Transaction,
    tenant: TenantId,
    leases: &[QueueLease],
) -> Result<Vec<ResourceLease>, StoreError> {
    let names = flow::candidate_resources(leases);
    let resources = lock_resources(tx, tenant, &names).await?;
    let running = running_of(tx, tenant, &resources).await?;
    Ok(resources
        .into_iter()
        .map(|resource| ResourceLease {
            running: running.get(resource.name.as_str()).copied().unwrap_or(0),
            resource,
        })
        .collect())
}

/// The queue's heads without the jobs of `blocked` resources, locked.
pub(crate) async fn heads_without(
    tx: &Transaction,
    tenant: TenantId,
    queue: &QueueName,
    limit: u32,
    blocked: &[String],
) -> Result<Vec<(i64, Job)>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND queue = $2 AND state = 'queued' \
         AND (resource IS NULL OR resource <> ALL($4)) ORDER BY priority DESC, run_at, seq LIMIT $3 \
         FOR UPDATE SKIP LOCKED"
    );
    let rows = tx
        .query(
            &statement(tx, &sql).await?,
            &[&tenant.0, &queue.as_str(), &i64::from(limit), &blocked],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(job_from_row).collect()
}

/// The breakers the writes of `tenant` report outcomes to, after those
/// outcomes: locked, decided and added to `writes` before they are written.
pub(crate) async fn record_outcomes(
    tx: &Transaction,
    tenant: TenantId,
    writes: &mut Writes,
    now: Timestamp,
) -> Result<(), StoreError> {
    let outcomes = flow::resource_outcomes(writes);
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&str> = outcomes.iter().map(|r| r.resource.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let resources = lock_resources(tx, tenant, &names).await?;
    let resources = resources.into_iter().map(|resource| (tenant, resource)).collect();
    writes.flow.extend(flow::record_outcomes(resources, &outcomes, now));
    Ok(())
}

async fn count_of(
    tx: &Transaction,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    let row = tx
        .query_one(&statement(tx, sql).await?, params)
        .await
        .map_err(pg_error)?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// The tenant's queues with their policies and live state (see
/// [`FlowStore::queue_overviews`]).
async fn overviews(tx: &Transaction, tenant: TenantId, now: Timestamp) -> Result<Vec<QueueOverview>, StoreError> {
    let counts: Vec<(String, String, i64)> = tx
        .query(
            &statement(
                tx,
                // Queued jobs (the backlog) counted apart, so the planner
                // can read them from the ready index alone.
                "SELECT queue, 'queued', count(*) FROM jobs WHERE tenant_id = $1 AND state = 'queued' \
                 GROUP BY queue \
                 UNION ALL SELECT queue, state, count(*) FROM jobs WHERE tenant_id = $1 \
                 AND state IN ('scheduled', 'running', 'waiting') GROUP BY queue, state",
            )
            .await?,
            &[&tenant.0],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let sql = format!("SELECT {FLOW_COLUMNS} FROM queue_settings WHERE tenant_id = $1 AND policy IS NOT NULL");
    let mut flows: HashMap<String, QueueFlow> = tx
        .query(&statement(tx, &sql).await?, &[&tenant.0])
        .await
        .map_err(pg_error)?
        .iter()
        .map(flow_from_row)
        .collect::<Result<_, _>>()?;
    let resources = limiting_resources(tx, tenant).await?;
    let blocked = blocked_of(tx, tenant, &resources, now).await?.names;
    let names = flow::listed_queues(&counts, flows.keys());
    let mut overviews = Vec::with_capacity(names.len());
    for name in names {
        let queue = QueueName::new(name.as_str()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let of = |state: JobState| flow::count_of(&counts, &name, state);
        // Only a queue with running jobs has busy keys.
        let busiest: Vec<(String, u64)> = if of(JobState::Running) == 0 {
            Vec::new()
        } else {
            tx
            .query(
                &statement(
                    tx,
                    "SELECT flow_key, count(*) AS n FROM jobs WHERE tenant_id = $1 AND queue = $2 \
                     AND state = 'running' AND flow_key IS NOT NULL GROUP BY flow_key ORDER BY n DESC, flow_key LIMIT $3",
                )
                .await?,
                &[&tenant.0, &name, &(BUSIEST_KEYS as i64)],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64))
            .collect()
        };
        let flow = flows.remove(&name).unwrap_or_default();
        // Without rules or an open breaker, nothing is held.
        let held = if flow.policy.is_empty() && blocked.is_empty() {
            Default::default()
        } else {
            let queued = "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND queue = $2 AND state = 'queued'";
            let key_rate_held = match &flow.policy.key_rate {
                None => Vec::new(),
                Some(_) => {
                    let tats = tx
                        .query(
                            &statement(
                                tx,
                                "SELECT flow_key, rate_tat_ns FROM flow_keys WHERE tenant_id = $1 AND queue = $2 \
                                 AND rate_tat_ns > $3",
                            )
                            .await?,
                            &[&tenant.0, &name, &(now.as_nanosecond() as i64)],
                        )
                        .await
                        .map_err(pg_error)?
                        .iter()
                        .map(|row| (row.get(0), row.get(1)))
                        .collect();
                    flow::rate_held_keys(&flow.policy, tats, now)
                }
            };
            let ready = ReadyCounts {
                queued: of(JobState::Queued),
                running: of(JobState::Running),
                of_blocked_resources: if blocked.is_empty() {
                    0
                } else {
                    count_of(
                        tx,
                        &format!("{queued} AND resource = ANY($3)"),
                        &[&tenant.0, &name, &blocked],
                    )
                    .await?
                },
                of_saturated_keys: match flow.policy.key_concurrency {
                    None => 0,
                    Some(limit) => {
                        let sql = format!(
                            "{queued} AND flow_key IN (SELECT flow_key FROM jobs WHERE tenant_id = $1 AND queue = $2 \
                             AND state = 'running' AND flow_key IS NOT NULL GROUP BY flow_key HAVING count(*) >= $3)"
                        );
                        count_of(tx, &sql, &[&tenant.0, &name, &i64::from(limit)]).await?
                    }
                },
                of_rate_held_keys: if key_rate_held.is_empty() {
                    0
                } else {
                    count_of(
                        tx,
                        &format!("{queued} AND flow_key = ANY($3)"),
                        &[&tenant.0, &name, &key_rate_held],
                    )
                    .await?
                },
                retries: match flow.policy.retry_budget {
                    Some(budget) if flow::balance(&budget, flow.state.budget, now) >= 1.0 => 0,
                    None => 0,
                    Some(_) => {
                        count_of(
                            tx,
                            &format!("{queued} AND attempt > uncounted_attempts"),
                            &[&tenant.0, &name],
                        )
                        .await?
                    }
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

/// Writes the flow state leases of `tenant` moved.
pub(crate) async fn save_flows(tx: &Transaction, tenant: TenantId, writes: &[FlowWrite]) -> Result<(), StoreError> {
    for write in writes {
        match write {
            FlowWrite::Queue { queue, state, .. } => tx
                .execute(
                    &statement(
                        tx,
                        "UPDATE queue_settings SET rate_tat_ns = $3, cursor_key = $4, cursor_served = $5, \
                         budget_tokens = $6, budget_at = $7 WHERE tenant_id = $1 AND queue = $2",
                    )
                    .await?,
                    &[
                        &tenant.0,
                        &queue.as_str(),
                        &state.rate_tat_ns,
                        &state.cursor.as_ref().map(|c| c.key.as_str()),
                        &state
                            .cursor
                            .as_ref()
                            .map_or(0, |c| c.served.min(i32::MAX as u32) as i32),
                        &state.budget.map(|(tokens, _)| tokens),
                        &state.budget.map(|(_, at)| millis(at)),
                    ],
                )
                .await
                .map_err(pg_error)?,
            FlowWrite::KeyRate { queue, key, tat_ns, .. } => tx
                .execute(
                    &statement(
                        tx,
                        "INSERT INTO flow_keys (tenant_id, queue, flow_key, rate_tat_ns) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (tenant_id, queue, flow_key) DO UPDATE SET rate_tat_ns = excluded.rate_tat_ns",
                    )
                    .await?,
                    &[&tenant.0, &queue.as_str(), key, tat_ns],
                )
                .await
                .map_err(pg_error)?,
            FlowWrite::Resource { name, state, .. } => tx
                .execute(
                    &statement(
                        tx,
                        "UPDATE resources SET breaker_state = $3, window_started_at = $4, window_requests = $5, \
                         window_failures = $6, opened_at = $7, probes_granted = $8, rate_tat_ns = $9 \
                         WHERE tenant_id = $1 AND name = $2",
                    )
                    .await?,
                    &[
                        &tenant.0,
                        &name.as_str(),
                        &state.breaker.as_str(),
                        &millis(state.window_started_at),
                        &(state.window_requests.min(i32::MAX as u32) as i32),
                        &(state.window_failures.min(i32::MAX as u32) as i32),
                        &state.opened_at.map(millis),
                        &(state.probes_granted.min(i32::MAX as u32) as i32),
                        &state.rate_tat_ns,
                    ],
                )
                .await
                .map_err(pg_error)?,
        };
    }
    Ok(())
}

#[async_trait]
impl FlowStore for PostgresStore {
    async fn set_queue_policy(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        patch: PolicyPatch,
        now: Timestamp,
    ) -> Result<QueuePolicy, StoreError> {
        let tenant = scope.tenant_id();
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let stored = take_turn(tx, tenant, queue).await?.policy;
            let (policy, draft) = decide::flow::set_policy(queue, stored, patch)?;
            tx.execute(
                &statement(
                    tx,
                    "INSERT INTO queue_settings (tenant_id, queue, policy, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, queue) DO UPDATE SET policy = excluded.policy, \
                     updated_at = excluded.updated_at",
                )
                .await?,
                &[&tenant.0, &queue.as_str(), &policy.to_column(), &millis(now)],
            )
            .await
            .map_err(pg_error)?;
            let mut decision = Decision::read_only(policy);
            decision.writes.audit.push((tenant, draft));
            // Workers waiting on the queue, on any node, ask again under the new rules.
            decision.writes.woken.push((tenant, queue.clone()));
            Ok(decision)
        })
        .await
    }

    async fn queue_policy(&self, scope: &TenantScope, queue: &QueueName) -> Result<QueuePolicy, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let mut flows = queue_flows(tx, tenant, std::slice::from_ref(queue)).await?;
            Ok(flows.remove(queue.as_str()).unwrap_or_default().policy)
        })
        .await
    }

    async fn put_resource(
        &self,
        scope: &TenantScope,
        name: &ResourceName,
        config: ResourceConfig,
        now: Timestamp,
    ) -> Result<Resource, StoreError> {
        let tenant = scope.tenant_id();
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let existing = lock_resources(tx, tenant, &[name.as_str()]).await?.pop();
            let (resource, draft) = decide::flow::put_resource(name, existing, config, now)?;
            let state = &resource.state;
            tx.execute(
                &statement(
                    tx,
                    "INSERT INTO resources (tenant_id, name, config, breaker_state, window_started_at, \
                     window_requests, window_failures, opened_at, probes_granted, rate_tat_ns, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (tenant_id, name) DO UPDATE SET config = excluded.config, \
                     updated_at = excluded.updated_at",
                )
                .await?,
                &[
                    &tenant.0,
                    &name.as_str(),
                    &resource.config.to_column(),
                    &state.breaker.as_str(),
                    &millis(state.window_started_at),
                    &(state.window_requests.min(i32::MAX as u32) as i32),
                    &(state.window_failures.min(i32::MAX as u32) as i32),
                    &state.opened_at.map(millis),
                    &(state.probes_granted.min(i32::MAX as u32) as i32),
                    &state.rate_tat_ns,
                    &millis(resource.created_at),
                    &millis(resource.updated_at),
                ],
            )
            .await
            .map_err(pg_error)?;
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
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let sql = format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant_id = $1 AND name = $2");
            let row = tx
                .query_opt(&statement(tx, &sql).await?, &[&tenant.0, &name.as_str()])
                .await
                .map_err(pg_error)?;
            Ok(row
                .map(|row| resource_from_row(&row))
                .transpose()?
                .map(|resource| flow::resource_at(resource, now)))
        })
        .await
    }

    async fn queue_overviews(&self, scope: &TenantScope, now: Timestamp) -> Result<Vec<QueueOverview>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            overviews(tx, tenant, now).await
        })
        .await
    }

    async fn resources(&self, scope: &TenantScope, now: Timestamp) -> Result<Vec<Resource>, StoreError> {
        let tenant = scope.tenant_id();
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let sql = format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant_id = $1 ORDER BY name LIMIT 1000");
            let rows = tx
                .query(&statement(tx, &sql).await?, &[&tenant.0])
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|row| resource_from_row(row).map(|resource| flow::resource_at(resource, now)))
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
        let tenant = scope.tenant_id();
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let deleted = tx
                .execute(
                    &statement(tx, "DELETE FROM resources WHERE tenant_id = $1 AND name = $2").await?,
                    &[&tenant.0, &name.as_str()],
                )
                .await
                .map_err(pg_error)?;
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            let mut decision = Decision::read_only(());
            decision
                .writes
                .audit
                .push((tenant, steadfast_store::audit::drafts::resource_deleted(name)));
            Ok(decision)
        })
        .await
    }
}
