//! The dashboard at `/ui`: server-rendered pages (askama templates in
//! `templates/`) over the same engine the API uses. Reads work without
//! JavaScript; htmx (vendored, see `assets/`) only refreshes the live parts.
//! Signing in takes an API key and makes a server-side session
//! (`engine::sessions`); every page authenticates that key again, and
//! every form is checked for its origin and the session's CSRF token
//! (`auth`). Every action takes a reason, which lands in the audit log
//! with the key that acted.

mod actions;
mod assets;
mod auth;
mod format;
mod live;
mod views;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use steadfast_store::StoreError;

use crate::Engine;
use crate::api::error::ApiError;

/// What the dashboard's pages may load: only this server's own scripts and
/// styles; no inline script, no frames, forms posted only here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The API reference's policy: Swagger UI sets inline styles, so styles
/// may be inline there; scripts still come only from this server, and
/// nothing is fetched from anywhere else.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; font-src 'self' data:; connect-src 'self'; form-action 'self'; \
                        frame-ancestors 'none'; base-uri 'none'";

#[derive(Template)]
#[template(path = "docs.html")]
struct DocsPage;

/// The dashboard's and the API reference's routes, for [`crate::router`]
/// to merge.
pub fn routes() -> Router<Engine> {
    let docs = Router::new()
        .route("/docs", get(|| async { render(StatusCode::OK, &DocsPage) }))
        .route("/docs/static/{file}", get(assets::serve_docs))
        .layer(axum::middleware::from_fn(|request, next| {
            headers(DOCS_CSP, request, next)
        }));
    Router::new()
        .route("/ui", get(views::overview))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route("/ui/login", get(auth::login_page).post(auth::login))
        .route("/ui/logout", post(auth::logout))
        .route("/ui/live/overview", get(views::overview_live))
        .route("/ui/jobs", get(views::jobs))
        .route("/ui/queues/{queue}", get(views::queue))
        .route("/ui/jobs/{id}", get(views::job))
        .route("/ui/jobs/{id}/retry", post(actions::retry))
        .route("/ui/jobs/{id}/cancel", post(actions::cancel))
        .route("/ui/jobs/{id}/replay", post(actions::replay))
        .route("/ui/jobs/{id}/approve", post(actions::approve))
        .route("/ui/jobs/{id}/reject", post(actions::reject))
        .route("/ui/jobs/{id}/signal", post(actions::signal))
        .route("/ui/jobs/{id}/steps/{name}/resolve", post(actions::resolve))
        .route("/ui/dead", get(views::dead))
        .route("/ui/bulk", get(views::bulk_list).post(actions::start_bulk))
        .route("/ui/bulk/new", get(views::bulk_new))
        .route("/ui/bulk/{id}", get(views::bulk))
        .route("/ui/bulk/{id}/progress", get(views::bulk_progress))
        .route("/ui/bulk/{id}/cancel", post(actions::stop_bulk))
        .route("/ui/audit", get(views::audit))
        .route("/ui/audit/verify", post(actions::verify_audit))
        .route("/ui/sources", get(views::sources))
        .route("/ui/sources/{id}", get(views::source))
        .route("/ui/policies", get(views::policies))
        .route("/ui/static/{file}", get(assets::serve))
        .route(
            "/ui/{*rest}",
            get(|| async { Failure::new(StatusCode::NOT_FOUND, "There is no such page.") }),
        )
        .layer(axum::Extension(std::sync::Arc::new(live::Live::default())))
        .layer(axum::middleware::from_fn(|request, next| headers(CSP, request, next)))
        .merge(docs)
}

/// Every dashboard response: its CSP, no sniffing, no framing, no
/// referrer leaving the site, and pages never cached (they show live data
/// and carry CSRF tokens).
async fn headers(csp: &'static str, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let is_asset = request.uri().path().contains("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Renders a page; a template that fails to render is a bug, shown as a 500.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a dashboard template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

/// A page that could not be shown or an action that was refused: its
/// status, and a message safe to show (no internals, no other tenant).
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn not_found() -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "There is no such job in this tenant.")
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        let status = StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Failure::new(status, error.message)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        ApiError::from(error).into()
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            title: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        render(self.status, &page)
    }
}
