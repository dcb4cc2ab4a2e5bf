//! Access tokens: Ed25519-signed JWTs (`alg: EdDSA`, `kid` header). Only the user service signs
//! them (its signer lives in that crate, so no other crate can mint one); the gateway and every
//! service verify with the public keys from the JWKS. No secret is shared between services.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

/// Fulfilment priority of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Standard,
    Vip,
}

/// The verified caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub role: Role,
    pub tier: Tier,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The login session an access token belongs to, for revocation (see [`crate::revocation`]).
/// Kept out of [`Identity`], which says who the caller is and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The refresh-token family the token was issued under (`sid`).
    pub id: String,
    /// The account's token version when the token was signed (`ver`).
    pub version: u64,
}

/// Clock skew between hosts tolerated on `exp`, in seconds. An ended session must be remembered
/// this much longer than the access-token lifetime.
pub const LEEWAY_SECS: u64 = 5;

/// JWT claims of an access token. `sid` and `ver` are required: a token without them cannot be
/// revoked, so it is not accepted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub tier: Tier,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    /// The session (refresh-token family) the token was issued under.
    pub sid: String,
    /// The account's token version when the token was signed.
    pub ver: u64,
}

/// A public key in JWK form (RFC 8037, OKP / Ed25519).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

/// Why a token was not accepted. The variants are for logs; clients see one message.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm is not EdDSA")]
    WrongAlgorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("no verification keys loaded yet")]
    KeysUnavailable,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Verifies access tokens against a set of public keys, indexed by `kid`.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<RwLock<HashMap<String, DecodingKey>>>,
    validation: Arc<Validation>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier with no keys yet; see [`TokenVerifier::set_keys`].
    pub fn new(issuer: &str, audience: &str) -> Self {
        // Only EdDSA is accepted: `alg: none`, HS256 signed with the public key and every other
        // algorithm are refused before any signature check.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        // A few seconds of clock skew between hosts, no more: an expired token must stop working.
        validation.leeway = LEEWAY_SECS;
        Self {
            keys: Arc::new(RwLock::new(HashMap::new())),
            validation: Arc::new(validation),
        }
    }

    /// A verifier that trusts exactly `keys`.
    pub fn with_keys(issuer: &str, audience: &str, keys: &[Jwk]) -> Self {
        let verifier = Self::new(issuer, audience);
        verifier.set_keys(keys);
        verifier
    }

    /// Replaces the trusted keys. Keys that are not Ed25519 are skipped.
    pub fn set_keys(&self, jwks: &[Jwk]) {
        let keys = jwks
            .iter()
            .filter(|jwk| jwk.kty == "OKP" && jwk.crv == "Ed25519" && jwk.alg == "EdDSA")
            .filter_map(|jwk| {
                DecodingKey::from_ed_components(&jwk.x)
                    .ok()
                    .map(|key| (jwk.kid.clone(), key))
            })
            .collect();
        if let Ok(mut guard) = self.keys.write() {
            *guard = keys;
        }
    }

    pub fn has_keys(&self) -> bool {
        self.keys
            .read()
            .map(|keys| !keys.is_empty())
            .unwrap_or(false)
    }

    pub fn knows_kid(&self, kid: &str) -> bool {
        self.keys
            .read()
            .map(|keys| keys.contains_key(kid))
            .unwrap_or(false)
    }

    /// The identity in a valid token.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_session(token).map(|(identity, _)| identity)
    }

    /// The identity and login session in a valid token. Whether the session is still active is
    /// for [`crate::revocation::RevocationCheck`] to say.
    pub fn verify_session(&self, token: &str) -> Result<(Identity, Session), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::WrongAlgorithm);
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let keys = self.keys.read().map_err(|_| AuthError::KeysUnavailable)?;
        if keys.is_empty() {
            return Err(AuthError::KeysUnavailable);
        }
        let key = keys.get(&kid).ok_or(AuthError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(AuthError::Invalid)?;
        if data.claims.sid.is_empty() {
            return Err(AuthError::Malformed);
        }
        Ok((
            Identity {
                user_id: data.claims.sub,
                role: data.claims.role,
                tier: data.claims.tier,
            },
            Session {
                id: data.claims.sid,
                version: data.claims.ver,
            },
        ))
    }
}

/// The token in an `authorization: Bearer …` value.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_parse() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn a_verifier_without_keys_says_so() {
        let verifier = TokenVerifier::new("shopmesh", "shopmesh");
        assert!(!verifier.has_keys());
        let token = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsifQ.e30.c2ln";
        assert!(matches!(
            verifier.verify(token),
            Err(AuthError::KeysUnavailable)
        ));
    }
}
