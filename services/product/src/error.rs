//! The product service's one error type and the one place that decides its gRPC status.
//!
//! | error | gRPC code | HTTP at the gateway |
//! |---|---|---|
//! | `Invalid` (field violations) | INVALID_ARGUMENT + BadRequest details | 422 |
//! | `BadArgument` (page size, cursor, ids) | INVALID_ARGUMENT | 400 |
//! | `NotFound`, `UnknownSkus` | NOT_FOUND | 404 |
//! | `SkuTaken`, `SlugTaken`, `ReservationMismatch` | ALREADY_EXISTS | 409 |
//! | `StaleEtag` | ABORTED | 412 (mapped by the gateway for If-Match writes) |
//! | `InsufficientStock` | FAILED_PRECONDITION + PreconditionFailure details | 409 |
//! | `FailedPrecondition` | FAILED_PRECONDITION | 409 |
//! | `PermissionDenied` | PERMISSION_DENIED | 403 |
//! | `Internal` | INTERNAL, detail logged, never sent | 500 |

use shopmesh_platform::problem::{FieldError, field_error};
use shopmesh_platform::status;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::domain::Sku;
use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    BadArgument(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("unknown SKU: {}", join(.0))]
    UnknownSkus(Vec<Sku>),
    #[error("a product with SKU {0} already exists")]
    SkuTaken(Sku),
    #[error("a category with slug {0} already exists")]
    SlugTaken(String),
    #[error("order {0} already has a reservation with different lines")]
    ReservationMismatch(uuid::Uuid),
    #[error("the product was changed by someone else: its etag no longer matches")]
    StaleEtag,
    #[error("insufficient stock for SKU {}", join(.0))]
    InsufficientStock(Vec<Sku>),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn join(skus: &[Sku]) -> String {
    skus.iter().map(Sku::as_str).collect::<Vec<_>>().join(", ")
}

impl Error {
    pub fn field(field: &str, message: &str) -> Self {
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

/// Storage errors the service did not expect at that point are internal; the ones it expects
/// (a taken SKU, an unknown category) are matched where they can happen, before this applies.
impl From<RepoError> for Error {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::OutOfRange => Self::BadArgument("a quantity is out of range".into()),
            RepoError::Backend(err) => Self::Internal(err),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(errors) => status::invalid_input(&errors),
            Error::BadArgument(message) => Status::invalid_argument(message),
            Error::NotFound(_) | Error::UnknownSkus(_) => Status::not_found(error.to_string()),
            Error::SkuTaken(_) | Error::SlugTaken(_) | Error::ReservationMismatch(_) => {
                Status::already_exists(error.to_string())
            }
            Error::StaleEtag => {
                let details = tonic_types::ErrorDetails::with_error_info(
                    shopmesh_platform::problem::STALE_ETAG,
                    "shopmesh.io",
                    std::collections::HashMap::<String, String>::new(),
                );
                Status::with_error_details(Code::Aborted, error.to_string(), details)
            }
            Error::InsufficientStock(ref skus) => {
                let mut details = tonic_types::ErrorDetails::new();
                for sku in skus {
                    details.add_precondition_failure_violation(
                        "STOCK",
                        sku.as_str(),
                        "not enough available stock",
                    );
                }
                Status::with_error_details(Code::FailedPrecondition, error.to_string(), details)
            }
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::Internal(err) => status::internal("product service", &err),
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn short_stock_names_every_sku() {
        let skus = vec![Sku::parse("A-1").unwrap(), Sku::parse("B-2").unwrap()];
        let status = Status::from(Error::InsufficientStock(skus));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "insufficient stock for SKU A-1, B-2");
    }

    #[test]
    fn stale_etags_abort() {
        assert_eq!(Status::from(Error::StaleEtag).code(), Code::Aborted);
    }
}
