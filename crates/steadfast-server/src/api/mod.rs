//! The HTTP API under `/v1`, health endpoints, and the OpenAPI document
//! generated from the handlers' annotations.

pub(crate) mod audit;
pub(crate) mod bulk;
pub(crate) mod convert;

pub use audit::record as audit_record;
pub mod error;
mod extract;
mod health;
mod hooks;
mod jobs;
mod observability;
mod outbox;
mod producers;
mod queues;
mod resources;
mod schedules;
mod schemas;
mod slos;
mod sources;
mod workers;
mod workflows;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::error::{ApiError, ErrorCode};
use crate::Engine;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Steadfast",
        description = "Durable jobs over HTTP/JSON. Every request to /v1 carries `Authorization: Bearer <key>`. \
                       A 2xx on a write means the change is on disk. Errors are `{\"error\": {\"code\", \"message\"}}` \
                       with the stable codes listed in docs/errors.md."
    ),
    modifiers(&BearerAuth),
    components(schemas(steadfast_protocol::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The routes and the OpenAPI document describing them.
fn api() -> (Router<Engine>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::enqueue, jobs::list_jobs))
        .routes(routes!(jobs::enqueue_batch))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::retry))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::replay))
        .routes(routes!(bulk::start))
        .routes(routes!(bulk::list))
        .routes(routes!(bulk::get))
        .routes(routes!(bulk::cancel))
        .routes(routes!(workers::lease))
        .routes(routes!(workers::heartbeat))
        .routes(routes!(workers::complete))
        .routes(routes!(workers::complete_batch))
        .routes(routes!(workers::fail))
        .routes(routes!(workers::release))
        .routes(routes!(workflows::start_step))
        .routes(routes!(workflows::checkpoint_step))
        .routes(routes!(workflows::steps_batch))
        .routes(routes!(workflows::wait))
        .routes(routes!(workflows::signal))
        .routes(routes!(workflows::resolve_step))
        .routes(routes!(workflows::spawn_child))
        .routes(routes!(audit::list))
        .routes(routes!(audit::head))
        .routes(routes!(audit::verify_chain))
        .routes(routes!(observability::metrics))
        .routes(routes!(slos::create, slos::list))
        .routes(routes!(slos::delete))
        .routes(routes!(queues::get_retention, queues::set_retention))
        .routes(routes!(queues::list))
        .routes(routes!(queues::get_policy, queues::set_policy))
        .routes(routes!(schemas::put, schemas::get))
        .routes(routes!(schemas::list))
        .routes(routes!(schedules::list))
        .routes(routes!(producers::list))
        .routes(routes!(outbox::list))
        .routes(routes!(producers::get))
        .routes(routes!(schedules::put, schedules::get, schedules::delete))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(resources::list))
        .routes(routes!(resources::get, resources::put, resources::delete))
        .routes(routes!(sources::create, sources::list))
        .routes(routes!(sources::get, sources::delete))
        .routes(routes!(sources::add_secret))
        .routes(routes!(sources::events))
        .routes(routes!(sources::replay))
        .routes(routes!(hooks::deliver))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .split_for_parts();
    let answers_with_id = ["200", "201", "202"];
    link_operations(&mut openapi, "/v1/jobs", "/v1/jobs/{id}", &answers_with_id);
    link_operations(&mut openapi, "/v1/slos", "/v1/slos/{id}", &answers_with_id);
    link_operations(&mut openapi, "/v1/sources", "/v1/sources/{id}", &answers_with_id);
    // A dry run's 200 is a count, with no id to follow.
    link_operations(&mut openapi, "/v1/jobs/bulk", "/v1/bulk/{id}", &["202"]);
    (router, openapi)
}

/// OpenAPI links from the operation that creates a resource (`POST
/// {create}`, answering its `id` with one of `statuses`) to every
/// operation on `{prefix}...` that takes that `id`: generated clients and
/// fuzzers follow them.
fn link_operations(openapi: &mut utoipa::openapi::OpenApi, create: &str, prefix: &str, statuses: &[&str]) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;

    let mut targets = Vec::new();
    for (path, item) in &openapi.paths.paths {
        if !path.starts_with(prefix) {
            continue;
        }
        for operation in [&item.get, &item.put, &item.post, &item.delete].into_iter().flatten() {
            if let Some(id) = &operation.operation_id {
                targets.push(id.clone());
            }
        }
    }
    let Some(creating) = openapi.paths.paths.get_mut(create).and_then(|item| item.post.as_mut()) else {
        return;
    };
    for (status, response) in creating.responses.responses.iter_mut() {
        let (RefOr::T(response), true) = (response, statuses.contains(&status.as_str())) else {
            continue;
        };
        for target in &targets {
            let link = LinkBuilder::new()
                .operation_id(target.clone())
                .parameter("id", "$response.body#/id")
                .build();
            response.links.insert(target.clone(), RefOr::T(link));
        }
    }
}

/// The OpenAPI 3.1 document of the whole API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The complete HTTP service for `engine`.
pub fn router(engine: Engine) -> Router {
    let (routes, openapi) = api();
    let max_body = engine.limits().max_body_bytes;
    let openapi = Json(openapi);
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            observability::record_http,
        ))
        .route("/openapi.json", get(move || async move { openapi.clone() }))
        .merge(crate::ui::routes())
        .fallback(|| async { ApiError::new(ErrorCode::RouteNotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take that method")
        })
        .layer(axum::middleware::from_fn(extract::rate_limit_headers))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::new(ErrorCode::Internal, "internal error").into_response()
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    let span = tracing::info_span!(
                        "request",
                        // Renamed to "METHOD /route/{template}" once routed.
                        otel.name = %request.method(),
                        otel.kind = "server",
                        otel.status_code = tracing::field::Empty,
                        http.route = tracing::field::Empty,
                        http.response.status_code = tracing::field::Empty,
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                        tenant = tracing::field::Empty,
                        job_id = tracing::field::Empty,
                        trace_id = tracing::field::Empty,
                    );
                    crate::telemetry::adopt_parent(&span, request.headers());
                    span
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(engine)
}
