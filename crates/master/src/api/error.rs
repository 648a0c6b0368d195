//! [`ApiError`]: the one error type of every client operation. Each kind
//! says what the client can do about it; the adapters map the kinds, once
//! each, to gRPC codes (`crate::grpc`) and HTTP statuses
//! (`crate::http::error`).

use crate::engine::Unavailable;
use crate::outputs::OutputError;
use crate::state::{AdminError, CancelError, SubmitError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid; `field` names the culprit and
    /// `why` says what is wrong with it and what would be right.
    #[error("{why}")]
    InvalidArgument { field: String, why: String },
    /// No such task, worker or file.
    #[error("{0}")]
    NotFound(String),
    /// The thing is not in a state that allows it (a task that already
    /// ended, a worker not drained, a name several workers share).
    #[error("{0}")]
    Conflict(String),
    /// No registered worker could ever fit the task: why (naming the
    /// largest worker). Each adapter adds how to queue it regardless in
    /// its own spelling.
    #[error("{0}")]
    NeverFits(String),
    /// The engine could not answer (stopped, or the store refused the
    /// batch); worth retrying.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// A watch cannot resume from the cursor given: take a fresh snapshot
    /// and watch from now.
    #[error("{0}")]
    Gone(#[from] crate::engine::feed::Gone),
    /// The master failed on its side (a file it could not read).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// An invalid `field`: `why` is said after the field's name.
    pub fn invalid(field: impl Into<String>, why: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        ApiError::InvalidArgument {
            why: format!("{field}: {why}"),
            field,
        }
    }

    /// The request field at fault, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }

    pub(crate) fn no_task(id: berth_core::TaskId) -> ApiError {
        ApiError::NotFound(format!("task {id} does not exist"))
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::Invalid(v) => ApiError::InvalidArgument {
                field: v.field.to_string(),
                why: format!("invalid task: {v}"),
            },
            SubmitError::NeverFits(why) => ApiError::NeverFits(why),
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> ApiError {
        match e {
            CancelError::NoSuchTask(_) => ApiError::NotFound(e.to_string()),
            CancelError::AlreadyEnded(..) => ApiError::Conflict(e.to_string()),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> ApiError {
        match e {
            AdminError::NoSuchWorker(_) => ApiError::NotFound(e.to_string()),
            AdminError::BadName(_) => ApiError::InvalidArgument {
                field: "name".into(),
                why: e.to_string(),
            },
            _ => ApiError::Conflict(e.to_string()),
        }
    }
}

impl From<OutputError> for ApiError {
    fn from(e: OutputError) -> ApiError {
        match e {
            OutputError::BadPath { .. } => ApiError::InvalidArgument {
                field: "path".into(),
                why: e.to_string(),
            },
            OutputError::NoSuchFile { task, .. } => {
                ApiError::NotFound(format!("{e}; `berth task files {task}` lists its files"))
            }
            OutputError::Upload { .. } | OutputError::Io { .. } => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_the_field_first() {
        let e = ApiError::invalid("limit", "must be at most 1000");
        assert_eq!(e.field(), Some("limit"));
        assert_eq!(e.to_string(), "limit: must be at most 1000");
        assert_eq!(ApiError::NotFound("x".into()).field(), None);
    }

    #[test]
    fn unavailable_keeps_the_engines_words() {
        let e = ApiError::from(Unavailable::Storage("disk full".into()));
        assert!(e.to_string().starts_with("disk full"), "{e}");
    }
}
