//! `POST /hooks/{id}`: webhook deliveries. No API key: the signature is
//! the credential. The answer is `200` only once the exact bytes and the
//! job they become are on disk; a refusal stores nothing. Never `410`:
//! Standard Webhooks senders take it as "disable this endpoint".

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use steadfast_protocol as wire;

use super::error::{ApiError, ErrorCode};
use super::extract::AdmissionSlot;
use crate::Engine;
use crate::engine::{Delivery, HookError};
use crate::inbox::verify::Refusal;

/// How long a sender refused for the tenant's quota should wait.
const QUOTA_RETRY_AFTER_SECS: u64 = 60;
/// How long a sender refused because this node is busy, or its storage
/// unavailable, should wait.
const BUSY_RETRY_AFTER_SECS: u64 = 1;
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

fn with_retry_after(error: ApiError, secs: u64) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

fn refused(error: HookError, slot: Option<&AdmissionSlot>) -> Response {
    match error {
        HookError::UnknownSource => ApiError::new(ErrorCode::NotFound, "no such source").into_response(),
        HookError::Refused(Refusal::SignatureInvalid) => ApiError::new(
            ErrorCode::SignatureInvalid,
            "the signature is missing, malformed, or matches none of the source's secrets",
        )
        .into_response(),
        HookError::Refused(Refusal::TimestampOutOfTolerance) => ApiError::new(
            ErrorCode::TimestampOutOfTolerance,
            "the signed timestamp is too far from the server's clock",
        )
        .into_response(),
        HookError::RateLimited(admission) => {
            // The middleware adds RateLimit-Policy, RateLimit and Retry-After.
            if let Some(slot) = slot {
                slot.set(admission);
            }
            with_retry_after(
                ApiError::new(
                    ErrorCode::RateLimited,
                    format!("too many deliveries; retry after {} s", admission.retry_after()),
                ),
                admission.retry_after(),
            )
        }
        HookError::Busy => with_retry_after(
            ApiError::new(ErrorCode::RateLimited, "too many deliveries in flight; retry shortly"),
            BUSY_RETRY_AFTER_SECS,
        ),
        HookError::Store(error @ steadfast_store::StoreError::QuotaExceeded { .. }) => {
            with_retry_after(ApiError::from(error), QUOTA_RETRY_AFTER_SECS)
        }
        HookError::Store(error) => {
            let error = ApiError::from(error);
            if error.code.status() == 503 {
                with_retry_after(error, UNAVAILABLE_RETRY_AFTER_SECS)
            } else {
                error.into_response()
            }
        }
    }
}

/// Deliver a webhook to a source. The body is read once, up to
/// `--max-hook-body-bytes`; it is verified as the source's kind specifies,
/// then stored with its job in one transaction. `200 {"duplicate": true}`
/// for an event seen within the source's dedup window (no new job).
#[utoipa::path(
    post, path = "/hooks/{id}", tag = "hooks",
    params(("id" = String, Path, description = "The source's id, from its ingest_path", pattern = r"^src_[0-9a-f]{32}$")),
    request_body(content = String, content_type = "application/json", description = "The provider's payload, any bytes"),
    responses(
        (status = 200, body = wire::DeliveryAnswer),
        (status = 401, body = wire::ErrorBody),
        (status = 404, body = wire::ErrorBody),
        (status = 413, body = wire::ErrorBody),
        (status = 429, body = wire::ErrorBody),
    )
)]
pub async fn deliver(State(engine): State<Engine>, Path(id): Path<String>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !crate::inbox::is_source_id(&id) {
        return refused(HookError::UnknownSource, None);
    }
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let slot = parts.extensions.get::<AdmissionSlot>();
    let headers: &HeaderMap = &parts.headers;
    let body = match read_body(&engine, headers, body).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match engine.take_delivery(&id, headers, &body, client, request_id).await {
        Ok(Delivery::Accepted { event_id, job_id }) => answer(false, event_id, job_id),
        Ok(Delivery::Duplicate { event_id, job_id }) => answer(true, event_id, job_id),
        Ok(Delivery::Challenge(challenge)) => {
            (StatusCode::OK, Json(serde_json::json!({ "challenge": challenge }))).into_response()
        }
        Err(error) => {
            if let HookError::Refused(refusal) = &error {
                // Counted in the metric and the audit log; one line per
                // unauthenticated request only at debug level.
                tracing::debug!(source_id = %id, client = client.map(tracing::field::display), reason = refusal.as_str(), "webhook delivery refused");
            }
            refused(error, slot)
        }
    }
}

/// The body, read once and at most `--max-hook-body-bytes` of it: a
/// declared length over the limit is refused before anything is read.
async fn read_body(
    engine: &Engine,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ApiError> {
    let limit = engine.config().inbox.max_body_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body exceeds {limit} bytes (--max-hook-body-bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        if super::error::caused_by::<http_body_util::LengthLimitError>(&error) {
            too_large()
        } else if super::error::timed_out(&error) {
            ApiError::new(ErrorCode::RequestTimeout, "the request body did not arrive in time")
        } else {
            ApiError::new(ErrorCode::MalformedJson, "the request body could not be read")
        }
    })
}

fn answer(duplicate: bool, event_id: String, job_id: steadfast_core::JobId) -> Response {
    let body = wire::DeliveryAnswer {
        duplicate,
        event_id,
        job_id: job_id.0,
    };
    (StatusCode::OK, Json(body)).into_response()
}
