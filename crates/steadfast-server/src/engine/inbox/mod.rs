//! The webhook inbox: sources, and deliveries verified, then stored with
//! their job in one transaction before anything is answered.
//!
//! Refusals cost no write: a bad signature or timestamp is counted
//! ([`refusals`]) and written as one audit record per source per interval
//! (with the failed authentications), and counted against the sender's
//! address like a failed authentication.

mod cache;
mod refusals;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use steadfast_core::lifecycle::JobSpec;
use steadfast_core::{Job, JobId, QueueName, Timestamp};
use steadfast_store::auth;
use steadfast_store::{InboxEvent, NewJob, Source, SourceSecret, StoreError, TenantScope};

pub use cache::SOURCE_CACHE_TTL;
pub(super) use cache::SourceCache;
pub(super) use refusals::RefusedDeliveries;

use super::Engine;
use super::rate_limits::{Admission, Rate};
use crate::inbox::verify::{self, Refusal};
use crate::inbox::{self, Config, Kind};
use crate::metrics::InboxLabels;
use cache::{Cached, Known};

/// Bounds on the inbox (docs/limits.md).
#[derive(Debug, Clone, Copy)]
pub struct InboxLimits {
    /// Largest delivery body (`413` above it).
    pub max_body_bytes: usize,
    /// Deliveries per source, accepted or not (per node).
    pub source_rate: Rate,
    /// Deliveries being verified and stored at once (per node); past it,
    /// `429` with `Retry-After` rather than a wait longer than a sender's
    /// timeout.
    pub max_in_flight: usize,
    pub default_tolerance: Duration,
    pub max_tolerance: Duration,
    pub default_dedup_window: Duration,
    pub max_dedup_window: Duration,
    pub max_sources_per_tenant: usize,
    /// Secrets valid at once per source.
    pub max_secrets_per_source: usize,
}

impl Default for InboxLimits {
    fn default() -> Self {
        InboxLimits {
            max_body_bytes: 1024 * 1024,
            source_rate: Rate::new(2000, 4000).expect("non-zero"),
            max_in_flight: 256,
            default_tolerance: Duration::from_secs(300),
            max_tolerance: Duration::from_secs(3600),
            // Stripe retries for 3 days and GitHub redelivers within 30:
            // 35 days covers both with room.
            default_dedup_window: Duration::from_secs(35 * 24 * 3600),
            max_dedup_window: Duration::from_secs(400 * 24 * 3600),
            max_sources_per_tenant: 100,
            max_secrets_per_source: 10,
        }
    }
}

/// A source to create, checked by the API.
#[derive(Clone)]
pub struct NewSource {
    pub name: String,
    pub kind_name: String,
    pub kind: Kind,
    pub config: Config,
    pub queue: QueueName,
    /// `None`: Steadfast makes one (only for kinds whose sender takes any).
    pub secret: Option<String>,
    pub tolerance: Duration,
    pub dedup_window: Duration,
}

impl std::fmt::Debug for NewSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSource")
            .field("name", &self.name)
            .field("kind", &self.kind_name)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// Why a source or secret request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooMany(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a delivery became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Accepted {
        event_id: String,
        job_id: JobId,
    },
    /// Seen within its window: no new job; the first delivery's event and job.
    Duplicate {
        event_id: String,
        job_id: JobId,
    },
    /// Slack's URL handshake: the challenge to echo; nothing stored.
    Challenge(String),
}

/// Why a delivery was refused; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no such source")]
    UnknownSource,
    #[error("{}", .0.as_str())]
    Refused(Refusal),
    #[error("too many deliveries")]
    RateLimited(Admission),
    /// More deliveries in flight on this node than it takes at once.
    #[error("too many deliveries in flight")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn parsed(source: Source) -> Result<Known, StoreError> {
    let config: Config = serde_json::from_str(&source.config)
        .map_err(|e| StoreError::Corrupt(format!("source {} config: {e}", source.id)))?;
    let kind = Kind::parse(&source.kind, &config).map_err(StoreError::Corrupt)?;
    Ok(Known { source, kind, config })
}

impl Engine {
    fn random_words<const N: usize>(&self) -> [u64; N] {
        std::array::from_fn(|_| self.random())
    }

    fn new_secret(&self, kind: &Kind, given: Option<String>, expires_at: Option<Timestamp>) -> (SourceSecret, bool) {
        let generated = given.is_none();
        let value = given.unwrap_or_else(|| inbox::new_secret(kind, self.random_words()));
        let secret = SourceSecret {
            id: inbox::secret_id(self.random()),
            value,
            created_at: self.now(),
            expires_at,
        };
        (secret, generated)
    }

    /// A secret given by the user is checked; none given is made by
    /// Steadfast, except for kinds whose provider makes it.
    fn check_given_secret(kind_name: &str, kind: &Kind, given: Option<&str>) -> Result<(), SourceError> {
        match given {
            Some(secret) => inbox::check_secret(kind, secret).map_err(SourceError::Invalid),
            None if kind.provider_makes_secret() => Err(SourceError::Invalid(format!(
                "secret: {kind_name} makes the signing secret; copy it from the provider into `secret`"
            ))),
            None => Ok(()),
        }
    }

    /// Creates a source; answers it with the secret Steadfast made, if it made one.
    pub async fn create_source(
        &self,
        scope: &TenantScope,
        new: NewSource,
    ) -> Result<(Source, Option<String>), SourceError> {
        let limits = self.inner.config.inbox;
        Self::check_given_secret(&new.kind_name, &new.kind, new.secret.as_deref())?;
        let (secret, generated) = self.new_secret(&new.kind, new.secret, None);
        let source = Source {
            id: inbox::source_id(self.random_words()),
            tenant_id: scope.tenant_id(),
            name: new.name,
            kind: new.kind_name,
            queue: new.queue,
            config: serde_json::to_string(&new.config).expect("a config serialises"),
            tolerance: new.tolerance,
            dedup_window: new.dedup_window,
            created_at: self.now(),
            secrets: vec![secret.clone()],
        };
        let created = self
            .store()
            .create_source(scope, source, limits.max_sources_per_tenant, self.now())
            .await
            .map_err(|error| match error {
                StoreError::LimitExceeded { limit, .. } => {
                    SourceError::TooMany(format!("a tenant may have at most {limit} sources"))
                }
                other => other.into(),
            })?;
        self.inner.sources.forget(&created.id);
        Ok((created, generated.then_some(secret.value)))
    }

    /// Adds a secret to a source (rotation): answers the source, the new
    /// secret, and whether Steadfast made it. With `retire_others_after`,
    /// the other secrets stop being accepted that long from now.
    pub async fn add_source_secret(
        &self,
        scope: &TenantScope,
        id: &str,
        given: Option<String>,
        expires_at: Option<Timestamp>,
        retire_others_after: Option<Duration>,
    ) -> Result<(Source, SourceSecret, bool), SourceError> {
        let limits = self.inner.config.inbox;
        let now = self.now();
        let source = self.store().source(scope, id).await?.ok_or(StoreError::NotFound)?;
        let known = parsed(source)?;
        Self::check_given_secret(&known.source.kind, &known.kind, given.as_deref())?;
        if expires_at.is_some_and(|at| at <= now) {
            return Err(SourceError::Invalid("expires_at: must be in the future".into()));
        }
        let retire_at = retire_others_after.map(|after| now.saturating_add(after).unwrap_or(Timestamp::MAX));
        // Every secret valid now costs one HMAC per delivery until it expires.
        let staying = match retire_at {
            Some(at) if at <= now => 0,
            _ => known
                .source
                .secrets
                .iter()
                .filter(|secret| secret.valid_at(now))
                .count(),
        };
        if staying >= limits.max_secrets_per_source {
            return Err(SourceError::TooMany(format!(
                "a source may have at most {} valid secrets; retire the others (retire_others_after_secs: 0) or let some expire",
                limits.max_secrets_per_source
            )));
        }
        let (secret, generated) = self.new_secret(&known.kind, given, expires_at);
        let source = self
            .store()
            .add_source_secret(scope, id, secret.clone(), retire_at, now)
            .await?;
        self.inner.sources.forget(id);
        Ok((source, secret, generated))
    }

    /// Deletes a source: its deliveries are refused from now on (on other
    /// nodes within [`SOURCE_CACHE_TTL`]).
    pub async fn delete_source(&self, scope: &TenantScope, id: &str) -> Result<(), StoreError> {
        self.store().delete_source(scope, id, self.now()).await?;
        self.inner.sources.forget(id);
        Ok(())
    }

    /// Takes one delivery to source `id`: verifies it, then stores it and
    /// the job it becomes in one transaction (or counts it as a duplicate).
    /// Answers only once that is on disk.
    pub async fn take_delivery(
        &self,
        id: &str,
        headers: &axum::http::HeaderMap,
        body: &[u8],
        client: Option<IpAddr>,
        request_id: Option<String>,
    ) -> Result<Delivery, HookError> {
        let Ok(_in_flight) = self.inner.deliveries_in_flight.try_acquire() else {
            return Err(HookError::Busy);
        };
        let now = self.now();
        let Some(known) = self.find_source(id).await? else {
            return Err(self.refused_address(client).unwrap_or(HookError::UnknownSource));
        };
        let admission = self.inner.limiters.admit_source(id);
        if admission.limited {
            return Err(HookError::RateLimited(admission));
        }
        let source = &known.source;
        let verified = match verify::verify(&known.kind, &source.secrets, headers, body, now, source.tolerance) {
            Ok(verified) => verified,
            Err(refusal) => {
                self.count_delivery(&source.kind, "rejected");
                self.inner.refused_deliveries.count(source, refusal, now);
                return Err(self.refused_address(client).unwrap_or(HookError::Refused(refusal)));
            }
        };
        if let Some(challenge) = inbox::slack_challenge(&known.kind, body) {
            return Ok(Delivery::Challenge(challenge));
        }
        let event = self.inbox_event(&known, &verified, headers, body, now);
        let job = self.event_job(source, &event.event_id, now, &event.headers, body);
        let delivery = self.store_delivery(source, event, job, request_id, now).await?;
        let outcome = if matches!(delivery, Delivery::Duplicate { .. }) {
            "duplicate"
        } else {
            "accepted"
        };
        self.count_delivery(&source.kind, outcome);
        Ok(delivery)
    }

    /// The event a verified delivery is stored as.
    fn inbox_event(
        &self,
        known: &Known,
        verified: &verify::Verified,
        headers: &axum::http::HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> InboxEvent {
        let body_sha256 = inbox::body_sha256(body);
        let (event_id, dedup_keys) = inbox::identify(verified, &body_sha256);
        InboxEvent {
            source_id: known.source.id.clone(),
            event_id,
            received_at: now,
            body: body.to_vec(),
            body_sha256,
            headers: inbox::kept_headers(&known.kind, &known.config, headers),
            verification: verification(&known.source.kind, verified),
            secret_id: verified.secret_id.clone(),
            dedup_keys,
        }
    }

    /// One transaction: the event and its job, or a duplicate's count. A
    /// tenant at its quota still has its duplicates answered.
    async fn store_delivery(
        &self,
        source: &Source,
        event: InboxEvent,
        job: NewJob,
        request_id: Option<String>,
        now: Timestamp,
    ) -> Result<Delivery, StoreError> {
        let tenant = source.tenant_id;
        let quota = self.reserve_quota(tenant, 1);
        let reserved = usize::from(quota.is_ok());
        let scope = auth::verified_webhook(source).with_request_id(request_id);
        let ingested = self
            .store()
            .ingest(&scope, event, job, source.dedup_window, quota.err(), now)
            .await
            .inspect_err(|_| self.settle_quota(tenant, reserved, 0))?;
        self.settle_quota(tenant, reserved, usize::from(!ingested.duplicate));
        if let Some(job) = &ingested.job {
            self.after_change(job);
        }
        let (event_id, job_id) = (ingested.event_id, ingested.job_id);
        Ok(if ingested.duplicate {
            Delivery::Duplicate { event_id, job_id }
        } else {
            Delivery::Accepted { event_id, job_id }
        })
    }

    /// The live source `id`, read at most once per [`SOURCE_CACHE_TTL`].
    async fn find_source(&self, id: &str) -> Result<Option<Arc<Known>>, StoreError> {
        let now = self.inner.clock.elapsed();
        let generation = match self.inner.sources.get(id, now) {
            Cached::Known(known) => return Ok(Some(known)),
            Cached::Unknown => return Ok(None),
            Cached::Miss(generation) => generation,
        };
        let found = match self.store().find_source(id).await? {
            Some(source) => Some(Arc::new(parsed(source)?)),
            None => None,
        };
        self.inner.sources.put(id, now, generation, found.clone());
        Ok(found)
    }

    /// Makes a new job from a stored event, linked to it and audited.
    pub async fn replay_event(&self, scope: &TenantScope, source_id: &str, event_id: &str) -> Result<Job, StoreError> {
        let now = self.now();
        let source = self
            .store()
            .source(scope, source_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let event = self
            .store()
            .event(scope, source_id, event_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let body = event.body.as_deref().unwrap_or_default();
        let job = self.event_job(&source, &event.event_id, event.received_at, &event.headers, body);
        self.reserve_quota(scope.tenant_id(), 1)?;
        let replayed = self
            .store()
            .replay_event(scope, source_id, event.seq, job, now)
            .await
            .inspect_err(|_| self.settle_quota(scope.tenant_id(), 1, 0))?;
        self.settle_quota(scope.tenant_id(), 1, 1);
        self.after_change(&replayed);
        Ok(replayed)
    }

    /// The job an event becomes: the source's queue, the server's defaults.
    fn event_job(&self, source: &Source, event_id: &str, received_at: Timestamp, headers: &str, body: &[u8]) -> NewJob {
        let limits = self.limits();
        let payload = inbox::payload(event_id, &source.id, received_at, headers, body, limits.max_json_depth);
        NewJob {
            id: JobId(self.new_uuid()),
            spec: JobSpec {
                queue: source.queue.clone(),
                payload,
                idempotency: None,
                max_attempts: limits.default_max_attempts,
                timeout: limits.default_timeout,
                run_at: None,
                priority: 0,
                traceparent: None,
                flow_key: None,
                resource: None,
                singleton: None,
                schema_version: None,
                producer: None,
            },
        }
    }

    fn count_delivery(&self, kind: &str, outcome: &str) {
        if self.records_metrics() {
            let labels = InboxLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            };
            self.inner.metrics.inbox_events.get_or_create(&labels).inc();
        }
    }

    /// A refused delivery counts against its sender's address like a failed
    /// authentication: `Some` once the address is over its rate.
    fn refused_address(&self, client: Option<IpAddr>) -> Option<HookError> {
        let admission = self.inner.limiters.admit_failure(client?);
        admission.limited.then_some(HookError::RateLimited(admission))
    }

    /// Writes the refused deliveries counted since the last call: one audit
    /// record per source, in its tenant. What could not be written is
    /// counted again at the next call.
    pub async fn record_refused_deliveries(&self) -> Result<usize, StoreError> {
        let mut taken = self.inner.refused_deliveries.take().into_iter();
        let now = self.now();
        let mut written = 0;
        while let Some((source, failures)) = taken.next() {
            let scope = auth::refused_webhook(&source);
            if let Err(error) = self.store().record_signature_failures(&scope, &failures, now).await {
                let mut unwritten = vec![(source, failures)];
                unwritten.extend(taken);
                self.inner.refused_deliveries.put_back(unwritten);
                return Err(error);
            }
            written += 1;
        }
        Ok(written)
    }

    /// Forgets events whose dedup window ended, in batches, until none is left.
    pub async fn prune_events(&self) -> Result<usize, StoreError> {
        const BATCH: u32 = 1000;
        const MOST_BATCHES: usize = 1000;
        let mut removed = 0;
        for _ in 0..MOST_BATCHES {
            let batch = self.store().prune_events(self.now(), BATCH).await?;
            removed += batch;
            if batch < BATCH as usize {
                break;
            }
        }
        Ok(removed)
    }
}

/// What verification found, as stored with the event.
fn verification(kind: &str, verified: &verify::Verified) -> String {
    serde_json::json!({
        "kind": kind,
        "valid": true,
        "secret_id": verified.secret_id,
        "signed_timestamp": verified.timestamp,
        "id_signed": verified.id_signed,
    })
    .to_string()
}
