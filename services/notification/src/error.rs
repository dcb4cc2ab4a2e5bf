//! The notification service's one error type and the one place that decides its gRPC status.
//!
//! | error | gRPC code | HTTP at the gateway |
//! |---|---|---|
//! | `Invalid` (field violations) | INVALID_ARGUMENT + BadRequest details | 422 |
//! | `BadPageToken` | INVALID_ARGUMENT, no field | 400 |
//! | `NotFound` (unknown, malformed or another user's id) | NOT_FOUND | 404 |
//! | `Internal` | INTERNAL, detail logged, never sent | 500 |

use shopmesh_platform::problem::{FieldError, field_error};
use shopmesh_platform::status;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("the page token is not a token of this list")]
    BadPageToken,
    #[error("no such notification")]
    NotFound,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![field_error(field, message)])
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(errors) => status::invalid_input(&errors),
            Error::BadPageToken => Status::invalid_argument(error.to_string()),
            Error::NotFound => Status::not_found(error.to_string()),
            Error::Internal(err) => status::internal("notification service", &err),
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
    fn each_error_has_its_code() {
        assert_eq!(Status::from(Error::NotFound).code(), Code::NotFound);
        assert_eq!(
            Status::from(Error::BadPageToken).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            Status::from(Error::field("page_size", "must be between 0 and 100")).code(),
            Code::InvalidArgument
        );
    }
}
