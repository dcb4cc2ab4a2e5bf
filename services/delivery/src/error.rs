//! The delivery service's one error type and the one place that decides its gRPC status.
//!
//! | error | gRPC code | HTTP at the gateway |
//! |---|---|---|
//! | `Invalid` (field violations) | INVALID_ARGUMENT + BadRequest details | 422 |
//! | `NotFound` (also another customer's shipment) | NOT_FOUND | 404 |
//! | `IllegalTransition` | FAILED_PRECONDITION | 409 |
//! | `Conflict` (a concurrent transition won) | ABORTED | 409 |
//! | `TrackingTaken` | ALREADY_EXISTS | 409 |
//! | `PermissionDenied` | PERMISSION_DENIED | 403 |
//! | `ShuttingDown` | UNAVAILABLE | 503 |
//! | `Internal` | INTERNAL, detail logged, never sent | 500 |

use shopmesh_platform::problem::FieldError;
use shopmesh_platform::status;
use tonic::Status;

use crate::domain::ShipmentStatus;
use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("a shipment cannot go from {from} to {to}")]
    IllegalTransition {
        from: ShipmentStatus,
        to: ShipmentStatus,
    },
    #[error("the shipment changed meanwhile (it is now {0}); read it again and retry")]
    Conflict(ShipmentStatus),
    #[error("another shipment of this carrier has this tracking number")]
    TrackingTaken,
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("the service is shutting down")]
    ShuttingDown,
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

/// Storage errors the service did not expect at that point are internal; the ones it expects
/// are matched where they can happen, before this applies.
impl From<RepoError> for Error {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::Unique(constraint) if constraint.contains("tracking_number") => {
                Self::TrackingTaken
            }
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
            Error::IllegalTransition { .. } => Status::failed_precondition(error.to_string()),
            Error::Conflict(_) => Status::aborted(error.to_string()),
            Error::TrackingTaken => Status::already_exists(error.to_string()),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::ShuttingDown => {
                Status::unavailable("the service is shutting down, track the shipment again")
            }
            Error::Internal(err) => status::internal("delivery service", &err),
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
    fn transitions_map_to_precise_codes() {
        let illegal = Status::from(Error::IllegalTransition {
            from: ShipmentStatus::Delivered,
            to: ShipmentStatus::InTransit,
        });
        assert_eq!(illegal.code(), Code::FailedPrecondition);
        assert_eq!(
            illegal.message(),
            "a shipment cannot go from DELIVERED to IN_TRANSIT"
        );
        assert_eq!(
            Status::from(Error::Conflict(ShipmentStatus::InTransit)).code(),
            Code::Aborted
        );
    }
}
