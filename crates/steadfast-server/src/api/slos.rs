//! Service level objectives: define them, see where they stand.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steadfast_core::slo::{self, Slo, SloKind};
use steadfast_core::{Action, QueueName, TenantName};
use steadfast_protocol as wire;
use steadfast_store::StoreError;

use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, Caller};
use crate::Engine;
use crate::engine::slos::SloState;

/// Most SLOs per tenant.
const MAX_SLOS: usize = 100;

fn status(state: SloState) -> wire::SloStatus {
    let slo = state.record.slo;
    wire::SloStatus {
        id: slo.id,
        name: slo.name,
        queue: slo.queue.to_string(),
        objective: slo.objective,
        latency_threshold_ms: match slo.kind {
            SloKind::Latency { threshold } => Some(threshold.as_millis() as u64),
            SloKind::SuccessRatio => None,
        },
        window_days: (slo.window.as_secs() / 86_400) as u32,
        notify_url: slo.notify_url,
        budget_remaining: state.budget_remaining,
        burn_rates: state
            .burn_rates
            .into_iter()
            .map(|(w, b)| (slo::window_label(w), b))
            .collect(),
        alerts: state
            .record
            .firing
            .into_iter()
            .map(|(severity, since)| wire::SloAlert {
                severity: severity.as_str().into(),
                since,
            })
            .collect(),
    }
}

/// Define an SLO for a queue (admin).
#[utoipa::path(
    post, path = "/v1/slos", tag = "slos",
    request_body = wire::SloRequest,
    responses((status = 201, body = wire::SloStatus), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create(
    State(engine): State<Engine>,
    caller: Caller,
    ApiJson(request): ApiJson<wire::SloRequest>,
) -> Result<(StatusCode, Json<wire::SloStatus>), ApiError> {
    caller.require(Action::OperatorAction)?;
    TenantName::new(request.name.clone()).map_err(|e| ApiError::validation(format!("name: {}", e.problem)))?;
    let queue = QueueName::new(request.queue).map_err(|e| ApiError::validation(format!("queue: {}", e.problem)))?;
    if !(request.objective > 0.0 && request.objective < 1.0) {
        return Err(ApiError::validation(
            "objective: must be above 0 and below 1, e.g. 0.99",
        ));
    }
    let kind = match request.latency_threshold_ms {
        None => SloKind::SuccessRatio,
        Some(ms) if (1..=86_400_000).contains(&ms) => SloKind::Latency {
            threshold: Duration::from_millis(ms),
        },
        Some(_) => {
            return Err(ApiError::validation(
                "latency_threshold_ms: must be between 1 and 86400000",
            ));
        }
    };
    let window_days = request.window_days.unwrap_or(28);
    if !(1..=90).contains(&window_days) {
        return Err(ApiError::validation("window_days: must be between 1 and 90"));
    }
    if let Some(url) = &request.notify_url {
        let parsed = reqwest::Url::parse(url).map_err(|_| ApiError::validation("notify_url: not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || url.len() > 2048 {
            return Err(ApiError::validation(
                "notify_url: must be an http(s) URL of at most 2048 bytes",
            ));
        }
    }
    if engine.store().list_slos(&caller.scope).await?.len() >= MAX_SLOS {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("a tenant may have at most {MAX_SLOS} SLOs"),
        ));
    }
    let slo = Slo {
        id: engine.new_uuid(),
        tenant_id: caller.scope.tenant_id(),
        name: request.name,
        queue,
        kind,
        objective: request.objective,
        window: Duration::from_secs(u64::from(window_days) * 86_400),
        notify_url: request.notify_url,
        created_at: engine.now(),
    };
    let slo = engine
        .store()
        .create_slo(&caller.scope, slo, engine.now())
        .await
        .map_err(|error| match error {
            StoreError::AlreadyExists => ApiError::new(ErrorCode::InvalidState, "an SLO of that name exists"),
            other => other.into(),
        })?;
    let state = engine
        .slo_state(
            &caller.scope,
            steadfast_store::SloRecord {
                slo,
                firing: Vec::new(),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(status(state))))
}

/// Every SLO with its budget remaining, burn rates and alerts.
#[utoipa::path(
    get, path = "/v1/slos", tag = "slos",
    responses((status = 200, body = wire::SloList)),
    security(("bearer" = []))
)]
pub async fn list(State(engine): State<Engine>, caller: Caller) -> Result<Json<wire::SloList>, ApiError> {
    caller.require(Action::ReadMetrics)?;
    let mut slos = Vec::new();
    for record in engine.store().list_slos(&caller.scope).await? {
        slos.push(status(engine.slo_state(&caller.scope, record).await?));
    }
    Ok(Json(wire::SloList { slos }))
}

/// Remove an SLO (admin).
#[utoipa::path(
    delete, path = "/v1/slos/{id}", tag = "slos",
    params(("id" = String, Path, description = "SLO id")),
    responses((status = 204), (status = 404, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::OperatorAction)?;
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::NotFound, "no such SLO"))?;
    engine
        .store()
        .delete_slo(&caller.scope, id, engine.now())
        .await
        .map_err(|error| match error {
            StoreError::NotFound => ApiError::new(ErrorCode::NotFound, "no such SLO"),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
