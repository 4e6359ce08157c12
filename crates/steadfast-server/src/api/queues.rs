//! Per-queue settings: how long a queue keeps its finished jobs.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use steadfast_core::{Action, QueueName};
use steadfast_protocol as wire;
use steadfast_store::QueueRetention;

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
