//! The cluster credential: every RPC carries `authorization: Bearer TOKEN`.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

pub const TOKEN_PREFIX: &str = "Bearer ";

/// Client-side interceptor adding the token to every call.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// Build the credential. A token that cannot be sent as a header value is
    /// refused here, not at the first call.
    pub fn new(token: &str) -> Result<BearerToken, String> {
        if token.is_empty() {
            return Ok(BearerToken(None));
        }
        MetadataValue::try_from(format!("{TOKEN_PREFIX}{token}"))
            .map(|v| BearerToken(Some(v)))
            .map_err(|_| "token contains characters not allowed in a header".to_string())
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Server side: check a request's credential against the cluster token, in
/// constant time.
pub fn check_bearer<T>(req: &Request<T>, token: &str) -> Result<(), Status> {
    let Some(value) = req.metadata().get("authorization") else {
        return Err(Status::unauthenticated(
            "missing cluster token: pass --token or set BERTH_TOKEN (the master prints it at first start and keeps it in DATA_DIR/token)",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix(TOKEN_PREFIX))
        .unwrap_or("");
    let a = presented.as_bytes();
    let b = token.as_bytes();
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (*a.get(i).unwrap_or(&0) ^ *b.get(i).unwrap_or(&0)) as usize;
    }
    if diff != 0 {
        return Err(Status::unauthenticated(
            "wrong cluster token: use the token in the master's DATA_DIR/token",
        ));
    }
    Ok(())
}
