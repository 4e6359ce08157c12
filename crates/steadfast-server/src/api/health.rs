//! Liveness and readiness, without authentication.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use steadfast_protocol::Health;

use crate::Engine;

fn health(status: &str) -> Json<Health> {
    Json(Health {
        status: status.to_owned(),
    })
}

/// Liveness: the process answers. Checks nothing else, so a slow disk never
/// gets a healthy server restarted.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    health("ok")
}

/// Readiness: storage answers and the server is not draining.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, description = "`draining` or `storage_unavailable`", body = Health))
)]
pub async fn readyz(State(engine): State<Engine>) -> (StatusCode, Json<Health>) {
    if engine.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, health("draining"));
    }
    match engine.store().ping().await {
        Ok(()) => (StatusCode::OK, health("ok")),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, health("storage_unavailable"))
        }
    }
}
