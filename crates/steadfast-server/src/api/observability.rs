//! `/metrics`, and the middleware that counts and times every routed request.

use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use steadfast_core::Action;

use super::error::ApiError;
use super::extract::Caller;
use crate::Engine;

/// Counts and times requests by route template (never the raw path: ids
/// would make the series count unbounded), method and status.
pub async fn record_http(State(engine): State<Engine>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let span = tracing::Span::current();
    if crate::telemetry::exporting() {
        crate::telemetry::rename(&span, format!("{method} {route}"));
    }
    span.record("http.route", &route);
    let started = Instant::now();
    let response = next.run(request).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    if !engine.records_metrics() {
        return response;
    }
    engine
        .metrics()
        .record_http(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// Prometheus metrics (text exposition format). Needs a reader or admin key
/// unless the server runs with `--metrics-public`.
#[utoipa::path(
    get, path = "/metrics", tag = "observability",
    responses((status = 200, description = "OpenMetrics text when asked for (Prometheus does), else the classic text format")),
    security(("bearer" = []))
)]
pub async fn metrics(State(engine): State<Engine>, mut parts: Parts) -> Result<Response, ApiError> {
    if !engine.config().metrics_public {
        Caller::from_request_parts(&mut parts, &engine)
            .await?
            .require(Action::ReadMetrics)?;
    }
    let headers = &parts.headers;
    if let Err(error) = engine.refresh_queue_gauges().await {
        tracing::warn!(%error, "could not read queue depths for /metrics");
    }
    // Prometheus asks for OpenMetrics; anything else gets the classic format.
    let openmetrics = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let (body, content_type) = if openmetrics {
        (
            engine.metrics().encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            engine.metrics().encode_classic(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
