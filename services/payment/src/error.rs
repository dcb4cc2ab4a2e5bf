//! The payment service's one error type and the one place that decides its gRPC status.
//!
//! | error | gRPC code | HTTP at the gateway |
//! |---|---|---|
//! | `Invalid` (field violations) | INVALID_ARGUMENT + BadRequest details | 422 |
//! | `NotFound` | NOT_FOUND | 404 |
//! | `AlreadyExists` (a repeat that differs from the first) | ALREADY_EXISTS | 409 |
//! | `FailedPrecondition` (nothing to refund) | FAILED_PRECONDITION | 409 |
//! | `Unavailable` (the provider did not answer) | UNAVAILABLE | 503 |
//! | `Internal` | INTERNAL, detail logged, never sent | 500 |
//!
//! A declined charge is not an error: it is a payment with a FAILED status.

use shopmesh_platform::problem::{FieldError, field_error};
use shopmesh_platform::status;
use tonic::Status;

use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![field_error(field, message)])
    }
}

impl From<FieldError> for Error {
    fn from(error: FieldError) -> Self {
        Self::Invalid(vec![error])
    }
}

impl From<Vec<FieldError>> for Error {
    fn from(errors: Vec<FieldError>) -> Self {
        Self::Invalid(errors)
    }
}

impl From<RepoError> for Error {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::Backend(err) => Self::Internal(err),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(errors) => status::invalid_input(&errors),
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Unavailable(message) => Status::unavailable(message),
            Error::Internal(err) => status::internal("payment service", &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn internals_never_reach_the_caller() {
        let status = Status::from(Error::Internal(anyhow::anyhow!(
            "connection to postgres://postgres:secret@db refused"
        )));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn missing_payments_are_not_found() {
        let status = Status::from(Error::NotFound("payment"));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "payment not found");
    }
}
