//! The webhook inbox: sources that providers deliver to, and the events
//! they delivered, each stored with the job it became.
//!
//! The store keeps a source's kind and configuration as the server wrote
//! them; what a kind means (which headers are signed, how) is the server's
//! business. What the store decides is whether an event was seen before.

use std::time::Duration;

use async_trait::async_trait;
use steadfast_core::{Job, JobId, QueueName, TenantId, Timestamp};

use crate::{NewJob, StoreError, TenantScope};

/// One secret a source's deliveries may be signed with. Several are valid
/// at once, so a rotation never drops an event.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceSecret {
    /// Public, e.g. `sec_…`: named in events and audit records.
    pub id: String,
    /// The secret itself, as the provider shows it (e.g. `whsec_…`).
    pub value: String,
    pub created_at: Timestamp,
    /// Refused from this time on.
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for SourceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSecret")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl SourceSecret {
    /// Whether a delivery at `now` may be signed with it.
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// A webhook source: where one provider delivers, and the queue its events
/// become jobs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Unguessable, names no tenant: the path `/hooks/{id}`.
    pub id: String,
    pub tenant_id: TenantId,
    /// Unique among the tenant's sources.
    pub name: String,
    /// `stripe`, `github`, `standard`, `shopify`, `slack` or `hmac`.
    pub kind: String,
    pub queue: QueueName,
    /// The kind's settings, JSON text (`{}` for most kinds).
    pub config: String,
    /// How far a signed timestamp may be from the server's clock, either way.
    pub tolerance: Duration,
    /// How long an event id (or body) is remembered.
    pub dedup_window: Duration,
    pub created_at: Timestamp,
    /// Oldest first.
    pub secrets: Vec<SourceSecret>,
}

/// A verified delivery, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEvent {
    pub source_id: String,
    /// The provider's id for the event (or the body's hash when it has none).
    pub event_id: String,
    pub received_at: Timestamp,
    /// The exact bytes received.
    pub body: Vec<u8>,
    /// Their SHA-256, hex.
    pub body_sha256: String,
    /// The headers kept, as a JSON object of strings.
    pub headers: String,
    /// What verification found, JSON text: the kind, the signed timestamp.
    pub verification: String,
    /// The secret the signature matched.
    pub secret_id: String,
    /// What makes a later delivery a duplicate of this one: the event id,
    /// and the body's hash where the provider does not sign its id.
    pub dedup_keys: Vec<String>,
}

/// A stored event, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Its position among all events; the cursor of listings.
    pub seq: i64,
    pub source_id: String,
    pub event_id: String,
    pub received_at: Timestamp,
    /// The exact bytes received: read only for one event
    /// ([`InboxStore::event`]), never for listings.
    pub body: Option<Vec<u8>>,
    pub body_sha256: String,
    pub body_bytes: u64,
    pub headers: String,
    pub verification: String,
    pub secret_id: String,
    /// Deliveries of the same event after the first.
    pub duplicates: u64,
    pub last_duplicate_at: Option<Timestamp>,
    /// The job the first delivery became.
    pub job_id: JobId,
    /// Jobs made from it since by `replay`, oldest first.
    pub replays: Vec<JobId>,
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The stored event: this delivery's, or (duplicate) the first one's.
    pub event_seq: i64,
    /// The stored event's id (a duplicate's first delivery may have had
    /// another delivery id, as GitHub's and Shopify's do).
    pub event_id: String,
    /// The job made now, or (duplicate) the first delivery's job.
    pub job_id: JobId,
    /// The job made now; `None` for a duplicate.
    pub job: Option<Job>,
    pub duplicate: bool,
}

/// Where a job came from, when a webhook made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub source_id: String,
    pub event_id: String,
    pub event_seq: i64,
    /// Made by a replay rather than by the delivery itself.
    pub replay: bool,
}

/// A page of events, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<EventRecord>,
    /// Present when more events may follow: the last event's `seq`.
    pub next_cursor: Option<i64>,
}

impl EventPage {
    /// A page from rows fetched newest first with one row more than `limit`.
    pub fn from_rows(mut events: Vec<EventRecord>, limit: u32) -> EventPage {
        let more = events.len() > limit as usize;
        events.truncate(limit as usize);
        let next_cursor = events.last().filter(|_| more).map(|event| event.seq);
        EventPage { events, next_cursor }
    }
}

/// Deliveries refused for their signature or timestamp since the last
/// record, for one source: written as one audit record per interval, never
/// one write per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFailures {
    pub source_id: String,
    pub count: u64,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    /// Counts by reason (`signature_invalid`, `timestamp_out_of_tolerance`).
    pub reasons: Vec<(String, u64)>,
}

/// Webhook sources and their events, always within one tenant (but for
/// [`InboxStore::find_source`], the lookup behind an unauthenticated delivery).
#[async_trait]
pub trait InboxStore {
    /// `AlreadyExists` if the tenant has a source of that name,
    /// `LimitExceeded` if it has `max_sources` already. Audited (never
    /// with the secret).
    async fn create_source(
        &self,
        scope: &TenantScope,
        source: Source,
        max_sources: usize,
        now: Timestamp,
    ) -> Result<Source, StoreError>;

    /// By name.
    async fn list_sources(&self, scope: &TenantScope) -> Result<Vec<Source>, StoreError>;

    async fn source(&self, scope: &TenantScope, id: &str) -> Result<Option<Source>, StoreError>;

    /// Deliveries to a deleted source are refused as to an unknown one; its
    /// secrets are deleted, its events stay until retention removes them.
    /// Audited. `NotFound` if absent.
    async fn delete_source(&self, scope: &TenantScope, id: &str, now: Timestamp) -> Result<(), StoreError>;

    /// Adds `secret`; with `retire_others_at`, every other secret expiring
    /// later (or never) expires then. Secrets already expired at `now` are
    /// deleted. Audited. `NotFound` if absent.
    async fn add_source_secret(
        &self,
        scope: &TenantScope,
        id: &str,
        secret: SourceSecret,
        retire_others_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Source, StoreError>;

    /// A live source by id across tenants: what an unauthenticated delivery
    /// is verified against. Its tenant then scopes everything it stores.
    async fn find_source(&self, id: &str) -> Result<Option<Source>, StoreError>;

    /// Stores a verified event and the job it becomes, in one transaction,
    /// as [`crate::decide::ingest`] decides: an event whose dedup keys
    /// include a live one is a duplicate (counted on the first delivery's
    /// event; no job). `job` is the job the event becomes if it is new;
    /// with `refuse_new`, a new event is refused with that error instead
    /// (a tenant at its quota still has its duplicates answered).
    async fn ingest(
        &self,
        scope: &TenantScope,
        event: InboxEvent,
        job: NewJob,
        dedup_window: Duration,
        refuse_new: Option<StoreError>,
        now: Timestamp,
    ) -> Result<Ingested, StoreError>;

    /// A source's events, newest first; `before` is a `seq` from an earlier page.
    async fn list_events(
        &self,
        scope: &TenantScope,
        source_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<EventPage, StoreError>;

    /// The latest stored event of a source with this id, with its body.
    async fn event(
        &self,
        scope: &TenantScope,
        source_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError>;

    /// Makes `job` from the stored event `event_seq`, linked to it, and
    /// audited as a replay. `NotFound` if the event is gone.
    async fn replay_event(
        &self,
        scope: &TenantScope,
        source_id: &str,
        event_seq: i64,
        job: NewJob,
        now: Timestamp,
    ) -> Result<Job, StoreError>;

    /// The event a job was made from, if a webhook made it.
    async fn job_event(&self, scope: &TenantScope, job_id: JobId) -> Result<Option<JobEvent>, StoreError>;

    /// One audit record of refused deliveries, in the source's tenant.
    async fn record_signature_failures(
        &self,
        scope: &TenantScope,
        failures: &SignatureFailures,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Forgets up to `limit` events whose dedup window ended before `before`
    /// (with their keys and job links): across tenants. Answers how many.
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<usize, StoreError>;
}
