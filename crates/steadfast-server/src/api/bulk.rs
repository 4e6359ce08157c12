//! Bulk retry and cancel by filter: a dry-run count, then an operation
//! that runs in the background and can be looked at and stopped.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use steadfast_core::{Action, QueueName};
use steadfast_protocol as wire;
use steadfast_store::bulk::{self, BulkSpec};

use super::convert;
use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use crate::Engine;

/// The most operations `GET /v1/bulk` lists.
const LISTED: u32 = 100;

fn action(action: wire::BulkAction) -> bulk::BulkAction {
    match action {
        wire::BulkAction::Retry => bulk::BulkAction::Retry,
        wire::BulkAction::Cancel => bulk::BulkAction::Cancel,
    }
}

/// The wire filter, checked: a valid queue name, a state the action
/// applies to, a bounded error kind, a time range that is not empty.
pub fn filter(act: bulk::BulkAction, filter: wire::BulkFilter) -> Result<bulk::BulkFilter, ApiError> {
    if let Some(queue) = &filter.queue {
        QueueName::new(queue.as_str()).map_err(|e| ApiError::validation(format!("filter.queue: {}", e.problem)))?;
    }
    let state = filter.state.map(convert::state_from_wire);
    if let Some(state) = state
        && !act.states().contains(&state)
    {
        let allowed: Vec<&str> = act.states().iter().map(|s| s.as_str()).collect();
        return Err(ApiError::validation(format!(
            "filter.state: {} applies to jobs that are {}",
            act.as_str(),
            allowed.join(", ")
        )));
    }
    if filter
        .error_kind
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 128)
    {
        return Err(ApiError::validation("filter.error_kind: 1 to 128 bytes"));
    }
    if let (Some(after), Some(before)) = (filter.created_after, filter.created_before)
        && after >= before
    {
        return Err(ApiError::validation(
            "filter: created_after must be before created_before",
        ));
    }
    Ok(bulk::BulkFilter {
        queue: filter.queue,
        state: state.map(|s| s.as_str().to_owned()),
        created_after: filter.created_after,
        created_before: filter.created_before,
        error_kind: filter.error_kind,
    })
}

pub fn operation(operation: &bulk::BulkOperation) -> wire::BulkOperation {
    let spec = &operation.spec;
    wire::BulkOperation {
        id: operation.id,
        status: match operation.status {
            bulk::BulkStatus::Running => wire::BulkStatus::Running,
            bulk::BulkStatus::Completed => wire::BulkStatus::Completed,
            bulk::BulkStatus::Cancelled => wire::BulkStatus::Cancelled,
        },
        action: match spec.action {
            bulk::BulkAction::Retry => wire::BulkAction::Retry,
            bulk::BulkAction::Cancel => wire::BulkAction::Cancel,
        },
        filter: wire::BulkFilter {
            queue: spec.filter.queue.clone(),
            state: spec
                .filter
                .state
                .as_deref()
                .and_then(|s| s.parse().ok())
                .map(convert::state),
            created_after: spec.filter.created_after,
            created_before: spec.filter.created_before,
            error_kind: spec.filter.error_kind.clone(),
        },
        reason: spec.reason.clone(),
        matched: operation.matched,
        done: operation.done,
        failed: operation.failed,
        failures: operation
            .failures
            .iter()
            .map(|f| wire::BulkFailure {
                job_id: f.job_id.clone(),
                error: f.error.clone(),
            })
            .collect(),
        created_by: wire::BulkActor {
            key_id: spec.key_id.clone(),
            name: spec.key_name.clone(),
        },
        created_at: operation.created_at,
        updated_at: operation.updated_at,
        finished_at: operation.finished_at,
    }
}

fn operation_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

/// Operator action: retry or cancel every job a filter matches.
///
/// With `dry_run`, only counts them. Otherwise starts an operation that
/// works through them in batches in the background (it survives a
/// restart), audits every job it changes with its id and `reason`, and
/// answers at once; follow it with `GET /v1/bulk/{id}`. Jobs created after
/// the start are left alone.
#[utoipa::path(
    post, path = "/v1/jobs/bulk", tag = "operators",
    request_body = wire::BulkRequest,
    responses(
        (status = 202, description = "Started; durable on disk before this answer", body = wire::BulkOperation),
        (status = 200, description = "The dry run's count", body = wire::BulkCount),
        (status = 422, description = "`validation_failed`, or `limit_exceeded` (too many running at once)", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn start(
    State(engine): State<Engine>,
    caller: Caller,
    ApiJson(request): ApiJson<wire::BulkRequest>,
) -> Result<Response, ApiError> {
    caller.require(Action::OperatorAction)?;
    let act = action(request.action);
    let reason = convert::reason(&request.reason)?;
    let filter = filter(act, request.filter)?;
    if request.dry_run {
        let matched = engine.count_bulk(&caller.scope, act, &filter, None).await?;
        return Ok(Json(wire::BulkCount { matched, dry_run: true }).into_response());
    }
    let spec = BulkSpec {
        action: act,
        filter,
        reason: reason.as_str().to_owned(),
        key_id: caller.key_id.to_string(),
        key_name: caller.key_name.clone(),
    };
    let started = engine.start_bulk(&caller.scope, spec).await?;
    Ok((StatusCode::ACCEPTED, Json(operation(&started))).into_response())
}

/// The tenant's bulk operations, newest first (at most 100).
#[utoipa::path(
    get, path = "/v1/bulk", tag = "operators",
    responses((status = 200, body = wire::BulkList)),
    security(("bearer" = []))
)]
pub async fn list(State(engine): State<Engine>, caller: Caller) -> Result<Json<wire::BulkList>, ApiError> {
    caller.require(Action::ListJobs)?;
    let operations = engine.store().list_bulk(&caller.scope, LISTED).await?;
    Ok(Json(wire::BulkList {
        operations: operations.iter().map(operation).collect(),
    }))
}

/// A bulk operation: who started it, when, the filter, how far it got.
#[utoipa::path(
    get, path = "/v1/bulk/{id}", tag = "operators",
    params(("id" = String, Path, description = "Bulk operation id")),
    responses(
        (status = 200, body = wire::BulkOperation),
        (status = 404, description = "`not_found`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::BulkOperation>, ApiError> {
    caller.require(Action::ListJobs)?;
    let found = engine
        .store()
        .bulk(&caller.scope, operation_id(&id)?)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(operation(&found)))
}

/// Operator action: stop a running bulk operation; what it did stays done.
#[utoipa::path(
    post, path = "/v1/bulk/{id}/cancel", tag = "operators",
    params(("id" = String, Path, description = "Bulk operation id")),
    responses(
        (status = 200, description = "Stopped (a finished operation is answered as it is)", body = wire::BulkOperation),
        (status = 404, description = "`not_found`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::BulkOperation>, ApiError> {
    caller.require(Action::OperatorAction)?;
    let stopped = engine.cancel_bulk(&caller.scope, operation_id(&id)?).await?;
    Ok(Json(operation(&stopped)))
}
