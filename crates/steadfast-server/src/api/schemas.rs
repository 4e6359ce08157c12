//! Versioned payload schemas: register a version, read them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use steadfast_core::{Action, QueueName};
use steadfast_protocol as wire;
use steadfast_store::schemas::{PayloadSchema, Registered, SchemaRegistration};
use utoipa::IntoParams;

use super::convert;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::Engine;
use crate::engine::contracts::{MAX_SCHEMA_BYTES, compile};

fn queue_name(queue: String) -> Result<QueueName, ApiError> {
    QueueName::new(queue).map_err(|e| ApiError::validation(format!("queue: {}", e.problem)))
}

/// A version from the path: a positive 32-bit integer.
fn version(raw: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>()
        .ok()
        .filter(|version| (1..=i32::MAX as u32).contains(version))
        .ok_or_else(|| ApiError::validation("version: must be an integer from 1 to 2147483647"))
}

/// A schema from a request: bounded in size, compiled (so valid draft
/// 2020-12 that refers to nothing outside itself), as canonical JSON text.
fn checked_schema(field: &str, raw: &wire::Json) -> Result<String, ApiError> {
    if raw.get().len() > MAX_SCHEMA_BYTES {
        return Err(ApiError::validation(format!(
            "{field}: at most {MAX_SCHEMA_BYTES} bytes"
        )));
    }
    let schema: Value =
        serde_json::from_str(raw.get()).map_err(|_| ApiError::validation(format!("{field}: not JSON")))?;
    if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
        return Err(ApiError::validation(format!(
            "{field}: a JSON Schema is an object or a boolean"
        )));
    }
    compile(&schema).map_err(|problem| {
        ApiError::validation(format!("{field}: not a valid JSON Schema (draft 2020-12): {problem}"))
    })?;
    Ok(schema.to_string())
}

fn wire_schema(schema: PayloadSchema) -> Result<wire::PayloadSchema, ApiError> {
    Ok(wire::PayloadSchema {
        queue: schema.queue.to_string(),
        version: schema.version,
        schema: convert::raw_json(&schema.schema)?,
        output_schema: schema.output_schema.as_deref().map(convert::raw_json).transpose()?,
        forced: schema.forced,
        reason: schema.reason,
        created_at: schema.created_at,
    })
}

/// Registers a version of the queue's payload schema (admin; audited as
/// `queue.schema_registered`). From then on every enqueue to the queue is
/// validated against the newest version unless it names another.
///
/// A new version must accept every payload the previous one did: no new
/// required field, no narrowed type, bound or list of values. A breaking
/// version is refused with `409 schema_incompatible`, listing each change,
/// unless sent with `force: true` and a `reason`. Versions only go up and
/// never change: the same content again answers `200`.
#[utoipa::path(
    put, path = "/v1/queues/{queue}/schemas/{version}", tag = "schemas",
    params(
        ("queue" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`"),
        ("version" = u32, Path, description = "A positive integer, higher than the queue's newest version", minimum = 1, maximum = 2_147_483_647),
    ),
    request_body = wire::PutSchemaRequest,
    responses(
        (status = 201, description = "Registered", body = wire::PayloadSchema),
        (status = 200, description = "This version was already registered with this content", body = wire::PayloadSchema),
        (status = 409, description = "`schema_incompatible` (with `violations`), or `invalid_state`: the version exists with other content or is not above the newest", body = wire::ErrorBody),
        (status = 422, description = "`validation_failed`: not a valid schema, too large, or `force` without a `reason`", body = wire::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(engine): State<Engine>,
    caller: Caller,
    Path((queue, raw_version)): Path<(String, String)>,
    ApiJson(request): ApiJson<wire::PutSchemaRequest>,
) -> Result<(StatusCode, Json<wire::PayloadSchema>), ApiError> {
    caller.require(Action::OperatorAction)?;
    let queue = queue_name(queue)?;
    let version = version(&raw_version)?;
    let force = request.force.unwrap_or(false);
    let reason = convert::optional_reason(request.reason.as_deref())?;
    if force && reason.is_none() {
        return Err(ApiError::validation("reason: required with force"));
    }
    let registration = SchemaRegistration {
        version,
        schema: checked_schema("schema", &request.schema)?,
        output_schema: request
            .output_schema
            .as_ref()
            .map(|raw| checked_schema("output_schema", raw))
            .transpose()?,
        force,
        reason,
    };
    let registered = engine.register_schema(&caller.scope, &queue, registration).await?;
    let status = match &registered {
        Registered::Created(_) => StatusCode::CREATED,
        Registered::Unchanged(_) => StatusCode::OK,
    };
    let schema = match registered {
        Registered::Created(schema) | Registered::Unchanged(schema) => schema,
    };
    Ok((status, Json(wire_schema(schema)?)))
}

/// One version of a queue's payload schema (any key of the tenant).
#[utoipa::path(
    get, path = "/v1/queues/{queue}/schemas/{version}", tag = "schemas",
    params(
        ("queue" = String, Path, description = "1–128 bytes of ASCII letters, digits and `-_.:`"),
        ("version" = u32, Path, description = "A registered version", minimum = 1, maximum = 2_147_483_647),
    ),
    responses((status = 200, body = wire::PayloadSchema), (status = 404, body = wire::ErrorBody), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get(
    State(engine): State<Engine>,
    caller: Caller,
    Path((queue, raw_version)): Path<(String, String)>,
) -> Result<Json<wire::PayloadSchema>, ApiError> {
    let queue = queue_name(queue)?;
    let version = version(&raw_version)?;
    let schema = engine
        .schema(&caller.scope, &queue, version)
        .await?
        .ok_or_else(|| ApiError::new(wire::ErrorCode::NotFound, "no such schema version"))?;
    Ok(Json(wire_schema(schema)?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SchemaParams {
    /// Only this queue's versions.
    #[param(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    queue: Option<String>,
}

/// Every registered version of the tenant's payload schemas, by queue
/// then version (any key of the tenant; at most 1000 versions exist).
#[utoipa::path(
    get, path = "/v1/schemas", tag = "schemas",
    params(SchemaParams),
    responses((status = 200, body = wire::SchemaList), (status = 422, body = wire::ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(engine): State<Engine>,
    caller: Caller,
    ApiQuery(params): ApiQuery<SchemaParams>,
) -> Result<Json<wire::SchemaList>, ApiError> {
    let queue = params.queue.map(queue_name).transpose()?;
    let schemas = engine.schemas(&caller.scope, queue.as_ref()).await?;
    Ok(Json(wire::SchemaList {
        schemas: schemas.into_iter().map(wire_schema).collect::<Result<_, _>>()?,
    }))
}
