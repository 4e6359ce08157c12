//! Extractors whose rejections are API errors with stable codes, and the
//! authenticated caller.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use steadfast_core::Action;
use steadfast_store::Principal;

use super::error::{ApiError, ErrorCode};
use crate::Engine;

/// A JSON body; malformed, oversized or wrongly typed bodies become API errors.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query parameters; unknown or malformed ones become `validation_failed`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The authenticated caller: every `/v1` handler takes one, so no handler
/// can reach tenant data without a verified key.
#[derive(Debug)]
pub struct Caller(pub Principal);

impl Caller {
    /// `403 forbidden` unless the caller's role may do `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.0.role.allows(action) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("the {} role may not do this", self.0.role),
            ))
        }
    }
}

impl std::ops::Deref for Caller {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl FromRequestParts<Engine> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let unauthorized = || ApiError::new(ErrorCode::Unauthorized, "missing, unknown or revoked API key");
        let Some(presented) = presented else {
            return Err(unauthorized());
        };
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match engine.authenticate(presented).await {
            Ok(mut principal) => {
                tracing::Span::current().record("tenant", tracing::field::display(principal.scope.tenant_id()));
                principal.scope = principal.scope.with_request_id(request_id);
                Ok(Caller(principal))
            }
            Err(crate::engine::AuthError::Rejected(_)) => {
                // The key id is public; the secret is never logged.
                let key_id = steadfast_core::ApiKeySecret::parse(presented)
                    .ok()
                    .map(|k| k.key_id().clone());
                tracing::warn!(
                    key_id = key_id.as_ref().map_or("-", |k| k.as_str()),
                    "authentication failed"
                );
                // Only presentable keys are recorded: a header that is not even a
                // key says nothing an auditor needs and would let anyone cause writes.
                if let Some(key_id) = &key_id {
                    engine.record_auth_failure(Some(key_id), request_id.as_deref()).await;
                }
                Err(unauthorized())
            }
            Err(other) => Err(other.into()),
        }
    }
}
