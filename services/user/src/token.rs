//! The signer of user access tokens. It lives in the user service's crate because no other
//! service may mint user tokens: the others verify them with the public keys (JWKS) only.
//!
//! The key comes from `JWT_PRIVATE_KEY_PEM`. Without it, the dev profile generates a fresh
//! Ed25519 key for this installation into `<SHOPMESH_RUN_DIR>/keys/user-token.pem` (mode 0600)
//! on first start and reuses it afterwards; production refuses to start. No key is compiled in.
//!
//! Rotation keeps two keys: the current one signs, the previous one is still published in the
//! JWKS so that tokens it signed verify until they expire. With key files (the dev profile),
//! `shopmesh admin rotate-signing-key` moves the current key to `user-token.previous.pem` and
//! generates a new one; a running user service picks the change up within seconds. With
//! `JWT_PRIVATE_KEY_PEM`, the previous key is `JWT_PREVIOUS_KEY_PEM`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};
use shopmesh_platform::Profile;
use shopmesh_platform::auth::{Claims, Identity, Jwk, Session, now_secs};
use shopmesh_platform::settings::{JwtSettings, Secret};

/// Why the signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("JWT_PRIVATE_KEY_PEM is required in the production profile")]
    MissingInProduction,
    #[error("JWT_PRIVATE_KEY_PEM is not an Ed25519 PKCS#8 PEM key")]
    BadKey,
    #[error("the generated signing key file {0} is not an Ed25519 PKCS#8 PEM key")]
    BadKeyFile(PathBuf),
    #[error("could not read or write the signing key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the dev profile keeps its generated signing key.
pub fn dev_key_path(run_dir: &Path) -> PathBuf {
    run_dir.join("keys").join("user-token.pem")
}

/// Where the dev profile keeps the key a rotation retired (verify only).
pub fn dev_previous_key_path(run_dir: &Path) -> PathBuf {
    run_dir.join("keys").join("user-token.previous.pem")
}

fn read_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::BadKeyFile(path.to_owned()))
}

fn write_private(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|_| KeyError::BadKey)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    use std::io::Write;
    file.write_all(pem.as_bytes()).map_err(io)
}

/// Rotates the dev profile's key files: the current key becomes the previous one (replacing
/// any older previous key, whose tokens have long expired if rotations are at least one
/// access-token lifetime apart), and a new key becomes current. Returns the new key id.
pub fn rotate_key_files(
    run_dir: &Path,
    jwt: &JwtSettings,
    ttl: Duration,
) -> Result<String, KeyError> {
    let current = dev_key_path(run_dir);
    let previous = dev_previous_key_path(run_dir);
    let old = load_or_generate(&current)?;
    let new = SigningKey::generate(&mut rand::rngs::OsRng);
    // The previous key is written first: a reader that sees the new current key always finds
    // the old one beside it.
    write_private(&previous, &old)?;
    let staged = current.with_extension("pem.new");
    write_private(&staged, &new)?;
    std::fs::rename(&staged, &current).map_err(|source| KeyError::Io {
        path: current.clone(),
        source,
    })?;
    Ok(TokenSigner::from_key(&new, jwt, ttl)?.jwk().kid.clone())
}

/// Where the signing keys come from.
#[derive(Clone, Debug)]
enum KeySource {
    /// `JWT_PRIVATE_KEY_PEM` (and `JWT_PREVIOUS_KEY_PEM`): fixed for the life of the process.
    Settings,
    /// The dev profile's key files, re-read when they change.
    Files(PathBuf),
}

/// The current signer and the previous key, swapped as a whole on rotation.
#[derive(Clone)]
struct Ring {
    current: TokenSigner,
    previous: Option<Jwk>,
}

/// The user service's signing keys: the current one signs, both verify.
#[derive(Clone)]
pub struct SigningKeys {
    ring: Arc<RwLock<Ring>>,
    source: KeySource,
    jwt: JwtSettings,
    ttl: Duration,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// The configured keys, or the dev profile's key files (generated when missing).
    pub fn load(
        pem: Option<&Secret>,
        previous_pem: Option<&Secret>,
        profile: Profile,
        run_dir: &Path,
        jwt: &JwtSettings,
        ttl: Duration,
    ) -> Result<Self, KeyError> {
        let current = TokenSigner::load(pem, profile, run_dir, jwt, ttl)?;
        let (previous, source) = match pem {
            Some(_) => {
                let previous = previous_pem
                    .map(|pem| {
                        SigningKey::from_pkcs8_pem(pem.expose()).map_err(|_| KeyError::BadKey)
                    })
                    .transpose()?
                    .map(|key| TokenSigner::from_key(&key, jwt, ttl).map(|s| s.jwk().clone()))
                    .transpose()?;
                (previous, KeySource::Settings)
            }
            None => (
                previous_from_files(run_dir, jwt, ttl)?,
                KeySource::Files(run_dir.to_owned()),
            ),
        };
        Ok(Self {
            ring: Arc::new(RwLock::new(Ring { current, previous })),
            source,
            jwt: jwt.clone(),
            ttl,
        })
    }

    /// Lifetime of the access tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The signer of new tokens.
    pub fn current(&self) -> Result<TokenSigner, KeyError> {
        self.ring
            .read()
            .map(|ring| ring.current.clone())
            .map_err(|_| KeyError::BadKey)
    }

    /// Every key that verifies: the current one first, then the previous one.
    pub fn jwks(&self) -> Vec<Jwk> {
        self.ring
            .read()
            .map(|ring| {
                std::iter::once(ring.current.jwk().clone())
                    .chain(ring.previous.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Re-reads the key files after a rotation; true when the current key changed.
    pub fn reload(&self) -> Result<bool, KeyError> {
        let KeySource::Files(run_dir) = &self.source else {
            return Ok(false);
        };
        let current =
            TokenSigner::from_key(&read_key(&dev_key_path(run_dir))?, &self.jwt, self.ttl)?;
        let changed = self
            .ring
            .read()
            .map(|ring| ring.current.jwk() != current.jwk())
            .unwrap_or(true);
        if changed {
            let previous = previous_from_files(run_dir, &self.jwt, self.ttl)?;
            if let Ok(mut ring) = self.ring.write() {
                tracing::info!(kid = %current.jwk().kid, "signing access tokens with a rotated key");
                *ring = Ring { current, previous };
            }
        }
        Ok(changed)
    }
}

fn previous_from_files(
    run_dir: &Path,
    jwt: &JwtSettings,
    ttl: Duration,
) -> Result<Option<Jwk>, KeyError> {
    let path = dev_previous_key_path(run_dir);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(
        TokenSigner::from_key(&read_key(&path)?, jwt, ttl)?
            .jwk()
            .clone(),
    ))
}

/// Reads the key at `path`, generating it first when the file does not exist.
fn load_or_generate(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = key
            .to_pkcs8_pem(Default::default())
            .map_err(|_| KeyError::BadKey)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(pem.as_bytes()).map_err(io)?;
                tracing::info!(path = %path.display(), "generated a new access-token signing key for this installation");
            }
            // Another process won the race; use its key.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io(err)),
        }
    }
    let pem = std::fs::read_to_string(path).map_err(io)?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::BadKeyFile(path.to_owned()))
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

impl TokenSigner {
    /// The configured key; without one, the dev profile's generated key under `run_dir`.
    pub fn load(
        pem: Option<&Secret>,
        profile: Profile,
        run_dir: &Path,
        jwt: &JwtSettings,
        ttl: Duration,
    ) -> Result<Self, KeyError> {
        let key = match pem {
            Some(pem) => SigningKey::from_pkcs8_pem(pem.expose()).map_err(|_| KeyError::BadKey)?,
            None if profile == Profile::Dev => {
                let path = dev_key_path(run_dir);
                let key = load_or_generate(&path)?;
                tracing::info!(path = %path.display(), "signing access tokens with this installation's generated dev key");
                key
            }
            None => return Err(KeyError::MissingInProduction),
        };
        Self::from_key(&key, jwt, ttl)
    }

    /// A signer for `key`.
    pub fn from_key(key: &SigningKey, jwt: &JwtSettings, ttl: Duration) -> Result<Self, KeyError> {
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
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
            ttl,
        })
    }

    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed access token for `identity` in `session`, valid from now. This is what login
    /// and refresh hand out.
    pub fn sign_session(
        &self,
        identity: &Identity,
        session: &Session,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign_at(identity, session, now_secs())
    }

    /// A signed access token for `identity` in a session of its own (a fresh id that no logout
    /// names, token version 0), valid from now; for tools and tests.
    pub fn sign(&self, identity: &Identity) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign_issued_at(identity, now_secs())
    }

    /// Like [`TokenSigner::sign`], issued at `iat` (seconds since the epoch); tools and tests use
    /// it to mint tokens that are already expired.
    pub fn sign_issued_at(
        &self,
        identity: &Identity,
        iat: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let session = Session {
            id: uuid::Uuid::now_v7().simple().to_string(),
            version: 0,
        };
        self.sign_at(identity, &session, iat)
    }

    fn sign_at(
        &self,
        identity: &Identity,
        session: &Session,
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
            sid: session.id.clone(),
            ver: session.version,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.jwk.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding_key)
    }
}

#[cfg(test)]
mod tests {
    use shopmesh_platform::auth::{AuthError, Role, Tier, TokenVerifier};

    use super::*;

    fn jwt() -> JwtSettings {
        JwtSettings {
            issuer: "shopmesh".into(),
            audience: "shopmesh".into(),
        }
    }

    fn customer() -> Identity {
        Identity {
            user_id: "u1".into(),
            role: Role::Customer,
            tier: Tier::Standard,
        }
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("shopmesh-user-key-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn production_refuses_a_missing_or_bad_key() {
        let dir = temp_dir();
        let ttl = Duration::from_secs(900);
        let err = TokenSigner::load(None, Profile::Production, &dir, &jwt(), ttl).unwrap_err();
        assert!(matches!(err, KeyError::MissingInProduction));
        assert!(!dir.exists(), "production generates nothing");
        let bad = Secret::new("not a key");
        let err =
            TokenSigner::load(Some(&bad), Profile::Production, &dir, &jwt(), ttl).unwrap_err();
        assert!(matches!(err, KeyError::BadKey));
    }

    #[test]
    fn the_dev_key_is_generated_per_installation_private_and_reused() {
        let (one, two) = (temp_dir(), temp_dir());
        let ttl = Duration::from_secs(900);
        let first = TokenSigner::load(None, Profile::Dev, &one, &jwt(), ttl).unwrap();
        let again = TokenSigner::load(None, Profile::Dev, &one, &jwt(), ttl).unwrap();
        assert_eq!(first.jwk(), again.jwk(), "reused on restart");
        let other = TokenSigner::load(None, Profile::Dev, &two, &jwt(), ttl).unwrap();
        assert_ne!(
            first.jwk().x,
            other.jwk().x,
            "each installation has its own key"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dev_key_path(&one))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Tokens of one installation do not verify in another.
        let token = first.sign(&customer()).unwrap();
        let verifier = TokenVerifier::with_keys("shopmesh", "shopmesh", &[first.jwk().clone()]);
        assert_eq!(verifier.verify(&token).unwrap(), customer());
        let foreign = TokenVerifier::with_keys("shopmesh", "shopmesh", &[other.jwk().clone()]);
        assert!(matches!(foreign.verify(&token), Err(AuthError::UnknownKey)));
        std::fs::remove_dir_all(one).unwrap();
        std::fs::remove_dir_all(two).unwrap();
    }

    #[test]
    fn tokens_carry_their_session_and_version() {
        let dir = temp_dir();
        let signer =
            TokenSigner::load(None, Profile::Dev, &dir, &jwt(), Duration::from_secs(900)).unwrap();
        let verifier = TokenVerifier::with_keys("shopmesh", "shopmesh", &[signer.jwk().clone()]);
        let session = Session {
            id: "0192f0c8a1b27c3d8e9f0a1b2c3d4e5f".into(),
            version: 7,
        };
        let token = signer.sign_session(&customer(), &session).unwrap();
        assert_eq!(
            verifier.verify_session(&token).unwrap(),
            (customer(), session)
        );
        // A token without a session cannot be revoked, so it is refused.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.jwk().kid.clone());
        #[derive(serde::Serialize)]
        struct Sessionless {
            sub: &'static str,
            role: Role,
            tier: Tier,
            iss: &'static str,
            aud: &'static str,
            iat: u64,
            exp: u64,
        }
        let claims = Sessionless {
            sub: "u1",
            role: Role::Customer,
            tier: Tier::Standard,
            iss: "shopmesh",
            aud: "shopmesh",
            iat: now_secs(),
            exp: now_secs() + 600,
        };
        let key = std::fs::read_to_string(dev_key_path(&dir)).unwrap();
        let key = EncodingKey::from_ed_pem(key.as_bytes()).unwrap();
        let sessionless = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert!(matches!(
            verifier.verify(&sessionless),
            Err(AuthError::Invalid(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_rotation_signs_with_the_new_key_and_still_verifies_the_old_one() {
        let dir = temp_dir();
        let ttl = Duration::from_secs(900);
        let keys = SigningKeys::load(None, None, Profile::Dev, &dir, &jwt(), ttl).unwrap();
        let old = keys.current().unwrap();
        let old_token = old.sign(&customer()).unwrap();
        assert_eq!(keys.jwks().len(), 1);
        assert!(!keys.reload().unwrap(), "nothing changed yet");

        let new_kid = rotate_key_files(&dir, &jwt(), ttl).unwrap();
        assert!(keys.reload().unwrap());
        let new = keys.current().unwrap();
        assert_eq!(new.jwk().kid, new_kid);
        assert_ne!(new.jwk().kid, old.jwk().kid);
        let jwks = keys.jwks();
        assert_eq!(jwks.len(), 2);
        assert_eq!(jwks[0].kid, new_kid, "the current key comes first");
        let verifier = TokenVerifier::with_keys("shopmesh", "shopmesh", &jwks);
        assert_eq!(verifier.verify(&old_token).unwrap(), customer());
        assert_eq!(
            verifier.verify(&new.sign(&customer()).unwrap()).unwrap(),
            customer()
        );

        // A second rotation retires the first key for good.
        rotate_key_files(&dir, &jwt(), ttl).unwrap();
        keys.reload().unwrap();
        let verifier = TokenVerifier::with_keys("shopmesh", "shopmesh", &keys.jwks());
        assert!(matches!(
            verifier.verify(&old_token),
            Err(AuthError::UnknownKey)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hs256_with_the_public_key_is_refused() {
        let dir = temp_dir();
        let signer =
            TokenSigner::load(None, Profile::Dev, &dir, &jwt(), Duration::from_secs(900)).unwrap();
        let verifier = TokenVerifier::with_keys("shopmesh", "shopmesh", &[signer.jwk().clone()]);
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
            sid: "s".into(),
            ver: 0,
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
        std::fs::remove_dir_all(dir).unwrap();
    }
}
