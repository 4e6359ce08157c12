//! The engine: turns authenticated commands into store operations, with the
//! time from the injected clock and the randomness drawn here, then carries
//! out what follows a commit (waking long-polling workers, nudging the
//! background duties).

pub mod audit;
mod authentication;
mod bulk;
pub mod contracts;
mod deliveries;
mod duties;
mod inbox;
mod outbox;
mod producers;
mod rate_limits;
pub mod schedules;
pub mod sessions;
pub mod slos;
mod tenancy;
mod wakeups;

use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use steadfast_core::audit::{GENESIS, Head};
use steadfast_core::lifecycle::{Checkpoint, EnqueueRequest, Failure, JobSpec, StepResolution, StepStart};
use steadfast_core::{
    Attempt, Job, JobId, JobState, Limits, QueueName, Reason, RetryPolicy, SignalName, StepName, Timestamp, WaitFor,
    WorkerId,
};
use steadfast_protocol::AuditCheckpoint;
use steadfast_protocol::tls::TrustedRoots;
use steadfast_store::auth::AuthFailure;
use steadfast_store::{
    Completing, Ended, Enqueued, LeaseRequest, LeasedJob, NewJob, Principal, RetryPlan, Signalled, StepDone, StepOp,
    Store, StoreError, TenantScope, Waited, WorkflowLimits,
};
use tokio::sync::{Notify, watch};

pub use authentication::Authenticated;
pub use deliveries::DeliveryLimits;
pub use duties::DutyReport;
pub use inbox::{Delivery, HookError, InboxLimits, NewSource, SOURCE_CACHE_TTL, SourceError};
pub use rate_limits::{AbuseLimits, Admission, Rate};
pub use tenancy::TenantDefaults;
use wakeups::Wakeups;

use crate::clock::{Clock, Random, SystemRandom};
use crate::metrics::{HeldLabels, Metrics, OutcomeLabels, QueueLabels, ResourceLabels, StateLabels};
use steadfast_store::flow::BreakerState;

/// The time from `from` to `to`, zero if the clock went backwards.
/// The flow control gauges are read at most this often.
const FLOW_GAUGES_EVERY: Duration = Duration::from_secs(5);
/// The most tenants whose flow control the gauges show.
const MAX_GAUGE_TENANTS: usize = 1000;

fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    from.duration_until(to).try_into().unwrap_or(Duration::ZERO)
}

/// Everything tunable about the engine's behaviour.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub workflow: WorkflowLimits,
    /// Signs audit checkpoints. The default is a fresh random key (fine for
    /// tests); `serve` loads a persistent one from outside the database.
    pub audit_signer: Option<audit::AuditSigner>,
    /// How long audit records are kept (default 7 years).
    pub audit_retention: Duration,
    /// How often each chain's signed checkpoint is logged (default 1 hour).
    pub audit_checkpoint_every: Duration,
    /// Serve `/metrics` without a key.
    pub metrics_public: bool,
    /// Count and time jobs and requests for `/metrics` (default on). Off
    /// only to measure what collecting them costs
    /// (`steadfast bench throughput --no-metrics`).
    pub record_metrics: bool,
    /// Bounds on delivering SLO notifications to tenants' receivers.
    pub delivery: DeliveryLimits,
    /// Whom notification deliveries trust over `https`; `None` is the
    /// system's roots plus `SSL_CERT_FILE`'s.
    pub outbound_roots: Option<TrustedRoots>,
    /// Request rates and failed authentications.
    pub abuse: AbuseLimits,
    /// Where job ids, lease tokens and retry jitter come from.
    pub random: Arc<dyn Random>,
    /// Retention of finished jobs and the cap on unfinished ones, unless a
    /// tenant or queue has its own.
    pub tenants: TenantDefaults,
    /// Bounds on webhook sources and deliveries.
    pub inbox: InboxLimits,
    /// Bounds on the dashboard's sessions and reads.
    pub dashboard: sessions::DashboardLimits,
    /// Jobs one batch of a bulk operation acts on (one transaction).
    pub bulk_batch: u32,
    /// The dashboard's origin as browsers see it (`https://ops.example.com`)
    /// when a proxy in front terminates TLS: forms must come from it, and
    /// cookies are `Secure` when it is `https`. Unset: this server's own.
    pub ui_origin: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            workflow: WorkflowLimits::default(),
            audit_signer: Some(audit::AuditSigner::from_seed(rand::random())),
            audit_retention: Duration::from_secs(7 * 365 * 24 * 3600),
            audit_checkpoint_every: Duration::from_secs(3600),
            metrics_public: false,
            record_metrics: true,
            delivery: DeliveryLimits::default(),
            outbound_roots: None,
            abuse: AbuseLimits::default(),
            tenants: TenantDefaults::default(),
            random: Arc::new(SystemRandom),
            inbox: InboxLimits::default(),
            dashboard: sessions::DashboardLimits::default(),
            bulk_batch: 500,
            ui_origin: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Rejected(#[from] AuthFailure),
    /// The key's requests, or the client's failed authentications, are
    /// over their rate.
    #[error("rate limited")]
    RateLimited(Admission),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    wakeups: Arc<Wakeups>,
    metrics: Arc<Metrics>,
    /// Nudges the background duties when something may be due sooner than they planned.
    duties_nudge: Notify,
    /// Wakes the notification deliveries: a notification was enqueued.
    deliveries_nudge: Notify,
    /// Wakes the bulk duty: an operation started.
    bulk_nudge: Notify,
    /// Wakes the schedules' duty: a schedule changed.
    schedules_nudge: Notify,
    draining: watch::Sender<bool>,
    key_uses: authentication::KeyUses,
    failed_auths: authentication::FailedAuths,
    refused_deliveries: inbox::RefusedDeliveries,
    sources: inbox::SourceCache,
    deliveries_in_flight: tokio::sync::Semaphore,
    limiters: rate_limits::Limiters,
    tenants: tenancy::TenantState,
    /// When the flow control gauges were last read (they cost a few reads
    /// per policy queue: scrapes closer together reuse them).
    flow_gauges_read: std::sync::Mutex<Option<tokio::time::Instant>>,
    sessions: sessions::Sessions,
    schemas: contracts::SchemaCache,
}

/// What an enqueue's idempotency fingerprint covers: everything that
/// makes one job differ from another, but the key.
#[derive(Debug)]
pub struct Fingerprinted<'a> {
    pub queue: &'a str,
    pub payload: &'a serde_json::Value,
    pub max_attempts: Option<i64>,
    pub timeout_secs: Option<i64>,
    pub run_at: Option<Timestamp>,
    pub priority: Option<i64>,
}

/// The fingerprint of an enqueue, over a canonical form (object keys
/// sorted), so that a retry that re-serialised the same payload differently
/// still matches; the API and the schedules compute it alike, so a tick's
/// job is the job `POST /v1/jobs` with the tick's key would make.
pub fn fingerprint(request: &Fingerprinted<'_>) -> steadfast_core::lifecycle::Fingerprint {
    use sha2::Digest;
    let canonical = serde_json::json!({
        "queue": request.queue,
        "payload": request.payload,
        "max_attempts": request.max_attempts,
        "timeout_secs": request.timeout_secs,
        "run_at": request.run_at,
        "priority": request.priority,
    });
    sha2::Sha256::digest(canonical.to_string().as_bytes()).into()
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: EngineConfig) -> Engine {
        let wakeups = Arc::new(Wakeups::default());
        // Other nodes' commits (PostgreSQL) wake this node's long-polls too.
        let waker = wakeups.clone();
        store.subscribe_ready(Arc::new(move |tenant, queue| waker.wake(tenant, &queue)));
        let limiters = rate_limits::Limiters::new(clock.clone(), &config.abuse, config.inbox.source_rate);
        let deliveries_in_flight = tokio::sync::Semaphore::new(config.inbox.max_in_flight);
        Engine {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                wakeups,
                metrics: Arc::new(Metrics::new()),
                duties_nudge: Notify::new(),
                deliveries_nudge: Notify::new(),
                bulk_nudge: Notify::new(),
                schedules_nudge: Notify::new(),
                draining: watch::channel(false).0,
                key_uses: authentication::KeyUses::default(),
                failed_auths: authentication::FailedAuths::default(),
                refused_deliveries: inbox::RefusedDeliveries::default(),
                sources: inbox::SourceCache::default(),
                deliveries_in_flight,
                limiters,
                tenants: tenancy::TenantState::default(),
                flow_gauges_read: std::sync::Mutex::default(),
                sessions: sessions::Sessions::default(),
                schemas: contracts::SchemaCache::default(),
            }),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// 64 bits from the injected randomness.
    pub fn random(&self) -> u64 {
        self.inner.config.random.next_u64()
    }

    /// Starts a dashboard session for an API key that just authenticated;
    /// answers the session's cookie token and the session.
    pub fn start_session(&self, secret: String) -> (String, sessions::Session) {
        let random = || self.random();
        let (token, csrf) = (sessions::token(random), sessions::token(random));
        let session = self
            .inner
            .sessions
            .start(secret, token.clone(), csrf, self.inner.config.dashboard, self.now());
        (token, session)
    }

    /// The live dashboard session of cookie token `token`, marked used
    /// unless the request is a page polling for itself (`used: false`).
    pub fn session(&self, token: &str, used: bool) -> Option<sessions::Session> {
        self.inner
            .sessions
            .touch(token, self.inner.config.dashboard, self.now(), used)
    }

    /// Ends a dashboard session (sign-out).
    pub fn end_session(&self, token: &str) {
        self.inner.sessions.end(token);
    }

    /// A new time-ordered id (UUIDv7) from the clock and the randomness.
    pub fn new_uuid(&self) -> uuid::Uuid {
        crate::clock::uuid_v7(self.now(), self.inner.config.random.as_ref())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Counts and times an ended attempt and, if the job is finished, the job.
    pub(crate) fn observe_end(&self, job: &Job, attempt: Option<&Attempt>) {
        if let Some(attempt) = attempt {
            crate::telemetry::attempt_span(job, attempt);
            // The attempt's slot is free: a lease its queue's concurrency
            // held back may go now. (Other nodes' waiters look again within
            // `decide::flow`'s recheck interval.)
            self.inner.wakeups.wake(job.tenant_id, &job.queue);
        }
        if !self.records_metrics() {
            return;
        }
        let metrics = &self.inner.metrics;
        let queue = metrics.queue(job.queue.as_str());
        if let Some(attempt) = attempt {
            let labels = OutcomeLabels {
                queue: queue.clone(),
                outcome: attempt.outcome.as_str().to_owned(),
            };
            metrics.attempts.get_or_create(&labels).inc();
            Metrics::observe(
                &metrics.attempt_duration,
                queue.clone(),
                elapsed(attempt.started_at, attempt.ended_at),
            );
        }
        if let (true, Some(finished_at)) = (job.state.is_terminal(), job.finished_at) {
            let labels = OutcomeLabels {
                queue: queue.clone(),
                outcome: job.state.as_str().to_owned(),
            };
            metrics.finished.get_or_create(&labels).inc();
            Metrics::observe(&metrics.end_to_end, queue, elapsed(job.created_at, finished_at));
        }
    }

    /// Refreshes the queue depth and oldest-job-age gauges from the store.
    pub async fn refresh_queue_gauges(&self) -> Result<(), StoreError> {
        let stats = self.inner.store.queue_stats().await?;
        let metrics = &self.inner.metrics;
        metrics.queue_depth.clear();
        metrics.oldest_job_age.clear();
        let now = self.now();
        for stat in stats {
            let queue = metrics.queue(stat.queue.as_str());
            let labels = StateLabels {
                queue: queue.clone(),
                state: stat.state.as_str().to_owned(),
            };
            metrics.queue_depth.get_or_create(&labels).inc_by(stat.count as i64);
            if let (JobState::Queued, Some(oldest)) = (stat.state, stat.oldest_run_at) {
                let age = elapsed(oldest, now).as_secs_f64();
                let gauge = metrics.oldest_job_age.get_or_create(&QueueLabels { queue });
                gauge.set(gauge.get().max(age));
            }
        }
        self.refresh_flow_gauges(now).await
    }

    /// Refreshes the held-jobs and breaker gauges: each tenant with a
    /// policy or a resource, read in its own scope.
    async fn refresh_flow_gauges(&self, now: Timestamp) -> Result<(), StoreError> {
        {
            let mut read = self.inner.flow_gauges_read.lock().expect("never poisoned");
            if read.is_some_and(|at| at.elapsed() < FLOW_GAUGES_EVERY) {
                return Ok(());
            }
            *read = Some(tokio::time::Instant::now());
        }
        let tenants = self.inner.store.flow_tenants(MAX_GAUGE_TENANTS).await?;
        let metrics = &self.inner.metrics;
        let mut held: Vec<(HeldLabels, i64)> = Vec::new();
        let mut breakers: Vec<(ResourceLabels, i64)> = Vec::new();
        for tenant in tenants {
            let scope = steadfast_store::auth::system_for(tenant);
            for overview in self.inner.store.queue_overviews(&scope, now).await? {
                let queue = metrics.queue(overview.queue.as_str());
                for (reason, count) in overview.held.reasons() {
                    let labels = HeldLabels {
                        queue: queue.clone(),
                        reason: reason.to_owned(),
                    };
                    held.push((labels, count.min(i64::MAX as u64) as i64));
                }
            }
            for resource in self.inner.store.resources(&scope, now).await? {
                let state = match resource.state.breaker {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Open => 2,
                };
                let labels = ResourceLabels {
                    resource: metrics.resource(resource.name.as_str()),
                };
                breakers.push((labels, state));
            }
        }
        metrics.jobs_held.clear();
        metrics.breaker_state.clear();
        for (labels, count) in held {
            metrics.jobs_held.get_or_create(&labels).inc_by(count);
        }
        for (labels, state) in breakers {
            // Several tenants' resources of one name: the worst state shows.
            let gauge = metrics.breaker_state.get_or_create(&labels);
            gauge.set(gauge.get().max(state));
        }
        Ok(())
    }

    pub(crate) fn records_metrics(&self) -> bool {
        self.inner.config.record_metrics
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// A signed checkpoint of the scope's audit chain, now.
    pub async fn audit_checkpoint(&self, scope: &TenantScope) -> Result<Option<AuditCheckpoint>, StoreError> {
        let Some(signer) = &self.inner.config.audit_signer else {
            return Ok(None);
        };
        let head = self
            .inner
            .store
            .audit_head(scope)
            .await?
            .unwrap_or(Head { seq: 0, hash: GENESIS });
        Ok(Some(signer.sign(scope.tenant_id(), head, self.now())))
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// Stops handing out leases and ends every long-poll; readiness turns 503.
    pub fn start_draining(&self) {
        self.inner.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// Resolves once draining has started.
    pub async fn draining(&self) {
        let mut draining = self.inner.draining.subscribe();
        let _ = draining.wait_for(|draining| *draining).await;
    }

    pub async fn enqueue(&self, scope: &TenantScope, specs: Vec<JobSpec>) -> Result<Vec<Enqueued>, StoreError> {
        let ids = specs.iter().map(|_| JobId(self.new_uuid())).collect();
        self.enqueue_as(scope, ids, specs).await
    }

    /// [`Engine::enqueue`] with the new jobs' ids chosen by the caller (the
    /// outbox: `steadfast.enqueue` returned them already).
    pub(crate) async fn enqueue_as(
        &self,
        scope: &TenantScope,
        ids: Vec<JobId>,
        mut specs: Vec<JobSpec>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.check_payloads(scope, &mut specs).await?;
        let producers = producers::sequences_of(&specs);
        let jobs = ids
            .into_iter()
            .zip(specs)
            .map(|(id, spec)| NewJob { id, spec })
            .collect::<Vec<_>>();
        let (tenant, reserved) = (scope.tenant_id(), jobs.len());
        self.reserve_quota(tenant, reserved)?;
        let created = self
            .inner
            .store
            .enqueue(scope, jobs, self.limits().dedup_window, self.now())
            .await
            .inspect_err(|_| self.settle_quota(tenant, reserved, 0))?;
        self.settle_quota(tenant, reserved, created.iter().filter(|e| e.created()).count());
        // Replays too: a node that died after the enqueue and before this
        // left the numbers unrecorded, and the producer's retry records them.
        self.receive_sequences(scope, producers).await?;
        for enqueued in &created {
            if !enqueued.replayed {
                // New, or a singleton's job given a new payload or run time.
                self.after_change(&enqueued.job);
            }
            if !self.records_metrics() {
                continue;
            }
            let queue = QueueLabels {
                queue: self.inner.metrics.queue(enqueued.job.queue.as_str()),
            };
            let counter = if enqueued.replayed {
                &self.inner.metrics.replays
            } else if enqueued.created() {
                &self.inner.metrics.enqueued
            } else {
                continue;
            };
            counter.get_or_create(&queue).inc();
        }
        Ok(created)
    }

    /// Leases up to `max_jobs`, waiting up to `wait` for one to become ready.
    pub async fn lease(
        &self,
        principal: &Principal,
        queues: Vec<QueueName>,
        max_jobs: u32,
        worker_id: WorkerId,
        wait: Duration,
    ) -> Result<Vec<LeasedJob>, StoreError> {
        let ttl = self.limits().lease_ttl;
        self.lease_for(principal, queues, max_jobs, worker_id, wait, ttl).await
    }

    /// [`Engine::lease`] with leases of `ttl` (still never past a job's
    /// attempt deadline): for the engine's own workers, whose calls are
    /// bounded by their own timeouts rather than kept alive by heartbeats.
    pub(crate) async fn lease_for(
        &self,
        principal: &Principal,
        queues: Vec<QueueName>,
        max_jobs: u32,
        worker_id: WorkerId,
        wait: Duration,
        ttl: Duration,
    ) -> Result<Vec<LeasedJob>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let tenant = principal.scope.tenant_id();
        let mut draining = self.inner.draining.subscribe();
        let mut wakers: Vec<_> = queues.iter().map(|q| self.inner.wakeups.subscribe(tenant, q)).collect();
        loop {
            if *draining.borrow_and_update() {
                return Ok(Vec::new());
            }
            for waker in &mut wakers {
                waker.borrow_and_update();
            }
            let request = LeaseRequest {
                queues: queues.clone(),
                max_jobs,
                worker_id: worker_id.clone(),
                key_id: principal.key_id.clone(),
                ttl,
                token_seed: self.random(),
            };
            let now = self.now();
            let leased = self.inner.store.lease(&principal.scope, request, now).await?;
            if self.records_metrics() {
                for (queue, deferred) in &leased.deferred {
                    let queue = QueueLabels {
                        queue: self.inner.metrics.queue(queue.as_str()),
                    };
                    self.inner
                        .metrics
                        .retries_deferred
                        .get_or_create(&queue)
                        .inc_by(u64::from(*deferred));
                }
            }
            if !leased.is_empty() {
                for job in leased.iter().filter(|_| self.records_metrics()) {
                    if let Some(lease) = &job.job.lease {
                        let queue = self.inner.metrics.queue(job.job.queue.as_str());
                        Metrics::observe(
                            &self.inner.metrics.schedule_to_start,
                            queue,
                            elapsed(job.job.run_at, lease.started_at),
                        );
                    }
                }
                return Ok(leased.jobs);
            }
            // A rate limit that held jobs back admits one again at
            // `retry_at`: no write wakes the wait then, so the wait ends itself.
            let rate_opens = leased
                .retry_at
                .map(|at| tokio::time::Instant::now() + elapsed(now, at))
                .unwrap_or(deadline)
                .min(deadline);
            let woken = select_all(wakers.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                _ = woken => {}
                _ = draining.changed() => {}
                _ = tokio::time::sleep_until(rate_opens), if rate_opens < deadline => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    pub async fn heartbeat(&self, scope: &TenantScope, id: JobId, token: &str) -> Result<Job, StoreError> {
        self.inner
            .store
            .heartbeat(scope, id, token, self.limits().lease_ttl, self.now())
            .await
    }

    pub async fn complete(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        output: String,
    ) -> Result<Ended, StoreError> {
        if self.checks_outputs(scope).await? {
            self.check_job_output(scope, id, &output, 0).await?;
        }
        let ended = self.inner.store.complete(scope, id, token, output, self.now()).await?;
        self.observe_end(&ended.job, ended.attempt.as_ref());
        Ok(ended)
    }

    /// Completes a batch in one storage transaction; see [`steadfast_store::JobStore::complete_many`].
    pub async fn complete_many(
        &self,
        scope: &TenantScope,
        items: Vec<Completing>,
    ) -> Result<Vec<Result<Ended, StoreError>>, StoreError> {
        let results = if self.checks_outputs(scope).await? {
            self.complete_checked(scope, items).await?
        } else {
            self.inner.store.complete_many(scope, items, self.now()).await?
        };
        for ended in results.iter().flatten() {
            self.observe_end(&ended.job, ended.attempt.as_ref());
        }
        Ok(results)
    }

    /// [`Engine::complete_many`] for a tenant with output schemas: items
    /// whose output fails are answered `OutputInvalid` and left as they were.
    async fn complete_checked(
        &self,
        scope: &TenantScope,
        items: Vec<Completing>,
    ) -> Result<Vec<Result<Ended, StoreError>>, StoreError> {
        let mut checked = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            checked.push(self.check_job_output(scope, item.id, &item.output, index).await.err());
        }
        let passing = items
            .into_iter()
            .zip(&checked)
            .filter(|(_, refused)| refused.is_none())
            .map(|(item, _)| item)
            .collect();
        let mut stored = self
            .inner
            .store
            .complete_many(scope, passing, self.now())
            .await?
            .into_iter();
        Ok(checked
            .into_iter()
            .map(|refused| match refused {
                Some(refused) => Err(refused),
                None => stored
                    .next()
                    .unwrap_or_else(|| Err(StoreError::Corrupt("a completion went unanswered".into()))),
            })
            .collect())
    }

    /// Checks a completion's output against the output schema of the
    /// version its job's payload passed, if it has one.
    async fn check_job_output(
        &self,
        scope: &TenantScope,
        id: JobId,
        output: &str,
        index: usize,
    ) -> Result<(), StoreError> {
        let Some(record) = self.inner.store.job(scope, id).await? else {
            return Ok(()); // The completion answers `not_found`.
        };
        let Some(version) = record.job.schema_version else {
            return Ok(());
        };
        self.check_output(scope, &record.job.queue, version, output)
            .await
            .map_err(|violations| StoreError::OutputInvalid { index, violations })
    }

    pub async fn fail(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        failure: Failure,
    ) -> Result<Ended, StoreError> {
        let retry = RetryPlan {
            policy: self.inner.config.retry,
            jitter_seed: self.random(),
        };
        let ended = self
            .inner
            .store
            .fail(scope, id, token, failure, retry, self.now())
            .await?;
        self.observe_end(&ended.job, ended.attempt.as_ref());
        self.after_change(&ended.job);
        Ok(ended)
    }

    /// The worker hands its job back unfinished; see [`steadfast_store::JobStore::release`].
    pub async fn release(&self, scope: &TenantScope, id: JobId, token: &str) -> Result<Ended, StoreError> {
        let ended = self.inner.store.release(scope, id, token, self.now()).await?;
        self.observe_end(&ended.job, ended.attempt.as_ref());
        self.after_change(&ended.job);
        Ok(ended)
    }

    pub async fn retry(&self, scope: &TenantScope, id: JobId, reason: Option<&Reason>) -> Result<Job, StoreError> {
        let job = self.inner.store.retry(scope, id, reason, self.now()).await?;
        self.after_change(&job);
        Ok(job)
    }

    pub async fn cancel(&self, scope: &TenantScope, id: JobId, reason: Option<&Reason>) -> Result<Ended, StoreError> {
        let ended = self.inner.store.cancel(scope, id, reason, self.now()).await?;
        self.observe_end(&ended.job, ended.attempt.as_ref());
        Ok(ended)
    }

    /// A replay's new payload, checked against the newest schema of the
    /// original's queue: with the version it passed.
    async fn checked_replay_payload(
        &self,
        scope: &TenantScope,
        id: JobId,
        payload: String,
    ) -> Result<(String, Option<u32>), StoreError> {
        let original = self.inner.store.job(scope, id).await?.ok_or(StoreError::NotFound)?;
        let request = EnqueueRequest {
            queue: original.job.queue.as_str().to_owned(),
            payload,
            ..EnqueueRequest::default()
        };
        let mut spec = [request
            .validate(self.limits(), [0; 32], self.now())
            .map_err(|invalid| StoreError::Invalid(invalid.to_string()))?];
        self.check_payloads(scope, &mut spec).await?;
        let [spec] = spec;
        Ok((spec.payload, spec.schema_version))
    }

    /// Runs job `id` again as a new job linked to it; see
    /// [`steadfast_store::JobStore::replay`]. Counts against the tenant's
    /// quota like any enqueue.
    pub async fn replay(
        &self,
        scope: &TenantScope,
        id: JobId,
        payload: Option<String>,
        reason: &Reason,
    ) -> Result<Job, StoreError> {
        let tenant = scope.tenant_id();
        let payload = match payload {
            Some(payload) => Some(self.checked_replay_payload(scope, id, payload).await?),
            None => None,
        };
        self.reserve_quota(tenant, 1)?;
        let replay = JobId(self.new_uuid());
        let job = self
            .inner
            .store
            .replay(scope, id, replay, payload, reason, self.now())
            .await
            .inspect_err(|_| self.settle_quota(tenant, 1, 0))?;
        self.settle_quota(tenant, 1, 1);
        self.after_change(&job);
        if self.records_metrics() {
            let queue = QueueLabels {
                queue: self.inner.metrics.queue(job.queue.as_str()),
            };
            self.inner.metrics.enqueued.get_or_create(&queue).inc();
        }
        Ok(job)
    }

    /// Settles an uncertain step; see [`steadfast_store::WorkflowStore::resolve_step`].
    pub async fn resolve_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        step: StepName,
        resolution: StepResolution,
        reason: &Reason,
    ) -> Result<Job, StoreError> {
        let job = self
            .inner
            .store
            .resolve_step(scope, id, step, resolution, reason, self.now())
            .await?;
        self.after_change(&job);
        Ok(job)
    }

    pub async fn start_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
    ) -> Result<StepStart, StoreError> {
        self.inner
            .store
            .start_step(scope, id, token, step, self.inner.config.workflow, self.now())
            .await
    }

    pub async fn checkpoint_step(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
        output: String,
    ) -> Result<Checkpoint, StoreError> {
        self.inner
            .store
            .checkpoint_step(scope, id, token, step, output, self.inner.config.workflow, self.now())
            .await
    }

    /// Starts and checkpoints many steps in one storage transaction; see
    /// [`steadfast_store::WorkflowStore::step_many`].
    pub async fn step_many(
        &self,
        scope: &TenantScope,
        ops: Vec<StepOp>,
    ) -> Result<Vec<Result<StepDone, StoreError>>, StoreError> {
        self.inner
            .store
            .step_many(scope, ops, self.inner.config.workflow, self.now())
            .await
    }

    pub async fn wait(
        &self,
        scope: &TenantScope,
        id: JobId,
        token: &str,
        step: StepName,
        wait_for: WaitFor,
    ) -> Result<Waited, StoreError> {
        let waited = self
            .inner
            .store
            .wait(scope, id, token, step, wait_for, self.inner.config.workflow, self.now())
            .await?;
        if let (Waited::Suspended(job), true) = (&waited, self.records_metrics()) {
            let labels = OutcomeLabels {
                queue: self.inner.metrics.queue(job.queue.as_str()),
                outcome: "suspended".into(),
            };
            self.inner.metrics.attempts.get_or_create(&labels).inc();
        }
        if let Waited::Suspended(job) = &waited
            && job.wait.as_ref().is_some_and(|wait| wait.deadline().is_some())
        {
            self.inner.duties_nudge.notify_one();
        }
        if let (Waited::Suspended(_), true) = (&waited, crate::telemetry::exporting()) {
            // The suspended attempt's span: its calls already name it as parent.
            // Read back only when exporting; a failed read costs the span only.
            if let Ok(Some(record)) = self.inner.store.job(scope, id).await
                && let Some(attempt) = record.attempts.last()
            {
                crate::telemetry::attempt_span(&record.job, attempt);
            }
        }
        Ok(waited)
    }

    pub async fn signal(
        &self,
        scope: &TenantScope,
        id: JobId,
        name: SignalName,
        payload: String,
        reason: Option<&Reason>,
    ) -> Result<Signalled, StoreError> {
        let signalled = self
            .inner
            .store
            .signal(scope, id, name, payload, reason, self.inner.config.workflow, self.now())
            .await?;
        self.after_change(&signalled.job);
        Ok(signalled)
    }

    pub async fn spawn_child(
        &self,
        scope: &TenantScope,
        parent: JobId,
        token: &str,
        step: StepName,
        spec: JobSpec,
    ) -> Result<Enqueued, StoreError> {
        let mut spec = [spec];
        self.check_payloads(scope, &mut spec).await?;
        let [spec] = spec;
        let child = NewJob {
            id: JobId(self.new_uuid()),
            spec,
        };
        let enqueued = self
            .inner
            .store
            .spawn_child(
                scope,
                parent,
                token,
                step,
                child,
                self.inner.config.workflow,
                self.now(),
            )
            .await?;
        if !enqueued.replayed {
            self.after_change(&enqueued.job);
        }
        Ok(enqueued)
    }

    /// Wakes the workers waiting on `queue` (a policy change may admit them).
    pub fn wake(&self, tenant: steadfast_core::TenantId, queue: &QueueName) {
        self.inner.wakeups.wake(tenant, queue);
    }

    /// What follows a committed change: a ready job wakes its queue's
    /// waiters; a scheduled one may be due before the duties' next look.
    fn after_change(&self, job: &Job) {
        match job.state {
            JobState::Queued => self.inner.wakeups.wake(job.tenant_id, &job.queue),
            JobState::Scheduled => self.inner.duties_nudge.notify_one(),
            _ => {}
        }
    }
}
