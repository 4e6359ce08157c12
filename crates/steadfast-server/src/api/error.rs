//! API errors: one table of stable codes and their statuses.
//!
//! Every error response is `{"error": {"code", "message"}}`. Codes are a
//! contract (docs/errors.md); messages are for humans and never carry
//! internals (storage errors are logged, not returned) or anything about
//! another tenant.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use steadfast_core::lifecycle::InvalidRequest;
pub use steadfast_protocol::ErrorCode;
use steadfast_protocol::{ErrorBody, ErrorDetail, Violation};
use steadfast_store::StoreError;

use crate::engine::AuthError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// What a payload, output or schema broke, when that is the error.
    pub violations: Option<Vec<Violation>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            violations: None,
        }
    }

    pub fn with_violations(mut self, violations: Vec<Violation>) -> ApiError {
        self.violations = Some(violations);
        self
    }

    /// The same error about batch item `index` (`jobs[3].payload: …`).
    pub fn of_item(mut self, list: &str, index: usize) -> ApiError {
        self.message = format!("{list}[{index}].{}", self.message);
        self
    }

    pub fn not_found() -> ApiError {
        ApiError::new(ErrorCode::NotFound, "no such job")
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::ValidationFailed, message)
    }

    /// The body's `error` object, for responses that report errors per item.
    pub fn detail(self) -> ErrorDetail {
        ErrorDetail {
            code: self.code,
            message: self.message,
            violations: self.violations,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        let body = ErrorBody { error: self.detail() };
        let status = StatusCode::from_u16(code.status()).expect("every code has a valid status");
        let mut response = (status, Json(body)).into_response();
        if code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::LeaseLost => ApiError::new(
                ErrorCode::LeaseLost,
                "this lease is no longer held (expired, superseded, or the job was cancelled); drop the work",
            ),
            StoreError::InvalidState { state, action } => ApiError::new(
                ErrorCode::InvalidState,
                format!("the job is {state} and cannot {action}"),
            ),
            StoreError::IdempotencyKeyReused { .. } => ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "idempotency_key: already used for a different request within the dedup window",
            ),
            StoreError::AlreadyExists => ApiError::new(ErrorCode::InvalidState, "already exists"),
            StoreError::Conflict(problem) => ApiError::new(ErrorCode::InvalidState, problem),
            StoreError::PayloadInvalid { violations, .. } => ApiError::new(
                ErrorCode::PayloadInvalid,
                "payload: fails the queue's schema; nothing was created",
            )
            .with_violations(wire_violations(violations)),
            StoreError::OutputInvalid { violations, .. } => ApiError::new(
                ErrorCode::OutputInvalid,
                "output: fails the queue's output schema; nothing was changed",
            )
            .with_violations(wire_violations(violations)),
            StoreError::SchemaIncompatible(breaking) => ApiError::new(
                ErrorCode::SchemaIncompatible,
                format!(
                    "the schema would refuse payloads the previous version accepted ({} change{}); \
                     send `force: true` with a `reason` to register it anyway",
                    breaking.len(),
                    if breaking.len() == 1 { "" } else { "s" }
                ),
            )
            .with_violations(wire_violations(breaking)),
            StoreError::SingletonRunning { .. } => ApiError::new(
                ErrorCode::SingletonRunning,
                "singleton: the key's job has started, so its payload can no longer change; nothing was created",
            ),
            StoreError::QuotaExceeded { limit } => ApiError::new(
                ErrorCode::QuotaExceeded,
                format!("the tenant holds its limit of {limit} unfinished jobs; nothing was created"),
            ),
            StoreError::KeyNotActive => ApiError::new(ErrorCode::InvalidState, "the key is revoked or expired"),
            StoreError::LimitExceeded { what, limit } => {
                ApiError::new(ErrorCode::LimitExceeded, format!("at most {limit} {what}"))
            }
            StoreError::Invalid(problem) => ApiError::validation(problem),
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "storage unavailable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "storage is unavailable; nothing was changed; retry later",
                )
            }
            StoreError::StorageFull => {
                tracing::error!("storage is full; writes are refused until there is room");
                ApiError::new(
                    ErrorCode::StorageFull,
                    "storage is full; nothing was changed; retry once there is room",
                )
            }
            // Only start-up and `steadfast audit rotate-key` present signing keys.
            StoreError::SigningKey(refused) => {
                tracing::error!(%refused, "an audit signing key was refused during a request");
                ApiError::new(ErrorCode::Internal, "internal error; nothing was changed")
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(%detail, "storage invariant broken");
                ApiError::new(ErrorCode::Internal, "internal error; nothing was changed")
            }
        }
    }
}

fn wire_violations(found: Vec<steadfast_store::schemas::Violation>) -> Vec<Violation> {
    found
        .into_iter()
        .map(|found| Violation {
            pointer: found.pointer,
            rule: found.rule,
            message: found.message,
        })
        .collect()
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        match error {
            AuthError::Rejected(_) => ApiError::new(ErrorCode::Unauthorized, "missing, unknown or revoked API key"),
            AuthError::RateLimited(admission) => ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests; retry after {} s", admission.retry_after()),
            ),
            AuthError::Store(error) => error.into(),
        }
    }
}

impl From<InvalidRequest> for ApiError {
    fn from(error: InvalidRequest) -> ApiError {
        ApiError::validation(error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match rejection {
            JsonRejection::JsonDataError(error) => ApiError::validation(error.body_text()),
            JsonRejection::JsonSyntaxError(error) => ApiError::new(ErrorCode::MalformedJson, error.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(rejection) if timed_out(&rejection) => {
                ApiError::new(ErrorCode::RequestTimeout, "the request body did not arrive in time")
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the server accepts",
            ),
            other => ApiError::new(ErrorCode::MalformedJson, other.body_text()),
        }
    }
}

/// Whether reading the body failed because the client stopped sending it
/// (`serve`'s body read timeout).
pub(super) fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<tower_http::timeout::TimeoutError>(error)
}

/// Whether an `E` is anywhere in `error`'s chain of causes.
pub(super) fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<E>() {
            return true;
        }
        cause = error.source();
    }
    false
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::validation(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> ApiError {
        ApiError::not_found()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::ErrorCode;

    /// docs/errors.md lists every code the API returns, with its status,
    /// and no other.
    #[test]
    fn the_error_codes_in_the_docs_are_the_codes_of_the_api() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md")).unwrap();
        let documented: BTreeSet<(String, u16)> = docs
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let status = cells.get(2)?.parse().ok()?;
                Some((code.to_owned(), status))
            })
            .collect();
        let api: BTreeSet<(String, u16)> = ErrorCode::ALL
            .iter()
            .map(|code| (code.as_str().to_owned(), code.status()))
            .collect();
        assert_eq!(documented, api);
    }
}
