//! Per-queue settings: how long a queue keeps its finished jobs, and the
//! flow rules its leases obey.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use steadfast_core::{Action, JobState, QueueName};
use steadfast_protocol as wire;
use steadfast_store::flow::RetryBudget;

use super::convert::{rate, wire_rate};
use steadfast_store::{PolicyPatch, QueuePolicy, QueueRetention};

use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use crate::Engine;

/// The longest retention a queue may set: 10 years.
const MAX_RETENTION_SECS: u64 = 315_360_000;

fn queue_name(queue: String) -> Result<QueueName, ApiError> {
    QueueName::new(queue).map_err(|e| ApiError::validation(format!("queue: {}", e.problem)))
}

fn retention(engine: &Engine, queue: &QueueName, own: QueueRetention) -> wire::QueueRetention {
    let defaults = engine.config().tenants.retention;
    wire::QueueRetention {
        queue: queue.to_string(),
        retain_succeeded_secs: own.succeeded.map(|kept| kept.as_secs()),
        retain_failed_secs: own.failed.map(|kept| kept.as_secs()),
        effective_succeeded_secs: own.succeeded.unwrap_or(defaults.succeeded).as_secs(),
        effective_failed_secs: own.failed.unwrap_or(defaults.failed).as_secs(),
    }
}

fn seconds(field: &str, value: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match value {
        None => Ok(None),
        Some(secs) if (1..=MAX_RETENTION_SECS).contains(&secs) => Ok(Some(Duration::from_secs(secs))),
        Some(_) => Err(ApiError::validation(format!(
            "{field}: must be between 1 and {MAX_RETENTION_SECS}"
        ))),
    }
}

/// How long the queue keeps finished jobs (admin and reader).
#[utoipa::path(
    get, path = "/v1/queues/{queue}/retention", tag = "queues",
    params(("queue" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    responses((status = 200, body = wire::QueueRetention), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_retention(
    State(engine): State<Engine>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<wire::QueueRetention>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let queue = queue_name(queue)?;
    let own = engine.store().queue_retention(&caller.scope, &queue).await?;
    Ok(Json(retention(&engine, &queue, own)))
}

/// Sets how long the queue keeps finished jobs (admin; audited). Pruning
/// applies it from its next pass.
#[utoipa::path(
    put, path = "/v1/queues/{queue}/retention", tag = "queues",
    params(("queue" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    request_body = wire::QueueRetentionRequest,
    responses((status = 200, body = wire::QueueRetention), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn set_retention(
    State(engine): State<Engine>,
    caller: Caller,
    Path(queue): Path<String>,
    ApiJson(request): ApiJson<wire::QueueRetentionRequest>,
) -> Result<Json<wire::QueueRetention>, ApiError> {
    caller.require(Action::OperatorAction)?;
    let queue = queue_name(queue)?;
    let own = QueueRetention {
        succeeded: seconds("retain_succeeded_secs", request.retain_succeeded_secs)?,
        failed: seconds("retain_failed_secs", request.retain_failed_secs)?,
    };
    engine
        .store()
        .set_queue_retention(&caller.scope, &queue, own, engine.now())
        .await?;
    Ok(Json(retention(&engine, &queue, own)))
}

/// The default reserve of a retry budget: one retry a second, so a queue
/// whose first attempts stopped still retries, slowly.
const DEFAULT_BUDGET_MIN_PER_SEC: f64 = 1.0;

fn patch(request: wire::QueuePolicyRequest) -> PolicyPatch {
    let fairness = |fairness: wire::Fairness| match fairness {
        wire::Fairness::FlowKey => steadfast_store::flow::Fairness::FlowKey,
    };
    PolicyPatch {
        paused: request.paused,
        concurrency: request.concurrency,
        key_concurrency: request.key_concurrency,
        rate: request.rate.map(|set| set.map(rate)),
        key_rate: request.key_rate.map(|set| set.map(rate)),
        fairness: request.fairness.map(|set| set.map(fairness)),
        weights: request.weights.map(Option::unwrap_or_default),
        retry_budget: request.retry_budget.map(|set| {
            set.map(|budget| RetryBudget {
                ratio: budget.ratio,
                min_per_sec: budget.min_per_sec.unwrap_or(DEFAULT_BUDGET_MIN_PER_SEC),
            })
        }),
    }
}

pub(crate) fn wire_policy(queue: &QueueName, policy: QueuePolicy) -> wire::QueuePolicy {
    wire::QueuePolicy {
        queue: queue.to_string(),
        paused: policy.paused,
        concurrency: policy.concurrency,
        key_concurrency: policy.key_concurrency,
        rate: policy.rate.map(wire_rate),
        key_rate: policy.key_rate.map(wire_rate),
        fairness: policy.fairness.map(|_| wire::Fairness::FlowKey),
        weights: policy.weights,
        retry_budget: policy.retry_budget.map(|budget| wire::RetryBudget {
            ratio: budget.ratio,
            min_per_sec: Some(budget.min_per_sec),
        }),
    }
}

/// The queue's flow policy (admin and reader).
#[utoipa::path(
    get, path = "/v1/queues/{queue}/policy", tag = "queues",
    params(("queue" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    responses((status = 200, body = wire::QueuePolicy), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_policy(
    State(engine): State<Engine>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<wire::QueuePolicy>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let queue = queue_name(queue)?;
    let policy = engine.store().queue_policy(&caller.scope, &queue).await?;
    Ok(Json(wire_policy(&queue, policy)))
}

/// Changes the queue's flow policy (admin; audited as `queue.policy_set`).
/// A merge patch: fields left out stay, `null` removes a rule. The next
/// lease on any node obeys it.
#[utoipa::path(
    put, path = "/v1/queues/{queue}/policy", tag = "queues",
    params(("queue" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    request_body = wire::QueuePolicyRequest,
    responses((status = 200, body = wire::QueuePolicy), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn set_policy(
    State(engine): State<Engine>,
    caller: Caller,
    Path(queue): Path<String>,
    ApiJson(request): ApiJson<wire::QueuePolicyRequest>,
) -> Result<Json<wire::QueuePolicy>, ApiError> {
    caller.require(Action::OperatorAction)?;
    let queue = queue_name(queue)?;
    let policy = engine
        .store()
        .set_queue_policy(&caller.scope, &queue, patch(request), engine.now())
        .await?;
    // Workers waiting on the queue ask again under the new rules (a
    // resumed queue, a raised limit).
    engine.wake(caller.scope.tenant_id(), &queue);
    Ok(Json(wire_policy(&queue, policy)))
}

/// The tenant's queues: each with its policy, unfinished jobs by state,
/// the busiest keys and the ready jobs flow control holds, by reason
/// (admin and reader).
#[utoipa::path(
    get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = wire::QueueList)),
    security(("bearer" = []))
)]
pub async fn list(State(engine): State<Engine>, caller: Caller) -> Result<Json<wire::QueueList>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let overviews = engine.store().queue_overviews(&caller.scope, engine.now()).await?;
    let queues = overviews
        .into_iter()
        .map(|overview| {
            let count = |state: JobState| overview.counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
            let held = overview.held;
            wire::QueueInfo {
                queue: overview.queue.to_string(),
                counts: wire::QueueCounts {
                    scheduled: count(JobState::Scheduled),
                    queued: count(JobState::Queued),
                    running: count(JobState::Running),
                    waiting: count(JobState::Waiting),
                },
                busiest_keys: overview
                    .busiest_keys
                    .into_iter()
                    .map(|(flow_key, running)| wire::KeyRunning { flow_key, running })
                    .collect(),
                held: wire::HeldJobs {
                    paused: held.paused,
                    breaker_open: held.breaker_open,
                    concurrency: held.concurrency,
                    key_concurrency: held.key_concurrency,
                    rate: held.rate,
                    retry_budget: held.retry_budget,
                },
                policy: wire_policy(&overview.queue, overview.policy),
            }
        })
        .collect();
    Ok(Json(wire::QueueList { queues }))
}
