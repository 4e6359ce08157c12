use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use steadfast_core::audit::Draft;
use steadfast_core::lifecycle::{self, Failure, Rejection, Transition};
use steadfast_core::retry::jitter_sample;
use steadfast_core::{Attempt, Job, JobId, JobState, QueueName, StepState, TenantId, Timestamp};
use steadfast_store::audit::drafts;
use steadfast_store::{
    Completing, Ended, Enqueued, JobCursor, JobPage, JobQuery, JobRecord, JobStore, LeaseRequest, LeasedJob, NewJob,
    RetryPlan, StoreError, TenantScope,
};
use tokio_postgres::types::ToSql;

use crate::audit::append_for;
use crate::rows::{
    JOB_COLUMNS, attempts_of, insert_attempt, insert_attempts, insert_jobs, job_from_row, load_job, lock_jobs, millis,
    save_job, save_jobs,
};
use crate::workflows::{children_of, signals_of, steps_of};
use crate::{PostgresStore, TenantFilter, pg_error, scoped, settle, statement};

fn unchanged(job: Job) -> Transition {
    Transition {
        job,
        ended_attempt: None,
    }
}

/// Remembers which queues gained ready jobs in a transaction, to notify once each.
#[derive(Default)]
pub(crate) struct ReadyQueues(Vec<(TenantId, QueueName)>);

impl ReadyQueues {
    pub(crate) fn note(&mut self, job: &Job) {
        let key = (job.tenant_id, job.queue.clone());
        if job.state == JobState::Queued && !self.0.contains(&key) {
            self.0.push(key);
        }
    }

    /// Announces the noted queues to every node; call after the commit.
    pub(crate) fn announce(self, store: &PostgresStore) -> Vec<(TenantId, QueueName)> {
        store.announce(&self.0);
        self.0
    }

    /// After the commit of a change to one job: announces its queue if the
    /// job is now ready.
    pub(crate) fn announce_job(store: &PostgresStore, job: &Job) {
        let mut ready = ReadyQueues::default();
        ready.note(job);
        ready.announce(store);
    }
}

/// A leased job with the steps its workflow resumes from; a first attempt
/// has none, so the common case costs no query.
async fn resumable(tx: &Transaction<'_>, job: Job) -> Result<LeasedJob, StoreError> {
    if job.attempt <= 1 {
        return Ok(LeasedJob {
            job,
            steps: Vec::new(),
            uncertain_attempts: Vec::new(),
        });
    }
    let steps = steps_of(tx, &job).await?;
    let uncertain: Vec<u32> = steps
        .iter()
        .filter(|step| step.state(&job) == StepState::Uncertain)
        .map(|step| step.attempt)
        .collect();
    let uncertain_attempts = if uncertain.is_empty() {
        Vec::new()
    } else {
        attempts_of(tx, &job)
            .await?
            .into_iter()
            .filter(|a| uncertain.contains(&a.number))
            .collect()
    };
    Ok(LeasedJob {
        job,
        steps,
        uncertain_attempts,
    })
}

impl PostgresStore {
    /// Loads a tenant's job (locked), applies `transition`, persists it, the
    /// attempt it ended and its audit record, and notifies if the job became ready.
    pub(crate) async fn apply(
        &self,
        scope: &TenantScope,
        id: JobId,
        now: Timestamp,
        transition: impl FnOnce(&Job) -> Result<Transition, Rejection> + Send,
        describe: fn(&Job, &Job) -> Option<Draft>,
    ) -> Result<Ended, StoreError> {
        let tenant = scope.tenant_id();
        let mut client = self.client().await?;
        let tx = scoped(&mut client, tenant).await?;
        let result = async {
            let before = load_job(&tx, self.filter, tenant, id, true)
                .await?
                .ok_or(StoreError::NotFound)?;
            let Transition { job, ended_attempt } = transition(&before)?;
            save_job(&tx, &job).await?;
            if let Some(attempt) = &ended_attempt {
                insert_attempt(&tx, &job, attempt).await?;
            }
            append_for(&tx, scope, now, describe(&before, &job)).await?;
            Ok::<_, StoreError>((job, ended_attempt))
        }
        .await;
        let (job, ended_attempt) = settle(tx, result).await?;
        ReadyQueues::announce_job(self, &job);
        Ok(Ended {
            job,
            attempt: ended_attempt,
        })
    }
}

async fn enqueue_in(
    tx: &Transaction<'_>,
    filter: TenantFilter,
    scope: &TenantScope,
    jobs: Vec<NewJob>,
    dedup_window: Duration,
    now: Timestamp,
) -> Result<(Vec<Enqueued>, ReadyQueues), StoreError> {
    let tenant = scope.tenant_id();
    let expires_at = millis(now.saturating_add(dedup_window).unwrap_or(Timestamp::MAX));
    let mut created = Vec::with_capacity(jobs.len());
    let mut ready = ReadyQueues::default();
    // New jobs are inserted in runs, one statement each; a key lookup first flushes the
    // run, so a key repeated within the batch finds the job it named.
    let mut unsaved = 0;
    for (index, new) in jobs.into_iter().enumerate() {
        if let Some((key, fingerprint)) = &new.spec.idempotency {
            insert_new(tx, tenant, &created[created.len() - unsaved..]).await?;
            unsaved = 0;
            // Claim the key, or take over one whose window has passed. A
            // concurrent claim of the same key waits here for the first to
            // commit, then sees it: concurrent duplicates create one job.
            let claimed = tx
                .query_opt(
                    &statement(
                        tx,
                        "INSERT INTO idempotency_keys (tenant_id, key, job_id, fingerprint, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, key) DO UPDATE SET job_id = excluded.job_id, \
                     fingerprint = excluded.fingerprint, expires_at = excluded.expires_at \
                     WHERE idempotency_keys.expires_at <= $6 RETURNING job_id",
                    )
                    .await?,
                    &[
                        &tenant.0,
                        &key.as_str(),
                        &new.id.0,
                        &fingerprint.as_slice(),
                        &expires_at,
                        &millis(now),
                    ],
                )
                .await
                .map_err(pg_error)?;
            if claimed.is_none() {
                let existing = tx
                    .query_one(
                        &statement(
                            tx,
                            "SELECT job_id, fingerprint FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
                        )
                        .await?,
                        &[&tenant.0, &key.as_str()],
                    )
                    .await
                    .map_err(pg_error)?;
                if existing.get::<_, &[u8]>(1) != fingerprint.as_slice() {
                    return Err(StoreError::IdempotencyKeyReused { index });
                }
                if let Some(job) = load_job(tx, filter, tenant, JobId(existing.get(0)), false).await? {
                    created.push(Enqueued { job, replayed: true });
                    continue;
                }
                tx.execute(
                    &statement(
                        tx,
                        "UPDATE idempotency_keys SET job_id = $3, expires_at = $4 WHERE tenant_id = $1 AND key = $2",
                    )
                    .await?,
                    &[&tenant.0, &key.as_str(), &new.id.0, &expires_at],
                )
                .await
                .map_err(pg_error)?;
            }
        }
        let job = lifecycle::new_job(new.id, tenant, new.spec, now);
        ready.note(&job);
        created.push(Enqueued { job, replayed: false });
        unsaved += 1;
    }
    insert_new(tx, tenant, &created[created.len() - unsaved..]).await?;
    let enqueued: Vec<Draft> = created
        .iter()
        .filter(|e| !e.replayed)
        .map(|e| drafts::job_enqueued(&e.job))
        .collect();
    append_for(tx, scope, now, enqueued).await?;
    Ok((created, ready))
}

/// Inserts new jobs in one statement.
async fn insert_new(tx: &Transaction<'_>, tenant: TenantId, created: &[Enqueued]) -> Result<(), StoreError> {
    insert_jobs(tx, tenant, &created.iter().map(|e| &e.job).collect::<Vec<_>>()).await
}

async fn lease_in(
    tx: &Transaction<'_>,
    filter: TenantFilter,
    scope: &TenantScope,
    request: LeaseRequest,
    now: Timestamp,
) -> Result<Vec<LeasedJob>, StoreError> {
    let tenant = scope.tenant_id();
    let limit = i64::from(request.max_jobs);
    let mut candidates: Vec<(i64, Job)> = Vec::new();
    for queue in &request.queues {
        let rows = match filter {
            TenantFilter::Enforced => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND queue = $2 AND state = 'queued' \
                     ORDER BY priority DESC, run_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED"
                );
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
            candidates.push(job_from_row(row)?);
        }
    }
    let mut jobs = Vec::new();
    let mut records = Vec::new();
    for job in request.pick(candidates) {
        let grant = request.grant(&job);
        let before = job;
        let job = lifecycle::lease(&before, grant, now)?;
        records.push(drafts::job_leased(&before, &job));
        jobs.push(job);
    }
    save_jobs(tx, tenant, &jobs.iter().collect::<Vec<_>>()).await?;
    let mut leased = Vec::with_capacity(jobs.len());
    for job in jobs {
        leased.push(resumable(tx, job).await?);
    }
    append_for(tx, scope, now, records).await?;
    Ok(leased)
}

async fn list_in(
    tx: &Transaction<'_>,
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
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.tenant_id()).await?;
        let (created, ready) = enqueue_in(&tx, self.filter, scope, jobs, dedup_window, now).await?;
        tx.commit().await.map_err(pg_error)?;
        ready.announce(self);
        Ok(created)
    }

    async fn job(&self, scope: &TenantScope, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.tenant_id()).await?;
        let Some(job) = load_job(&tx, self.filter, scope.tenant_id(), id, false).await? else {
            return Ok(None);
        };
        let record = JobRecord {
            attempts: attempts_of(&tx, &job).await?,
            steps: steps_of(&tx, &job).await?,
            signals: signals_of(&tx, &job).await?,
            children: children_of(&tx, &job).await?,
            job,
        };
        tx.commit().await.map_err(pg_error)?;
        Ok(Some(record))
    }

    async fn list_jobs(&self, scope: &TenantScope, query: JobQuery) -> Result<JobPage, StoreError> {
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.tenant_id()).await?;
        let page = list_in(&tx, self.filter, scope.tenant_id(), query).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(page)
    }

    async fn lease(
        &self,
        scope: &TenantScope,
        request: LeaseRequest,
        now: Timestamp,
    ) -> Result<Vec<LeasedJob>, StoreError> {
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.tenant_id()).await?;
        let leased = lease_in(&tx, self.filter, scope, request, now).await?;
        // A lease is void after a crash anyway: its commit need not wait for
        // the WAL flush (audit::chain says why its records are safe to read).
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(leased)
    }

    async fn heartbeat(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        self.apply(
            scope,
            id,
            now,
            |job| lifecycle::heartbeat(job, token, ttl, now).map(unchanged),
            |_, _| None,
        )
        .await
        .map(|ended| ended.job)
    }

    async fn complete_many(
        &self,
        scope: &TenantScope,
        items: Vec<Completing>,
        now: Timestamp,
    ) -> Result<Vec<Result<Ended, StoreError>>, StoreError> {
        let tenant = scope.tenant_id();
        let mut client = self.client().await?;
        let tx = scoped(&mut client, tenant).await?;
        // Rows are locked in id order, so two batches never wait on each other in a cycle.
        let ids: Vec<JobId> = items.iter().map(|item| item.id).collect();
        let mut loaded: HashMap<JobId, Job> = lock_jobs(&tx, self.filter, tenant, &ids)
            .await?
            .into_iter()
            .map(|job| (job.id, job))
            .collect();
        let mut results: Vec<Option<Result<Ended, StoreError>>> = Vec::with_capacity(items.len());
        let mut records = Vec::new();
        let mut ready = ReadyQueues::default();
        let mut ended = Vec::new();
        for item in items {
            // A job twice in one batch is refused before the store (422).
            let Some(before) = loaded.remove(&item.id) else {
                results.push(Some(Err(StoreError::NotFound)));
                continue;
            };
            match lifecycle::complete(&before, &item.token, item.output, now) {
                Ok(Transition { job, ended_attempt }) => {
                    records.push(drafts::job_succeeded(&before, &job));
                    ready.note(&job);
                    ended.push((results.len(), job, ended_attempt));
                    results.push(None); // answered once saved
                }
                Err(rejection) => results.push(Some(Err(rejection.into()))),
            }
        }
        save_jobs(&tx, tenant, &ended.iter().map(|(_, job, _)| job).collect::<Vec<_>>()).await?;
        let attempts: Vec<(&Job, &Attempt)> = ended
            .iter()
            .filter_map(|(_, job, attempt)| attempt.as_ref().map(|attempt| (job, attempt)))
            .collect();
        insert_attempts(&tx, tenant, &attempts).await?;
        for (index, job, attempt) in ended {
            results[index] = Some(Ok(Ended { job, attempt }));
        }
        append_for(&tx, scope, now, records).await?;
        tx.commit().await.map_err(pg_error)?;
        ready.announce(self);
        Ok(results
            .into_iter()
            .map(|result| result.expect("every item answered"))
            .collect())
    }

    async fn complete(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        output: String,
        now: Timestamp,
    ) -> Result<Ended, StoreError> {
        self.apply(
            scope,
            id,
            now,
            |job| lifecycle::complete(job, token, output, now),
            |before, after| Some(drafts::job_succeeded(before, after)),
        )
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
        let transition = |job: &Job| {
            let sample = jitter_sample(retry.jitter_seed, job.id.0.as_bytes());
            lifecycle::fail(job, token, failure, &retry.policy, sample, now)
        };
        self.apply(scope, id, now, transition, |before, after| {
            Some(drafts::job_failed("job.failed", before, after))
        })
        .await
    }

    async fn retry(&self, scope: &TenantScope, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.apply(
            scope,
            id,
            now,
            |job| lifecycle::retry(job, now).map(unchanged),
            |before, after| Some(drafts::job_retried(before, after)),
        )
        .await
        .map(|ended| ended.job)
    }

    async fn cancel(&self, scope: &TenantScope, id: JobId, now: Timestamp) -> Result<Ended, StoreError> {
        self.apply(
            scope,
            id,
            now,
            |job| lifecycle::cancel(job, now),
            |before, after| Some(drafts::job_cancelled(before, after)),
        )
        .await
    }
}
