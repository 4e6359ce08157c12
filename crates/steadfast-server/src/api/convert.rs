//! Between wire types and core types.

use serde_json::value::RawValue;
use std::collections::BTreeMap;
use steadfast_core::lifecycle::{EnqueueRequest, Fingerprint, JobSpec};
use steadfast_core::limits::json_depth;

use steadfast_core::{
    Attempt, AttemptOutcome, Job, JobId, JobState, Limits, Reason, Step, StepState, Timestamp, WaitFor, step_key,
};
use steadfast_protocol as wire;
use steadfast_store::{JobRecord, LeasedJob};

use super::error::{ApiError, ErrorCode};

fn fingerprint(request: &wire::EnqueueRequest) -> Result<Fingerprint, ApiError> {
    let payload: serde_json::Value =
        serde_json::from_str(request.payload.get()).map_err(|e| ApiError::validation(format!("payload: {e}")))?;
    Ok(crate::engine::fingerprint(&crate::engine::Fingerprinted {
        queue: &request.queue,
        payload: &payload,
        max_attempts: request.max_attempts,
        timeout_secs: request.timeout_secs,
        run_at: request.run_at,
        priority: request.priority,
    }))
}

/// A list's page size: `requested`, or the default, within the bounds.
pub fn page_limit(requested: Option<u32>, limits: &Limits) -> Result<u32, ApiError> {
    let limit = requested.unwrap_or(limits.default_list_limit);
    if !(1..=limits.max_list_limit).contains(&limit) {
        return Err(ApiError::validation(format!(
            "limit: must be between 1 and {}",
            limits.max_list_limit
        )));
    }
    Ok(limit)
}

/// A batch request holds at least one item and at most `limit`
/// (`--max-batch-jobs`); `field` names its items.
pub fn check_batch_size(field: &str, len: usize, limit: usize) -> Result<(), ApiError> {
    if len == 0 {
        return Err(ApiError::validation(format!("{field}: at least one is needed")));
    }
    if len > limit {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!("a batch holds at most {limit} {field}, got {len}"),
        ));
    }
    Ok(())
}

/// Refuses JSON nested deeper than the limit allows.
pub fn check_depth(field: &str, json: &RawValue, limits: &Limits) -> Result<(), ApiError> {
    if json_depth(json.get()) > limits.max_json_depth {
        return Err(ApiError::validation(format!(
            "{field}: nested deeper than {} levels",
            limits.max_json_depth
        )));
    }
    Ok(())
}

/// An optional JSON field (output, signal payload) as the text to store:
/// depth-checked, `null` when absent.
pub fn optional_json(field: &str, json: Option<&RawValue>, limits: &Limits) -> Result<String, ApiError> {
    match json {
        Some(json) => {
            check_depth(field, json, limits)?;
            Ok(json.get().to_owned())
        }
        None => Ok("null".to_owned()),
    }
}

/// An operator's reason, trimmed and bounded.
pub fn reason(raw: &str) -> Result<Reason, ApiError> {
    Reason::new(raw).map_err(|e| ApiError::validation(format!("reason: {}", e.problem)))
}

/// An optional reason (`/retry`, `/cancel`, signals accept one).
pub fn optional_reason(raw: Option<&str>) -> Result<Option<Reason>, ApiError> {
    raw.map(reason).transpose()
}

/// Idempotency keys Steadfast makes itself: `schedule:{name}:{tick}` and
/// `producer:{id}:{sequence}`.
pub const RESERVED_KEY_PREFIXES: [&str; 2] = ["schedule:", "producer:"];

pub fn job_spec(
    request: wire::EnqueueRequest,
    traceparent: Option<String>,
    limits: &Limits,
    now: Timestamp,
) -> Result<JobSpec, ApiError> {
    check_depth("payload", &request.payload, limits)?;
    // Keys in these forms are Steadfast's own (a schedule's tick, a
    // producer's number): a client's key must not take their place.
    if let Some(key) = &request.idempotency_key
        && RESERVED_KEY_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
    {
        return Err(ApiError::validation(format!(
            "idempotency_key: keys starting with {} are reserved",
            RESERVED_KEY_PREFIXES.join(" or ")
        )));
    }
    let fingerprint = match (&request.idempotency_key, &request.producer) {
        (None, None) => [0; 32],
        _ => fingerprint(&request)?,
    };
    let request = EnqueueRequest {
        queue: request.queue,
        payload: request.payload.get().to_owned(),
        idempotency_key: request.idempotency_key,
        max_attempts: request.max_attempts,
        timeout_secs: request.timeout_secs,
        run_at: request.run_at,
        priority: request.priority,
        traceparent,
        flow_key: request.flow_key,
        resource: request.resource,
        singleton: request.singleton.map(|singleton| {
            let mode = singleton.mode.map(|mode| match mode {
                wire::SingletonMode::Skip => "skip".to_owned(),
                wire::SingletonMode::Replace => "replace".to_owned(),
            });
            (singleton.key, mode)
        }),
        debounce_ms: request.debounce_ms,
        debounce_max_ms: request.debounce_max_ms,
        schema_version: request.schema_version,
        producer: request.producer.map(|producer| (producer.id, producer.sequence)),
    };
    Ok(request.validate(limits, fingerprint, now)?)
}

pub fn raw_json(text: &str) -> Result<wire::Json, ApiError> {
    RawValue::from_string(text.to_owned()).map_err(|_| {
        ApiError::from(steadfast_store::StoreError::Corrupt(
            "stored JSON does not parse".into(),
        ))
    })
}

pub fn state(state: JobState) -> wire::JobState {
    match state {
        JobState::Scheduled => wire::JobState::Scheduled,
        JobState::Queued => wire::JobState::Queued,
        JobState::Running => wire::JobState::Running,
        JobState::Waiting => wire::JobState::Waiting,
        JobState::Succeeded => wire::JobState::Succeeded,
        JobState::Dead => wire::JobState::Dead,
        JobState::Cancelled => wire::JobState::Cancelled,
    }
}

pub fn state_from_wire(state: wire::JobState) -> JobState {
    match state {
        wire::JobState::Scheduled => JobState::Scheduled,
        wire::JobState::Queued => JobState::Queued,
        wire::JobState::Running => JobState::Running,
        wire::JobState::Waiting => JobState::Waiting,
        wire::JobState::Succeeded => JobState::Succeeded,
        wire::JobState::Dead => JobState::Dead,
        wire::JobState::Cancelled => JobState::Cancelled,
    }
}

fn outcome(outcome: AttemptOutcome) -> wire::AttemptOutcome {
    match outcome {
        AttemptOutcome::Succeeded => wire::AttemptOutcome::Succeeded,
        AttemptOutcome::Failed => wire::AttemptOutcome::Failed,
        AttemptOutcome::LeaseExpired => wire::AttemptOutcome::LeaseExpired,
        AttemptOutcome::TimedOut => wire::AttemptOutcome::TimedOut,
        AttemptOutcome::Cancelled => wire::AttemptOutcome::Cancelled,
        AttemptOutcome::Suspended => wire::AttemptOutcome::Suspended,
        AttemptOutcome::Released => wire::AttemptOutcome::Released,
    }
}

fn error_info(error: &steadfast_core::AttemptError) -> wire::ErrorInfo {
    wire::ErrorInfo {
        message: error.message.clone(),
        kind: error.kind.clone(),
    }
}

pub fn job(job: &Job) -> Result<wire::Job, ApiError> {
    Ok(wire::Job {
        id: job.id.0,
        queue: job.queue.to_string(),
        state: state(job.state),
        payload: raw_json(&job.payload)?,
        priority: job.priority,
        run_at: job.run_at,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        attempts_left: job.attempts_left(),
        timeout_secs: job.timeout.as_secs(),
        idempotency_key: job.idempotency_key.as_ref().map(ToString::to_string),
        flow_key: job.flow_key.as_ref().map(ToString::to_string),
        resource: job.resource.as_ref().map(ToString::to_string),
        singleton_key: job.singleton_key.as_ref().map(ToString::to_string),
        lease: job.lease.as_ref().map(|lease| wire::LeaseInfo {
            worker_id: lease.worker_id.to_string(),
            started_at: lease.started_at,
            expires_at: lease.expires_at,
            deadline: lease.deadline,
        }),
        output: job.output.as_deref().map(raw_json).transpose()?,
        last_error: job.last_error.as_ref().map(error_info),
        created_at: job.created_at,
        updated_at: job.updated_at,
        finished_at: job.finished_at,
        wait: job.wait.as_ref().map(|wait| wire::WaitInfo {
            step: wait.step.to_string(),
            signal: match &wait.wait_for {
                WaitFor::Signal { name, .. } => Some(name.to_string()),
                WaitFor::Until(_) => None,
            },
            until: wait.deadline(),
        }),
        parent: job.parent.as_ref().map(|parent| wire::ParentInfo {
            id: parent.job_id.0,
            step: parent.step.to_string(),
        }),
        replay_of: job.replay_of.map(|id| id.0),
        schema_version: job.schema_version,
        attempts: None,
        steps: None,
        signals: None,
        children: None,
        event: None,
    })
}

fn attempt(attempt: &Attempt) -> wire::AttemptInfo {
    wire::AttemptInfo {
        attempt: attempt.number,
        worker_id: attempt.worker_id.to_string(),
        started_at: attempt.started_at,
        ended_at: Some(attempt.ended_at),
        outcome: Some(outcome(attempt.outcome)),
        error: attempt.error.as_ref().map(error_info),
    }
}

/// A job with its full attempt history.
pub fn job_detail(record: &JobRecord) -> Result<wire::Job, ApiError> {
    let mut attempts: Vec<_> = record.attempts.iter().map(attempt).collect();
    if let Some((number, lease)) = record.job.running_attempt() {
        attempts.push(wire::AttemptInfo {
            attempt: number,
            worker_id: lease.worker_id.to_string(),
            started_at: lease.started_at,
            ended_at: None,
            outcome: None,
            error: None,
        });
    }
    let steps = record
        .steps
        .iter()
        .map(|step| step_info(step, &record.job))
        .collect::<Result<_, _>>()?;
    let signals = record
        .signals
        .iter()
        .map(|s| {
            Ok(wire::SignalInfo {
                name: s.signal.name.to_string(),
                payload: raw_json(&s.signal.payload)?,
                received_at: s.signal.received_at,
                consumed_at: s.consumed_at,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let children = record
        .children
        .iter()
        .map(|child| wire::ChildInfo {
            id: child.id.0,
            queue: child.queue.to_string(),
            state: state(child.state),
            step: child.parent.as_ref().map(|p| p.step.to_string()).unwrap_or_default(),
        })
        .collect();
    Ok(wire::Job {
        attempts: Some(attempts),
        steps: Some(steps),
        signals: Some(signals),
        children: Some(children),
        event: None,
        ..job(&record.job)?
    })
}

pub fn step_info(step: &Step, job: &Job) -> Result<wire::StepInfo, ApiError> {
    step_info_as(step, job.id, step.state(job))
}

/// A step just written by the running attempt of job `id`: completed, or started by it.
pub fn running_step_info(step: &Step, id: JobId) -> Result<wire::StepInfo, ApiError> {
    step_info_as(
        step,
        id,
        if step.is_completed() {
            StepState::Completed
        } else {
            StepState::Started
        },
    )
}

fn step_info_as(step: &Step, id: JobId, state: StepState) -> Result<wire::StepInfo, ApiError> {
    Ok(wire::StepInfo {
        name: step.name.to_string(),
        state: match state {
            StepState::Completed => wire::StepState::Completed,
            StepState::Started => wire::StepState::Started,
            StepState::Uncertain => wire::StepState::Uncertain,
        },
        attempt: step.attempt,
        started_at: step.started_at,
        completed_at: step.completed_at,
        output: step.output.as_deref().map(raw_json).transpose()?,
        idempotency_key: step_key(id, &step.name),
    })
}

pub fn leased_job(leased: &LeasedJob, lease_ttl: std::time::Duration) -> Result<wire::LeasedJob, ApiError> {
    let job = &leased.job;
    let mut steps = BTreeMap::new();
    let mut uncertain_steps = BTreeMap::new();
    for step in &leased.steps {
        match (&step.output, step.state(job)) {
            (Some(output), StepState::Completed) => {
                steps.insert(step.name.to_string(), raw_json(output)?);
            }
            (_, StepState::Uncertain) => {
                let attempt = leased.uncertain_attempts.iter().find(|a| a.number == step.attempt);
                uncertain_steps.insert(
                    step.name.to_string(),
                    wire::UncertainStep {
                        attempt: step.attempt,
                        worker_id: attempt.map(|a| a.worker_id.to_string()).unwrap_or_default(),
                        started_at: step.started_at,
                        attempt_ended_at: attempt.map(|a| a.ended_at),
                        attempt_outcome: attempt.map(|a| outcome(a.outcome)),
                    },
                );
            }
            _ => {}
        }
    }
    let lease = job.lease.as_ref().ok_or_else(|| {
        ApiError::from(steadfast_store::StoreError::Corrupt(
            "leased job without a lease".into(),
        ))
    })?;
    Ok(wire::LeasedJob {
        id: job.id.0,
        queue: job.queue.to_string(),
        payload: raw_json(&job.payload)?,
        attempt: job.attempt,
        lease_token: lease.token.clone(),
        lease_expires_at: lease.expires_at,
        deadline: lease.deadline,
        lease_ttl_ms: lease_ttl.as_millis() as u64,
        steps,
        uncertain_steps,
        traceparent: crate::telemetry::lease_traceparent(job),
        flow_key: job.flow_key.as_ref().map(ToString::to_string),
        resource: job.resource.as_ref().map(ToString::to_string),
        schema_version: job.schema_version,
    })
}

/// A rate as stored: the burst defaults to the limit.
pub fn rate(rate: wire::Rate) -> steadfast_store::flow::Rate {
    steadfast_store::flow::Rate {
        limit: rate.limit,
        period_ms: rate.period_ms,
        burst: rate.burst.unwrap_or(rate.limit),
    }
}

pub fn wire_rate(rate: steadfast_store::flow::Rate) -> wire::Rate {
    wire::Rate {
        limit: rate.limit,
        period_ms: rate.period_ms,
        burst: Some(rate.burst),
    }
}
