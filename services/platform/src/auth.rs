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

/// How many verified tokens a verifier remembers (the gateway and every service verify the
/// same user token on every hop of every request: an Ed25519 check each, about a tenth of the
/// CPU an add-to-cart cost).
const VERIFIED_CACHE_MAX: usize = 8192;

/// A token already verified: what it says, and until when (`exp`) it may be taken at its word.
type Verified = (Identity, Session, u64);

/// Verifies access tokens against a set of public keys, indexed by `kid`.
///
/// A token that verified is remembered, by its exact text (signature included), until it
/// expires, so the next check of the same token is a lookup; new keys forget every remembered
/// token (a key taken out of the set stops vouching at once). Whether the token's session is
/// still active is never remembered here: that is [`crate::revocation::RevocationCheck`]'s.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<RwLock<HashMap<String, DecodingKey>>>,
    validation: Arc<Validation>,
    verified: Arc<RwLock<HashMap<String, Verified>>>,
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
            verified: Arc::new(RwLock::new(HashMap::new())),
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
            // Under the keys' lock, so no check against the old keys is remembered afterwards.
            if let Ok(mut verified) = self.verified.write() {
                verified.clear();
            }
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
        let now = now_secs();
        if let Ok(verified) = self.verified.read()
            && let Some((identity, session, exp)) = verified.get(token)
            && now <= exp + LEEWAY_SECS
        {
            return Ok((identity.clone(), session.clone()));
        }
        let keys = self.keys.read().map_err(|_| AuthError::KeysUnavailable)?;
        let checked = self.check(token, &keys)?;
        if let Ok(mut verified) = self.verified.write() {
            if verified.len() >= VERIFIED_CACHE_MAX {
                verified.retain(|_, (_, _, exp)| *exp + LEEWAY_SECS >= now);
                if verified.len() >= VERIFIED_CACHE_MAX {
                    verified.clear();
                }
            }
            verified.insert(token.to_owned(), checked.clone());
        }
        drop(keys);
        let (identity, session, _) = checked;
        Ok((identity, session))
    }

    /// The full check of a token's header, signature and claims against `keys`.
    fn check(
        &self,
        token: &str,
        keys: &HashMap<String, DecodingKey>,
    ) -> Result<Verified, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::WrongAlgorithm);
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
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
            data.claims.exp,
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

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{EncodingKey, Header};

    fn key(seed: u8, kid: &str) -> (EncodingKey, Jwk) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let der = key.to_pkcs8_der().unwrap();
        let jwk = Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
            kid: kid.into(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        };
        (EncodingKey::from_ed_der(der.as_bytes()), jwk)
    }

    fn token(key: &EncodingKey, kid: &str, exp: u64) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        let claims = Claims {
            sub: "user-1".into(),
            role: Role::Customer,
            tier: Tier::Standard,
            iss: "shopmesh".into(),
            aud: "shopmesh".into(),
            iat: now_secs(),
            exp,
            jti: "j".into(),
            sid: "s".into(),
            ver: 1,
        };
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    #[test]
    fn a_remembered_token_still_answers_like_a_checked_one() {
        let (signing, jwk) = key(7, "k1");
        let verifier = TokenVerifier::with_keys("shopmesh", "shopmesh", &[jwk]);
        let good = token(&signing, "k1", now_secs() + 900);
        let first = verifier.verify_session(&good).unwrap();
        assert_eq!(verifier.verify_session(&good).unwrap(), first);
        assert_eq!(first.0.user_id, "user-1");
        // A different signature over the same claims is not the remembered token.
        let at = good.len() - 10;
        let flipped = if &good[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{flipped}{}", &good[..at], &good[at + 1..]);
        assert!(verifier.verify_session(&forged).is_err());
    }

    #[test]
    fn new_keys_forget_tokens_the_old_ones_vouched_for() {
        let (old, old_jwk) = key(7, "k1");
        let (_, new_jwk) = key(8, "k2");
        let verifier = TokenVerifier::with_keys("shopmesh", "shopmesh", &[old_jwk]);
        let good = token(&old, "k1", now_secs() + 900);
        assert!(verifier.verify_session(&good).is_ok());
        verifier.set_keys(&[new_jwk]);
        assert!(matches!(
            verifier.verify_session(&good),
            Err(AuthError::UnknownKey)
        ));
    }

    #[test]
    fn an_expired_token_is_refused_even_once_remembered() {
        let (signing, jwk) = key(7, "k1");
        let verifier = TokenVerifier::with_keys("shopmesh", "shopmesh", &[jwk]);
        let expired = token(&signing, "k1", now_secs() - LEEWAY_SECS - 1);
        assert!(verifier.verify_session(&expired).is_err());
        // Remembered with an expiry already past: the lookup does not vouch for it.
        let (identity, session, _) = verifier
            .check(
                &token(&signing, "k1", now_secs() + 60),
                &verifier.keys.read().unwrap(),
            )
            .unwrap();
        verifier.verified.write().unwrap().insert(
            expired.clone(),
            (identity, session, now_secs() - LEEWAY_SECS - 1),
        );
        assert!(verifier.verify_session(&expired).is_err());
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
