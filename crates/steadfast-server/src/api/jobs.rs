//! Producers and operators: enqueue, read, list, retry, cancel.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use steadfast_core::{Action, JobId, QueueName};
use steadfast_protocol as wire;
use steadfast_store::{JobCursor, JobQuery, JobRecord, StoreError};
use utoipa::IntoParams;

use super::convert;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Caller, OptionalApiJson};
use crate::{Engine, telemetry};

/// Parses a job id from the path. Anything that is not a UUID names no job.
pub fn job_id(raw: &str) -> Result<JobId, ApiError> {
    let id: JobId = raw.parse().map_err(|_| ApiError::not_found())?;
    tracing::Span::current().record("job_id", tracing::field::display(id));
    Ok(id)
}

/// Enqueue a job.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = wire::EnqueueRequest,
    responses(
        (status = 201, description = "Created; durable on disk before this answer", body = wire::Job),
        (status = 200, description = "Replayed: the idempotency key matched; the original job, with header `Idempotent-Replayed: true`", body = wire::Job),
        (status = 422, description = "`validation_failed`, `idempotency_key_reused`, or `payload_invalid` (the payload fails the queue's schema; `violations` lists where and why)", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn enqueue(
    State(engine): State<Engine>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<wire::EnqueueRequest>,
) -> Result<Response, ApiError> {
    caller.require(Action::Enqueue)?;
    let spec = convert::job_spec(
        request,
        telemetry::job_traceparent(&headers),
        engine.limits(),
        engine.now(),
    )?;
    let enqueued = engine.enqueue(&caller.scope, vec![spec]).await?.remove(0);
    let body = Json(convert::job(&enqueued.job)?);
    Ok(match (enqueued.replayed, enqueued.singleton) {
        (true, _) => ([(wire::IDEMPOTENT_REPLAYED_HEADER, "true")], body).into_response(),
        (false, Some(outcome)) => ([(wire::SINGLETON_HEADER, outcome.as_str())], body).into_response(),
        (false, None) => (StatusCode::CREATED, body).into_response(),
    })
}

/// Enqueue several jobs: all are created, or none.
#[utoipa::path(
    post, path = "/v1/jobs/batch", tag = "jobs",
    request_body = wire::BatchEnqueueRequest,
    responses(
        (status = 201, description = "Created (some items may be replays)", body = wire::BatchEnqueueResponse),
        (status = 200, description = "Every item was a replay", body = wire::BatchEnqueueResponse),
        (status = 422, description = "`validation_failed`, `batch_too_large`, `idempotency_key_reused` or `payload_invalid`; nothing was created", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn enqueue_batch(
    State(engine): State<Engine>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<wire::BatchEnqueueRequest>,
) -> Result<Response, ApiError> {
    caller.require(Action::Enqueue)?;
    convert::check_batch_size("jobs", request.jobs.len(), engine.limits().max_batch_jobs)?;
    let now = engine.now();
    let traceparent = telemetry::job_traceparent(&headers);
    let specs = request
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, job)| {
            convert::job_spec(job, traceparent.clone(), engine.limits(), now)
                .map_err(|e| ApiError::new(e.code, format!("jobs[{index}].{}", e.message)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let enqueued = engine
        .enqueue(&caller.scope, specs)
        .await
        .map_err(|error| match error {
            StoreError::IdempotencyKeyReused { index }
            | StoreError::SingletonRunning { index }
            | StoreError::PayloadInvalid { index, .. } => ApiError::from(error).of_item("jobs", index),
            other => other.into(),
        })?;
    let all_replayed = enqueued.iter().all(|e| !e.created());
    let jobs = enqueued
        .iter()
        .map(|e| {
            Ok(wire::BatchItem {
                job: convert::job(&e.job)?,
                replayed: e.replayed,
                singleton: e.singleton.map(|outcome| outcome.as_str().to_owned()),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let status = if all_replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(wire::BatchEnqueueResponse { jobs })).into_response())
}

/// A job with its full history.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, body = wire::Job),
        (status = 404, description = "`not_found`: no such job in this tenant", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_job(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::Job>, ApiError> {
    caller.require(Action::ReadLeasedJob)?;
    let id = job_id(&id)?;
    let record = engine
        .store()
        .job(&caller.scope, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    // Workers see only the jobs they leased; to them the rest do not exist.
    if !caller.role.allows(Action::ReadAnyJob) && !record.was_leased_by(&caller.key_id) {
        return Err(ApiError::not_found());
    }
    Ok(Json(detail(&engine, &caller, record).await?))
}

/// A job's full history, with the webhook event that made it, if one did.
pub async fn detail(engine: &Engine, caller: &Caller, record: JobRecord) -> Result<wire::Job, ApiError> {
    let mut detail = convert::job_detail(&record)?;
    detail.event = engine
        .store()
        .job_event(&caller.scope, record.job.id)
        .await?
        .map(|event| wire::JobEventInfo {
            source_id: event.source_id,
            event_id: event.event_id,
            replay: event.replay,
        });
    Ok(detail)
}

/// [`detail`] of job `id`, read again after an operator changed it.
pub async fn detail_of(engine: &Engine, caller: &Caller, id: JobId) -> Result<wire::Job, ApiError> {
    let record = engine
        .store()
        .job(&caller.scope, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    detail(engine, caller, record).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs of this queue.
    queue: Option<String>,
    /// Only jobs in this state.
    #[param(inline)]
    state: Option<wire::JobState>,
    /// Page size (default 50, at most 500).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List jobs, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(ListParams),
    responses((status = 200, body = wire::JobList), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_jobs(
    State(engine): State<Engine>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<wire::JobList>, ApiError> {
    caller.require(Action::ListJobs)?;
    let limit = convert::page_limit(params.limit, engine.limits())?;
    let queue = params
        .queue
        .map(QueueName::new)
        .transpose()
        .map_err(|e| ApiError::validation(format!("queue: {}", e.problem)))?;
    let after = params
        .cursor
        .map(|c| i64::from_str_radix(&c, 16).map(JobCursor))
        .transpose()
        .map_err(|_| ApiError::validation("cursor: not a cursor returned by this API"))?;
    let query = JobQuery {
        queue,
        state: params.state.map(convert::state_from_wire),
        limit,
        after,
        ..JobQuery::default()
    };
    let page = engine.store().list_jobs(&caller.scope, query).await?;
    Ok(Json(wire::JobList {
        jobs: page.jobs.iter().map(convert::job).collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor.map(|JobCursor(seq)| format!("{seq:x}")),
    }))
}

/// Operator action: send a dead or cancelled job back to the queue with a fresh attempt budget.
///
/// The body is optional; its `reason` goes into the audit record.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", tag = "operators",
    params(("id" = String, Path, description = "Job id")),
    request_body(content = Option<wire::OperatorRequest>, description = "Optional"),
    responses(
        (status = 200, body = wire::Job),
        (status = 409, description = "`invalid_state`: only dead or cancelled jobs can be retried", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalApiJson(request): OptionalApiJson<wire::OperatorRequest>,
) -> Result<Json<wire::Job>, ApiError> {
    caller.require(Action::OperatorAction)?;
    let id = job_id(&id)?;
    let reason = convert::optional_reason(request.unwrap_or_default().reason.as_deref())?;
    let job = engine.retry(&caller.scope, id, reason.as_ref()).await?;
    Ok(Json(convert::job(&job)?))
}

/// Operator action: cancel a job that has not finished. A running attempt's lease stops working at once.
///
/// The body is optional; its `reason` goes into the audit record.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "operators",
    params(("id" = String, Path, description = "Job id")),
    request_body(content = Option<wire::OperatorRequest>, description = "Optional"),
    responses(
        (status = 200, body = wire::Job),
        (status = 409, description = "`invalid_state`: the job already finished", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalApiJson(request): OptionalApiJson<wire::OperatorRequest>,
) -> Result<Json<wire::Job>, ApiError> {
    caller.require(Action::OperatorAction)?;
    let id = job_id(&id)?;
    let reason = convert::optional_reason(request.unwrap_or_default().reason.as_deref())?;
    let job = engine.cancel(&caller.scope, id, reason.as_ref()).await?;
    Ok(Json(convert::job(&job)?))
}

/// Operator action: run a job again as a new job linked to the original (`replay_of`).
///
/// The new job has the original's queue and options, and its payload or a
/// new one. The original and its history do not change; any job can be
/// replayed, finished or not. Idempotency and singleton keys are not
/// carried over.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/replay", tag = "operators",
    params(("id" = String, Path, description = "Job id")),
    request_body = wire::ReplayRequest,
    responses(
        (status = 201, description = "The new job; durable on disk before this answer", body = wire::Job),
        (status = 404, description = "`not_found`", body = wire::ErrorBody),
        (status = 422, description = "`validation_failed`, `payload_invalid` (a new payload fails the queue's schema) or `quota_exceeded`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn replay(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<wire::ReplayRequest>,
) -> Result<Response, ApiError> {
    caller.require(Action::OperatorAction)?;
    let id = job_id(&id)?;
    let reason = convert::reason(&request.reason)?;
    let payload = request
        .payload
        .as_deref()
        .map(|payload| convert::check_depth("payload", payload, engine.limits()).map(|()| payload.get().to_owned()))
        .transpose()?;
    let job = engine.replay(&caller.scope, id, payload, &reason).await?;
    Ok((StatusCode::CREATED, Json(convert::job(&job)?)).into_response())
}
