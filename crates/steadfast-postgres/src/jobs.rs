use std::time::Duration;

use crate::Transaction;
use async_trait::async_trait;
use steadfast_core::lifecycle::Failure;
use steadfast_core::{Job, JobId, QueueName, Reason, TenantId, Timestamp};
use steadfast_store::decide::{self, Decision, LiveKey};
use steadfast_store::{
    Completing, Ended, Enqueued, JobCursor, JobPage, JobQuery, JobRecord, JobStore, LeaseRequest, Leased, LeasedJob,
    NewJob, RetryPlan, StoreError, TenantScope,
};
use tokio_postgres::types::ToSql;

use crate::flow;
use crate::rows::{JOB_COLUMNS, attempts_of, job_from_row, load_job, load_jobs, millis};
use crate::workflows::{children_of, signals_of, steps_of};
use crate::{Durability, PostgresStore, TenantFilter, pg_error, statement};

/// The live claims on the idempotency keys `jobs` carry, with their jobs.
/// Each key is locked for the transaction first (in one order, so batches
/// never wait on each other in a cycle): a concurrent enqueue with the same
/// key waits here until this one commits, then sees its claim, so
/// concurrent duplicates create one job.
async fn live_keys(
    tx: &Transaction,
    filter: TenantFilter,
    tenant: TenantId,
    jobs: &[NewJob],
    now: Timestamp,
) -> Result<Vec<LiveKey>, StoreError> {
    let keys: Vec<&str> = jobs
        .iter()
        .filter_map(|new| new.spec.idempotency.as_ref().map(|(key, _)| key.as_str()))
        .collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let claims = tx
        .query(
            &statement(
                tx,
                "SELECT key, fingerprint, job_id FROM idempotency_keys \
                 WHERE tenant_id = $1 AND key = ANY($2) AND expires_at > $3",
            )
            .await?,
            &[&tenant.0, &keys, &millis(now)],
        )
        .await
        .map_err(pg_error)?;
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = claims.iter().map(|row| JobId(row.get(2))).collect();
    let jobs = load_jobs(tx, filter, tenant, &ids, false).await?;
    claims
        .iter()
        .map(|row| {
            let job_id = JobId(row.get(2));
            Ok(LiveKey {
                key: steadfast_core::IdempotencyKey::new(row.get::<_, String>(0))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                fingerprint: row.get(1),
                job: jobs.iter().find(|job| job.id == job_id).cloned(),
            })
        })
        .collect()
}

/// Locks, for the transaction, every idempotency key and singleton key
/// `jobs` carry, in one order (so batches never wait on each other in a
/// cycle): a concurrent enqueue with the same key waits here until this
/// one commits, then sees its claim or its job, so concurrent duplicates
/// create one job.
async fn lock_keys(tx: &Transaction, tenant: TenantId, jobs: &[NewJob]) -> Result<(), StoreError> {
    let mut locks: Vec<String> = Vec::new();
    for new in jobs {
        if let Some((key, _)) = &new.spec.idempotency {
            locks.push(key.as_str().to_owned());
        }
        if let Some(singleton) = &new.spec.singleton {
            locks.push(singleton_lock(&new.spec.queue, &singleton.key));
        }
    }
    lock_in_order(tx, tenant, &locks).await
}

/// Takes a tenant's advisory locks named `locks` in one statement, in hash
/// order: every transaction that takes several takes them in this order,
/// so none waits on another in a cycle.
async fn lock_in_order(tx: &Transaction, tenant: TenantId, locks: &[String]) -> Result<(), StoreError> {
    if locks.is_empty() {
        return Ok(());
    }
    // Volatile functions in the select list run after the sort.
    tx.execute(
        &statement(
            tx,
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended($1 || '/' || k, 0) AS h \
             FROM unnest($2::text[]) AS k) AS hashes ORDER BY h",
        )
        .await?,
        &[&tenant.0.to_string(), &locks],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Whether another unfinished job of `job`'s queue holds its singleton key
/// (the key locked first, as an enqueue of it locks it).
pub(crate) async fn singleton_held_by_another(tx: &Transaction, job: &Job) -> Result<bool, StoreError> {
    let Some(key) = &job.singleton_key else {
        return Ok(false);
    };
    tx.execute(
        &statement(tx, "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))").await?,
        &[&job.tenant_id.0.to_string(), &singleton_lock(&job.queue, key)],
    )
    .await
    .map_err(pg_error)?;
    singleton_held_once_locked(tx, job).await
}

/// Takes the singleton key locks of `jobs` (of one tenant) in one
/// statement, in the order every enqueue takes them (see [`lock_keys`]).
pub(crate) async fn lock_singletons(tx: &Transaction, tenant: TenantId, jobs: &[&Job]) -> Result<(), StoreError> {
    let locks: Vec<String> = jobs
        .iter()
        .filter_map(|job| job.singleton_key.as_ref().map(|key| singleton_lock(&job.queue, key)))
        .collect();
    lock_in_order(tx, tenant, &locks).await
}

/// [`singleton_held_by_another`], its key's lock already held.
pub(crate) async fn singleton_held_once_locked(tx: &Transaction, job: &Job) -> Result<bool, StoreError> {
    let Some(key) = &job.singleton_key else {
        return Ok(false);
    };
    let row = tx
        .query_opt(
            &statement(
                tx,
                "SELECT 1 FROM jobs WHERE tenant_id = $1 AND queue = $2 AND singleton_key = $3 AND id <> $4 \
                 AND state IN ('scheduled', 'queued', 'running', 'waiting') LIMIT 1",
            )
            .await?,
            &[&job.tenant_id.0, &job.queue.as_str(), &key.as_str(), &job.id.0],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.is_some())
}

/// What locks a singleton key (idempotency keys hold no spaces: this never names one).
fn singleton_lock(queue: &QueueName, key: &steadfast_core::FlowKey) -> String {
    format!("singleton {queue} {key}")
}

/// The unfinished jobs of the singleton keys `jobs` carry, locked: a lease,
/// a timer or a cancel that changes one waits for this enqueue, and one
/// this enqueue waited for is read as it committed (a replace never
/// overwrites a job that was leased meanwhile).
async fn live_singletons(tx: &Transaction, tenant: TenantId, jobs: &[NewJob]) -> Result<Vec<Job>, StoreError> {
    let (queues, keys): (Vec<&str>, Vec<&str>) = jobs
        .iter()
        .filter_map(|new| {
            let singleton = new.spec.singleton.as_ref()?;
            Some((new.spec.queue.as_str(), singleton.key.as_str()))
        })
        .unzip();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 \
         AND (queue, singleton_key) IN (SELECT * FROM unnest($2::text[], $3::text[])) \
         AND singleton_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'waiting') \
         FOR UPDATE"
    );
    let rows = tx
        .query(&statement(tx, &sql).await?, &[&tenant.0, &queues, &keys])
        .await
        .map_err(pg_error)?;
    rows.iter().map(|row| job_from_row(row).map(|(_, job)| job)).collect()
}

/// A queue's heads, locked (other nodes' leases skip them).
pub(crate) async fn heads_of(
    tx: &Transaction,
    tenant: TenantId,
    queue: &QueueName,
    limit: u32,
) -> Result<Vec<(i64, Job)>, StoreError> {
    // A function, so its plan never depends on statistics (0003_lease_plan.sql).
    let sql = format!("SELECT {JOB_COLUMNS} FROM steadfast_queue_heads($1, $2, $3)");
    let rows = tx
        .query(
            &statement(tx, &sql).await?,
            &[&tenant.0, &queue.as_str(), &i64::from(limit)],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(job_from_row).collect()
}

/// The heads of each requested queue, in the request's order, locked.
async fn queue_heads(
    tx: &Transaction,
    filter: TenantFilter,
    tenant: TenantId,
    request: &LeaseRequest,
) -> Result<Vec<Vec<(i64, Job)>>, StoreError> {
    let mut heads = Vec::with_capacity(request.queues.len());
    for queue in &request.queues {
        heads.push(match filter {
            TenantFilter::Enforced => heads_of(tx, tenant, queue, request.max_jobs).await?,
            TenantFilter::DisabledForTests => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE queue = $1 AND state = 'queued' \
                     ORDER BY priority DESC, run_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED"
                );
                let rows = tx
                    .query(
                        &statement(tx, &sql).await?,
                        &[&queue.as_str(), &i64::from(request.max_jobs)],
                    )
                    .await
                    .map_err(pg_error)?;
                rows.iter().map(job_from_row).collect::<Result<_, _>>()?
            }
        });
    }
    Ok(heads)
}

/// A leased job with the steps and attempts its workflow resumes from.
async fn resumable(tx: &Transaction, job: Job) -> Result<LeasedJob, StoreError> {
    if !decide::needs_history(&job) {
        return Ok(decide::resumable(job, Vec::new(), Vec::new()));
    }
    let steps = steps_of(tx, job.tenant_id, job.id).await?;
    let attempts = attempts_of(tx, job.tenant_id, job.id).await?;
    Ok(decide::resumable(job, steps, attempts))
}

async fn list_in(
    tx: &Transaction,
    filter: TenantFilter,
    tenant: TenantId,
    query: JobQuery,
) -> Result<JobPage, StoreError> {
    let tenant_id = tenant.0;
    let queue = query.queue.as_ref().map(|q| q.as_str().to_owned());
    let state = query.state.map(|s| s.as_str());
    let after = query.after.map(|JobCursor(seq)| seq);
    let limit = i64::from(query.limit) + 1;
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE true");
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if filter == TenantFilter::Enforced {
        params.push(&tenant_id);
        sql.push_str(&format!(" AND tenant_id = ${}", params.len()));
    }
    if let Some(queue) = &queue {
        params.push(queue);
        sql.push_str(&format!(" AND queue = ${}", params.len()));
    }
    if let Some(state) = &state {
        params.push(state);
        sql.push_str(&format!(" AND state = ${}", params.len()));
    }
    if let Some(after) = &after {
        params.push(after);
        sql.push_str(&format!(" AND seq < ${}", params.len()));
    }
    if let Some(kind) = &query.error_kind {
        params.push(kind);
        sql.push_str(&format!(" AND last_error_kind = ${}", params.len()));
    }
    let (created_after, created_before) = (query.created_after.map(millis), query.created_before.map(millis));
    if let Some(at) = &created_after {
        params.push(at);
        sql.push_str(&format!(" AND created_at >= ${}", params.len()));
    }
    if let Some(at) = &created_before {
        params.push(at);
        sql.push_str(&format!(" AND created_at < ${}", params.len()));
    }
    params.push(&limit);
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", params.len()));
    let rows = tx.query(&statement(tx, &sql).await?, &params).await.map_err(pg_error)?;
    let rows = rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(JobPage::from_rows(rows, query.limit))
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn enqueue(
        &self,
        scope: &TenantScope,
        jobs: Vec<NewJob>,
        dedup_window: Duration,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            lock_keys(tx, tenant, &jobs).await?;
            let live = live_keys(tx, filter, tenant, &jobs, now).await?;
            let singletons = live_singletons(tx, tenant, &jobs).await?;
            decide::enqueue(tenant, jobs, live, singletons, dedup_window, now)
        })
        .await
    }

    async fn job(&self, scope: &TenantScope, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            let Some(job) = load_job(tx, filter, tenant, id, false).await? else {
                return Ok(None);
            };
            Ok(Some(JobRecord {
                attempts: attempts_of(tx, tenant, id).await?,
                steps: steps_of(tx, tenant, id).await?,
                signals: signals_of(tx, tenant, id).await?,
                children: children_of(tx, tenant, id).await?,
                job,
            }))
        })
        .await
    }

    async fn list_jobs(&self, scope: &TenantScope, query: JobQuery) -> Result<JobPage, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.transaction(Some(tenant), Durability::Durable, async |tx| {
            if let Some(limit) = query.time_limit {
                let ms = limit.as_millis().max(1).to_string();
                tx.execute("SELECT set_config('statement_timeout', $1, true)", &[&ms])
                    .await
                    .map_err(pg_error)?;
            }
            list_in(tx, filter, tenant, query).await
        })
        .await
    }

    async fn lease(&self, scope: &TenantScope, request: LeaseRequest, now: Timestamp) -> Result<Leased, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        // A lease is void after a crash anyway: its commit need not wait for
        // the WAL flush (audit::chain says why its records are safe to read).
        // Flow state moves with it: after a crash a rate limiter may admit a
        // little early, never a running count too high (counts are read
        // from the jobs).
        self.decided(Some(scope), Durability::Relaxed, now, async |tx| {
            // Both reads in one flight: a queue without rules that count or
            // remember is leased from these heads with no further read.
            let (flows, heads, limiting) = futures::join!(
                flow::queue_flows(tx, tenant, &request.queues),
                queue_heads(tx, filter, tenant, &request),
                flow::limiting_resources(tx, tenant)
            );
            let (mut flows, heads) = (flows?, heads?);
            let blocked = flow::blocked_of(tx, tenant, &limiting?, now).await?;
            let mut queues = Vec::with_capacity(request.queues.len());
            let mut by_name: Vec<(&QueueName, Vec<(i64, Job)>)> = request.queues.iter().zip(heads).collect();
            // Queues take their turns in name order: two leases never wait
            // on each other's queues in a cycle.
            by_name.sort_by_key(|(queue, _)| *queue);
            for (queue, mut heads) in by_name {
                let held = |job: &(i64, Job)| {
                    job.1
                        .resource
                        .as_ref()
                        .is_some_and(|r| blocked.names.iter().any(|name| name == r.as_str()))
                };
                if heads.iter().any(held) {
                    // A breaker is open: read past its jobs, so other
                    // resources' jobs behind them still go.
                    heads = flow::heads_without(tx, tenant, queue, request.max_jobs, &blocked.names).await?;
                }
                let flow = flows.remove(queue.as_str()).unwrap_or_default();
                queues.push(flow::queue_lease(tx, tenant, queue, flow, heads, request.max_jobs, &blocked.names).await?);
            }
            let resources = flow::resource_leases(tx, tenant, &queues).await?;
            let Decision { answer, writes } = decide::lease(tenant, &request, queues, resources, &blocked, now)?;
            let mut jobs = Vec::with_capacity(answer.jobs.len());
            for job in answer.jobs {
                jobs.push(resumable(tx, job).await?);
            }
            Ok(Decision {
                answer: Leased {
                    jobs,
                    deferred: answer.deferred,
                    retry_at: answer.retry_at,
                },
                writes,
            })
        })
        .await
    }

    async fn heartbeat(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            decide::heartbeat(load_job(tx, filter, tenant, id, true).await?, token, ttl, now)
        })
        .await
    }

    async fn complete_many(
        &self,
        scope: &TenantScope,
        items: Vec<Completing>,
        now: Timestamp,
    ) -> Result<Vec<Result<Ended, StoreError>>, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let ids: Vec<JobId> = items.iter().map(|item| item.id).collect();
            let loaded = load_jobs(tx, filter, tenant, &ids, true).await?;
            Ok(decide::complete_many(items, loaded, now))
        })
        .await
    }

    async fn complete(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        output: String,
        now: Timestamp,
    ) -> Result<Ended, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            decide::complete(load_job(tx, filter, tenant, id, true).await?, token, output, now)
        })
        .await
    }

    async fn fail(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        failure: Failure,
        retry: RetryPlan,
        now: Timestamp,
    ) -> Result<Ended, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            decide::fail(
                load_job(tx, filter, tenant, id, true).await?,
                token,
                failure,
                retry,
                now,
            )
        })
        .await
    }

    async fn release(&self, scope: &TenantScope, id: JobId, token: &str, now: Timestamp) -> Result<Ended, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            decide::release(load_job(tx, filter, tenant, id, true).await?, token, now)
        })
        .await
    }

    async fn retry(
        &self,
        scope: &TenantScope,
        id: JobId,
        reason: Option<&Reason>,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            let job = load_job(tx, filter, tenant, id, true).await?;
            let taken = match &job {
                Some(job) => singleton_held_by_another(tx, job).await?,
                None => false,
            };
            decide::retry(job, taken, reason, now)
        })
        .await
    }

    async fn cancel(
        &self,
        scope: &TenantScope,
        id: JobId,
        reason: Option<&Reason>,
        now: Timestamp,
    ) -> Result<Ended, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            decide::cancel(load_job(tx, filter, tenant, id, true).await?, reason, now)
        })
        .await
    }

    async fn replay(
        &self,
        scope: &TenantScope,
        id: JobId,
        replay: JobId,
        payload: Option<(String, Option<u32>)>,
        reason: &Reason,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            // Read, not locked: the original does not change.
            let original = load_job(tx, filter, tenant, id, false).await?;
            decide::replay_job(original, replay, payload, reason, now)
        })
        .await
    }
}
