//! `GET /`: the web dashboard. One HTML file with its CSS and script
//! inline (`dashboard.html` beside this file), compiled into the binary:
//! it needs nothing from the internet. The page itself holds no data; it
//! asks for the cluster token and calls `/api/v1` with it.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("dashboard.html");

/// Inline script and style only; the page may talk to this master and
/// nothing else.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

#[utoipa::path(get, path = "/", tag = "master", operation_id = "dashboard",
    summary = "The web dashboard (it asks for the token itself).",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)))]
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
}
