//! Schedules: jobs enqueued on a cron pattern, in a time zone.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steadfast_core::{Action, QueueName, ScheduleName};
use steadfast_protocol as wire;
use steadfast_store::schedules::{CatchUp, Overlap, Schedule, ScheduleSpec, TickOutcome};

use super::convert;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, Caller};
use crate::Engine;
use crate::engine::schedules::{ScheduleError, Timing, UPCOMING};

fn schedule_name(name: &str) -> Result<ScheduleName, ApiError> {
    ScheduleName::new(name).map_err(|e| ApiError::validation(format!("name: {}", e.problem)))
}

fn no_such_schedule() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such schedule")
}

impl From<ScheduleError> for ApiError {
    fn from(error: ScheduleError) -> ApiError {
        match error {
            ScheduleError::Invalid(problem) => ApiError::validation(problem),
            ScheduleError::Store(error) => error.into(),
        }
    }
}

fn spec(request: wire::ScheduleRequest, engine: &Engine) -> Result<ScheduleSpec, ApiError> {
    if request.cron.len() > 256 {
        return Err(ApiError::validation("cron: at most 256 bytes"));
    }
    if request.timezone.as_ref().is_some_and(|zone| zone.len() > 64) {
        return Err(ApiError::validation("timezone: at most 64 bytes"));
    }
    if let Some(raw) = &request.payload {
        convert::check_depth("payload", raw, engine.limits())?;
    }
    let payload = request
        .payload
        .map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned());
    Ok(ScheduleSpec {
        cron: request.cron.trim().to_owned(),
        timezone: request.timezone.unwrap_or_else(|| "UTC".to_owned()),
        queue: QueueName::new(request.queue).map_err(|e| ApiError::validation(format!("queue: {}", e.problem)))?,
        payload,
        overlap: match request.overlap.unwrap_or(wire::ScheduleOverlap::Skip) {
            wire::ScheduleOverlap::Skip => Overlap::Skip,
            wire::ScheduleOverlap::Allow => Overlap::Allow,
        },
        catch_up: match request.catch_up.unwrap_or(wire::ScheduleCatchUp::None) {
            wire::ScheduleCatchUp::None => CatchUp::None,
            wire::ScheduleCatchUp::Latest => CatchUp::Latest,
        },
    })
}

fn info(schedule: Schedule) -> Result<wire::ScheduleInfo, ApiError> {
    let next_fire_times = match (schedule.next_fire_at, Timing::of(&schedule.spec)) {
        (Some(next), Ok(timing)) => timing.upcoming(next, UPCOMING),
        _ => Vec::new(),
    };
    Ok(wire::ScheduleInfo {
        name: schedule.name.to_string(),
        cron: schedule.spec.cron,
        timezone: schedule.spec.timezone,
        queue: schedule.spec.queue.to_string(),
        payload: convert::raw_json(&schedule.spec.payload)?,
        overlap: match schedule.spec.overlap {
            Overlap::Skip => wire::ScheduleOverlap::Skip,
            Overlap::Allow => wire::ScheduleOverlap::Allow,
        },
        catch_up: match schedule.spec.catch_up {
            CatchUp::None => wire::ScheduleCatchUp::None,
            CatchUp::Latest => wire::ScheduleCatchUp::Latest,
        },
        paused: schedule.paused,
        next_fire_times,
        last_tick_at: schedule.last_tick_at,
        last_outcome: schedule.last_outcome.map(|outcome| match outcome {
            TickOutcome::Fired => wire::TickOutcome::Fired,
            TickOutcome::SkippedOverlap => wire::TickOutcome::SkippedOverlap,
            TickOutcome::Missed => wire::TickOutcome::Missed,
            TickOutcome::Failed => wire::TickOutcome::Failed,
        }),
        last_job_id: schedule.last_job_id.map(|id| id.0),
        created_at: schedule.created_at,
        updated_at: schedule.updated_at,
    })
}

/// Creates or replaces a schedule (admin; audited as `schedule.set`).
///
/// Each tick enqueues one job to `queue` with `payload` and the idempotency
/// key `schedule:{name}:{tick in Unix ms}`: one job per tick, however many
/// nodes run. The payload is checked against the queue's schema now. A
/// replaced schedule keeps whether it is paused and owes its first tick
/// after now under the new pattern.
#[utoipa::path(
    put, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    request_body = wire::ScheduleRequest,
    responses(
        (status = 201, description = "Created", body = wire::ScheduleInfo),
        (status = 200, description = "Replaced", body = wire::ScheduleInfo),
        (status = 422, description = "`validation_failed` (the pattern, the time zone), `payload_invalid` or `limit_exceeded` (1000 per tenant)", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<wire::ScheduleRequest>,
) -> Result<(StatusCode, Json<wire::ScheduleInfo>), ApiError> {
    caller.require(Action::OperatorAction)?;
    let name = schedule_name(&name)?;
    let spec = spec(request, &engine)?;
    let (schedule, created) = engine.put_schedule(&caller.scope, &name, spec).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(info(schedule)?)))
}

/// A schedule, with its next 5 fire times and its last tick (admin and reader).
#[utoipa::path(
    get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    responses((status = 200, body = wire::ScheduleInfo), (status = 404, body = wire::ErrorBody), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<wire::ScheduleInfo>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let name = schedule_name(&name)?;
    let schedule = engine
        .store()
        .schedule(&caller.scope, &name)
        .await?
        .ok_or_else(no_such_schedule)?;
    Ok(Json(info(schedule)?))
}

/// The tenant's schedules by name (admin and reader; at most 1000 exist).
#[utoipa::path(
    get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = wire::ScheduleList)),
    security(("bearer" = []))
)]
pub async fn list(State(engine): State<Engine>, caller: Caller) -> Result<Json<wire::ScheduleList>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let schedules = engine.store().list_schedules(&caller.scope).await?;
    Ok(Json(wire::ScheduleList {
        schedules: schedules.into_iter().map(info).collect::<Result<_, _>>()?,
    }))
}

/// Deletes a schedule (admin; audited as `schedule.deleted`). Jobs it
/// already enqueued stay.
#[utoipa::path(
    delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    responses((status = 204, description = "Deleted"), (status = 404, body = wire::ErrorBody), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::OperatorAction)?;
    let name = schedule_name(&name)?;
    match engine.store().delete_schedule(&caller.scope, &name, engine.now()).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(steadfast_store::StoreError::NotFound) => Err(no_such_schedule()),
        Err(error) => Err(error.into()),
    }
}

async fn pause_or_resume(
    engine: &Engine,
    caller: &Caller,
    name: &str,
    paused: bool,
) -> Result<Json<wire::ScheduleInfo>, ApiError> {
    caller.require(Action::OperatorAction)?;
    let name = schedule_name(name)?;
    match engine.pause_schedule(&caller.scope, &name, paused).await {
        Ok(schedule) => Ok(Json(info(schedule)?)),
        Err(steadfast_store::StoreError::NotFound) => Err(no_such_schedule()),
        Err(error) => Err(error.into()),
    }
}

/// Pauses a schedule: it fires nothing until resumed (admin; audited as
/// `schedule.paused`). Pausing a paused schedule changes nothing.
#[utoipa::path(
    post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    responses((status = 200, body = wire::ScheduleInfo), (status = 404, body = wire::ErrorBody), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn pause(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<wire::ScheduleInfo>, ApiError> {
    pause_or_resume(&engine, &caller, &name, true).await
}

/// Resumes a schedule from its first tick after now; ticks that passed
/// while it was paused do not fire (admin; audited as `schedule.resumed`).
#[utoipa::path(
    post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    responses((status = 200, body = wire::ScheduleInfo), (status = 404, body = wire::ErrorBody), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn resume(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<wire::ScheduleInfo>, ApiError> {
    pause_or_resume(&engine, &caller, &name, false).await
}
