//! The cart service's one error type and the one place that decides its gRPC status.
//!
//! | error | gRPC code | HTTP at the gateway |
//! |---|---|---|
//! | `Invalid` (field violations) | INVALID_ARGUMENT + BadRequest details | 422 |
//! | `Unauthenticated` (no token, no anonymous cart id) | UNAUTHENTICATED | 401 |
//! | `NotFound` (product, SKU, line, address) | NOT_FOUND | 404 |
//! | `FailedPrecondition` (inactive product, caps, empty cart) | FAILED_PRECONDITION | 409 |
//! | `Unavailable` (catalog, address book or orders unreachable) | UNAVAILABLE | 503 |
//! | `Upstream` (a client error of a peer, passed on as it said it) | the peer's code | per code |
//! | `Internal` | INTERNAL, detail logged, never sent | 500 |

use shopmesh_platform::problem::{FieldError, field_error};
use shopmesh_platform::status;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    /// A peer's answer that the caller can act on (its own code, message and details).
    #[error("{}", .0.message())]
    Upstream(Status),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn field(field: &str, message: &str) -> Self {
        Self::Invalid(vec![field_error(field, message)])
    }

    /// A failed call to `peer`: client errors pass on unchanged; an unreachable or slow peer is
    /// UNAVAILABLE / DEADLINE_EXCEEDED; anything else is an internal error of ours.
    pub fn from_peer(peer: &str, status: Status) -> Self {
        match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::ResourceExhausted
            | Code::DeadlineExceeded => Self::Upstream(status),
            Code::Unavailable | Code::Cancelled => {
                tracing::warn!(peer, message = %status.message(), "peer unavailable");
                Self::Unavailable(format!("the {peer} service is unavailable, try again"))
            }
            _ => Self::Internal(anyhow::anyhow!(
                "calling the {peer} service: {:?} {}",
                status.code(),
                status.message()
            )),
        }
    }
}

impl From<Vec<FieldError>> for Error {
    fn from(errors: Vec<FieldError>) -> Self {
        Self::Invalid(errors)
    }
}

impl From<FieldError> for Error {
    fn from(error: FieldError) -> Self {
        Self::Invalid(vec![error])
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(errors) => status::invalid_input(&errors),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::NotFound(message) => Status::not_found(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Unavailable(message) => Status::unavailable(message),
            Error::Upstream(status) => status,
            Error::Internal(err) => status::internal("cart service", &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_failures_keep_client_errors_and_hide_server_errors() {
        let passed: Status =
            Error::from_peer("order", Status::failed_precondition("price changed")).into();
        assert_eq!(passed.code(), Code::FailedPrecondition);
        assert_eq!(passed.message(), "price changed");
        let down: Status = Error::from_peer("order", Status::unavailable("conn refused")).into();
        assert_eq!(down.code(), Code::Unavailable);
        assert!(!down.message().contains("refused"));
        let internal: Status =
            Error::from_peer("order", Status::internal("postgres://secret")).into();
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
    }
}
