//! Durable workflows: step checkpoints, uncertain-outcome markers, waits,
//! signals and child jobs.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use steadfast_core::lifecycle::{StepResolution, StepStart};
use steadfast_core::{Action, JobId, SignalName, StepName, WaitFor};
use steadfast_protocol as wire;
use steadfast_store::{StepAction, StepDone, StepOp, Waited};

use super::convert;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, Caller};
use super::jobs::job_id;
use crate::{Engine, telemetry};

fn step_name(raw: String) -> Result<StepName, ApiError> {
    StepName::new(raw).map_err(|e| ApiError::validation(format!("step: {}", e.problem)))
}

fn signal_name(raw: String) -> Result<SignalName, ApiError> {
    SignalName::new(raw).map_err(|e| ApiError::validation(format!("signal: {}", e.problem)))
}

/// Mark a step started before its side effect, so that an attempt lost
/// before the checkpoint leaves the step `uncertain` for the next one.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/steps/{name}/start", tag = "workflows",
    params(("id" = String, Path, description = "Job id"), ("name" = String, Path, description = "Step name: 1–128 ASCII letters, digits and `-_.:`", pattern = r"^[A-Za-z0-9_.:-]{1,128}$")),
    request_body = wire::StartStepRequest,
    responses(
        (status = 200, description = "The step: `started`, or `completed` by an earlier checkpoint (then do not run it again)", body = wire::StepInfo),
        (status = 409, description = "`lease_lost`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn start_step(
    State(engine): State<Engine>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    ApiJson(request): ApiJson<wire::StartStepRequest>,
) -> Result<Json<wire::StepInfo>, ApiError> {
    caller.require(Action::ActOnLease)?;
    let id = job_id(&id)?;
    let started = engine
        .start_step(&caller.scope, id, &request.lease_token, step_name(name)?)
        .await?;
    let step = match started {
        StepStart::Started(step) | StepStart::AlreadyCompleted(step) => step,
    };
    Ok(Json(convert::running_step_info(&step, id)?))
}

/// Checkpoint a step's output. The first checkpoint wins.
#[utoipa::path(
    put, path = "/v1/jobs/{id}/steps/{name}", tag = "workflows",
    params(("id" = String, Path, description = "Job id"), ("name" = String, Path, description = "Step name: 1–128 ASCII letters, digits and `-_.:`", pattern = r"^[A-Za-z0-9_.:-]{1,128}$")),
    request_body = wire::CheckpointRequest,
    responses(
        (status = 201, description = "Stored; durable before this answer", body = wire::StepInfo),
        (status = 200, description = "An earlier checkpoint of this step won: its stored output, unchanged", body = wire::StepInfo),
        (status = 409, description = "`lease_lost`: a fenced worker cannot checkpoint", body = wire::ErrorBody),
        (status = 422, description = "`validation_failed` or `limit_exceeded`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn checkpoint_step(
    State(engine): State<Engine>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<wire::CheckpointRequest>,
) -> Result<Response, ApiError> {
    caller.require(Action::ActOnLease)?;
    let id = job_id(&id)?;
    let output = convert::optional_json("output", request.output.as_deref(), engine.limits())?;
    let checkpoint = engine
        .checkpoint_step(&caller.scope, id, &request.lease_token, step_name(name)?, output)
        .await?;
    if checkpoint.first {
        crate::telemetry::step_span(&headers, None, id, &checkpoint.step);
    }
    let status = if checkpoint.first {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(convert::running_step_info(&checkpoint.step, id)?)).into_response())
}

/// Start and checkpoint steps of many running jobs in one request, one
/// storage transaction. Each operation stands alone and is answered as its
/// single route would answer it: one whose lease was lost gets its own
/// `error` and the others still apply. A malformed batch (empty, too large,
/// a bad step name, an output too deep) is refused whole and changes nothing.
#[utoipa::path(
    post, path = "/v1/jobs/batch/steps", tag = "workflows",
    request_body = wire::BatchStepsRequest,
    responses(
        (status = 200, description = "One result per operation; durable before this answer", body = wire::BatchStepsResponse),
        (status = 422, description = "`batch_too_large` or `validation_failed`; nothing changed", body = wire::ErrorBody),
        (status = 503, description = "`unavailable`: storage failed; nothing in the batch changed", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn steps_batch(
    State(engine): State<Engine>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<wire::BatchStepsRequest>,
) -> Result<Json<wire::BatchStepsResponse>, ApiError> {
    caller.require(Action::ActOnLease)?;
    convert::check_batch_size("steps", request.steps.len(), engine.limits().max_batch_jobs)?;
    let ops = request
        .steps
        .iter()
        .enumerate()
        .map(|(index, item)| {
            step_op(&engine, item).map_err(|e| ApiError::new(e.code, format!("steps[{index}].{}", e.message)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One transaction for the batch. If it fails nothing changed, and the
    // whole request fails (503 when storage is unavailable).
    let done = engine.step_many(&caller.scope, ops).await?;
    if done.len() != request.steps.len() {
        // The store answers every item; anything else is a bug, and the
        // batch has committed, so say so rather than answer a partial list.
        tracing::error!(
            items = request.steps.len(),
            answers = done.len(),
            "a step batch lost answers"
        );
        return Err(ApiError::new(
            ErrorCode::Internal,
            "internal error: the batch committed but its results were lost; read the jobs back",
        ));
    }
    let mut results = Vec::with_capacity(done.len());
    for (item, done) in request.steps.iter().zip(done) {
        let id = JobId(item.id);
        let (step, first) = match done {
            Err(error) => {
                results.push(wire::StepResult {
                    id: item.id,
                    step: item.step.clone(),
                    info: None,
                    first: None,
                    error: Some(ApiError::from(error).detail()),
                });
                continue;
            }
            Ok(StepDone::Started(StepStart::Started(step) | StepStart::AlreadyCompleted(step))) => (step, None),
            Ok(StepDone::Checkpointed(checkpoint)) => {
                if checkpoint.first {
                    telemetry::step_span(&headers, item.traceparent.as_deref(), id, &checkpoint.step);
                }
                (checkpoint.step, Some(checkpoint.first))
            }
        };
        results.push(wire::StepResult {
            id: item.id,
            step: item.step.clone(),
            info: Some(convert::running_step_info(&step, id)?),
            first,
            error: None,
        });
    }
    Ok(Json(wire::BatchStepsResponse { results }))
}

/// One batch item, checked as its single route checks it.
fn step_op(engine: &Engine, item: &wire::StepOperation) -> Result<StepOp, ApiError> {
    let action = match item.action {
        wire::StepAction::Start if item.output.is_some() => {
            return Err(ApiError::validation("output: only a checkpoint has one"));
        }
        wire::StepAction::Start => StepAction::Start,
        wire::StepAction::Checkpoint => StepAction::Checkpoint {
            output: convert::optional_json("output", item.output.as_deref(), engine.limits())?,
        },
    };
    Ok(StepOp {
        id: JobId(item.id),
        token: item.lease_token.clone(),
        step: step_name(item.step.clone())?,
        action,
    })
}

/// Park the job until a time or a signal. The attempt ends; the job holds
/// no lease while it waits, and is queued again when the wait ends.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/wait", tag = "workflows",
    params(("id" = String, Path, description = "Job id")),
    request_body = wire::WaitRequest,
    responses(
        (status = 200, body = wire::WaitResponse),
        (status = 409, description = "`lease_lost`", body = wire::ErrorBody),
        (status = 422, body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn wait(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<wire::WaitRequest>,
) -> Result<Json<wire::WaitResponse>, ApiError> {
    caller.require(Action::ActOnLease)?;
    let id = job_id(&id)?;
    let now = engine.now();
    let horizon = engine.limits().max_schedule_ahead;
    let ahead = |what: &str, duration: Duration| {
        if duration > horizon {
            Err(ApiError::validation(format!(
                "{what}: at most {} days",
                horizon.as_secs() / 86_400
            )))
        } else {
            Ok(now.saturating_add(duration).expect("bounded by the horizon"))
        }
    };
    let wait_for = match (request.sleep_ms, request.until, request.signal, request.timeout_secs) {
        (Some(ms), None, None, None) => WaitFor::Until(ahead("sleep_ms", Duration::from_millis(ms))?),
        (None, Some(until), None, None) => {
            ahead("until", now.duration_until(until).try_into().unwrap_or(Duration::ZERO))?;
            WaitFor::Until(until)
        }
        (None, None, Some(signal), timeout) => WaitFor::Signal {
            name: signal_name(signal)?,
            deadline: timeout
                .map(|secs| ahead("timeout_secs", Duration::from_secs(secs)))
                .transpose()?,
        },
        _ => {
            return Err(ApiError::validation(
                "give exactly one of sleep_ms, until or signal (timeout_secs only with signal)",
            ));
        }
    };
    let step = step_name(request.step)?;
    match engine
        .wait(&caller.scope, id, &request.lease_token, step, wait_for)
        .await?
    {
        Waited::Suspended(_) => Ok(Json(wire::WaitResponse {
            suspended: true,
            step: None,
        })),
        Waited::Completed(step) => Ok(Json(wire::WaitResponse {
            suspended: false,
            step: Some(convert::running_step_info(&step, id)?),
        })),
    }
}

/// Deliver a signal: wakes the job if it waits for this name; otherwise the
/// signal is kept for its next wait on the name.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/signals/{name}", tag = "workflows",
    params(("id" = String, Path, description = "Job id"), ("name" = String, Path, description = "Signal name: 1–128 ASCII letters, digits and `-_.:`", pattern = r"^[A-Za-z0-9_.:-]{1,128}$")),
    request_body = wire::SignalRequest,
    responses(
        (status = 200, body = wire::SignalResponse),
        (status = 409, description = "`invalid_state`: the job has finished", body = wire::ErrorBody),
        (status = 422, description = "`validation_failed` or `limit_exceeded` (too many pending signals)", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn signal(
    State(engine): State<Engine>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    ApiJson(request): ApiJson<wire::SignalRequest>,
) -> Result<Json<wire::SignalResponse>, ApiError> {
    caller.require(Action::Signal)?;
    let id = job_id(&id)?;
    let payload = convert::optional_json("payload", request.payload.as_deref(), engine.limits())?;
    let reason = convert::optional_reason(request.reason.as_deref())?;
    let signalled = engine
        .signal(&caller.scope, id, signal_name(name)?, payload, reason.as_ref())
        .await?;
    Ok(Json(wire::SignalResponse {
        woke: signalled.woke,
        job: convert::job(&signalled.job)?,
    }))
}

/// Operator action: settle a step whose outcome is uncertain.
///
/// An attempt ended after starting the step and before its checkpoint, and
/// someone has checked the downstream: `succeeded` completes it with
/// `output`, so later attempts replay it; `reexecute` lets the next attempt run it again;
/// `failed` ends the job `dead` (kind `step_failed`; a finished job stays
/// as it is), and the step runs afresh if the job is retried. Answers the
/// job with its history.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/steps/{name}/resolve", tag = "operators",
    params(("id" = String, Path, description = "Job id"), ("name" = String, Path, description = "Step name: 1–128 ASCII letters, digits and `-_.:`", pattern = r"^[A-Za-z0-9_.:-]{1,128}$")),
    request_body = wire::ResolveStepRequest,
    responses(
        (status = 200, description = "Resolved; durable on disk before this answer", body = wire::Job),
        (status = 404, description = "`not_found`: no such job, or it has no step of that name", body = wire::ErrorBody),
        (status = 409, description = "`invalid_state`: the step is not uncertain, or the job succeeded", body = wire::ErrorBody),
        (status = 422, description = "`validation_failed`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn resolve_step(
    State(engine): State<Engine>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    ApiJson(request): ApiJson<wire::ResolveStepRequest>,
) -> Result<Json<wire::Job>, ApiError> {
    caller.require(Action::OperatorAction)?;
    let id = job_id(&id)?;
    let step = step_name(name)?;
    let reason = convert::reason(&request.reason)?;
    let output = request.output.as_deref();
    let resolution = match request.outcome {
        wire::StepResolution::Succeeded => StepResolution::Succeeded {
            output: convert::optional_json("output", output, engine.limits())?,
        },
        _ if output.is_some() => {
            return Err(ApiError::validation("output: only a succeeded step has an output"));
        }
        wire::StepResolution::Failed => StepResolution::Failed,
        wire::StepResolution::Reexecute => StepResolution::Reexecute,
    };
    engine
        .resolve_step(&caller.scope, id, step, resolution, &reason)
        .await?;
    Ok(Json(super::jobs::detail_of(&engine, &caller, id).await?))
}

/// Enqueue a child job from a step, once per (parent, step).
#[utoipa::path(
    post, path = "/v1/jobs/{id}/children", tag = "workflows",
    params(("id" = String, Path, description = "Parent job id")),
    request_body = wire::SpawnRequest,
    responses(
        (status = 201, description = "Created", body = wire::Job),
        (status = 200, description = "This step already enqueued its child: that child", body = wire::Job),
        (status = 409, description = "`lease_lost`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn spawn_child(
    State(engine): State<Engine>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<wire::SpawnRequest>,
) -> Result<Response, ApiError> {
    caller.require(Action::ActOnLease)?;
    let parent = job_id(&id)?;
    if request.job.idempotency_key.is_some() {
        return Err(ApiError::validation(
            "job.idempotency_key: a child's key is derived from its parent and step",
        ));
    }
    let spec = convert::job_spec(
        request.job,
        telemetry::job_traceparent(&headers),
        engine.limits(),
        engine.now(),
    )
    .map_err(|e| ApiError::new(e.code, format!("job.{}", e.message)))?;
    let step = step_name(request.step)?;
    let enqueued = engine
        .spawn_child(&caller.scope, parent, &request.lease_token, step, spec)
        .await?;
    let status = if enqueued.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(convert::job(&enqueued.job)?)).into_response())
}
