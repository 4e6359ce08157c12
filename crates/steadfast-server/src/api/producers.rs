//! Producer sequence numbers: what was received of each producer's numbers.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use steadfast_core::{Action, ProducerId};
use steadfast_protocol as wire;
use steadfast_store::producers::ProducerState;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorCode};
use super::extract::{ApiQuery, Caller};
use crate::Engine;

fn producer_id(id: String, field: &str) -> Result<ProducerId, ApiError> {
    ProducerId::new(id).map_err(|e| ApiError::validation(format!("{field}: {}", e.problem)))
}

fn info(state: ProducerState) -> wire::ProducerInfo {
    wire::ProducerInfo {
        missing_count: state.missing_count(),
        id: state.id.to_string(),
        highest_sequence: state.highest,
        missing: state
            .missing
            .iter()
            .map(|(start, end)| wire::SequenceRange {
                start: *start,
                end: *end,
            })
            .collect(),
        gaps_total: state.gaps_total,
        forgotten: state.forgotten,
        first_seen_at: state.first_seen_at,
        last_seen_at: state.last_seen_at,
    }
}

/// What Steadfast received of a producer's sequence numbers: the highest,
/// and the ranges below it never received (producer, admin and reader).
/// An edge collector proves it lost nothing when `missing` is empty.
#[utoipa::path(
    get, path = "/v1/producers/{id}", tag = "producers",
    params(("id" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`")),
    responses((status = 200, body = wire::ProducerInfo), (status = 404, body = wire::ErrorBody), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get(
    State(engine): State<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::ProducerInfo>, ApiError> {
    caller.require(Action::ListJobs)?;
    let id = producer_id(id, "id")?;
    let state = engine
        .store()
        .producer(&caller.scope, &id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such producer: nothing was received from it"))?;
    Ok(Json(info(state)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProducerParams {
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_after` of the previous page.
    #[param(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    after: Option<String>,
}

/// The tenant's producers by id, each with what is missing of its numbers.
#[utoipa::path(
    get, path = "/v1/producers", tag = "producers",
    params(ProducerParams),
    responses((status = 200, body = wire::ProducerList), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(engine): State<Engine>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ProducerParams>,
) -> Result<Json<wire::ProducerList>, ApiError> {
    caller.require(Action::ListJobs)?;
    let limit = super::convert::page_limit(params.limit, engine.limits())?;
    let after = params.after.map(|after| producer_id(after, "after")).transpose()?;
    let producers = engine
        .store()
        .list_producers(&caller.scope, after.as_ref(), limit)
        .await?;
    let next_after = (producers.len() == limit as usize)
        .then(|| producers.last().map(|last| last.id.to_string()))
        .flatten();
    Ok(Json(wire::ProducerList {
        producers: producers.into_iter().map(info).collect(),
        next_after,
    }))
}
