//! JSON shapes of the gateway's own endpoints: liveness, readiness and the public keys.

use serde::Serialize;
use utoipa::ToSchema;

/// JSON Web Key Set (RFC 7517) of the access-token signing keys.
#[derive(Serialize, ToSchema)]
pub struct JwksResponse {
    pub keys: Vec<JwkResponse>,
}

/// An Ed25519 public key (RFC 8037).
#[derive(Serialize, ToSchema)]
pub struct JwkResponse {
    #[schema(example = "OKP")]
    pub kty: String,
    #[schema(example = "Ed25519")]
    pub crv: String,
    pub x: String,
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub alg: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: String,
}

#[derive(Serialize, ToSchema)]
pub struct HealthResponse {
    #[schema(example = "ok")]
    pub status: String,
}

/// Readiness of the gateway and what it depends on.
#[derive(Serialize, ToSchema)]
pub struct ReadinessResponse {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Each dependency and its state (`serving`, `not_serving`, `unreachable`, `loaded`, `missing`).
    pub checks: std::collections::BTreeMap<String, String>,
}
