//! The webhook inbox: sources, and deliveries verified, then stored with
//! their job in one transaction before anything is answered.
//!
//! Refusals cost no write: a bad signature or timestamp is counted here
//! and written as one audit record per source per interval (with the
//! failed authentications), and counted against the sender's address like
//! a failed authentication.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_core::lifecycle::JobSpec;
use steadfast_core::{Job, JobId, QueueName, Timestamp};
use steadfast_store::auth;
use steadfast_store::{InboxEvent, NewJob, SignatureFailures, Source, SourceSecret, StoreError, TenantScope};

use super::Engine;
use super::rate_limits::{Admission, Rate};
use crate::inbox::verify::{self, Refusal};
use crate::inbox::{self, Config, Kind};
use crate::metrics::InboxLabels;

/// Bounds on the inbox (docs/limits.md).
#[derive(Debug, Clone, Copy)]
pub struct InboxLimits {
    /// Largest delivery body (`413` above it).
    pub max_body_bytes: usize,
    /// Deliveries per source, accepted or not (per node).
    pub source_rate: Rate,
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
#[derive(Debug, Clone)]
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
    /// Seen within its window: no new job; `job_id` is the first delivery's.
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refused deliveries since the last record, by source.
#[derive(Debug, Default)]
pub(super) struct RefusedDeliveries {
    by_source: Mutex<HashMap<String, (Source, SignatureFailures)>>,
}

/// How long this node trusts what it read of a source: a delivery costs no
/// source read within it. A change made on this node applies at once; one
/// made on another node (a new secret, a deletion) within this long. A
/// secret's expiry is checked against the clock on every delivery.
pub const SOURCE_CACHE_TTL: Duration = Duration::from_secs(1);
/// Sources (and unknown ids) cached at most; past it the cache starts over.
const SOURCE_CACHE_BOUND: usize = 10_000;

/// A source as read at a time of the clock's `elapsed`: `None` for an id
/// that named no live source.
type Read = (Duration, Option<Arc<Source>>);

/// What this node read of each source lately, by id.
#[derive(Debug, Default)]
pub(super) struct SourceCache {
    read: Mutex<HashMap<String, Read>>,
}

impl SourceCache {
    fn get(&self, id: &str, now: Duration) -> Option<Option<Arc<Source>>> {
        let read = self.read.lock().expect("the source cache is never poisoned");
        let (at, source) = read.get(id)?;
        (now.saturating_sub(*at) < SOURCE_CACHE_TTL).then(|| source.clone())
    }

    fn put(&self, id: &str, now: Duration, source: Option<Arc<Source>>) {
        let mut read = self.read.lock().expect("the source cache is never poisoned");
        if read.len() >= SOURCE_CACHE_BOUND && !read.contains_key(id) {
            read.clear();
        }
        read.insert(id.to_owned(), (now, source));
    }

    fn forget(&self, id: &str) {
        self.read.lock().expect("the source cache is never poisoned").remove(id);
    }
}

/// Sources whose refusals are counted per interval; refusals to further
/// sources are only in the metric until the next record.
const COUNTED_SOURCES_BOUND: usize = 10_000;

impl RefusedDeliveries {
    fn count(&self, source: &Source, refusal: Refusal, now: Timestamp) {
        let mut by_source = self.by_source.lock().expect("the refusal counts are never poisoned");
        if by_source.len() >= COUNTED_SOURCES_BOUND && !by_source.contains_key(&source.id) {
            return;
        }
        let (_, failures) = by_source.entry(source.id.clone()).or_insert_with(|| {
            let failures = SignatureFailures {
                source_id: source.id.clone(),
                count: 0,
                first_at: now,
                last_at: now,
                reasons: Vec::new(),
            };
            (source.clone(), failures)
        });
        failures.count += 1;
        failures.last_at = now;
        match failures
            .reasons
            .iter_mut()
            .find(|(reason, _)| reason == refusal.as_str())
        {
            Some((_, n)) => *n += 1,
            None => failures.reasons.push((refusal.as_str().to_owned(), 1)),
        }
    }

    fn take(&self) -> Vec<(Source, SignatureFailures)> {
        let taken = std::mem::take(&mut *self.by_source.lock().expect("the refusal counts are never poisoned"));
        taken.into_values().collect()
    }
}

fn stored_kind(source: &Source) -> Result<(Kind, Config), StoreError> {
    let config: Config = serde_json::from_str(&source.config)
        .map_err(|e| StoreError::Corrupt(format!("source {} config: {e}", source.id)))?;
    let kind = Kind::parse(&source.kind, &config).map_err(StoreError::Corrupt)?;
    Ok((kind, config))
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

    /// Creates a source; answers it with the secret Steadfast made, if it made one.
    pub async fn create_source(
        &self,
        scope: &TenantScope,
        new: NewSource,
    ) -> Result<(Source, Option<String>), SourceError> {
        let limits = self.inner.config.inbox;
        if new.secret.is_none() && new.kind.provider_makes_secret() {
            return Err(SourceError::Invalid(format!(
                "secret: {} makes the signing secret; copy it from the provider into `secret`",
                new.kind_name
            )));
        }
        if let Some(secret) = &new.secret {
            inbox::check_secret(&new.kind, secret).map_err(SourceError::Invalid)?;
        }
        if self.store().list_sources(scope).await?.len() >= limits.max_sources_per_tenant {
            return Err(SourceError::TooMany(format!(
                "a tenant may have at most {} sources",
                limits.max_sources_per_tenant
            )));
        }
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
        let created = self.store().create_source(scope, source, self.now()).await?;
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
        let (kind, _) = stored_kind(&source)?;
        if let Some(secret) = &given {
            inbox::check_secret(&kind, secret).map_err(SourceError::Invalid)?;
        }
        if expires_at.is_some_and(|at| at <= now) {
            return Err(SourceError::Invalid("expires_at: must be in the future".into()));
        }
        let valid = source.secrets.iter().filter(|secret| secret.valid_at(now)).count();
        if valid >= limits.max_secrets_per_source && retire_others_after.is_none() {
            return Err(SourceError::TooMany(format!(
                "a source may have at most {} valid secrets; retire some with retire_others_after_secs",
                limits.max_secrets_per_source
            )));
        }
        let retire_at = retire_others_after.map(|after| now.saturating_add(after).unwrap_or(Timestamp::MAX));
        let (secret, generated) = self.new_secret(&kind, given, expires_at);
        let source = self
            .store()
            .add_source_secret(scope, id, secret.clone(), retire_at, now)
            .await?;
        self.inner.sources.forget(id);
        Ok((source, secret, generated))
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
        let now = self.now();
        let admission = self
            .inner
            .limiters
            .admit_source(id, self.inner.config.inbox.source_rate);
        if admission.limited {
            return Err(HookError::RateLimited(admission));
        }
        let Some(source) = self.find_source(id).await? else {
            return Err(self.refused_address(client).unwrap_or(HookError::UnknownSource));
        };
        let (kind, config) = stored_kind(&source)?;
        let verified = match verify::verify(&kind, &source.secrets, headers, body, now, source.tolerance) {
            Ok(verified) => verified,
            Err(refusal) => {
                self.count_delivery(&source.kind, "rejected");
                self.inner.refused_deliveries.count(&source, refusal, now);
                return Err(self.refused_address(client).unwrap_or(HookError::Refused(refusal)));
            }
        };
        if let Some(challenge) = inbox::slack_challenge(&kind, body) {
            return Ok(Delivery::Challenge(challenge));
        }
        let (event_id, dedup_keys) = inbox::identify(&verified, body);
        let headers = inbox::kept_headers(&kind, &config, headers);
        let event = InboxEvent {
            source_id: source.id.clone(),
            event_id: event_id.clone(),
            received_at: now,
            body: body.to_vec(),
            verification: verification(&source.kind, &verified),
            secret_id: verified.secret_id,
            headers,
            dedup_keys,
        };
        let job = self.event_job(&source, &event.event_id, now, &event.headers, body);
        let tenant = source.tenant_id;
        self.reserve_quota(tenant, 1)?;
        let scope = auth::verified_webhook(&source).with_request_id(request_id);
        let ingested = self
            .store()
            .ingest(&scope, event, job, source.dedup_window, now)
            .await
            .inspect_err(|_| self.settle_quota(tenant, 1, 0))?;
        self.settle_quota(tenant, 1, usize::from(!ingested.duplicate));
        if let Some(job) = &ingested.job {
            self.after_change(job);
        }
        let outcome = if ingested.duplicate { "duplicate" } else { "accepted" };
        self.count_delivery(&source.kind, outcome);
        Ok(if ingested.duplicate {
            Delivery::Duplicate {
                event_id,
                job_id: ingested.job_id,
            }
        } else {
            Delivery::Accepted {
                event_id,
                job_id: ingested.job_id,
            }
        })
    }

    /// The live source `id`, read at most once per [`SOURCE_CACHE_TTL`].
    async fn find_source(&self, id: &str) -> Result<Option<Arc<Source>>, StoreError> {
        let now = self.inner.clock.elapsed();
        if let Some(cached) = self.inner.sources.get(id, now) {
            return Ok(cached);
        }
        let found = self.store().find_source(id).await?.map(Arc::new);
        self.inner.sources.put(id, now, found.clone());
        Ok(found)
    }

    /// Deletes a source: its deliveries are refused from now on (on other
    /// nodes within [`SOURCE_CACHE_TTL`]).
    pub async fn delete_source(&self, scope: &TenantScope, id: &str) -> Result<(), StoreError> {
        self.store().delete_source(scope, id, self.now()).await?;
        self.inner.sources.forget(id);
        Ok(())
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
        let job = self.event_job(&source, &event.event_id, event.received_at, &event.headers, &event.body);
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
    /// record per source, in its tenant.
    pub async fn record_refused_deliveries(&self) -> Result<usize, StoreError> {
        let taken = self.inner.refused_deliveries.take();
        let now = self.now();
        for (source, failures) in &taken {
            let scope = auth::refused_webhook(source);
            self.store().record_signature_failures(&scope, failures, now).await?;
        }
        Ok(taken.len())
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
