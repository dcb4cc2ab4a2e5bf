//! Errors at the REST edge are RFC 9457 problem documents. A gRPC [`tonic::Status`] maps to one
//! here, in one place, so every service's error enum only has to decide its gRPC code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;

/// The `ErrorInfo` reason of an ABORTED status whose precondition (an `If-Match` etag) no
/// longer holds: 412 at the edge rather than ABORTED's usual 409.
pub const STALE_ETAG: &str = "STALE_ETAG";

/// Media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid input field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A field error with the given field name and message.
pub fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// An RFC 9457 problem document.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
    #[serde(skip)]
    pub www_authenticate: bool,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
            www_authenticate: status == StatusCode::UNAUTHORIZED,
        }
    }

    /// A 500 whose detail says nothing about the cause; log the cause where it happened.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The HTTP problem for a gRPC status. Client errors keep the service's message (written for
    /// clients); server errors get a generic detail so internals never leak.
    pub fn from_status(status: &tonic::Status) -> Self {
        let http = http_status(status.code());
        if http.is_server_error() {
            let detail = match status.code() {
                Code::Unavailable => "a backing service is unavailable, try again",
                Code::DeadlineExceeded => "a backing service did not answer in time",
                _ => "internal error",
            };
            let problem = Self::new(http, detail);
            // An unavailable upstream is worth retrying: say when (the circuit breaker's own
            // hint while it is open, otherwise a second).
            return if status.code() == Code::Unavailable {
                problem.with_retry_after(crate::client::retry_after_secs(status).unwrap_or(1))
            } else {
                problem
            };
        }
        let errors: Vec<FieldError> = status
            .get_details_bad_request()
            .map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|v| FieldError {
                        field: v.field,
                        message: v.description,
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Field-level validation failures are 422; a bad argument without field details
        // (a malformed cursor, an out-of-range page size) stays 400.
        let stale = status.code() == Code::Aborted
            && status
                .get_details_error_info()
                .is_some_and(|info| info.reason == STALE_ETAG);
        let http = if status.code() == Code::InvalidArgument && !errors.is_empty() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else if stale {
            StatusCode::PRECONDITION_FAILED
        } else {
            http
        };
        let problem = Self::new(http, status.message()).with_errors(errors);
        // A throttled call (RESOURCE_EXHAUSTED) says when to try again in its metadata.
        match crate::client::retry_after_secs(status) {
            Some(secs) if http == StatusCode::TOO_MANY_REQUESTS => problem.with_retry_after(secs),
            _ => problem,
        }
    }
}

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after_secs;
        let www_authenticate = self.www_authenticate;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shopmesh\""),
            );
        }
        response
    }
}

/// A gRPC INVALID_ARGUMENT carrying field violations (rendered as 422 with `errors` at the edge).
pub fn invalid_fields(message: &str, errors: &[FieldError]) -> tonic::Status {
    let mut details = tonic_types::ErrorDetails::new();
    for error in errors {
        details.add_bad_request_violation(error.field.clone(), error.message.clone());
    }
    tonic::Status::with_error_details(Code::InvalidArgument, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_never_carry_the_service_message() {
        let problem = Problem::from_status(&tonic::Status::internal(
            "connection to mongodb://admin:pw@db refused",
        ));
        assert_eq!(problem.status, 500);
        assert_eq!(problem.detail, "internal error");
    }

    #[test]
    fn field_violations_become_422_with_errors() {
        let status = invalid_fields(
            "invalid registration",
            &[FieldError {
                field: "email".into(),
                message: "not an email address".into(),
            }],
        );
        let problem = Problem::from_status(&status);
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "email");
        let plain = Problem::from_status(&tonic::Status::invalid_argument("bad cursor"));
        assert_eq!(plain.status, 400);
        assert_eq!(
            Problem::from_status(&tonic::Status::already_exists("taken")).status,
            409
        );
        let oversold = Problem::from_status(&tonic::Status::failed_precondition(
            "insufficient stock for SKU FLASH-1",
        ));
        assert_eq!(oversold.status, 409);
        assert!(oversold.detail.contains("FLASH-1"));
    }
}
