//! Transactional enqueue (PostgreSQL): what waits in the outbox, and what
//! was refused from it.

use axum::Json;
use axum::extract::State;
use steadfast_core::Action;
use steadfast_protocol as wire;

use super::convert;
use super::error::ApiError;
use super::extract::Caller;
use crate::Engine;

/// Most entries one answer lists.
const LISTED: u32 = 500;

/// Requests the tenant's applications wrote with `steadfast.enqueue(...)`
/// whose jobs are not made yet (normally for well under a second), or were
/// refused for good, with the error (admin and reader; at most 500, oldest
/// first). Empty on the embedded store.
#[utoipa::path(
    get, path = "/v1/outbox", tag = "jobs",
    responses((status = 200, body = wire::OutboxList)),
    security(("bearer" = []))
)]
pub async fn list(State(engine): State<Engine>, caller: Caller) -> Result<Json<wire::OutboxList>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let records = engine.store().list_outbox(&caller.scope, LISTED).await?;
    let entries = records
        .into_iter()
        .map(|record| {
            let (failed_at, error) = match record.failed {
                Some((at, code, message)) => {
                    let code =
                        serde_json::from_value(serde_json::Value::String(code)).unwrap_or(wire::ErrorCode::Unknown);
                    (
                        Some(at),
                        Some(wire::ErrorDetail {
                            code,
                            message,
                            violations: None,
                        }),
                    )
                }
                None => (None, None),
            };
            Ok(wire::OutboxEntry {
                id: record.id.0,
                key_id: record.key_id,
                request: convert::raw_json(&record.request)?,
                created_at: record.created_at,
                attempts: record.attempts,
                error,
                failed_at,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(wire::OutboxList { entries }))
}
