//! The gRPC statuses every service's error enum builds the same way: field violations as one
//! INVALID_ARGUMENT, and unexpected failures as a generic INTERNAL whose cause is logged here and
//! never sent (the gateway turns both into problem documents, see [`crate::problem`]).

use tonic::Status;

use crate::problem::{FieldError, invalid_fields};

/// INVALID_ARGUMENT "invalid input" carrying every field violation (422 with `errors` at the
/// edge).
pub fn invalid_input(errors: &[FieldError]) -> Status {
    invalid_fields("invalid input", errors)
}

/// INTERNAL "internal error". The cause (a database or other unexpected failure) is logged once
/// as "`<service>` internal error" with its chain of causes on one line, and stays out of the
/// status, so connection strings and driver messages never reach a caller.
///
/// The chain is logged with `Display` (`{:#}`), never `Debug`: an `anyhow::Error`'s `Debug`
/// prints the backtrace it captured (whenever `RUST_BACKTRACE`/`RUST_LIB_BACKTRACE` is set),
/// tens of kilobytes per failed request.
pub fn internal(service: &str, error: &anyhow::Error) -> Status {
    tracing::error!(error = %error_chain(error), "{service} internal error");
    Status::internal("internal error")
}

/// An error and its causes as one line, outermost first ("loading the product: connection
/// refused"), without a backtrace.
pub fn error_chain(error: &anyhow::Error) -> String {
    format!("{error:#}")
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;
    use crate::problem::field_error;

    #[test]
    fn internal_errors_say_nothing_about_their_cause() {
        let cause = anyhow::anyhow!("connection to postgres://postgres:secret@db refused")
            .context("loading the product");
        let status = internal("product service", &cause);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert!(status.details().is_empty());
    }

    #[test]
    fn internal_errors_are_logged_as_their_chain_without_a_backtrace() {
        let cause = anyhow::Error::new(std::io::Error::other("connection refused"))
            .context("loading the product");
        assert_eq!(
            error_chain(&cause),
            "loading the product: connection refused"
        );
        assert!(!error_chain(&cause).contains('\n'));
    }

    #[test]
    fn invalid_input_carries_every_violation() {
        let status = invalid_input(&[
            field_error("email", "must be a valid email address"),
            field_error("name", "must not be empty"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid input");
        let violations = status.get_details_bad_request().unwrap().field_violations;
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["email", "name"]);
        assert_eq!(violations[1].description, "must not be empty");
    }
}
