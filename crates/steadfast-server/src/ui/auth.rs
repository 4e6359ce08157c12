//! Signing in and out, the session behind every page, and the checks every
//! form passes: same origin and the session's CSRF token.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use steadfast_core::{Action, ApiKeySecret};
use steadfast_store::Principal;
use subtle::ConstantTimeEq;

use super::{Failure, render};
use crate::Engine;
use crate::engine::{AuthError, sessions};
use crate::serve::Transport;

const SESSION_COOKIE: &str = "sf_session";
/// Holds the sign-in form's token until the form comes back (there is no
/// session yet to hold it).
const LOGIN_COOKIE: &str = "sf_login";

/// The signed-in user of a page: the key's principal, authenticated again
/// for this request, and the session's CSRF token for its forms.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub principal: Principal,
    pub csrf: String,
    token: String,
}

impl Viewer {
    pub fn may(&self, action: Action) -> bool {
        self.principal.role.allows(action)
    }

    /// `403` unless the viewer's role may do `action`.
    pub fn require(&self, action: Action) -> Result<(), Failure> {
        if self.may(action) {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                format!("The {} role may not do this.", self.principal.role),
            ))
        }
    }
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .flatten()
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

/// Whether the browser reached the dashboard over TLS: this server's own,
/// or the configured public origin's (a proxy terminating it in front).
fn tls(engine: &Engine, parts: &Parts) -> bool {
    secure(engine, parts.extensions.get::<Transport>().copied())
}

fn secure(engine: &Engine, transport: Option<Transport>) -> bool {
    match &engine.config().ui_origin {
        Some(origin) => origin.starts_with("https://"),
        None => transport.is_some_and(|t| t.tls),
    }
}

fn client(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Secure` over TLS.
fn set_cookie(name: &str, value: String, secure: bool, max_age: Option<cookie::time::Duration>) -> HeaderValue {
    let mut cookie = Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure);
    if let Some(age) = max_age {
        cookie = cookie.max_age(age);
    }
    HeaderValue::from_str(&cookie.build().to_string()).expect("cookies are ASCII")
}

fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, String::new(), secure, Some(cookie::time::Duration::ZERO))
}

/// A request htmx made for a live part of a page (not a person's click).
fn polling(parts: &Parts) -> bool {
    parts.headers.contains_key("hx-request")
}

/// Where a signed-out visitor is sent: the sign-in page, then back. A
/// live part asks htmx to move the whole page there instead of swapping
/// the sign-in form into the part.
fn to_login(parts: &Parts) -> Response {
    if polling(parts) {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/ui/login"));
        return response;
    }
    let here = parts.uri.path_and_query().map_or("/ui", |p| p.as_str());
    let next = if parts.method == axum::http::Method::GET {
        here
    } else {
        "/ui"
    };
    let target = format!(
        "/ui/login?next={}",
        percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
    );
    Redirect::to(&target).into_response()
}

impl FromRequestParts<Engine> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, Response> {
        let Some(token) = cookie_value(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login(parts));
        };
        let Some(session) = engine.session(&token, !polling(parts)) else {
            return Err(to_login(parts));
        };
        match engine.authenticate(&session.secret, client(parts)).await {
            Ok(authenticated) => {
                let request_id = parts
                    .headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut principal = authenticated.principal;
                principal.scope = principal.scope.with_request_id(request_id);
                Ok(Viewer {
                    principal,
                    csrf: session.csrf,
                    token,
                })
            }
            Err(AuthError::Rejected(_)) => {
                // The key was revoked or expired since sign-in.
                engine.end_session(&token);
                Err(to_login(parts))
            }
            Err(AuthError::RateLimited(_)) => Err(Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests with this key; try again in a moment.",
            )
            .into_response()),
            Err(AuthError::Store(error)) => Err(Failure::from(error).into_response()),
        }
    }
}

/// Refuses a form sent from another site: `Sec-Fetch-Site` (when the
/// browser sends it) must say the same origin, and `Origin` (when present)
/// must be this server's.
fn check_origin(engine: &Engine, parts: &Parts) -> Result<(), Failure> {
    let cross_site = || Failure::new(StatusCode::FORBIDDEN, "This form was sent from another site.");
    if let Some(site) = parts.headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(cross_site());
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let expected = match &engine.config().ui_origin {
            Some(public) => Some(public.clone()),
            None => {
                let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok());
                let scheme = if tls(engine, parts) { "https" } else { "http" };
                host.map(|host| format!("{scheme}://{host}"))
            }
        };
        if expected.as_deref().map(str::as_bytes) != Some(origin.as_bytes()) {
            return Err(cross_site());
        }
    }
    Ok(())
}

fn same_token(presented: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// A form that carries the session's CSRF token.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A submitted form: from this site, by a signed-in viewer, with the
/// session's token. Anything else is refused before the handler runs.
pub struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
}

impl<T> FromRequest<Engine> for Posted<T>
where
    T: CsrfForm + serde::de::DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, engine: &Engine) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        check_origin(engine, &parts).map_err(IntoResponse::into_response)?;
        let viewer = Viewer::from_request_parts(&mut parts, engine).await?;
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), engine)
            .await
            .map_err(|rejection| {
                Failure::new(StatusCode::UNPROCESSABLE_ENTITY, rejection.body_text()).into_response()
            })?;
        if !same_token(form.csrf(), &viewer.csrf) {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "This form has expired; reload the page and try again.",
            )
            .into_response());
        }
        Ok(Posted { viewer, form })
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    problem: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path of the dashboard itself, of printable ASCII (it becomes a
/// `Location` header): never another site.
fn safe_next(next: Option<&str>) -> String {
    let printable = |next: &str| next.bytes().all(|b| (0x21..=0x7e).contains(&b));
    match next {
        Some(next) if next.starts_with("/ui") && !next.contains("//") && !next.contains('\\') && printable(next) => {
            next.to_owned()
        }
        _ => "/ui".to_owned(),
    }
}

fn login_form(engine: &Engine, parts_tls: bool, next: String, problem: Option<String>, status: StatusCode) -> Response {
    let csrf = sessions::token(|| engine.random());
    let page = LoginPage {
        csrf: csrf.clone(),
        next,
        problem,
    };
    let cookie = set_cookie(LOGIN_COOKIE, csrf, parts_tls, Some(cookie::time::Duration::minutes(30)));
    let mut response = render(status, &page);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `GET /ui/login`.
pub async fn login_page(
    State(engine): State<Engine>,
    transport: Option<Extension<Transport>>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let secure = secure(&engine, transport.map(|Extension(t)| t));
    login_form(&engine, secure, safe_next(query.next.as_deref()), None, StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    api_key: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// `POST /ui/login`: checks the key as the API would, then starts a session.
pub async fn login(State(engine): State<Engine>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(failure) = check_origin(&engine, &parts) {
        return failure.into_response();
    }
    let Ok(Form(form)) = Form::<LoginForm>::from_request(Request::from_parts(parts.clone(), body), &engine).await
    else {
        return Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "The sign-in form was incomplete.").into_response();
    };
    let secure = tls(&engine, &parts);
    let next = safe_next(form.next.as_deref());
    let expected = cookie_value(&parts.headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_token(&form.csrf, &expected) {
        let problem = "The sign-in form expired; please try again.".to_owned();
        return login_form(&engine, secure, next, Some(problem), StatusCode::FORBIDDEN);
    }
    let secret = form.api_key.trim().to_owned();
    match engine.authenticate(&secret, client(&parts)).await {
        Ok(_) => {
            // A session the browser still held ends: one browser, one session.
            if let Some(old) = cookie_value(&parts.headers, SESSION_COOKIE) {
                engine.end_session(&old);
            }
            let (token, _) = engine.start_session(secret);
            let mut response = Redirect::to(&next).into_response();
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, token, secure, None));
            headers.append(header::SET_COOKIE, clear_cookie(LOGIN_COOKIE, secure));
            response
        }
        Err(AuthError::RateLimited(_)) => {
            let problem = "Too many attempts; wait a moment before trying again.".to_owned();
            login_form(&engine, secure, next, Some(problem), StatusCode::TOO_MANY_REQUESTS)
        }
        Err(AuthError::Rejected(_)) => {
            let key_id = ApiKeySecret::parse(&secret).ok().map(|k| k.key_id().to_string());
            tracing::warn!(key_id = key_id.as_deref().unwrap_or("-"), "dashboard sign-in failed");
            let problem = "That API key is not valid.".to_owned();
            login_form(&engine, secure, next, Some(problem), StatusCode::UNAUTHORIZED)
        }
        Err(AuthError::Store(error)) => Failure::from(error).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

impl CsrfForm for LogoutForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /ui/logout`.
pub async fn logout(
    State(engine): State<Engine>,
    transport: Option<Extension<Transport>>,
    posted: Posted<LogoutForm>,
) -> Response {
    engine.end_session(&posted.viewer.token);
    let secure = secure(&engine, transport.map(|Extension(t)| t));
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE, secure));
    response
}
