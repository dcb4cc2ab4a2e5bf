//! The analytics service's one error type and the one place that decides its gRPC status.
//!
//! | error | gRPC code | HTTP at the gateway |
//! |---|---|---|
//! | `Invalid` (field violations: the range, the limit, the ranking) | INVALID_ARGUMENT + BadRequest details | 422 |
//! | `Unavailable` (the database cannot be reached) | UNAVAILABLE | 503 |
//! | `Internal` | INTERNAL, detail logged, never sent | 500 |
//!
//! Who may ask is decided before (the method guard, then the handlers): no token is
//! UNAUTHENTICATED, anyone but an admin PERMISSION_DENIED.

use shopmesh_platform::problem::FieldError;
use shopmesh_platform::status;
use tonic::Status;

use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("the analytics database is unavailable")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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
            RepoError::Unavailable(err) => {
                tracing::warn!(error = %err, "analytics database unavailable");
                Self::Unavailable
            }
            RepoError::Backend(err) => Self::Internal(anyhow::Error::new(err)),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(errors) => status::invalid_input(&errors),
            Error::Unavailable => Status::unavailable(error.to_string()),
            Error::Internal(err) => status::internal("analytics service", &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use shopmesh_platform::problem::field_error;
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn internals_never_reach_the_caller() {
        let status = Status::from(Error::from(RepoError::Backend(sqlx::Error::Protocol(
            "postgres://postgres:secret@db said no".into(),
        ))));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn each_error_has_its_code() {
        let status = Status::from(Error::from(field_error("limit", "must be at most 100")));
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(fields[0].field, "limit");
        let status = Status::from(Error::from(RepoError::from(sqlx::Error::PoolTimedOut)));
        assert_eq!(status.code(), Code::Unavailable);
    }
}
