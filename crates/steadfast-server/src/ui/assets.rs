//! The dashboard's static files, compiled into the binary.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Failure;

/// htmx 2.0.8 from npm (`htmx.org`, `dist/htmx.min.js`); see `assets/VENDORED.md`.
const HTMX: &[u8] = include_bytes!("../../assets/htmx.min.js");

const FILES: &[(&str, &str, &[u8])] = &[
    ("htmx.min.js", "text/javascript; charset=utf-8", HTMX),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/app.css"),
    ),
];

/// `GET /ui/static/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(name, ..)| *name == file) else {
        return Failure::new(StatusCode::NOT_FOUND, "There is no such file.").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        *bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// htmx's SHA-256, pinned (see `assets/VENDORED.md`).
    const HTMX_SHA256: &str = "22283ef68cb7545914f0a88a1bdedc7256a703d1d580c1d255217d0a50d31313";

    #[test]
    fn the_vendored_files_are_the_pinned_ones() {
        assert_eq!(hex::encode(Sha256::digest(super::HTMX)), HTMX_SHA256);
    }
}
