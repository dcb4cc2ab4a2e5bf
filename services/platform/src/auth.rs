//! Access tokens: Ed25519-signed JWTs (`alg: EdDSA`, `kid` header). The user service signs with
//! its private key; the gateway and every service verify with the public keys from the JWKS.
//! No secret is shared between services.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::settings::{JwtSettings, Profile};

/// The seed of the key used when no key is configured. It is public, so only the dev profile
/// accepts it.
const DEV_SEED: [u8; 32] = *b"shopmesh-dev-only-signing-key-01";

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

/// JWT claims of an access token.
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

/// Why a signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("JWT_PRIVATE_KEY_PEM is required in the production profile")]
    MissingInProduction,
    #[error("the built-in dev signing key is refused in the production profile")]
    DevKeyInProduction,
    #[error("JWT_PRIVATE_KEY_PEM is not an Ed25519 PKCS#8 PEM key")]
    BadKey,
}

/// Signs access tokens. Held only by the user service.
#[derive(Clone)]
pub struct TokenSigner {
    encoding_key: EncodingKey,
    jwk: Jwk,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.jwk.kid)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl TokenSigner {
    /// Loads the configured key, or the dev key in the dev profile only.
    pub fn from_settings(settings: &JwtSettings, profile: Profile) -> Result<Self, KeyError> {
        let key = match &settings.private_key_pem {
            Some(pem) => SigningKey::from_pkcs8_pem(pem.expose()).map_err(|_| KeyError::BadKey)?,
            None if profile == Profile::Dev => SigningKey::from_bytes(&DEV_SEED),
            None => return Err(KeyError::MissingInProduction),
        };
        if profile == Profile::Production && key.to_bytes() == DEV_SEED {
            return Err(KeyError::DevKeyInProduction);
        }
        Self::from_key(&key, settings)
    }

    fn from_key(key: &SigningKey, settings: &JwtSettings) -> Result<Self, KeyError> {
        let der = key.to_pkcs8_der().map_err(|_| KeyError::BadKey)?;
        let public = key.verifying_key().to_bytes();
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..12]);
        Ok(Self {
            encoding_key: EncodingKey::from_ed_der(der.as_bytes()),
            jwk: Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(public),
                kid,
                alg: "EdDSA".into(),
                use_: "sig".into(),
            },
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl: settings.access_ttl,
        })
    }

    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed access token for `identity`, valid from now.
    pub fn sign(&self, identity: &Identity) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign_issued_at(identity, now_secs())
    }

    /// A signed access token issued at `iat` (seconds since the epoch); tools and tests use it
    /// to mint tokens that are already expired.
    pub fn sign_issued_at(
        &self,
        identity: &Identity,
        iat: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: identity.user_id.clone(),
            role: identity.role,
            tier: identity.tier,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            exp: iat + self.ttl.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.jwk.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding_key)
    }
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
        validation.leeway = 30;
        Self {
            keys: Arc::new(RwLock::new(HashMap::new())),
            validation: Arc::new(validation),
        }
    }

    /// A verifier that trusts exactly the signer's own key.
    pub fn for_signer(signer: &TokenSigner) -> Self {
        let verifier = Self::new(&signer.issuer, &signer.audience);
        verifier.set_keys(std::slice::from_ref(signer.jwk()));
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
        Ok(Identity {
            user_id: data.claims.sub,
            role: data.claims.role,
            tier: data.claims.tier,
        })
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
    use crate::settings::Secret;

    fn jwt_settings(pem: Option<Secret>) -> JwtSettings {
        JwtSettings {
            private_key_pem: pem,
            issuer: "shopmesh".into(),
            audience: "shopmesh".into(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(3600),
        }
    }

    fn customer() -> Identity {
        Identity {
            user_id: "u1".into(),
            role: Role::Customer,
            tier: Tier::Standard,
        }
    }

    #[test]
    fn production_refuses_a_missing_or_dev_key() {
        let err = TokenSigner::from_settings(&jwt_settings(None), Profile::Production).unwrap_err();
        assert!(matches!(err, KeyError::MissingInProduction));
        let dev_pem = SigningKey::from_bytes(&DEV_SEED)
            .to_pkcs8_pem(Default::default())
            .unwrap();
        let err = TokenSigner::from_settings(
            &jwt_settings(Some(Secret::new(dev_pem.as_str()))),
            Profile::Production,
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::DevKeyInProduction));
        let err = TokenSigner::from_settings(
            &jwt_settings(Some(Secret::new("not a key"))),
            Profile::Production,
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::BadKey));
    }

    #[test]
    fn a_signed_token_verifies_and_a_foreign_key_does_not() {
        let signer = TokenSigner::from_settings(&jwt_settings(None), Profile::Dev).unwrap();
        let token = signer.sign(&customer()).unwrap();
        let verifier = TokenVerifier::for_signer(&signer);
        assert_eq!(verifier.verify(&token).unwrap(), customer());

        let other_key = SigningKey::from_bytes(&[7; 32]);
        let other = TokenSigner::from_key(&other_key, &jwt_settings(None)).unwrap();
        let foreign = other.sign(&customer()).unwrap();
        assert!(matches!(
            verifier.verify(&foreign),
            Err(AuthError::UnknownKey)
        ));
    }

    #[test]
    fn hs256_with_the_public_key_is_refused() {
        let signer = TokenSigner::from_settings(&jwt_settings(None), Profile::Dev).unwrap();
        let verifier = TokenVerifier::for_signer(&signer);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(signer.jwk().kid.clone());
        let claims = Claims {
            sub: "u1".into(),
            role: Role::Admin,
            tier: Tier::Vip,
            iss: "shopmesh".into(),
            aud: "shopmesh".into(),
            iat: now_secs(),
            exp: now_secs() + 600,
            jti: "j".into(),
        };
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(signer.jwk().x.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&forged),
            Err(AuthError::WrongAlgorithm)
        ));
    }

    #[test]
    fn bearer_values_parse() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
