//! Resources: the downstreams jobs call, with their limits and circuit
//! breakers, shared by every queue.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steadfast_core::{Action, ResourceName};
use steadfast_protocol as wire;
use steadfast_store::flow::{Breaker, BreakerState, Resource, ResourceConfig};

use super::convert::{rate, wire_rate};
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, Caller};
use crate::Engine;

fn resource_name(name: String) -> Result<ResourceName, ApiError> {
    // A name that cannot exist is simply not there (as on GET of any id).
    ResourceName::new(name).map_err(|e| ApiError::validation(format!("resource: {}", e.problem)))
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such resource")
}

fn wire_resource(resource: Resource) -> wire::Resource {
    let config = resource.config;
    let state = resource.state;
    wire::Resource {
        name: resource.name.into_string(),
        breaker: config.breaker.map(|b| wire::BreakerConfig {
            failure_ratio: b.failure_ratio,
            min_requests: b.min_requests,
            window_secs: b.window_secs,
            open_secs: b.open_secs,
            half_open_probes: b.half_open_probes,
        }),
        concurrency: config.concurrency,
        rate: config.rate.map(wire_rate),
        state: match state.breaker {
            BreakerState::Closed => wire::BreakerStatus::Closed,
            BreakerState::Open => wire::BreakerStatus::Open,
            BreakerState::HalfOpen => wire::BreakerStatus::HalfOpen,
        },
        window: wire::BreakerWindow {
            started_at: state.window_started_at,
            requests: state.window_requests,
            failures: state.window_failures,
        },
        opened_at: state.opened_at,
        probes_granted: state.probes_granted,
        created_at: resource.created_at,
        updated_at: resource.updated_at,
    }
}

/// Creates the resource or replaces its limits and breaker (admin;
/// audited as `resource.set`). The breaker's state is kept.
#[utoipa::path(
    put, path = "/v1/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    request_body = wire::ResourceRequest,
    responses((status = 200, body = wire::Resource), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn put(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<wire::ResourceRequest>,
) -> Result<Json<wire::Resource>, ApiError> {
    caller.require(Action::OperatorAction)?;
    let name = resource_name(name)?;
    let config = ResourceConfig {
        breaker: request.breaker.map(|b| Breaker {
            failure_ratio: b.failure_ratio,
            min_requests: b.min_requests,
            window_secs: b.window_secs,
            open_secs: b.open_secs,
            half_open_probes: b.half_open_probes,
        }),
        concurrency: request.concurrency,
        rate: request.rate.map(rate),
    };
    let resource = engine
        .store()
        .put_resource(&caller.scope, &name, config, engine.now())
        .await?;
    Ok(Json(wire_resource(resource)))
}

/// The resource and its breaker's state now (admin and reader).
#[utoipa::path(
    get, path = "/v1/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    responses((status = 200, body = wire::Resource), (status = 404, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<wire::Resource>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let name = ResourceName::new(name).map_err(|_| not_found())?;
    let resource = engine.store().resource(&caller.scope, &name, engine.now()).await?;
    Ok(Json(wire_resource(resource.ok_or_else(not_found)?)))
}

/// Every resource of the tenant, by name (admin and reader).
#[utoipa::path(
    get, path = "/v1/resources", tag = "resources",
    responses((status = 200, body = wire::ResourceList)),
    security(("bearer" = []))
)]
pub async fn list(State(engine): State<Engine>, caller: Caller) -> Result<Json<wire::ResourceList>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let resources = engine.store().resources(&caller.scope, engine.now()).await?;
    Ok(Json(wire::ResourceList {
        resources: resources.into_iter().map(wire_resource).collect(),
    }))
}

/// Removes the resource (admin; audited as `resource.deleted`): its jobs
/// are no longer held by its limits or breaker.
#[utoipa::path(
    delete, path = "/v1/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    responses((status = 204), (status = 404, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(engine): State<Engine>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::OperatorAction)?;
    let name = ResourceName::new(name).map_err(|_| not_found())?;
    engine
        .store()
        .delete_resource(&caller.scope, &name, engine.now())
        .await
        .map_err(|error| match error {
            steadfast_store::StoreError::NotFound => not_found(),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
