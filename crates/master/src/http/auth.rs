//! The cluster credential over HTTP: `Authorization: Bearer TOKEN`, the
//! same token as gRPC (`DATA_DIR/token`), compared in constant time. A
//! refused request reaches no handler, so it changes nothing.

use super::HttpState;
use super::error::HttpError;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// Middleware on every route marked `auth` in [`super::ROUTES`].
pub async fn require_token(
    State(state): State<HttpState>,
    req: Request,
    next: Next,
) -> Result<Response, HttpError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().ok().and_then(bearer).unwrap_or(""));
    match presented {
        None => Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "missing cluster token: send `Authorization: Bearer TOKEN` with the token in the master's DATA_DIR/token",
        )),
        Some(t) if !same(t.as_bytes(), state.token.as_bytes()) => Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "wrong cluster token: use the token in the master's DATA_DIR/token",
        )),
        Some(_) => Ok(next.run(req).await),
    }
}

/// The credential of an `Authorization` value (`Bearer` in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

/// Equal, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (*a.get(i).unwrap_or(&0) ^ *b.get(i).unwrap_or(&0)) as usize;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
        assert!(same(b"", b""));
    }
}
