//! A new job, from a producer's request.

use std::time::Duration;

use crate::{FlowKey, IdempotencyKey, Job, JobId, JobState, Limits, QueueName, ResourceName, TenantId, Timestamp};

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
        let idempotency = self
            .idempotency_key
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
        let traceparent = self.traceparent.filter(|tp| valid_traceparent(tp));
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
        })
    }
}

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
    let run_at = spec.run_at.unwrap_or(now);
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
        lease: None,
        wait: None,
        parent: None,
        traceparent: spec.traceparent,
        output: None,
        last_error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    }
}
