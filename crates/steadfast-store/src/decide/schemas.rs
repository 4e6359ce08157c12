//! Registering a version of a queue's payload schema.

use jiff::Timestamp;
use serde_json::Value;
use steadfast_core::QueueName;
use steadfast_core::audit::Draft;

use crate::StoreError;
use crate::schemas::{MAX_VERSIONS_PER_TENANT, PayloadSchema, Registered, SchemaRegistration, compatibility};

/// Decides a registration from what the backend loaded (under a lock on
/// the queue's schemas): the version already stored under this number, the
/// queue's newest version, and how many versions the tenant keeps.
///
/// - The same content under the same number is a replay: `Unchanged`.
/// - Versions are immutable and only go up: other content under a stored
///   number, or a number at or below the newest, is a conflict.
/// - A version that breaks the newest ([`compatibility`]) is refused with
///   the list of changes, unless forced with a reason; both are audited.
pub fn register_schema(
    queue: &QueueName,
    same_version: Option<PayloadSchema>,
    latest: Option<PayloadSchema>,
    versions_kept: usize,
    registration: SchemaRegistration,
    now: Timestamp,
) -> Result<(Registered, Option<Draft>), StoreError> {
    if let Some(stored) = same_version {
        let same = json(&stored.schema) == json(&registration.schema)
            && stored.output_schema.as_deref().map(json) == registration.output_schema.as_deref().map(json);
        if same {
            return Ok((Registered::Unchanged(stored), None));
        }
        return Err(StoreError::Conflict(format!(
            "version {} of queue {queue} is registered with other content; versions never change, so register a new one",
            registration.version
        )));
    }
    if let Some(latest) = &latest
        && latest.version >= registration.version
    {
        return Err(StoreError::Conflict(format!(
            "versions only go up: queue {queue} is at version {}",
            latest.version
        )));
    }
    if versions_kept >= MAX_VERSIONS_PER_TENANT {
        return Err(StoreError::LimitExceeded {
            what: "schema versions per tenant",
            limit: MAX_VERSIONS_PER_TENANT as u32,
        });
    }
    let breaking = match &latest {
        Some(latest) => compatibility(&json(&latest.schema), &json(&registration.schema)),
        None => Vec::new(),
    };
    if registration.force && registration.reason.is_none() {
        return Err(StoreError::Invalid("reason: required with force".into()));
    }
    if !breaking.is_empty() && !registration.force {
        return Err(StoreError::SchemaIncompatible(breaking));
    }
    let schema = PayloadSchema {
        queue: queue.clone(),
        version: registration.version,
        schema: registration.schema,
        output_schema: registration.output_schema,
        forced: !breaking.is_empty(),
        reason: registration.reason.map(|reason| reason.as_str().to_owned()),
        created_at: now,
    };
    let draft = crate::audit::drafts::queue_schema_registered(&schema, latest.map(|l| l.version), &breaking);
    Ok((Registered::Created(schema), Some(draft)))
}

/// Stored schemas are canonical JSON the server produced.
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}
