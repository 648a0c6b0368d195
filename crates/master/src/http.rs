//! The master's HTTP listener: health for now (`GET /healthz`); the JSON
//! API, metrics and dashboard will live here.

use axum::{Router, routing::get};
use tokio::net::TcpListener;

pub fn router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}

pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
    if let Err(e) = axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "http listener failed");
    }
}
