//! The audit log: queries, signed checkpoints, verification.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use steadfast_core::Action;
use steadfast_core::audit::Record;
use steadfast_protocol as wire;
use steadfast_store::audit::{VerifyError, verify};
use steadfast_store::{AuditCursor, AuditQuery};
use utoipa::IntoParams;

use super::convert::raw_json;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiQuery, Caller};
use super::jobs::job_id;
use crate::Engine;

/// Most records in one page.
const MAX_AUDIT_PAGE: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// RFC 3339; records at or after.
    since: Option<String>,
    /// RFC 3339; records before.
    until: Option<String>,
    /// A key id, or `system` or `operator`.
    actor: Option<String>,
    /// An action name, e.g. `job.enqueued`.
    action: Option<String>,
    /// Only records about this job (its lineage).
    job_id: Option<String>,
    /// Page size (default 100, at most 1000).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn time(field: &str, value: Option<String>) -> Result<Option<steadfast_core::Timestamp>, ApiError> {
    value
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::validation(format!("{field}: not an RFC 3339 time")))
        })
        .transpose()
}

pub fn record(record: &Record) -> Result<wire::AuditRecord, ApiError> {
    Ok(wire::AuditRecord {
        seq: record.seq,
        at: record.at,
        actor: wire::AuditActor {
            kind: record.actor.kind().to_owned(),
            key_id: record.actor.key_id().map(ToString::to_string),
            name: record.actor.name().to_owned(),
        },
        request_id: record.request_id.clone(),
        action: record.action.clone(),
        target: record.target.clone(),
        job_id: record.job_id.map(|id| id.0),
        summary: raw_json(&record.summary)?,
        prev_hash: hex::encode(record.prev_hash),
        hash: hex::encode(record.hash),
    })
}

/// The tenant's audit records, oldest first, filtered.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(AuditParams),
    responses((status = 200, body = wire::AuditList), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(engine): State<Engine>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<wire::AuditList>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(ApiError::validation(format!(
            "limit: must be between 1 and {MAX_AUDIT_PAGE}"
        )));
    }
    let after = params
        .cursor
        .map(|cursor| {
            let (at, seq) = cursor.split_once('.')?;
            let at = steadfast_core::Timestamp::from_millisecond(at.parse().ok()?).ok()?;
            Some(AuditCursor {
                at,
                seq: seq.parse().ok()?,
            })
        })
        .map(|parsed| parsed.ok_or_else(|| ApiError::validation("cursor: not a cursor returned by this API")))
        .transpose()?;
    let job_id = params
        .job_id
        .map(|id| job_id(&id).map_err(|_| ApiError::validation("job_id: not a job id")))
        .transpose()?;
    let query = AuditQuery {
        since: time("since", params.since)?,
        until: time("until", params.until)?,
        actor: params.actor,
        action: params.action,
        job_id,
        limit,
        after,
    };
    let page = engine.store().audit_records(&caller.scope, query).await?;
    Ok(Json(wire::AuditList {
        records: page.records.iter().map(record).collect::<Result<_, _>>()?,
        next_cursor: page.next.map(|c| format!("{}.{}", c.at.as_millisecond(), c.seq)),
    }))
}

/// A signed checkpoint of the tenant's chain, now. Keep it outside the database.
#[utoipa::path(
    get, path = "/v1/audit/head", tag = "audit",
    responses((status = 200, body = wire::AuditCheckpoint)),
    security(("bearer" = []))
)]
pub async fn head(State(engine): State<Engine>, caller: Caller) -> Result<Json<wire::AuditCheckpoint>, ApiError> {
    caller.require(Action::ReadAudit)?;
    let checkpoint = engine.audit_checkpoint(&caller.scope).await?;
    checkpoint
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "no audit signing key is configured"))
}

/// Recomputes the tenant's chain and reports the first problem (admin).
#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = wire::AuditVerification)),
    security(("bearer" = []))
)]
pub async fn verify_chain(
    State(engine): State<Engine>,
    caller: Caller,
) -> Result<Json<wire::AuditVerification>, ApiError> {
    caller.require(Action::OperatorAction)?;
    Ok(Json(match verify(engine.store(), &caller.scope, &[]).await {
        Ok(verified) => wire::AuditVerification {
            intact: true,
            records: verified.records,
            head_seq: verified.head.map_or(0, |h| h.seq),
            problem: None,
        },
        Err(VerifyError::Breach(breach)) => wire::AuditVerification {
            intact: false,
            records: 0,
            head_seq: 0,
            problem: Some(breach.to_string()),
        },
        Err(VerifyError::Store(error)) => return Err(error.into()),
    }))
}
