//! Workers: lease, heartbeat, complete, fail.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use steadfast_core::lifecycle::Failure;
use steadfast_core::limits::truncate_utf8;
use steadfast_core::{Action, AttemptError, JobId, QueueName, WorkerId};
use steadfast_protocol as wire;

use super::convert;
use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use super::jobs::job_id;
use crate::Engine;
use steadfast_store::Completing;

/// Most queues one lease request may name.
const MAX_LEASE_QUEUES: usize = 32;
/// Longest error kind kept.
const MAX_ERROR_KIND_BYTES: usize = 128;

/// Lease jobs, long-polling up to `wait_ms` when none is ready.
#[utoipa::path(
    post, path = "/v1/lease", tag = "workers",
    request_body = wire::LeaseRequest,
    responses((status = 200, description = "Leased jobs (possibly none)", body = wire::LeaseResponse), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn lease(
    State(engine): State<Engine>,
    caller: Caller,
    ApiJson(request): ApiJson<wire::LeaseRequest>,
) -> Result<Json<wire::LeaseResponse>, ApiError> {
    caller.require(Action::Lease)?;
    let limits = engine.limits();
    if request.queues.is_empty() || request.queues.len() > MAX_LEASE_QUEUES {
        return Err(ApiError::validation(format!(
            "queues: name between 1 and {MAX_LEASE_QUEUES} queues"
        )));
    }
    let mut queues = Vec::with_capacity(request.queues.len());
    for queue in request.queues {
        let queue = QueueName::new(queue).map_err(|e| ApiError::validation(format!("queues: {}", e.problem)))?;
        if !queues.contains(&queue) {
            queues.push(queue);
        }
    }
    let max_jobs = request.max_jobs.unwrap_or(1);
    if max_jobs == 0 || max_jobs > limits.max_lease_jobs {
        return Err(ApiError::validation(format!(
            "max_jobs: must be between 1 and {}",
            limits.max_lease_jobs
        )));
    }
    let wait = Duration::from_millis(request.wait_ms.unwrap_or(0));
    if wait > limits.max_lease_wait {
        return Err(ApiError::validation(format!(
            "wait_ms: at most {}",
            limits.max_lease_wait.as_millis()
        )));
    }
    let worker_id =
        WorkerId::new(request.worker_id).map_err(|e| ApiError::validation(format!("worker_id: {}", e.problem)))?;
    let jobs = engine.lease(&caller, queues, max_jobs, worker_id, wait).await?;
    Ok(Json(wire::LeaseResponse {
        jobs: jobs
            .iter()
            .map(|job| convert::leased_job(job, engine.limits().lease_ttl))
            .collect::<Result<_, _>>()?,
    }))
}

/// Extend a lease (never past the attempt's deadline).
#[utoipa::path(
    post, path = "/v1/jobs/{id}/heartbeat", tag = "workers",
    params(("id" = String, Path, description = "Job id")),
    request_body = wire::HeartbeatRequest,
    responses(
        (status = 200, body = wire::HeartbeatResponse),
        (status = 409, description = "`lease_lost`: stop working on this job", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn heartbeat(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<wire::HeartbeatRequest>,
) -> Result<Json<wire::HeartbeatResponse>, ApiError> {
    caller.require(Action::ActOnLease)?;
    let job = engine
        .heartbeat(&caller.scope, job_id(&id)?, &request.lease_token)
        .await?;
    let lease = job
        .lease
        .as_ref()
        .ok_or_else(|| ApiError::from(steadfast_store::StoreError::LeaseLost))?;
    Ok(Json(wire::HeartbeatResponse {
        lease_expires_at: lease.expires_at,
    }))
}

/// Report success, with an optional JSON output.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/complete", tag = "workers",
    params(("id" = String, Path, description = "Job id")),
    request_body = wire::CompleteRequest,
    responses(
        (status = 200, body = wire::Job),
        (status = 409, description = "`lease_lost`: the lease expired or was superseded; nothing changed", body = wire::ErrorBody),
        (status = 422, description = "`output_invalid`: the output fails the output schema of the version the payload passed (`violations` lists where and why); nothing changed, the lease is still held", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn complete(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<wire::CompleteRequest>,
) -> Result<Json<wire::Job>, ApiError> {
    caller.require(Action::ActOnLease)?;
    let output = convert::optional_json("output", request.output.as_deref(), engine.limits())?;
    let job = engine
        .complete(&caller.scope, job_id(&id)?, &request.lease_token, output)
        .await?;
    Ok(Json(convert::job(&job)?))
}

/// Report many successes in one request; the storage commits them together
/// where it can (SQLite's group commit). Each completion stands alone: one
/// whose lease was lost, or that storage could not make durable
/// (`unavailable`), gets its own `error` and the others still complete. A
/// malformed batch (empty, too large, an output too deep) is refused whole
/// and changes nothing.
#[utoipa::path(
    post, path = "/v1/jobs/batch/complete", tag = "workers",
    request_body = wire::BatchCompleteRequest,
    responses(
        (status = 200, body = wire::BatchCompleteResponse),
        (status = 422, description = "`batch_too_large` or `validation_failed` (empty, a job twice, an output too deep); nothing changed", body = wire::ErrorBody),
        (status = 503, description = "`unavailable`: storage failed; nothing in the batch changed", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn complete_batch(
    State(engine): State<Engine>,
    caller: Caller,
    ApiJson(request): ApiJson<wire::BatchCompleteRequest>,
) -> Result<Json<wire::BatchCompleteResponse>, ApiError> {
    caller.require(Action::ActOnLease)?;
    convert::check_batch_size("completions", request.completions.len(), engine.limits().max_batch_jobs)?;
    let mut ids = std::collections::HashSet::with_capacity(request.completions.len());
    if let Some(twice) = request.completions.iter().find(|completion| !ids.insert(completion.id)) {
        return Err(ApiError::validation(format!(
            "completions: job {} appears more than once",
            twice.id
        )));
    }
    // Every output is checked before anything changes.
    let outputs = request
        .completions
        .iter()
        .map(|completion| convert::optional_json("output", completion.output.as_deref(), engine.limits()))
        .collect::<Result<Vec<_>, _>>()?;
    let items = request
        .completions
        .iter()
        .zip(outputs)
        .map(|(completion, output)| Completing {
            id: JobId(completion.id),
            token: completion.lease_token.clone(),
            output,
        })
        .collect();
    // One transaction for the batch. If it fails nothing changed, and the
    // whole request fails (503 when storage is unavailable), so a client may
    // retry it or send the completions one by one.
    let ended: Vec<Result<_, wire::ErrorDetail>> = engine
        .complete_many(&caller.scope, items)
        .await?
        .into_iter()
        .map(|ended| ended.map_err(|error| ApiError::from(error).detail()))
        .collect();
    let mut results = Vec::with_capacity(ended.len());
    for (completion, ended) in request.completions.iter().zip(ended) {
        let (state, error) = match ended {
            Ok(ended) => (Some(convert::state(ended.job.state)), None),
            Err(detail) => (None, Some(detail)),
        };
        results.push(wire::CompletionResult {
            id: completion.id,
            state,
            error,
        });
    }
    Ok(Json(wire::BatchCompleteResponse { results }))
}

/// Hand a leased job back unfinished (a worker shutting down): the attempt
/// ends `released` without being spent, and the job is ready again at once.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/release", tag = "workers",
    params(("id" = String, Path, description = "Job id")),
    request_body = wire::ReleaseRequest,
    responses(
        (status = 200, description = "The job, queued again in its old place (or dead, past 10,000 uncounted attempts with none left)", body = wire::Job),
        (status = 409, description = "`lease_lost`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn release(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<wire::ReleaseRequest>,
) -> Result<Json<wire::Job>, ApiError> {
    caller.require(Action::ActOnLease)?;
    let ended = engine
        .release(&caller.scope, job_id(&id)?, &request.lease_token)
        .await?;
    Ok(Json(convert::job(&ended.job)?))
}

/// Report failure; the retry policy decides what happens next.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/fail", tag = "workers",
    params(("id" = String, Path, description = "Job id")),
    request_body = wire::FailRequest,
    responses(
        (status = 200, description = "The job after the failure: scheduled for a retry, or dead", body = wire::Job),
        (status = 409, description = "`lease_lost`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn fail(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<wire::FailRequest>,
) -> Result<Json<wire::Job>, ApiError> {
    caller.require(Action::ActOnLease)?;
    let wire::ErrorInfo { mut message, mut kind } = request.error;
    truncate_utf8(&mut message, engine.limits().max_error_message_bytes);
    if let Some(kind) = kind.as_mut() {
        truncate_utf8(kind, MAX_ERROR_KIND_BYTES);
    }
    let max_wait = engine.limits().max_retry_after;
    let retry_after = match request.retry_after_ms.map(Duration::from_millis) {
        Some(wait) if wait > max_wait => {
            return Err(ApiError::validation(format!(
                "retry_after_ms: must be at most {}",
                max_wait.as_millis()
            )));
        }
        wait => wait,
    };
    let failure = Failure {
        error: AttemptError { message, kind },
        retryable: request.retryable.unwrap_or(true),
        retry_after,
    };
    let job = engine
        .fail(&caller.scope, job_id(&id)?, &request.lease_token, failure)
        .await?;
    Ok(Json(convert::job(&job)?))
}
