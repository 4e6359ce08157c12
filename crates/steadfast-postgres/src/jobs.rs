use std::time::Duration;

use crate::Transaction;
use async_trait::async_trait;
use steadfast_core::lifecycle::Failure;
use steadfast_core::{Job, JobId, TenantId, Timestamp};
use steadfast_store::decide::{self, Decision, LiveKey};
use steadfast_store::{
    Completing, Ended, Enqueued, JobCursor, JobPage, JobQuery, JobRecord, JobStore, LeaseRequest, LeasedJob, NewJob,
    RetryPlan, StoreError, TenantScope,
};
use tokio_postgres::types::ToSql;

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
    // Volatile functions in the select list run after the sort.
    tx.execute(
        &statement(
            tx,
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended($1 || '/' || k, 0) AS h \
             FROM unnest($2::text[]) AS k) AS hashes ORDER BY h",
        )
        .await?,
        &[&tenant.0.to_string(), &keys],
    )
    .await
    .map_err(pg_error)?;
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

/// The heads of the requested queues, locked (other nodes' leases skip them).
async fn queue_heads(
    tx: &Transaction,
    filter: TenantFilter,
    tenant: TenantId,
    request: &LeaseRequest,
) -> Result<Vec<(i64, Job)>, StoreError> {
    let limit = i64::from(request.max_jobs);
    let mut heads = Vec::new();
    for queue in &request.queues {
        let rows = match filter {
            TenantFilter::Enforced => {
                // A function, so its plan never depends on statistics (0003_lease_plan.sql).
                let sql = format!("SELECT {JOB_COLUMNS} FROM steadfast_queue_heads($1, $2, $3)");
                tx.query(&statement(tx, &sql).await?, &[&tenant.0, &queue.as_str(), &limit])
                    .await
            }
            TenantFilter::DisabledForTests => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE queue = $1 AND state = 'queued' \
                     ORDER BY priority DESC, run_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED"
                );
                tx.query(&statement(tx, &sql).await?, &[&queue.as_str(), &limit]).await
            }
        }
        .map_err(pg_error)?;
        for row in &rows {
            heads.push(job_from_row(row)?);
        }
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
            let live = live_keys(tx, filter, tenant, &jobs, now).await?;
            decide::enqueue(tenant, jobs, live, dedup_window, now)
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
            list_in(tx, filter, tenant, query).await
        })
        .await
    }

    async fn lease(
        &self,
        scope: &TenantScope,
        request: LeaseRequest,
        now: Timestamp,
    ) -> Result<Vec<LeasedJob>, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        // A lease is void after a crash anyway: its commit need not wait for
        // the WAL flush (audit::chain says why its records are safe to read).
        self.decided(Some(scope), Durability::Relaxed, now, async |tx| {
            let heads = queue_heads(tx, filter, tenant, &request).await?;
            let decision = decide::lease(&request, heads, now)?;
            let mut leased = Vec::with_capacity(decision.answer.len());
            for job in decision.answer {
                leased.push(resumable(tx, job).await?);
            }
            Ok(Decision {
                answer: leased,
                writes: decision.writes,
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

    async fn retry(&self, scope: &TenantScope, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            decide::retry(load_job(tx, filter, tenant, id, true).await?, now)
        })
        .await
    }

    async fn cancel(&self, scope: &TenantScope, id: JobId, now: Timestamp) -> Result<Ended, StoreError> {
        let (filter, tenant) = (self.filter, scope.tenant_id());
        self.decided(Some(scope), Durability::Durable, now, async |tx| {
            decide::cancel(load_job(tx, filter, tenant, id, true).await?, now)
        })
        .await
    }
}
