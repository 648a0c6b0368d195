//! gRPC services: `Control` for clients (an adapter over [`crate::api`]),
//! `WorkerLink` for workers. Both check the cluster token first and
//! translate between the wire and the master; no decisions are made here.

mod control;
mod worker_link;

pub use control::ControlService;
pub use worker_link::WorkerLinkService;

use crate::api::ApiError;
use crate::engine::Unavailable;
use tonic::Status;

impl From<Unavailable> for Status {
    fn from(e: Unavailable) -> Status {
        Status::unavailable(e.to_string())
    }
}

/// The one mapping of an [`ApiError`] to a gRPC status.
pub(crate) fn status(e: ApiError) -> Status {
    let message = e.to_string();
    match e {
        ApiError::InvalidArgument { .. } => Status::invalid_argument(message),
        ApiError::NotFound(_) => Status::not_found(message),
        ApiError::Conflict(_) => Status::failed_precondition(message),
        ApiError::NeverFits(_) => Status::failed_precondition(format!(
            "{message} (submit with --queue-anyway to queue it regardless)"
        )),
        ApiError::Unavailable(u) => u.into(),
        ApiError::Gone(_) => Status::out_of_range(message),
        ApiError::Internal(_) => Status::internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_kind_has_its_code() {
        let code = |e: ApiError| status(e).code();
        assert_eq!(code(ApiError::invalid("limit", "x")), Code::InvalidArgument);
        assert_eq!(code(ApiError::NotFound("x".into())), Code::NotFound);
        assert_eq!(
            code(ApiError::Conflict("x".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(ApiError::NeverFits("x".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(ApiError::Unavailable(Unavailable::Stopped)),
            Code::Unavailable
        );
        assert_eq!(code(ApiError::Internal("x".into())), Code::Internal);
        let s = status(ApiError::NeverFits("too big".into()));
        assert!(s.message().starts_with("too big") && s.message().contains("--queue-anyway"));
    }
}
