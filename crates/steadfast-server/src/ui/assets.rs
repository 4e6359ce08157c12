//! The dashboard's and the API reference's static files, compiled into
//! the binary: nothing is fetched from anywhere else.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Failure;

/// htmx 2.0.8 from npm (`htmx.org`, `dist/htmx.min.js`); see `assets/VENDORED.md`.
const HTMX: &[u8] = include_bytes!("../../assets/htmx.min.js");
/// Swagger UI 5.35.0 from npm (`swagger-ui-dist`); see `assets/VENDORED.md`.
const SWAGGER_JS: &[u8] = include_bytes!("../../assets/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../../assets/swagger-ui.css");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

type File = (&'static str, &'static str, &'static [u8]);

/// The dashboard's files, under `/ui/static/`.
const UI_FILES: &[File] = &[
    ("htmx.min.js", JS, HTMX),
    ("app.js", JS, include_bytes!("../../assets/app.js")),
    ("app.css", CSS, include_bytes!("../../assets/app.css")),
];

/// The API reference's files, under `/docs/static/`.
const DOCS_FILES: &[File] = &[
    ("swagger-ui-bundle.js", JS, SWAGGER_JS),
    ("swagger-ui.css", CSS, SWAGGER_CSS),
    ("docs.js", JS, include_bytes!("../../assets/docs.js")),
];

/// `GET /ui/static/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    serve_from(UI_FILES, &file)
}

/// `GET /docs/static/{file}`.
pub async fn serve_docs(Path(file): Path<String>) -> Response {
    serve_from(DOCS_FILES, &file)
}

fn serve_from(files: &[File], file: &str) -> Response {
    let Some((_, content_type, bytes)) = files.iter().find(|(name, ..)| *name == file) else {
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

    /// The vendored files' SHA-256, pinned (see `assets/VENDORED.md`).
    const PINNED: [(&str, &[u8], &str); 3] = [
        (
            "htmx.min.js",
            super::HTMX,
            "22283ef68cb7545914f0a88a1bdedc7256a703d1d580c1d255217d0a50d31313",
        ),
        (
            "swagger-ui-bundle.js",
            super::SWAGGER_JS,
            "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
        ),
        (
            "swagger-ui.css",
            super::SWAGGER_CSS,
            "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
        ),
    ];

    #[test]
    fn the_vendored_files_are_the_pinned_ones() {
        for (name, bytes, sha256) in PINNED {
            assert_eq!(hex::encode(Sha256::digest(bytes)), sha256, "{name}");
        }
    }
}
