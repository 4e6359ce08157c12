use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use steadfast_core::lifecycle::Failure;
use steadfast_core::{Job, JobId, Reason, TenantId, Timestamp};
use steadfast_store::decide::{self, Author, Decision, LiveKey};
use steadfast_store::{
    Completing, Ended, Enqueued, JobCursor, JobPage, JobQuery, JobRecord, JobStore, LeaseRequest, Leased, LeasedJob,
    NewJob, RetryPlan, StoreError, TenantScope,
};

use crate::flow::lease_inputs;
use crate::rows::{JOB_COLUMNS, attempts_of, job_from_row, load_job, millis};
use crate::workflows::{children_of, signals_of, steps_of};
use crate::writer::Durability;
use crate::{SqliteStore, sqlite_error};

/// The live claims on the idempotency keys `jobs` carry, with their jobs.
fn live_keys(conn: &Connection, tenant: TenantId, jobs: &[NewJob], now: Timestamp) -> Result<Vec<LiveKey>, StoreError> {
    let mut select = conn
        .prepare_cached(
            "SELECT job_id, fingerprint FROM idempotency_keys WHERE tenant_id = ?1 AND key = ?2 AND expires_at > ?3",
        )
        .map_err(sqlite_error)?;
    let mut live = Vec::new();
    for (key, _) in jobs.iter().filter_map(|new| new.spec.idempotency.as_ref()) {
        let claim: Option<(String, Vec<u8>)> = select
            .query_row(params![tenant.to_string(), key.as_str(), millis(now)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(sqlite_error)?;
        if let Some((job_id, fingerprint)) = claim {
            let job_id: JobId = job_id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("bad job id {job_id}")))?;
            live.push(LiveKey {
                key: key.clone(),
                fingerprint,
                job: load_job(conn, tenant, job_id)?,
            });
        }
    }
    Ok(live)
}

/// A leased job with the steps and attempts its workflow resumes from.
fn resumable(conn: &Connection, job: Job) -> Result<LeasedJob, StoreError> {
    if !decide::needs_history(&job) {
        return Ok(decide::resumable(job, Vec::new(), Vec::new()));
    }
    let steps = steps_of(conn, job.tenant_id, job.id)?;
    let attempts = attempts_of(conn, job.tenant_id, job.id)?;
    Ok(decide::resumable(job, steps, attempts))
}

fn list_in(conn: &Connection, tenant_id: TenantId, query: JobQuery) -> Result<JobPage, StoreError> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1");
    let optional = [
        (query.queue.is_some(), " AND queue = ?2"),
        (query.state.is_some(), " AND state = ?3"),
        (query.after.is_some(), " AND seq < ?4"),
        (query.error_kind.is_some(), " AND last_error_kind = ?6"),
        (query.created_after.is_some(), " AND created_at >= ?7"),
        (query.created_before.is_some(), " AND created_at < ?8"),
    ];
    for (_, clause) in optional.iter().filter(|(wanted, _)| *wanted) {
        sql.push_str(clause);
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?5");
    let mut select = conn.prepare_cached(&sql).map_err(sqlite_error)?;
    let mut bind =
        |index: usize, value: &dyn rusqlite::ToSql| select.raw_bind_parameter(index, value).map_err(sqlite_error);
    bind(1, &tenant_id.to_string())?;
    if let Some(queue) = &query.queue {
        bind(2, &queue.as_str())?;
    }
    if let Some(state) = query.state {
        bind(3, &state.as_str())?;
    }
    if let Some(JobCursor(seq)) = query.after {
        bind(4, &seq)?;
    }
    // One extra row tells whether another page follows.
    bind(5, &(i64::from(query.limit) + 1))?;
    if let Some(kind) = &query.error_kind {
        bind(6, kind)?;
    }
    if let Some(at) = query.created_after {
        bind(7, &millis(at))?;
    }
    if let Some(at) = query.created_before {
        bind(8, &millis(at))?;
    }
    let mut rows = select.raw_query();
    let mut found = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        found.push(job_from_row(row).map_err(sqlite_error)?);
    }
    Ok(JobPage::from_rows(found, query.limit))
}

/// The unfinished jobs of the singleton keys `jobs` carry (one seek of
/// `jobs_singletons` each).
fn live_singletons(conn: &Connection, tenant: TenantId, jobs: &[NewJob]) -> Result<Vec<Job>, StoreError> {
    let mut found = Vec::new();
    for new in jobs {
        let Some(singleton) = &new.spec.singleton else {
            continue;
        };
        let job = conn
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND singleton_key = ?3 \
                 AND state IN ('scheduled', 'queued', 'running', 'waiting')"
            ))
            .and_then(|mut select| {
                select
                    .query_row(
                        params![tenant.to_string(), new.spec.queue.as_str(), singleton.key.as_str()],
                        job_from_row,
                    )
                    .optional()
            })
            .map_err(sqlite_error)?;
        found.extend(job.map(|(_, job)| job));
    }
    Ok(found)
}

/// Whether another unfinished job of `job`'s queue holds its singleton key.
pub(crate) fn singleton_held_by_another(conn: &Connection, job: &Job) -> Result<bool, StoreError> {
    let Some(key) = &job.singleton_key else {
        return Ok(false);
    };
    conn.prepare_cached(
        "SELECT 1 FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND singleton_key = ?3 AND id <> ?4 \
         AND state IN ('scheduled', 'queued', 'running', 'waiting')",
    )
    .and_then(|mut select| {
        select.exists(params![
            job.tenant_id.to_string(),
            job.queue.as_str(),
            key.as_str(),
            job.id.to_string()
        ])
    })
    .map_err(sqlite_error)
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn enqueue(
        &self,
        scope: &TenantScope,
        jobs: Vec<NewJob>,
        dedup_window: Duration,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let tenant = scope.tenant_id();
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let live = live_keys(conn, tenant, &jobs, now)?;
            let singletons = live_singletons(conn, tenant, &jobs)?;
            decide::enqueue(tenant, jobs, live, singletons, dedup_window, now)
        })
        .await
    }

    async fn job(&self, scope: &TenantScope, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let tenant = scope.tenant_id();
        self.readers()
            .read(move |conn| {
                let Some(job) = load_job(conn, tenant, id)? else {
                    return Ok(None);
                };
                Ok(Some(JobRecord {
                    attempts: attempts_of(conn, tenant, id)?,
                    steps: steps_of(conn, tenant, id)?,
                    signals: signals_of(conn, tenant, id)?,
                    children: children_of(conn, tenant, id)?,
                    job,
                }))
            })
            .await
    }

    async fn list_jobs(&self, scope: &TenantScope, query: JobQuery) -> Result<JobPage, StoreError> {
        let tenant_id = scope.tenant_id();
        match query.time_limit {
            Some(limit) => {
                self.readers()
                    .read_within(limit, move |conn| list_in(conn, tenant_id, query))
                    .await
            }
            None => self.readers().read(move |conn| list_in(conn, tenant_id, query)).await,
        }
    }

    async fn lease(&self, scope: &TenantScope, request: LeaseRequest, now: Timestamp) -> Result<Leased, StoreError> {
        let tenant = scope.tenant_id();
        // Relaxed: a lease is void after a crash anyway (see writer.rs).
        // Flow state moves with it: after a crash, a rate limiter may admit
        // a little early, never a running count too high (counts are read
        // from the jobs).
        self.decided(Author::of(scope), Durability::Relaxed, now, move |conn| {
            let (queues, resources, blocked) = lease_inputs(conn, tenant, &request.queues, request.max_jobs, now)?;
            let Decision { answer, writes } = decide::lease(tenant, &request, queues, resources, &blocked, now)?;
            let jobs = answer.jobs.into_iter().map(|job| resumable(conn, job));
            Ok(Decision {
                answer: Leased {
                    jobs: jobs.collect::<Result<_, _>>()?,
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
        let (tenant, token) = (scope.tenant_id(), token.to_owned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            decide::heartbeat(load_job(conn, tenant, id)?, &token, ttl, now)
        })
        .await
    }

    async fn complete_many(
        &self,
        scope: &TenantScope,
        items: Vec<Completing>,
        now: Timestamp,
    ) -> Result<Vec<Result<Ended, StoreError>>, StoreError> {
        let tenant = scope.tenant_id();
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let mut loaded = Vec::with_capacity(items.len());
            for item in &items {
                loaded.extend(load_job(conn, tenant, item.id)?);
            }
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
        let (tenant, token) = (scope.tenant_id(), token.to_owned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            decide::complete(load_job(conn, tenant, id)?, &token, output, now)
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
        let (tenant, token) = (scope.tenant_id(), token.to_owned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            decide::fail(load_job(conn, tenant, id)?, &token, failure, retry, now)
        })
        .await
    }

    async fn release(&self, scope: &TenantScope, id: JobId, token: &str, now: Timestamp) -> Result<Ended, StoreError> {
        let (tenant, token) = (scope.tenant_id(), token.to_owned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            decide::release(load_job(conn, tenant, id)?, &token, now)
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
        let (tenant, reason) = (scope.tenant_id(), reason.cloned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            let job = load_job(conn, tenant, id)?;
            let taken = match &job {
                Some(job) => singleton_held_by_another(conn, job)?,
                None => false,
            };
            decide::retry(job, taken, reason.as_ref(), now)
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
        let (tenant, reason) = (scope.tenant_id(), reason.cloned());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            decide::cancel(load_job(conn, tenant, id)?, reason.as_ref(), now)
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
        let (tenant, reason) = (scope.tenant_id(), reason.clone());
        self.decided(Author::of(scope), Durability::Durable, now, move |conn| {
            decide::replay_job(load_job(conn, tenant, id)?, replay, payload, &reason, now)
        })
        .await
    }
}
