//! Extractors whose rejections are API errors with stable codes, and the
//! authenticated caller.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use steadfast_core::Action;
use steadfast_store::Principal;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;

use super::error::{ApiError, ErrorCode};
use crate::Engine;
use crate::engine::{Admission, AuthError};

/// Where the caller's rate-limit standing goes, for the response's
/// `RateLimit-Policy`, `RateLimit` and `Retry-After` headers
/// ([`rate_limit_headers`]).
#[derive(Debug, Clone, Default)]
pub struct AdmissionSlot(Arc<Mutex<Option<Admission>>>);

impl AdmissionSlot {
    pub(super) fn set(&self, admission: Admission) {
        *self.0.lock().expect("the admission slot is never poisoned") = Some(admission);
    }

    fn get(&self) -> Option<Admission> {
        *self.0.lock().expect("the admission slot is never poisoned")
    }
}

/// Middleware: gives each request an [`AdmissionSlot`] and adds the rate
/// limit headers to its response once authentication filled it.
pub async fn rate_limit_headers(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::HeaderValue;

    let slot = AdmissionSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(admission) = slot.get() {
        let headers = response.headers_mut();
        let value = |text: String| HeaderValue::from_str(&text).expect("rate limit headers are ASCII");
        headers.insert("ratelimit-policy", value(admission.policy_header()));
        headers.insert("ratelimit", value(admission.state_header()));
        if admission.limited {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                value(admission.retry_after().to_string()),
            );
        }
    }
    response
}

/// A JSON body; malformed, oversized or wrongly typed bodies become API errors.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// An optional JSON body: `None` when the request has none (as clients
/// that predate the body send it) or it is `null`, otherwise read as
/// [`ApiJson`] reads it.
#[derive(Debug)]
pub struct OptionalApiJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::Bytes::from_request(axum::extract::Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|rejection| ApiError::from(axum::extract::rejection::JsonRejection::from(rejection)))?;
        if bytes.is_empty() {
            return Ok(OptionalApiJson(None));
        }
        let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        // A JSON `null` is no body too.
        let ApiJson(value) = ApiJson::<Option<T>>::from_request(request, state).await?;
        Ok(OptionalApiJson(value))
    }
}

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
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        let result = engine.authenticate(presented, client).await;
        if let Some(slot) = parts.extensions.get::<AdmissionSlot>() {
            match &result {
                Ok(authenticated) => slot.set(authenticated.admission),
                Err(AuthError::RateLimited(admission)) => slot.set(*admission),
                Err(_) => {}
            }
        }
        match result {
            Ok(authenticated) => {
                let mut principal = authenticated.principal;
                tracing::Span::current().record("tenant", tracing::field::display(principal.scope.tenant_id()));
                principal.scope = principal.scope.with_request_id(request_id);
                Ok(Caller(principal))
            }
            Err(AuthError::Rejected(_)) => {
                // The key id is public; the secret is never logged. Counted
                // by the engine, recorded once per interval.
                let key_id = steadfast_core::ApiKeySecret::parse(presented)
                    .ok()
                    .map(|k| k.key_id().clone());
                tracing::warn!(
                    key_id = key_id.as_ref().map_or("-", |k| k.as_str()),
                    client = client.map(tracing::field::display),
                    "authentication failed"
                );
                Err(unauthorized())
            }
            Err(other) => Err(other.into()),
        }
    }
}
