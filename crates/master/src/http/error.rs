//! The one error shape of the HTTP API: a status code and
//! `{"error": "what went wrong and what to do", "field": "cpu" | null}`,
//! and the one mapping of [`crate::api::ApiError`] onto it.

use crate::api;
use crate::engine::Unavailable;
use axum::Json;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
pub use berth_proto::json::ErrorBody;

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: StatusCode,
    pub error: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

impl HttpError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        HttpError {
            status,
            error: error.into(),
            field: None,
        }
    }

    /// 400: the request is malformed or invalid; `field` names the culprit.
    pub fn bad_field(field: impl Into<String>, error: impl Into<String>) -> Self {
        HttpError {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
            field: Some(field.into()),
        }
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        HttpError::new(StatusCode::NOT_FOUND, error)
    }
}

impl From<Unavailable> for HttpError {
    fn from(e: Unavailable) -> Self {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// The one mapping of an operation's error to an HTTP answer.
impl From<api::ApiError> for HttpError {
    fn from(e: api::ApiError) -> Self {
        use api::ApiError as E;
        let message = e.to_string();
        match e {
            E::InvalidArgument { field, .. } => HttpError::bad_field(field, message),
            E::Gone(_) => HttpError::new(StatusCode::GONE, message),
            E::NotFound(_) => HttpError::not_found(message),
            E::Conflict(_) => HttpError::new(StatusCode::CONFLICT, message),
            E::NeverFits(_) => HttpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{message} (set \"queue_anyway\": true to queue it regardless)"),
            ),
            E::Unavailable(u) => u.into(),
            E::Internal(_) => HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: self.error,
            field: self.field,
        });
        let mut resp = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"berth\""),
            );
        }
        resp
    }
}

/// Any path no route serves.
pub async fn no_route(uri: Uri) -> HttpError {
    HttpError::not_found(format!(
        "no such path: {}; see /openapi.json for the routes",
        uri.path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status() {
        let http = |e: api::ApiError| HttpError::from(e);
        let e = http(api::ApiError::invalid("limit", "too big"));
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::BAD_REQUEST, Some("limit"))
        );
        assert_eq!(e.error, "limit: too big");
        let status = |e: api::ApiError| http(e).status;
        assert_eq!(
            status(api::ApiError::NotFound("x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(api::ApiError::Conflict("x".into())),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(api::ApiError::NeverFits("x".into())),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status(api::ApiError::Unavailable(Unavailable::Stopped)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(api::ApiError::Internal("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let e = http(api::ApiError::NeverFits("too big".into()));
        assert!(e.error.starts_with("too big") && e.error.contains("queue_anyway"));
    }
}
