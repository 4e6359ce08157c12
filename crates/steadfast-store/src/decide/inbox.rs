//! Decisions about webhook deliveries: a new event or a duplicate.

use std::time::Duration;

use steadfast_core::{Job, TenantId, Timestamp};

use super::Decision;
use crate::audit::drafts;
use crate::{InboxEvent, NewJob, StoreError};

/// A dedup key of a source with a live claim, as loaded for an ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInboxKey {
    pub key: String,
    /// The event that claimed it.
    pub event_seq: i64,
}

/// What an ingest does.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingest {
    /// Seen within its window: count the delivery on the event that
    /// claimed the key first met in the event's own key order.
    Duplicate { event_seq: i64 },
    /// New: store the event, claim its keys until `keys_expire_at`, and
    /// make the job (`writes` holds it and its audit record).
    New {
        keys_expire_at: Timestamp,
        job: Box<Decision<Job>>,
    },
}

/// Whether `event` was seen before: any of its dedup keys with a live
/// claim makes it a duplicate, so a body replayed under a new delivery id
/// is caught by its hash, and a re-signed retry by its id. A new event is
/// refused with `refuse_new` when one is given (the tenant's quota).
pub fn ingest(
    tenant: TenantId,
    event: &InboxEvent,
    live: &[LiveInboxKey],
    job: NewJob,
    dedup_window: Duration,
    refuse_new: Option<StoreError>,
    now: Timestamp,
) -> Result<Ingest, StoreError> {
    let first_live = event
        .dedup_keys
        .iter()
        .find_map(|key| live.iter().find(|claim| &claim.key == key));
    if let Some(claim) = first_live {
        return Ok(Ingest::Duplicate {
            event_seq: claim.event_seq,
        });
    }
    if let Some(refused) = refuse_new {
        return Err(refused);
    }
    let keys_expire_at = now.saturating_add(dedup_window).unwrap_or(Timestamp::MAX);
    // The job has no idempotency key: the event's dedup keys stand for one.
    let created = super::enqueue(tenant, vec![job], Vec::new(), Vec::new(), Duration::ZERO, now)?;
    Ok(Ingest::New {
        keys_expire_at,
        job: Box::new(created.map(|mut enqueued| enqueued.remove(0).job)),
    })
}

/// A replay: the job made again from a stored event, audited as such.
pub fn replay(
    tenant: TenantId,
    source_id: &str,
    event_id: &str,
    job: NewJob,
    now: Timestamp,
) -> Result<Decision<Job>, StoreError> {
    let created = super::enqueue(tenant, vec![job], Vec::new(), Vec::new(), Duration::ZERO, now)?;
    let mut decision = created.map(|mut enqueued| enqueued.remove(0).job);
    let draft = drafts::inbox_event_replayed(source_id, event_id, &decision.answer);
    decision.writes.audit(tenant, draft);
    Ok(decision)
}

/// The secrets a rotation retires: with `retire_at`, every secret that
/// would stay valid past it expires then instead (one already expiring
/// sooner keeps its time; one already expired at `now` is deleted, not
/// retired). Answers (secret id, new expiry).
pub fn retire_secrets(
    secrets: &[crate::SourceSecret],
    retire_at: Option<Timestamp>,
    now: Timestamp,
) -> Vec<(String, Timestamp)> {
    let Some(retire_at) = retire_at else {
        return Vec::new();
    };
    secrets
        .iter()
        .filter(|secret| secret.valid_at(now) && secret.expires_at.is_none_or(|expires_at| expires_at > retire_at))
        .map(|secret| (secret.id.clone(), retire_at))
        .collect()
}

/// `LimitExceeded` when a tenant with `live` sources may not add one.
pub fn within_source_limit(live: usize, max_sources: usize) -> Result<(), StoreError> {
    if live >= max_sources {
        return Err(StoreError::LimitExceeded {
            what: "sources per tenant",
            limit: u32::try_from(max_sources).unwrap_or(u32::MAX),
        });
    }
    Ok(())
}
