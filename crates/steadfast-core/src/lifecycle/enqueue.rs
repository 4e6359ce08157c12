//! A new job, from a producer's request.

use std::time::Duration;

use crate::{
    FlowKey, IdempotencyKey, Job, JobId, JobState, Limits, ProducerId, QueueName, ResourceName, TenantId, Timestamp,
};

/// A hash of everything in an enqueue request but its idempotency key: two
/// requests with one key and different fingerprints are a client bug (`422`).
pub type Fingerprint = [u8; 32];

/// An enqueue request as it arrived, before validation.
#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    pub queue: String,
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub max_attempts: Option<i64>,
    pub timeout_secs: Option<i64>,
    pub run_at: Option<Timestamp>,
    pub priority: Option<i64>,
    /// A W3C `traceparent`; an invalid one is ignored, as the standard asks.
    pub traceparent: Option<String>,
    pub flow_key: Option<String>,
    pub resource: Option<String>,
    /// A singleton key, with its mode (`skip` or `replace`) if given.
    pub singleton: Option<(String, Option<String>)>,
    pub debounce_ms: Option<i64>,
    pub debounce_max_ms: Option<i64>,
    /// The version of the queue's payload schema to validate against
    /// (the latest when absent).
    pub schema_version: Option<i64>,
    /// The producer's id and this message's sequence number.
    pub producer: Option<(String, i64)>,
}

/// What an enqueue does when its singleton key already has an unfinished job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingletonMode {
    /// Keep the existing job; answer with it.
    Skip,
    /// Give the existing job (while it has not started) this payload.
    Replace,
}

/// Waits for enqueues of one singleton key to stop: the job runs `wait`
/// after the last one, and never later than `max` after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    pub wait: Duration,
    pub max: Duration,
}

/// At most one unfinished job per key in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Singleton {
    pub key: FlowKey,
    pub mode: SingletonMode,
    pub debounce: Option<Debounce>,
}

/// A validated enqueue request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub queue: QueueName,
    pub payload: String,
    pub idempotency: Option<(IdempotencyKey, Fingerprint)>,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub run_at: Option<Timestamp>,
    pub priority: i32,
    pub traceparent: Option<String>,
    pub flow_key: Option<FlowKey>,
    pub resource: Option<ResourceName>,
    pub singleton: Option<Singleton>,
    /// The payload schema version: before the engine checks the payload,
    /// the one the request named; after, the one it was validated against
    /// (`None` when the queue has no schema).
    pub schema_version: Option<u32>,
    /// The producer and sequence number this job was sent as; its
    /// idempotency key is then [`producer_key`].
    pub producer: Option<(ProducerId, u64)>,
}

/// The idempotency key of a producer's message: a repeated sequence number
/// is a replay, like a repeated key.
pub fn producer_key(producer: &ProducerId, sequence: u64) -> String {
    format!("producer:{producer}:{sequence}")
}

/// A request field that is out of bounds; safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub problem: String,
}

fn in_range(field: &'static str, value: i64, min: i64, max: i64) -> Result<i64, InvalidRequest> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(InvalidRequest {
            field,
            problem: format!("must be between {min} and {max}, got {value}"),
        })
    }
}

impl EnqueueRequest {
    /// Checks the request against `limits`. `fingerprint` is computed by the
    /// caller from the canonical request (the core does not parse JSON).
    pub fn validate(
        self,
        limits: &Limits,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> Result<JobSpec, InvalidRequest> {
        let invalid_name = |field| {
            move |e: crate::InvalidName| InvalidRequest {
                field,
                problem: e.problem,
            }
        };
        let queue = QueueName::new(self.queue).map_err(invalid_name("queue"))?;
        let producer = self
            .producer
            .map(|(id, sequence)| -> Result<_, InvalidRequest> {
                let id = ProducerId::new(id).map_err(invalid_name("producer.id"))?;
                let sequence = in_range("producer.sequence", sequence, 1, i64::MAX)? as u64;
                Ok((id, sequence))
            })
            .transpose()?;
        let idempotency_key = match (&producer, self.idempotency_key) {
            (Some(_), Some(_)) => {
                return Err(InvalidRequest {
                    field: "idempotency_key",
                    problem: "not with producer: its sequence number is the key".into(),
                });
            }
            (Some((id, sequence)), None) => Some(producer_key(id, *sequence)),
            (None, key) => key,
        };
        let idempotency = idempotency_key
            .map(|key| IdempotencyKey::new(key).map(|key| (key, fingerprint)))
            .transpose()
            .map_err(invalid_name("idempotency_key"))?;
        let max_attempts = match self.max_attempts {
            Some(n) => in_range("max_attempts", n, 1, i64::from(limits.max_attempts))? as u32,
            None => limits.default_max_attempts,
        };
        let timeout = match self.timeout_secs {
            Some(secs) => {
                Duration::from_secs(in_range("timeout_secs", secs, 1, limits.max_timeout.as_secs() as i64)? as u64)
            }
            None => limits.default_timeout,
        };
        let priority = match self.priority {
            Some(p) => in_range(
                "priority",
                p,
                i64::from(limits.min_priority),
                i64::from(limits.max_priority),
            )? as i32,
            None => 0,
        };
        if let Some(run_at) = self.run_at {
            let latest = now.checked_add(limits.max_schedule_ahead).unwrap_or(Timestamp::MAX);
            if run_at > latest {
                return Err(InvalidRequest {
                    field: "run_at",
                    problem: format!(
                        "must be at most {} days ahead",
                        limits.max_schedule_ahead.as_secs() / 86_400
                    ),
                });
            }
        }
        let flow_key = self
            .flow_key
            .map(FlowKey::new)
            .transpose()
            .map_err(invalid_name("flow_key"))?;
        let resource = self
            .resource
            .map(ResourceName::new)
            .transpose()
            .map_err(invalid_name("resource"))?;
        let singleton = singleton(
            self.singleton,
            self.debounce_ms,
            self.debounce_max_ms,
            self.run_at,
            limits,
        )?;
        let traceparent = self.traceparent.filter(|tp| valid_traceparent(tp));
        let schema_version = self
            .schema_version
            .map(|version| in_range("schema_version", version, 1, i64::from(i32::MAX)).map(|v| v as u32))
            .transpose()?;
        Ok(JobSpec {
            traceparent,
            queue,
            payload: self.payload,
            idempotency,
            max_attempts,
            timeout,
            run_at: self.run_at,
            priority,
            flow_key,
            resource,
            singleton,
            schema_version,
            producer,
        })
    }
}

/// The singleton an enqueue asks for, checked: a debounce needs a
/// singleton key, replaces the payload, and sets the run time itself.
fn singleton(
    singleton: Option<(String, Option<String>)>,
    debounce_ms: Option<i64>,
    debounce_max_ms: Option<i64>,
    run_at: Option<Timestamp>,
    limits: &Limits,
) -> Result<Option<Singleton>, InvalidRequest> {
    let invalid = |field, problem: &str| InvalidRequest {
        field,
        problem: problem.to_owned(),
    };
    let Some((key, mode)) = singleton else {
        if debounce_ms.is_some() || debounce_max_ms.is_some() {
            return Err(invalid("debounce_ms", "needs a singleton key"));
        }
        return Ok(None);
    };
    let key = FlowKey::new(key).map_err(|e| InvalidRequest {
        field: "singleton.key",
        problem: e.problem,
    })?;
    let max_ms = limits.max_debounce.as_millis() as i64;
    let debounce = match (debounce_ms, debounce_max_ms) {
        (None, None) => None,
        (None, Some(_)) => return Err(invalid("debounce_max_ms", "needs debounce_ms")),
        (Some(wait), max) => {
            if run_at.is_some() {
                return Err(invalid("run_at", "a debounced job runs when its enqueues stop"));
            }
            let wait = in_range("debounce_ms", wait, 1, max_ms)?;
            let max = match max {
                Some(max) => in_range("debounce_max_ms", max, wait, max_ms)?,
                None => wait.saturating_mul(DEFAULT_DEBOUNCE_MAX_FACTOR).min(max_ms),
            };
            Some(Debounce {
                wait: Duration::from_millis(wait as u64),
                max: Duration::from_millis(max as u64),
            })
        }
    };
    let mode = match (mode.as_deref(), debounce) {
        (None, None) | (Some("skip"), None) => SingletonMode::Skip,
        (None, Some(_)) | (Some("replace"), _) => SingletonMode::Replace,
        (Some("skip"), Some(_)) => {
            return Err(invalid(
                "singleton.mode",
                "a debounce keeps the last payload: use replace",
            ));
        }
        (Some(_), _) => return Err(invalid("singleton.mode", "must be skip or replace")),
    };
    Ok(Some(Singleton { key, mode, debounce }))
}

/// Without `debounce_max_ms`, a debounced job waits at most this many
/// times its `debounce_ms` (within [`Limits::max_debounce`]).
pub const DEFAULT_DEBOUNCE_MAX_FACTOR: i64 = 10;

/// `00-<32 hex>-<16 hex>-<2 hex>`, not all zeros.
fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    matches!(parts.as_slice(), [version, trace, span, flags]
        if hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0'))
}

/// The job a validated request creates. A `run_at` in the future makes it `scheduled`.
pub fn new_job(id: JobId, tenant_id: TenantId, spec: JobSpec, now: Timestamp) -> Job {
    let debounced = spec.singleton.as_ref().and_then(|singleton| singleton.debounce);
    let run_at = match debounced {
        Some(debounce) => now.saturating_add(debounce.wait).unwrap_or(Timestamp::MAX),
        None => spec.run_at.unwrap_or(now),
    };
    Job {
        id,
        tenant_id,
        queue: spec.queue,
        payload: spec.payload,
        state: if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Queued
        },
        priority: spec.priority,
        run_at,
        attempt: 0,
        uncounted_attempts: 0,
        max_attempts: spec.max_attempts,
        timeout: spec.timeout,
        idempotency_key: spec.idempotency.map(|(key, _)| key),
        flow_key: spec.flow_key,
        resource: spec.resource,
        singleton_key: spec.singleton.map(|singleton| singleton.key),
        schema_version: spec.schema_version,
        lease: None,
        wait: None,
        parent: None,
        replay_of: None,
        traceparent: spec.traceparent,
        output: None,
        last_error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    }
}

/// An operator's replay of `original`: a new job `id`, queued now in the
/// same queue with the same options and `payload` (the original's when
/// `None`), linked to the original. Idempotency and singleton keys stay
/// with the original: the replay is a deliberate second run, and a parent's
/// step keeps its first child. A new payload comes with the schema version
/// it was validated against.
pub fn replay(original: &Job, id: JobId, payload: Option<(String, Option<u32>)>, now: Timestamp) -> Job {
    let (payload, schema_version) = payload.unwrap_or_else(|| (original.payload.clone(), original.schema_version));
    Job {
        id,
        tenant_id: original.tenant_id,
        queue: original.queue.clone(),
        payload,
        state: JobState::Queued,
        priority: original.priority,
        run_at: now,
        attempt: 0,
        uncounted_attempts: 0,
        max_attempts: original.max_attempts,
        timeout: original.timeout,
        idempotency_key: None,
        flow_key: original.flow_key.clone(),
        resource: original.resource.clone(),
        singleton_key: None,
        schema_version,
        lease: None,
        wait: None,
        parent: None,
        replay_of: Some(original.id),
        traceparent: None,
        output: None,
        last_error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    }
}

/// A singleton enqueue meets the key's unfinished job, `existing`: in
/// `replace` mode the job takes the new payload, and a debounce moves its
/// run time to `wait` from now, never past `max` from its first enqueue.
/// Only a job that never started can change (`InvalidState` otherwise): a
/// retry's earlier attempts ran with the payload it has, and its workflow
/// steps were recorded against it.
pub fn replace_payload(
    existing: &Job,
    (payload, schema_version): (String, Option<u32>),
    debounce: Option<Debounce>,
    now: Timestamp,
) -> Result<Job, super::Rejection> {
    if !matches!(existing.state, JobState::Scheduled | JobState::Queued) || existing.attempt > 0 {
        return Err(super::Rejection::InvalidState {
            state: existing.state,
            action: "replace the payload of",
        });
    }
    let mut next = existing.clone();
    next.payload = payload;
    next.schema_version = schema_version;
    next.updated_at = now;
    if let Some(debounce) = debounce {
        let latest = existing
            .created_at
            .saturating_add(debounce.max)
            .unwrap_or(Timestamp::MAX);
        next.run_at = now.saturating_add(debounce.wait).unwrap_or(Timestamp::MAX).min(latest);
        next.state = if next.run_at > now {
            JobState::Scheduled
        } else {
            JobState::Queued
        };
    }
    Ok(next)
}
