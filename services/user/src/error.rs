//! The user service's one error type and the one place that decides its gRPC status.

use shopmesh_platform::client::RETRY_AFTER;
use shopmesh_platform::problem::{FieldError, field_error};
use shopmesh_platform::status;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    BadArgument(&'static str),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("invalid email or password")]
    BadCredentials,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("at most {0} addresses per account")]
    TooManyAddresses(usize),
    #[error("the account changed concurrently, retry")]
    Conflict,
    /// Too many failed logins on the account or from the client: wait this many seconds.
    #[error("too many failed logins, try again later")]
    LoginThrottled(u64),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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

impl From<RepoError> for Error {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::Duplicate => Self::EmailTaken,
            RepoError::Backend(err) => Self::Internal(err),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(errors) => status::invalid_input(&errors),
            Error::BadArgument(message) => Status::invalid_argument(message),
            Error::EmailTaken => Status::already_exists(error.to_string()),
            Error::BadCredentials | Error::InvalidRefreshToken => {
                Status::unauthenticated(error.to_string())
            }
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::TooManyAddresses(_) => Status::failed_precondition(error.to_string()),
            Error::Conflict => Status::aborted(error.to_string()),
            Error::LoginThrottled(secs) => {
                let mut status = Status::resource_exhausted(error.to_string());
                status
                    .metadata_mut()
                    .insert(RETRY_AFTER, MetadataValue::from(secs));
                status
            }
            Error::Internal(err) => status::internal("user service", &err),
        }
    }
}
