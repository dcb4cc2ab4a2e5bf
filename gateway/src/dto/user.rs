//! JSON shapes of the user service's API: registration and tokens, the caller's profile and
//! addresses, and account administration.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopmesh_contracts::user as pb;
use shopmesh_platform::time::time_or_epoch;
use utoipa::{IntoParams, ToSchema};

use crate::dto::non_empty;

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
            created_at: time_or_epoch(a.create_time),
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
            created_at: time_or_epoch(u.create_time),
            updated_at: time_or_epoch(u.update_time),
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
