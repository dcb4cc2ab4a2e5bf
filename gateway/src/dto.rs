//! JSON shapes of the REST API (what clients see), and their conversion from the gRPC contracts.
//! Domain types stay inside the services; these are wire types only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopmesh_contracts::user as pb;
use utoipa::{IntoParams, ToSchema};

/// An RFC 9457 problem document; every error answer has this shape.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// A URI reference identifying the problem type; `about:blank` when the status says it all.
    #[schema(example = "about:blank")]
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(example = "Conflict")]
    pub title: String,
    #[schema(example = 409)]
    pub status: u16,
    #[schema(example = "an account with this email already exists")]
    pub detail: String,
    /// Field-level validation errors (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldErrorDoc>>,
}

/// One invalid input field.
#[derive(Serialize, ToSchema)]
#[schema(as = FieldError)]
pub struct FieldErrorDoc {
    #[schema(example = "email")]
    pub field: String,
    #[schema(example = "must be a valid email address")]
    pub message: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    #[schema(example = "ada@example.com", format = Email, max_length = 254)]
    pub email: String,
    /// 10 to 128 characters mixing at least three of: lower case, upper case, digits, symbols.
    #[schema(example = "Analytical-Engine-1843", min_length = 10, max_length = 128)]
    pub password: String,
    #[schema(example = "Ada Lovelace", min_length = 1, max_length = 100)]
    pub name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "Analytical-Engine-1843")]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenBody {
    pub refresh_token: String,
}

/// Tokens handed out by login and refresh.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// Ed25519-signed JWT; send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Opaque; rotates on every refresh. Presenting a rotated token again revokes the session.
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Access token lifetime in seconds.
    #[schema(example = 900)]
    pub expires_in: i64,
}

#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Standard,
    Vip,
}

/// A postal address of the user.
#[derive(Serialize, ToSchema)]
pub struct AddressResponse {
    pub id: String,
    pub label: Option<String>,
    pub recipient: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub phone: Option<String>,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

/// An account and its profile.
#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub id: String,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub role: Role,
    pub tier: Tier,
    pub addresses: Vec<AddressResponse>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Profile changes; absent fields stay as they are. An empty `phone` removes the phone number.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeBody {
    pub name: Option<String>,
    pub phone: Option<String>,
}

/// A new address. The first address, or one sent with `is_default: true`, becomes the default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAddressBody {
    pub label: Option<String>,
    #[schema(example = "Ada Lovelace")]
    pub recipient: String,
    #[schema(example = "12 St James's Square")]
    pub line1: String,
    pub line2: Option<String>,
    #[schema(example = "London")]
    pub city: String,
    pub region: Option<String>,
    #[schema(example = "SW1Y 4JH")]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    #[schema(example = "GB")]
    pub country: String,
    pub phone: Option<String>,
    pub is_default: Option<bool>,
}

/// Address changes; absent fields stay as they are. `is_default: true` moves the default here.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AddressPatchBody {
    pub label: Option<String>,
    pub recipient: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub phone: Option<String>,
    pub is_default: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct AddressList {
    pub items: Vec<AddressResponse>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListUsersQuery {
    /// Case-insensitive substring of the email address.
    pub q: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of accounts; `next_cursor` is absent on the last page.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserResponse>,
    pub next_cursor: Option<String>,
}

/// Role and/or tier to set; at least one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserAccessBody {
    pub role: Option<Role>,
    pub tier: Option<Tier>,
}

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

/// A protobuf timestamp as a UTC time (`None` when absent or out of range).
pub fn optional_time(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

/// A protobuf timestamp as a UTC time, the epoch when absent.
pub fn time(ts: Option<prost_types::Timestamp>) -> DateTime<Utc> {
    optional_time(ts).unwrap_or_default()
}

/// Protobuf's empty string as JSON's absent value.
pub fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

impl From<pb::Address> for AddressResponse {
    fn from(a: pb::Address) -> Self {
        Self {
            id: a.id,
            label: non_empty(a.label),
            recipient: a.recipient,
            line1: a.line1,
            line2: non_empty(a.line2),
            city: a.city,
            region: non_empty(a.region),
            postal_code: a.postal_code,
            country: a.country,
            phone: non_empty(a.phone),
            is_default: a.is_default,
            created_at: time(a.create_time),
        }
    }
}

impl From<pb::User> for UserResponse {
    fn from(u: pb::User) -> Self {
        let role = if u.role() == pb::Role::Admin {
            Role::Admin
        } else {
            Role::Customer
        };
        let tier = if u.tier() == pb::Tier::Vip {
            Tier::Vip
        } else {
            Tier::Standard
        };
        Self {
            id: u.id,
            email: u.email,
            name: u.name,
            phone: non_empty(u.phone),
            role,
            tier,
            addresses: u.addresses.into_iter().map(Into::into).collect(),
            created_at: time(u.create_time),
            updated_at: time(u.update_time),
        }
    }
}

impl From<pb::TokenPair> for TokenResponse {
    fn from(t: pb::TokenPair) -> Self {
        Self {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            token_type: t.token_type,
            expires_in: t.expires_in,
        }
    }
}

impl From<Role> for pb::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Customer => Self::Customer,
            Role::Admin => Self::Admin,
        }
    }
}

impl From<Tier> for pb::Tier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Standard => Self::Standard,
            Tier::Vip => Self::Vip,
        }
    }
}
