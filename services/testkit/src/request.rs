//! Requests as the tests' callers make them, and what the tests read from answers.

use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_platform::identity::{MeshKeys, SERVICE_TOKEN, ServiceSigner};
use tonic::{Request, Status};
use tonic_types::StatusExt;

/// A request of a signed-in user (`authorization: Bearer <token>`).
pub fn with_bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

/// A request as `service` (its service token, no user token); its key must be in `keys`' run
/// directory, as the keys of every identity the contracts admit are in the dev profile.
pub fn as_service<T>(keys: &MeshKeys, service: &str, message: T) -> Request<T> {
    service_request(&keys.signer(service).expect("service signer"), message)
}

/// A request signed by `signer` (`x-shopmesh-service-token`).
pub fn service_request<T>(signer: &ServiceSigner, message: T) -> Request<T> {
    let token = signer.header_value().expect("service token");
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        SERVICE_TOKEN,
        token
            .to_str()
            .expect("ascii token")
            .parse()
            .expect("metadata value"),
    );
    request
}

/// An amount in US dollars (minor units).
pub fn usd(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "USD".into(),
    })
}

/// The fields an INVALID_ARGUMENT status names in its field violations.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
