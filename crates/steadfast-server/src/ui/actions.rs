//! The operator's buttons: Retry, Cancel, Replay, Approve, Reject, Send
//! signal, Resolve and Verify now. Each is a form with a reason (kept in
//! the audit record with the key that acted), refused unless it comes from
//! this site with the session's token (`Posted`) and the role allows it.
//! On success each answers `303 See Other` back to the job.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use steadfast_core::lifecycle::StepResolution;
use steadfast_core::{Action, JobId, Reason, SignalName, StepName, WaitFor};

use super::Failure;
use super::auth::{CsrfForm, Posted, Viewer};
use super::live::Live;
use crate::Engine;
use crate::api::convert;

macro_rules! csrf_form {
    ($($form:ident),*) => {
        $(impl CsrfForm for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })*
    };
}

#[derive(Debug, Deserialize)]
pub struct ReasonForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    /// The signal the page showed the job waiting for.
    #[serde(default)]
    signal: String,
}

#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    /// JSON; blank keeps the original's payload.
    #[serde(default)]
    payload: String,
}

#[derive(Debug, Deserialize)]
pub struct SignalForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    name: String,
    /// JSON; blank is `null`.
    #[serde(default)]
    payload: String,
}

#[derive(Debug, Deserialize)]
pub struct ResolveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    outcome: String,
    /// JSON, for `succeeded`; blank is `null`.
    #[serde(default)]
    output: String,
}

#[derive(Debug, Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    csrf: String,
}

csrf_form!(
    ReasonForm,
    DecisionForm,
    ReplayForm,
    SignalForm,
    ResolveForm,
    VerifyForm
);

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

fn reason(text: &str) -> Result<Reason, Failure> {
    Reason::new(text).map_err(|e| invalid(format!("Reason {}.", e.problem)))
}

fn job_id(raw: &str) -> Result<JobId, Failure> {
    raw.parse().map_err(|_| Failure::not_found())
}

/// Text typed into a JSON field: checked like the API's, blank is `None`.
fn json_field(engine: &Engine, field: &str, text: &str) -> Result<Option<String>, Failure> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let raw: Box<serde_json::value::RawValue> =
        serde_json::from_str(text).map_err(|e| invalid(format!("{field} is not JSON: {e}")))?;
    convert::check_depth(field, &raw, engine.limits())?;
    Ok(Some(raw.get().to_owned()))
}

fn back_to(id: JobId, done: &str) -> Response {
    Redirect::to(&format!("/ui/jobs/{id}?done={done}")).into_response()
}

fn respond(result: Result<Response, Failure>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /ui/jobs/{id}/retry`.
pub async fn retry(State(engine): State<Engine>, Path(id): Path<String>, posted: Posted<ReasonForm>) -> Response {
    respond(
        async {
            let Posted { viewer, form } = posted;
            viewer.require(Action::OperatorAction)?;
            let (id, reason) = (job_id(&id)?, reason(&form.reason)?);
            engine.retry(&viewer.principal.scope, id, Some(&reason)).await?;
            Ok(back_to(id, "retried"))
        }
        .await,
    )
}

/// `POST /ui/jobs/{id}/cancel`.
pub async fn cancel(State(engine): State<Engine>, Path(id): Path<String>, posted: Posted<ReasonForm>) -> Response {
    respond(
        async {
            let Posted { viewer, form } = posted;
            viewer.require(Action::OperatorAction)?;
            let (id, reason) = (job_id(&id)?, reason(&form.reason)?);
            engine.cancel(&viewer.principal.scope, id, Some(&reason)).await?;
            Ok(back_to(id, "cancelled"))
        }
        .await,
    )
}

/// `POST /ui/jobs/{id}/replay`: answers with the new job's page.
pub async fn replay(State(engine): State<Engine>, Path(id): Path<String>, posted: Posted<ReplayForm>) -> Response {
    respond(
        async {
            let Posted { viewer, form } = posted;
            viewer.require(Action::OperatorAction)?;
            let (id, reason) = (job_id(&id)?, reason(&form.reason)?);
            let payload = json_field(&engine, "Payload", &form.payload)?;
            let replay = engine.replay(&viewer.principal.scope, id, payload, &reason).await?;
            Ok(back_to(replay.id, "replay"))
        }
        .await,
    )
}

/// Approve and Reject answer the signal the job waits for with
/// `{"approved", "reason", "by"}`, `by` being the acting key's id.
async fn decide(
    engine: &Engine,
    viewer: &Viewer,
    id: &str,
    form: &DecisionForm,
    approved: bool,
) -> Result<Response, Failure> {
    viewer.require(Action::Signal)?;
    let (id, reason) = (job_id(id)?, reason(&form.reason)?);
    let scope = &viewer.principal.scope;
    let record = engine.store().job(scope, id).await?.ok_or_else(Failure::not_found)?;
    let Some(WaitFor::Signal { name, .. }) = record.job.wait.as_ref().map(|w| &w.wait_for) else {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "This job is not waiting for a signal.",
        ));
    };
    // The decision answers the wait the operator saw, not one begun since.
    if name.as_str() != form.signal {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "This job now waits for another signal; reload the page and decide again.",
        ));
    }
    let payload = serde_json::json!({
        "approved": approved,
        "reason": reason.as_str(),
        "by": viewer.principal.key_id.as_str(),
    });
    engine
        .signal(scope, id, name.clone(), payload.to_string(), Some(&reason))
        .await?;
    Ok(back_to(id, if approved { "approved" } else { "rejected" }))
}

/// `POST /ui/jobs/{id}/approve`.
pub async fn approve(State(engine): State<Engine>, Path(id): Path<String>, posted: Posted<DecisionForm>) -> Response {
    respond(decide(&engine, &posted.viewer, &id, &posted.form, true).await)
}

/// `POST /ui/jobs/{id}/reject`.
pub async fn reject(State(engine): State<Engine>, Path(id): Path<String>, posted: Posted<DecisionForm>) -> Response {
    respond(decide(&engine, &posted.viewer, &id, &posted.form, false).await)
}

/// `POST /ui/jobs/{id}/signal`: any signal, with any JSON payload.
pub async fn signal(State(engine): State<Engine>, Path(id): Path<String>, posted: Posted<SignalForm>) -> Response {
    respond(
        async {
            let Posted { viewer, form } = posted;
            viewer.require(Action::Signal)?;
            let (id, reason) = (job_id(&id)?, reason(&form.reason)?);
            let name = SignalName::new(form.name.trim()).map_err(|e| invalid(format!("Signal name {}.", e.problem)))?;
            let payload = json_field(&engine, "Payload", &form.payload)?.unwrap_or_else(|| "null".to_owned());
            engine
                .signal(&viewer.principal.scope, id, name, payload, Some(&reason))
                .await?;
            Ok(back_to(id, "signalled"))
        }
        .await,
    )
}

/// `POST /ui/jobs/{id}/steps/{name}/resolve`.
pub async fn resolve(
    State(engine): State<Engine>,
    Path((id, step)): Path<(String, String)>,
    posted: Posted<ResolveForm>,
) -> Response {
    respond(
        async {
            let Posted { viewer, form } = posted;
            viewer.require(Action::OperatorAction)?;
            let (id, reason) = (job_id(&id)?, reason(&form.reason)?);
            let step = StepName::new(step).map_err(|_| Failure::not_found())?;
            let output = json_field(&engine, "Output", &form.output)?;
            let resolution = match (form.outcome.as_str(), output) {
                ("succeeded", output) => StepResolution::Succeeded {
                    output: output.unwrap_or_else(|| "null".to_owned()),
                },
                ("failed" | "reexecute", Some(_)) => return Err(invalid("Only a succeeded step has an output.")),
                ("failed", None) => StepResolution::Failed,
                ("reexecute", None) => StepResolution::Reexecute,
                _ => return Err(invalid("Choose an outcome: succeeded, failed or reexecute.")),
            };
            engine
                .resolve_step(&viewer.principal.scope, id, step, resolution, &reason)
                .await?;
            Ok(back_to(id, "resolved"))
        }
        .await,
    )
}

/// `POST /ui/audit/verify` (admin): verifies the tenant's chain now.
pub async fn verify_audit(
    State(engine): State<Engine>,
    Extension(live): Extension<Arc<Live>>,
    posted: Posted<VerifyForm>,
) -> Response {
    respond(
        async {
            posted.viewer.require(Action::OperatorAction)?;
            super::views::verify_now(&engine, &live, &posted.viewer).await?;
            Ok(Redirect::to("/ui/audit").into_response())
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    action: String,
    #[serde(flatten)]
    filter: super::views::ListFilter,
}

csrf_form!(BulkForm);

/// `POST /ui/bulk`: starts the operation the confirmation named.
pub async fn start_bulk(State(engine): State<Engine>, posted: Posted<BulkForm>) -> Response {
    respond(
        async {
            let Posted { viewer, form } = posted;
            viewer.require(Action::OperatorAction)?;
            let reason = reason(&form.reason)?;
            let action = super::views::bulk_action(&form.action)?;
            let (filter, _) = super::views::bulk_filter(action, form.filter)?;
            let spec = steadfast_store::bulk::BulkSpec {
                action,
                filter,
                reason: reason.as_str().to_owned(),
                key_id: viewer.principal.key_id.to_string(),
                key_name: viewer.principal.key_name.clone(),
            };
            let started = engine.start_bulk(&viewer.principal.scope, spec).await?;
            Ok(Redirect::to(&format!("/ui/bulk/{}", started.id)).into_response())
        }
        .await,
    )
}

/// `POST /ui/bulk/{id}/cancel`: stops a running operation.
pub async fn stop_bulk(State(engine): State<Engine>, Path(id): Path<String>, posted: Posted<VerifyForm>) -> Response {
    respond(
        async {
            posted.viewer.require(Action::OperatorAction)?;
            let id: uuid::Uuid = id
                .parse()
                .map_err(|_| Failure::new(StatusCode::NOT_FOUND, "There is no such bulk operation."))?;
            engine.cancel_bulk(&posted.viewer.principal.scope, id).await?;
            Ok(Redirect::to(&format!("/ui/bulk/{id}")).into_response())
        }
        .await,
    )
}
