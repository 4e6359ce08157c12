use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use steadfast_core::audit::Draft;
use steadfast_core::lifecycle::{self, Failure, Rejection, Transition};
use steadfast_core::retry::jitter_sample;
use steadfast_core::{Job, JobId, StepState, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::{
    Completing, Ended, Enqueued, JobCursor, JobPage, JobQuery, JobRecord, JobStore, LeaseRequest, LeasedJob, NewJob,
    RetryPlan, StoreError, TenantScope,
};

use crate::audit::append_for;
use crate::rows::{JOB_COLUMNS, attempts_of, insert_attempt, insert_job, job_from_row, load_job, millis, save_job};
use crate::workflows::{children_of, signals_of, steps_of};
use crate::{SqliteStore, sqlite_error};

/// Loads a tenant's job, applies `transition`, and persists the result and
/// the attempt it ended; the audit record is the caller's. The outer error is
/// storage failing; the inner one refuses this job only (unknown, lease lost).
fn transition_job(
    conn: &Connection,
    tenant: TenantId,
    id: JobId,
    transition: impl FnOnce(&Job) -> Result<Transition, Rejection>,
) -> Result<Result<(Job, Ended), StoreError>, StoreError> {
    let Some(before) = load_job(conn, tenant, id)? else {
        return Ok(Err(StoreError::NotFound));
    };
    let Transition { job, ended_attempt } = match transition(&before) {
        Ok(transition) => transition,
        Err(rejection) => return Ok(Err(rejection.into())),
    };
    save_job(conn, &job)?;
    if let Some(attempt) = &ended_attempt {
        insert_attempt(conn, &job, attempt)?;
    }
    let ended = Ended {
        job,
        attempt: ended_attempt,
    };
    Ok(Ok((before, ended)))
}

/// [`transition_job`] and its audit record. Runs inside the writer's savepoint.
fn apply(
    conn: &Connection,
    scope: &TenantScope,
    id: JobId,
    now: Timestamp,
    transition: impl FnOnce(&Job) -> Result<Transition, Rejection>,
    describe: fn(&Job, &Job) -> Option<Draft>,
) -> Result<Ended, StoreError> {
    let (before, ended) = transition_job(conn, scope.tenant_id(), id, transition)??;
    append_for(conn, scope, now, describe(&before, &ended.job))?;
    Ok(ended)
}

fn unchanged(job: Job) -> Transition {
    Transition {
        job,
        ended_attempt: None,
    }
}

fn enqueue_in(
    conn: &Connection,
    scope: &TenantScope,
    jobs: Vec<NewJob>,
    dedup_window: Duration,
    now: Timestamp,
) -> Result<Vec<Enqueued>, StoreError> {
    let tenant_id = scope.tenant_id();
    let tenant = tenant_id.to_string();
    let expires_at = millis(now.saturating_add(dedup_window).unwrap_or(Timestamp::MAX));
    let mut created = Vec::with_capacity(jobs.len());
    for (index, new) in jobs.into_iter().enumerate() {
        if let Some((key, fingerprint)) = &new.spec.idempotency {
            let existing: Option<(String, Vec<u8>)> = conn
                .prepare_cached(
                    "SELECT job_id, fingerprint FROM idempotency_keys \
                     WHERE tenant_id = ?1 AND key = ?2 AND expires_at > ?3",
                )
                .and_then(|mut select| {
                    select
                        .query_row(params![tenant, key.as_str(), millis(now)], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()
                })
                .map_err(sqlite_error)?;
            if let Some((job_id, stored)) = existing {
                if stored != fingerprint {
                    return Err(StoreError::IdempotencyKeyReused { index });
                }
                let job_id = job_id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("bad job id {job_id}")))?;
                if let Some(job) = load_job(conn, tenant_id, job_id)? {
                    created.push(Enqueued { job, replayed: true });
                    continue;
                }
            }
            conn.prepare_cached(
                "INSERT OR REPLACE INTO idempotency_keys (tenant_id, key, job_id, fingerprint, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut upsert| {
                upsert.execute(params![
                    tenant,
                    key.as_str(),
                    new.id.to_string(),
                    fingerprint.as_slice(),
                    expires_at
                ])
            })
            .map_err(sqlite_error)?;
        }
        let job = lifecycle::new_job(new.id, tenant_id, new.spec, now);
        insert_job(conn, &job)?;
        created.push(Enqueued { job, replayed: false });
    }
    let enqueued = created
        .iter()
        .filter(|e| !e.replayed)
        .map(|e| drafts::job_enqueued(&e.job));
    append_for(conn, scope, now, enqueued.collect::<Vec<_>>())?;
    Ok(created)
}

fn lease_in(
    conn: &Connection,
    scope: &TenantScope,
    request: LeaseRequest,
    now: Timestamp,
) -> Result<Vec<LeasedJob>, StoreError> {
    let tenant = scope.tenant_id().to_string();
    let limit = i64::from(request.max_jobs);
    // Read the head of each queue from the ready index, then merge: with one
    // queue this is exactly the index order, and never a scan.
    let mut candidates: Vec<(i64, Job)> = Vec::new();
    let mut select = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1 AND queue = ?2 AND state = 'queued' \
             ORDER BY priority DESC, run_at, seq LIMIT ?3"
        ))
        .map_err(sqlite_error)?;
    for queue in &request.queues {
        let rows = select
            .query_map(params![tenant, queue.as_str(), limit], job_from_row)
            .map_err(sqlite_error)?;
        for row in rows {
            candidates.push(row.map_err(sqlite_error)?);
        }
    }
    let mut leased = Vec::new();
    let mut records = Vec::new();
    for job in request.pick(candidates) {
        let grant = request.grant(&job);
        let before = job;
        let job = lifecycle::lease(&before, grant, now)?;
        save_job(conn, &job)?;
        records.push(drafts::job_leased(&before, &job));
        leased.push(resumable(conn, job)?);
    }
    append_for(conn, scope, now, records)?;
    Ok(leased)
}

/// A leased job with the steps its workflow resumes from. A first attempt
/// has no steps yet, so the common case costs no query.
fn resumable(conn: &Connection, job: Job) -> Result<LeasedJob, StoreError> {
    if job.attempt <= 1 {
        return Ok(LeasedJob {
            job,
            steps: Vec::new(),
            uncertain_attempts: Vec::new(),
        });
    }
    let steps = steps_of(conn, &job)?;
    let uncertain: Vec<u32> = steps
        .iter()
        .filter(|step| step.state(&job) == StepState::Uncertain)
        .map(|step| step.attempt)
        .collect();
    let uncertain_attempts = if uncertain.is_empty() {
        Vec::new()
    } else {
        attempts_of(conn, &job)?
            .into_iter()
            .filter(|attempt| uncertain.contains(&attempt.number))
            .collect()
    };
    Ok(LeasedJob {
        job,
        steps,
        uncertain_attempts,
    })
}

fn list_in(conn: &Connection, tenant_id: TenantId, query: JobQuery) -> Result<JobPage, StoreError> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ?1");
    if query.queue.is_some() {
        sql.push_str(" AND queue = ?2");
    }
    if query.state.is_some() {
        sql.push_str(" AND state = ?3");
    }
    if query.after.is_some() {
        sql.push_str(" AND seq < ?4");
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
    let mut rows = select.raw_query();
    let mut found = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        found.push(job_from_row(row).map_err(sqlite_error)?);
    }
    Ok(JobPage::from_rows(found, query.limit))
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
        let scope = scope.clone();
        self.writer()
            .write(move |conn| enqueue_in(conn, &scope, jobs, dedup_window, now))
            .await
    }

    async fn job(&self, scope: &TenantScope, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let tenant_id = scope.tenant_id();
        self.readers()
            .read(move |conn| {
                let Some(job) = load_job(conn, tenant_id, id)? else {
                    return Ok(None);
                };
                Ok(Some(JobRecord {
                    attempts: attempts_of(conn, &job)?,
                    steps: steps_of(conn, &job)?,
                    signals: signals_of(conn, &job)?,
                    children: children_of(conn, &job)?,
                    job,
                }))
            })
            .await
    }

    async fn list_jobs(&self, scope: &TenantScope, query: JobQuery) -> Result<JobPage, StoreError> {
        let tenant_id = scope.tenant_id();
        self.readers().read(move |conn| list_in(conn, tenant_id, query)).await
    }

    async fn lease(
        &self,
        scope: &TenantScope,
        request: LeaseRequest,
        now: Timestamp,
    ) -> Result<Vec<LeasedJob>, StoreError> {
        let scope = scope.clone();
        // Relaxed: a lease is void after a crash anyway (see writer.rs).
        self.writer()
            .write_relaxed(move |conn| lease_in(conn, &scope, request, now))
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
        let (scope, token) = (scope.clone(), token.to_owned());
        self.writer()
            .write(move |conn| {
                apply(
                    conn,
                    &scope,
                    id,
                    now,
                    |job| lifecycle::heartbeat(job, &token, ttl, now).map(unchanged),
                    |_, _| None,
                )
            })
            .await
            .map(|ended| ended.job)
    }

    async fn complete_many(
        &self,
        scope: &TenantScope,
        items: Vec<Completing>,
        now: Timestamp,
    ) -> Result<Vec<Result<Ended, StoreError>>, StoreError> {
        let scope = scope.clone();
        self.writer()
            .write(move |conn| {
                let mut results = Vec::with_capacity(items.len());
                let mut records = Vec::new();
                for item in items {
                    let Completing { id, token, output } = item;
                    let result = transition_job(conn, scope.tenant_id(), id, |job| {
                        lifecycle::complete(job, &token, output, now)
                    })?
                    .map(|(before, ended)| {
                        records.push(drafts::job_succeeded(&before, &ended.job));
                        ended
                    });
                    results.push(result);
                }
                append_for(conn, &scope, now, records)?;
                Ok(results)
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
        let (scope, token) = (scope.clone(), token.to_owned());
        self.writer()
            .write(move |conn| {
                apply(
                    conn,
                    &scope,
                    id,
                    now,
                    |job| lifecycle::complete(job, &token, output, now),
                    |before, after| Some(drafts::job_succeeded(before, after)),
                )
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
        let (scope, token) = (scope.clone(), token.to_owned());
        self.writer()
            .write(move |conn| {
                let transition = |job: &Job| {
                    let sample = jitter_sample(retry.jitter_seed, job.id.0.as_bytes());
                    lifecycle::fail(job, &token, failure, &retry.policy, sample, now)
                };
                apply(conn, &scope, id, now, transition, |before, after| {
                    Some(drafts::job_failed("job.failed", before, after))
                })
            })
            .await
    }

    async fn retry(&self, scope: &TenantScope, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        let scope = scope.clone();
        self.writer()
            .write(move |conn| {
                apply(
                    conn,
                    &scope,
                    id,
                    now,
                    |job| lifecycle::retry(job, now).map(unchanged),
                    |before, after| Some(drafts::job_retried(before, after)),
                )
            })
            .await
            .map(|ended| ended.job)
    }

    async fn cancel(&self, scope: &TenantScope, id: JobId, now: Timestamp) -> Result<Ended, StoreError> {
        let scope = scope.clone();
        self.writer()
            .write(move |conn| {
                apply(
                    conn,
                    &scope,
                    id,
                    now,
                    |job| lifecycle::cancel(job, now),
                    |before, after| Some(drafts::job_cancelled(before, after)),
                )
            })
            .await
    }
}
