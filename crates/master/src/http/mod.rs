//! The master's HTTP listener: the operator faces of berth.
//!
//! * `/api/v1/…` — the REST/JSON API (`api`, `submit`, `json`): an adapter
//!   over [`crate::api`], the same operations as the gRPC `Control`
//!   service.
//! * `/metrics` — Prometheus text exposition (`metrics`).
//! * `/` — the web dashboard, one self-contained HTML page (`dashboard`).
//! * `/openapi.json` — the OpenAPI 3.1 description of all of the above
//!   (`openapi`), generated from the handlers' `#[utoipa::path]` and the
//!   typed shapes of `berth_proto::json`; tests check it against
//!   [`ROUTES`].
//! * `/healthz` — liveness for load balancers and service managers.
//!
//! Every route is listed once, in [`ROUTES`]; the router is built from that
//! table, so the table, the router and the OpenAPI document cannot drift
//! apart unnoticed. Routes marked `auth` need `Authorization: Bearer
//! TOKEN` with the cluster token (`auth`). Client operations go through
//! [`Api`]; only `/healthz` and `/metrics` read the engine directly. HTTP
//! holds no state of its own.

mod api;
mod auth;
mod dashboard;
mod error;
mod metrics;
mod openapi;
mod process;
mod submit;

pub use openapi::document_json;

use crate::api::Api;
use crate::engine::EngineHandle;
use axum::Router;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post};
use std::sync::Arc;
use tokio::net::TcpListener;

/// What every handler needs: the operations, the engine (for health and
/// metrics) and the token.
#[derive(Clone)]
pub struct HttpState {
    pub api: Api,
    pub engine: EngineHandle,
    pub token: Arc<str>,
}

/// One route the HTTP listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// In the router's and OpenAPI's syntax: `/api/v1/tasks/{id}`.
    pub path: &'static str,
    /// Needs the cluster token.
    pub auth: bool,
}

const fn route(method: &'static str, path: &'static str, auth: bool) -> Route {
    Route { method, path, auth }
}

/// Every route, once. The router serves exactly these; `/openapi.json`
/// describes exactly these (a test checks both directions).
pub const ROUTES: &[Route] = &[
    route("GET", "/", false),
    route("GET", "/healthz", false),
    route("GET", "/openapi.json", false),
    route("GET", "/metrics", true),
    route("GET", "/api/v1/tasks", true),
    route("POST", "/api/v1/tasks", true),
    route("GET", "/api/v1/tasks/{id}", true),
    route("POST", "/api/v1/tasks/{id}/cancel", true),
    route("GET", "/api/v1/tasks/{id}/logs", true),
    route("GET", "/api/v1/tasks/{id}/files", true),
    route("GET", "/api/v1/tasks/{id}/file", true),
    route("GET", "/api/v1/outputs", true),
    route("GET", "/api/v1/workers", true),
    route("GET", "/api/v1/workers/{id}", true),
    route("POST", "/api/v1/workers/{id}/drain", true),
    route("POST", "/api/v1/workers/{id}/undrain", true),
    route("POST", "/api/v1/workers/{id}/register", true),
    route("POST", "/api/v1/workers/{id}/unregister", true),
    route("POST", "/api/v1/reconcile", true),
    route("GET", "/api/v1/events", true),
];

/// 200 `ok` while the engine runs and the store takes writes; 503 with the
/// reason otherwise (reads may still be served: see `/api/v1`).
#[utoipa::path(get, path = "/healthz", tag = "master", operation_id = "healthz",
    summary = "ok while the engine runs and the store takes writes.",
    responses(
        (status = 200, description = "ok", content_type = "text/plain", body = String),
        (status = 503, description = "The engine stopped or the store refuses writes; the reason.", content_type = "text/plain", body = String),
    ))]
async fn healthz(Extract(st): Extract<HttpState>) -> (StatusCode, String) {
    match st.engine.health().check() {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// The handler of one route of [`ROUTES`].
fn handler(r: &Route) -> MethodRouter<HttpState> {
    match (r.method, r.path) {
        ("GET", "/") => get(dashboard::page),
        ("GET", "/healthz") => get(healthz),
        ("GET", "/openapi.json") => get(openapi::document),
        ("GET", "/metrics") => get(metrics::scrape),
        ("GET", "/api/v1/tasks") => get(api::list_tasks),
        ("POST", "/api/v1/tasks") => post(api::submit_task),
        ("GET", "/api/v1/tasks/{id}") => get(api::get_task),
        ("POST", "/api/v1/tasks/{id}/cancel") => post(api::cancel_task),
        ("GET", "/api/v1/tasks/{id}/logs") => get(api::task_logs),
        ("GET", "/api/v1/tasks/{id}/files") => get(api::task_files),
        ("GET", "/api/v1/tasks/{id}/file") => get(api::task_file),
        ("GET", "/api/v1/workers") => get(api::list_workers),
        ("GET", "/api/v1/outputs") => get(api::outputs),
        ("GET", "/api/v1/workers/{id}") => get(api::get_worker),
        ("GET", "/api/v1/events") => get(api::events),
        ("POST", "/api/v1/workers/{id}/drain") => post(api::drain_worker),
        ("POST", "/api/v1/workers/{id}/undrain") => post(api::undrain_worker),
        ("POST", "/api/v1/workers/{id}/register") => post(api::register_worker),
        ("POST", "/api/v1/workers/{id}/unregister") => post(api::unregister_worker),
        ("POST", "/api/v1/reconcile") => post(api::reconcile),
        (m, p) => panic!("route {m} {p} is listed in ROUTES but has no handler"),
    }
}

/// The whole HTTP surface, built from [`ROUTES`].
pub fn router(state: HttpState) -> Router {
    let mut r: Router<HttpState> = Router::new();
    for route in ROUTES {
        let mut h = handler(route);
        if route.auth {
            h = h.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require_token,
            ));
        }
        r = r.route(route.path, h);
    }
    r.fallback(error::no_route)
        .with_state(state)
        .layer(crate::access::AccessLogLayer::http())
}

pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "http listener failed");
    }
}
