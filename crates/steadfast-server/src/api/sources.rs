//! Webhook sources: where providers deliver, their secrets and their events.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use steadfast_core::{Action, QueueName, TenantName};
use steadfast_protocol as wire;
use steadfast_store::{EventRecord, Source, StoreError};
use utoipa::IntoParams;

use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::Engine;
use crate::engine::{NewSource, SourceError};
use crate::inbox::{Config, Kind};

fn no_such_source() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such source")
}

/// `id` if it could name a source; anything else names none (and never
/// reaches storage).
fn source_id(id: &str) -> Result<&str, ApiError> {
    if crate::inbox::is_source_id(id) {
        Ok(id)
    } else {
        Err(no_such_source())
    }
}

impl From<SourceError> for ApiError {
    fn from(error: SourceError) -> ApiError {
        match error {
            SourceError::Invalid(message) => ApiError::validation(message),
            SourceError::TooMany(message) => ApiError::new(ErrorCode::LimitExceeded, message),
            SourceError::Store(StoreError::NotFound) => no_such_source(),
            SourceError::Store(StoreError::AlreadyExists) => {
                ApiError::new(ErrorCode::InvalidState, "a source of that name exists")
            }
            SourceError::Store(other) => other.into(),
        }
    }
}

pub(super) fn view(source: Source, secret: Option<String>) -> wire::Source {
    wire::Source {
        ingest_path: format!("/hooks/{}", source.id),
        config: serde_json::from_str(&source.config).unwrap_or_else(|_| serde_json::json!({})),
        secrets: source
            .secrets
            .iter()
            .map(|secret| wire::SourceSecretInfo {
                id: secret.id.clone(),
                created_at: secret.created_at,
                expires_at: secret.expires_at,
            })
            .collect(),
        id: source.id,
        name: source.name,
        kind: source.kind,
        queue: source.queue.to_string(),
        secret,
        tolerance_secs: source.tolerance.as_secs(),
        dedup_window_secs: source.dedup_window.as_secs(),
        created_at: source.created_at,
    }
}

fn seconds_in(
    field: &str,
    value: Option<u64>,
    default: Duration,
    min: u64,
    max: Duration,
) -> Result<Duration, ApiError> {
    match value {
        None => Ok(default),
        Some(secs) if (min..=max.as_secs()).contains(&secs) => Ok(Duration::from_secs(secs)),
        Some(_) => Err(ApiError::validation(format!(
            "{field}: must be between {min} and {}",
            max.as_secs()
        ))),
    }
}

fn checked(engine: &Engine, request: wire::SourceRequest) -> Result<NewSource, ApiError> {
    let limits = engine.config().inbox;
    TenantName::new(request.name.clone()).map_err(|e| ApiError::validation(format!("name: {}", e.problem)))?;
    let queue = QueueName::new(request.queue).map_err(|e| ApiError::validation(format!("queue: {}", e.problem)))?;
    let config: Config = match request.config {
        None => Config::default(),
        Some(value) => serde_json::from_value(value).map_err(|e| ApiError::validation(format!("config: {e}")))?,
    };
    let kind = Kind::parse(request.kind.as_str(), &config).map_err(ApiError::validation)?;
    Ok(NewSource {
        name: request.name,
        kind_name: request.kind.as_str().to_owned(),
        kind,
        config,
        queue,
        secret: request.secret,
        tolerance: seconds_in(
            "tolerance_secs",
            request.tolerance_secs,
            limits.default_tolerance,
            1,
            limits.max_tolerance,
        )?,
        dedup_window: seconds_in(
            "dedup_window_secs",
            request.dedup_window_secs,
            limits.default_dedup_window,
            60,
            limits.max_dedup_window,
        )?,
    })
}

/// Create a webhook source (admin). Answers its `ingest_path`, and the
/// secret when Steadfast made it (shown only here).
#[utoipa::path(
    post, path = "/v1/sources", tag = "sources",
    request_body = wire::SourceRequest,
    responses((status = 201, body = wire::Source), (status = 409, body = wire::ErrorBody), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create(
    State(engine): State<Engine>,
    caller: Caller,
    ApiJson(request): ApiJson<wire::SourceRequest>,
) -> Result<(StatusCode, Json<wire::Source>), ApiError> {
    caller.require(Action::OperatorAction)?;
    let new = checked(&engine, request)?;
    let (source, secret) = engine.create_source(&caller.scope, new).await?;
    Ok((StatusCode::CREATED, Json(view(source, secret))))
}

/// Every source of the tenant, by name (secrets' values are never shown).
#[utoipa::path(
    get, path = "/v1/sources", tag = "sources",
    responses((status = 200, body = wire::SourceList)),
    security(("bearer" = []))
)]
pub async fn list(State(engine): State<Engine>, caller: Caller) -> Result<Json<wire::SourceList>, ApiError> {
    caller.require(Action::ListJobs)?;
    let sources = engine.store().list_sources(&caller.scope).await?;
    Ok(Json(wire::SourceList {
        sources: sources.into_iter().map(|source| view(source, None)).collect(),
    }))
}

/// One source.
#[utoipa::path(
    get, path = "/v1/sources/{id}", tag = "sources",
    params(("id" = String, Path, description = "Source id", pattern = r"^src_[0-9a-f]{32}$")),
    responses((status = 200, body = wire::Source), (status = 404, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::Source>, ApiError> {
    caller.require(Action::ListJobs)?;
    let source = engine
        .store()
        .source(&caller.scope, source_id(&id)?)
        .await?
        .ok_or_else(no_such_source)?;
    Ok(Json(view(source, None)))
}

/// Delete a source (admin): its deliveries are refused `404` from now on;
/// its events stay until their dedup window ends.
#[utoipa::path(
    delete, path = "/v1/sources/{id}", tag = "sources",
    params(("id" = String, Path, description = "Source id", pattern = r"^src_[0-9a-f]{32}$")),
    responses((status = 204), (status = 404, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::OperatorAction)?;
    engine
        .delete_source(&caller.scope, source_id(&id)?)
        .await
        .map_err(SourceError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add a secret (admin). Every unexpired secret is accepted, so a rotation
/// is: add the new secret, switch the provider to it, let the old one expire
/// (`retire_others_after_secs`).
#[utoipa::path(
    post, path = "/v1/sources/{id}/secrets", tag = "sources",
    params(("id" = String, Path, description = "Source id", pattern = r"^src_[0-9a-f]{32}$")),
    request_body = wire::SecretRequest,
    responses((status = 201, body = wire::SecretAdded), (status = 404, body = wire::ErrorBody), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn add_secret(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<wire::SecretRequest>,
) -> Result<(StatusCode, Json<wire::SecretAdded>), ApiError> {
    caller.require(Action::OperatorAction)?;
    let limits = engine.config().inbox;
    let retire_after = request
        .retire_others_after_secs
        .map(|secs| {
            seconds_in(
                "retire_others_after_secs",
                Some(secs),
                Duration::ZERO,
                0,
                limits.max_dedup_window,
            )
        })
        .transpose()?;
    let (source, secret, generated) = engine
        .add_source_secret(
            &caller.scope,
            source_id(&id)?,
            request.secret,
            request.expires_at,
            retire_after,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(wire::SecretAdded {
            secret: generated.then(|| secret.value.clone()),
            id: secret.id,
            created_at: secret.created_at,
            expires_at: secret.expires_at,
            source: view(source, None),
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,19}$")]
    cursor: Option<String>,
}

fn event_view(event: EventRecord) -> wire::InboxEventInfo {
    let json = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    wire::InboxEventInfo {
        verification: json(&event.verification),
        headers: json(&event.headers),
        body_bytes: event.body_bytes,
        body_sha256: event.body_sha256,
        event_id: event.event_id,
        received_at: event.received_at,
        duplicates: event.duplicates,
        last_duplicate_at: event.last_duplicate_at,
        job_id: event.job_id.0,
        replays: event.replays.into_iter().map(|job| job.0).collect(),
    }
}

/// A source's events, newest first, with what verification found, how
/// often each was delivered again, and the jobs it became.
#[utoipa::path(
    get, path = "/v1/sources/{id}/events", tag = "sources",
    params(("id" = String, Path, description = "Source id", pattern = r"^src_[0-9a-f]{32}$"), EventParams),
    responses((status = 200, body = wire::InboxEventList), (status = 404, body = wire::ErrorBody), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn events(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<wire::InboxEventList>, ApiError> {
    caller.require(Action::ReadAnyJob)?;
    let limit = super::convert::page_limit(params.limit, engine.limits())?;
    let before = params
        .cursor
        .map(|cursor| {
            cursor
                .parse::<i64>()
                .map_err(|_| ApiError::validation("cursor: not a cursor from this API"))
        })
        .transpose()?;
    engine
        .store()
        .source(&caller.scope, source_id(&id)?)
        .await?
        .ok_or_else(no_such_source)?;
    let page = engine
        .store()
        .list_events(&caller.scope, source_id(&id)?, limit, before)
        .await?;
    Ok(Json(wire::InboxEventList {
        events: page.events.into_iter().map(event_view).collect(),
        next_cursor: page.next_cursor.map(|seq| seq.to_string()),
    }))
}

/// Make a new job from a stored event's bytes (admin), linked to the same
/// event and audited. For a job that was lost to a bug, not for duplicates.
#[utoipa::path(
    post, path = "/v1/sources/{id}/events/{event_id}/replay", tag = "sources",
    params(("id" = String, Path, description = "Source id", pattern = r"^src_[0-9a-f]{32}$"), ("event_id" = String, Path, description = "The provider's event id")),
    responses((status = 201, body = wire::Replayed), (status = 404, body = wire::ErrorBody), (status = 429, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn replay(
    State(engine): State<Engine>,
    caller: Caller,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<wire::Replayed>), ApiError> {
    caller.require(Action::OperatorAction)?;
    let no_such_event = || ApiError::new(ErrorCode::NotFound, "no such source or event");
    if !crate::inbox::is_event_id(&event_id) {
        return Err(no_such_event());
    }
    let job = engine
        .replay_event(&caller.scope, source_id(&id)?, &event_id)
        .await
        .map_err(|error| match error {
            StoreError::NotFound => no_such_event(),
            other => other.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(wire::Replayed {
            source_id: id,
            event_id,
            job_id: job.id.0,
        }),
    ))
}
