//! The access log: one `info` line under the `berth::access` target per
//! request served, on the HTTP listener (method, path, status) and on the
//! gRPC one (service, method, gRPC code), each with the peer and the
//! latency in milliseconds until the response head.
//!
//! One small tower layer serves both listeners. For a streaming call (task
//! logs, downloads, a worker's session) the line is written when the
//! stream opens; its messages are not logged. The code of a gRPC call is
//! the `grpc-status` of the response head when the call failed at once
//! (how tonic answers an error); a call that answers is logged `Ok` (its
//! status follows in the trailers, after the stream). Query strings,
//! headers (the token) and bodies are never logged.

use axum::http::{Request, Response};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The `tracing` target of the access lines.
pub const TARGET: &str = "berth::access";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Grpc,
}

/// Wraps a listener's service with the access log.
#[derive(Debug, Clone, Copy)]
pub struct AccessLogLayer(Protocol);

impl AccessLogLayer {
    /// For the REST/metrics/dashboard listener.
    pub fn http() -> AccessLogLayer {
        AccessLogLayer(Protocol::Http)
    }

    /// For the gRPC listener (`Control` and `WorkerLink`).
    pub fn grpc() -> AccessLogLayer {
        AccessLogLayer(Protocol::Grpc)
    }
}

impl<S> tower_layer::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            protocol: self.0,
        }
    }
}

/// The service [`AccessLogLayer`] makes.
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
    protocol: Protocol,
}

impl<S, B, R> tower_service::Service<Request<B>> for AccessLog<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return Box::pin(self.inner.call(req));
        }
        let started = Instant::now();
        let line = Line {
            protocol: self.protocol,
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            peer: peer(&req),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            line.log(res.as_ref().ok(), started);
            res
        })
    }
}

/// The client's address, where the listener recorded it.
fn peer<B>(req: &Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| {
            ext.get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|c| c.remote_addr())
        })
}

/// What is known of a request before its answer.
struct Line {
    protocol: Protocol,
    method: String,
    path: String,
    peer: Option<SocketAddr>,
}

impl Line {
    fn log<R>(&self, res: Option<&Response<R>>, started: Instant) {
        let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let peer = self.peer.map(tracing::field::display);
        match self.protocol {
            Protocol::Http => tracing::info!(
                target: TARGET,
                method = %self.method,
                path = %self.path,
                status = res.map_or(500, |r| r.status().as_u16()),
                latency_ms,
                peer,
                "http request"
            ),
            Protocol::Grpc => {
                let (service, method) = grpc_parts(&self.path);
                tracing::info!(
                    target: TARGET,
                    service,
                    method,
                    code = grpc_code(res),
                    latency_ms,
                    peer,
                    "grpc call"
                );
            }
        }
    }
}

/// `/berth.v1.Control/SubmitTask` → (`berth.v1.Control`, `SubmitTask`).
fn grpc_parts(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

/// The gRPC code of a response head: its `grpc-status` when it has one (an
/// error answered at once), else `Ok` for a 200, else what the HTTP status
/// maps to.
fn grpc_code<R>(res: Option<&Response<R>>) -> String {
    let Some(res) = res else {
        return format!("{:?}", tonic::Code::Unavailable);
    };
    let code = match res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(n) => tonic::Code::from_i32(n),
        None if res.status().is_success() => tonic::Code::Ok,
        None => tonic::Code::Unknown,
    };
    format!("{code:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            grpc_parts("/berth.v1.Control/SubmitTask"),
            ("berth.v1.Control", "SubmitTask")
        );
        assert_eq!(grpc_parts("/odd"), ("odd", ""));
    }

    #[test]
    fn grpc_codes_come_from_the_response_head() {
        let ok = Response::builder().status(200).body(()).unwrap();
        assert_eq!(grpc_code(Some(&ok)), "Ok");
        let refused = Response::builder()
            .status(200)
            .header("grpc-status", "16")
            .body(())
            .unwrap();
        assert_eq!(grpc_code(Some(&refused)), "Unauthenticated");
        let broken = Response::builder().status(502).body(()).unwrap();
        assert_eq!(grpc_code(Some(&broken)), "Unknown");
    }
}
