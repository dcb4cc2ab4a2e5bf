//! Service identity: how one shopmesh service proves to another which service it is.
//!
//! Each service has its own Ed25519 key pair. A caller signs a short-lived service token
//! (a JWT, `alg: EdDSA`, 60 s) with its private key and sends it in the
//! [`SERVICE_TOKEN`] metadata on every internal call; the callee verifies it against the trust
//! bundle (the public keys of every service) and so learns the caller's name. The user's own
//! access token, when a user is behind the call, travels separately in `authorization`.
//!
//! No secret is shared: a service holds only its own private key, so a compromised service can
//! speak only as itself. The keys live in one directory (`MESH_KEYS_DIR`): `<service>.key`
//! (PKCS#8 PEM, mode 0600) and `<service>.pub` (the raw public key, base64url). The dev profile
//! generates missing keys on first start; production refuses to start without them
//! (`shopmesh mesh-keys` makes a set).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::settings::Profile;

/// Metadata key of the calling service's token.
pub const SERVICE_TOKEN: &str = "x-shopmesh-service-token";

/// Audience of every service token; user access tokens never carry it.
const MESH_AUDIENCE: &str = "shopmesh-mesh";
/// Lifetime of a service token.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// A cached token is replaced once less than this is left of it.
const TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(30);
/// Clock skew tolerated between services.
const LEEWAY_SECS: u64 = 5;
/// Verified tokens remembered, so the hot path pays one signature check per token, not per call.
const VERIFIED_CACHE_MAX: usize = 4096;

/// The verified calling service of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceIdentity {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ServiceClaims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Why service keys could not be loaded or a service token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the identity key of service {service} is missing from {dir} (run `shopmesh mesh-keys`)"
    )]
    MissingKey { service: String, dir: PathBuf },
    #[error(
        "the service identity key directory {0} does not exist (run `shopmesh mesh-keys --dir {0}`)"
    )]
    MissingDir(PathBuf),
    #[error("the identity key file {0} is not an Ed25519 PKCS#8 PEM key")]
    BadKey(PathBuf),
    #[error("could not read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed service token")]
    Malformed,
    #[error("service token signed by an unknown key")]
    UnknownKey,
    #[error("invalid service token: {0}")]
    Invalid(jsonwebtoken::errors::Error),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn key_id(service: &str, public: &[u8; 32]) -> String {
    format!(
        "svc-{service}-{}",
        URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..9])
    )
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `path` so that no reader ever sees a partial file: into a temporary file
/// beside it first, then linked into place. Unless `replace`, an existing file wins (another
/// process may be generating the same key at the same moment: the first writer wins and everyone
/// reads its key); with `replace` the new file takes the place of the old one atomically.
fn write_whole(
    path: &Path,
    contents: &[u8],
    private: bool,
    replace: bool,
) -> Result<(), IdentityError> {
    let tmp = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let written = options
        .open(&tmp)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(&tmp)(err));
    }
    let placed = if replace {
        std::fs::rename(&tmp, path)
    } else {
        match std::fs::hard_link(&tmp, path) {
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    };
    let _ = std::fs::remove_file(&tmp);
    placed.map_err(io_error(path))
}

/// Generates the key pair of each named service that has none yet in `dir`. Existing keys are
/// kept. Returns the names whose keys were created.
pub fn generate_keys(dir: &Path, services: &[&str]) -> Result<Vec<String>, IdentityError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut created = Vec::new();
    for service in services {
        let private_path = dir.join(format!("{service}.key"));
        let public_path = dir.join(format!("{service}.pub"));
        let fresh = !private_path.exists();
        if fresh {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(Default::default())
                .map_err(|_| IdentityError::BadKey(private_path.clone()))?;
            write_whole(&private_path, pem.as_bytes(), true, false)?;
            created.push((*service).to_owned());
        } else if public_path.exists() {
            continue;
        }
        // Publish the public half of what won a possible race (also when another process
        // placed the private key but has not published its public half yet). Every racer
        // derives the same public key from the winning private key; replacing keeps the file
        // whole for readers and drops a stale one.
        let key = load_private(&private_path)?;
        let public = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
        write_whole(&public_path, format!("{public}\n").as_bytes(), false, true)?;
    }
    Ok(created)
}

fn load_private(path: &Path) -> Result<SigningKey, IdentityError> {
    let pem = std::fs::read_to_string(path).map_err(io_error(path))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| IdentityError::BadKey(path.to_owned()))
}

/// The key material of one process: the private keys of the services it runs and the trust
/// bundle of every service's public key.
#[derive(Clone, Debug)]
pub struct MeshKeys {
    dir: PathBuf,
    verifier: ServiceVerifier,
}

impl MeshKeys {
    /// Loads the trust bundle from `dir`; in the dev profile, first generates the keys of
    /// `all_services` that are missing.
    pub fn load(
        dir: &Path,
        profile: Profile,
        all_services: &[&str],
    ) -> Result<Self, IdentityError> {
        if profile == Profile::Dev {
            let created = generate_keys(dir, all_services)?;
            if !created.is_empty() {
                tracing::info!(dir = %dir.display(), services = ?created, "generated service identity keys for this installation");
            }
        }
        let verifier = ServiceVerifier::default();
        if !dir.is_dir() {
            return Err(IdentityError::MissingDir(dir.to_owned()));
        }
        let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
        for entry in entries {
            let path = entry.map_err(io_error(dir))?.path();
            let Some(service) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pub"))
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
            let public = URL_SAFE_NO_PAD
                .decode(text.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| IdentityError::BadKey(path.clone()))?;
            verifier.trust(service, &public);
        }
        Ok(Self {
            dir: dir.to_owned(),
            verifier,
        })
    }

    /// The signer of `service`, from its private key in the directory.
    pub fn signer(&self, service: &str) -> Result<ServiceSigner, IdentityError> {
        let path = self.dir.join(format!("{service}.key"));
        if !path.exists() {
            return Err(IdentityError::MissingKey {
                service: service.to_owned(),
                dir: self.dir.clone(),
            });
        }
        ServiceSigner::new(service, &load_private(&path)?)
    }

    pub fn verifier(&self) -> &ServiceVerifier {
        &self.verifier
    }
}

/// Signs the tokens of one service, caching each for most of its lifetime.
#[derive(Clone)]
pub struct ServiceSigner {
    name: String,
    kid: String,
    key: EncodingKey,
    cached: Arc<RwLock<Option<(HeaderValue, u64)>>>,
}

impl std::fmt::Debug for ServiceSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSigner")
            .field("name", &self.name)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ServiceSigner {
    pub fn new(name: &str, key: &SigningKey) -> Result<Self, IdentityError> {
        let der = key
            .to_pkcs8_der()
            .map_err(|_| IdentityError::BadKey(PathBuf::from(name)))?;
        Ok(Self {
            name: name.to_owned(),
            kid: key_id(name, &key.verifying_key().to_bytes()),
            key: EncodingKey::from_ed_der(der.as_bytes()),
            cached: Arc::new(RwLock::new(None)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A token issued at `iat`; tests use it to make expired ones.
    pub fn token_issued_at(&self, iat: u64) -> Result<String, IdentityError> {
        let claims = ServiceClaims {
            iss: self.name.clone(),
            sub: self.name.clone(),
            aud: MESH_AUDIENCE.to_owned(),
            iat,
            exp: iat + TOKEN_TTL.as_secs(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(IdentityError::Invalid)
    }

    /// The current token as a metadata value, minted anew when the cached one runs low.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let now = now_secs();
        if let Ok(cached) = self.cached.read()
            && let Some((value, exp)) = cached.as_ref()
            && now + TOKEN_RENEW_BEFORE.as_secs() < *exp
        {
            return Some(value.clone());
        }
        let token = self.token_issued_at(now).ok()?;
        let value = HeaderValue::from_str(&token).ok()?;
        if let Ok(mut cached) = self.cached.write() {
            *cached = Some((value.clone(), now + TOKEN_TTL.as_secs()));
        }
        Some(value)
    }

    /// Adds this service's token to outbound metadata.
    pub fn attach(&self, headers: &mut http::HeaderMap) {
        if let Some(value) = self.header_value() {
            headers.insert(SERVICE_TOKEN, value);
        }
    }
}

/// Verifies service tokens against the trust bundle.
#[derive(Clone, Default)]
pub struct ServiceVerifier {
    /// kid → (service name, key).
    keys: Arc<RwLock<HashMap<String, (String, DecodingKey)>>>,
    /// token → (service name, expiry), for tokens that verified.
    verified: Arc<RwLock<HashMap<String, (String, u64)>>>,
}

impl std::fmt::Debug for ServiceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceVerifier").finish_non_exhaustive()
    }
}

impl ServiceVerifier {
    /// Trusts `public` as the key of `service`.
    pub fn trust(&self, service: &str, public: &[u8; 32]) {
        let key = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public));
        if let (Ok(key), Ok(mut keys)) = (key, self.keys.write()) {
            keys.insert(key_id(service, public), (service.to_owned(), key));
        }
    }

    /// The service that signed `token`.
    pub fn verify(&self, token: &str) -> Result<ServiceIdentity, IdentityError> {
        let now = now_secs();
        if let Ok(verified) = self.verified.read()
            && let Some((name, exp)) = verified.get(token)
            && now <= *exp + LEEWAY_SECS
        {
            return Ok(ServiceIdentity { name: name.clone() });
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| IdentityError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(IdentityError::Malformed);
        }
        let kid = header.kid.ok_or(IdentityError::UnknownKey)?;
        let (name, key) = self
            .keys
            .read()
            .ok()
            .and_then(|keys| keys.get(&kid).cloned())
            .ok_or(IdentityError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[MESH_AUDIENCE]);
        // The key binds the name: a service can sign only as itself.
        validation.set_issuer(&[name.as_str()]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<ServiceClaims>(token, &key, &validation)
            .map_err(IdentityError::Invalid)?;
        if data.claims.sub != name || data.claims.exp > now + TOKEN_TTL.as_secs() + LEEWAY_SECS {
            return Err(IdentityError::Malformed);
        }
        if let Ok(mut verified) = self.verified.write() {
            if verified.len() >= VERIFIED_CACHE_MAX {
                verified.retain(|_, (_, exp)| *exp + LEEWAY_SECS >= now);
                if verified.len() >= VERIFIED_CACHE_MAX {
                    verified.clear();
                }
            }
            verified.insert(token.to_owned(), (name.clone(), data.claims.exp));
        }
        Ok(ServiceIdentity { name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shopmesh-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_service_token_names_its_signer_and_nothing_else_verifies() {
        let dir = temp_dir();
        let keys = MeshKeys::load(&dir, Profile::Dev, &["order", "gateway"]).unwrap();
        let order = keys.signer("order").unwrap();
        let value = order.header_value().unwrap();
        let identity = keys.verifier().verify(value.to_str().unwrap()).unwrap();
        assert_eq!(identity.name, "order");
        // Cached: the same token comes back until it runs low.
        assert_eq!(order.header_value().unwrap(), value);

        // A key outside the bundle that claims to be the order service.
        let forged = ServiceSigner::new("order", &SigningKey::generate(&mut rand::rngs::OsRng))
            .unwrap()
            .token_issued_at(now_secs())
            .unwrap();
        assert!(matches!(
            keys.verifier().verify(&forged),
            Err(IdentityError::UnknownKey)
        ));
        // Expired.
        let expired = order.token_issued_at(now_secs() - 600).unwrap();
        assert!(matches!(
            keys.verifier().verify(&expired),
            Err(IdentityError::Invalid(_))
        ));
        assert!(keys.verifier().verify("not.a.token").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn processes_generating_keys_at_once_all_end_with_the_same_whole_keys() {
        let dir = temp_dir();
        let services = [
            "user", "product", "order", "payment", "delivery", "cart", "gateway",
        ];
        let loaded: Vec<Vec<(String, String)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let keys = MeshKeys::load(&dir, Profile::Dev, &services).unwrap();
                        services
                            .iter()
                            .map(|s| {
                                let token =
                                    keys.signer(s).unwrap().token_issued_at(now_secs()).unwrap();
                                // Every key this process signs with is trusted as that service.
                                assert_eq!(keys.verifier().verify(&token).unwrap().name, *s);
                                let public =
                                    std::fs::read_to_string(dir.join(format!("{s}.pub"))).unwrap();
                                ((*s).to_owned(), public)
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for other in &loaded[1..] {
            assert_eq!(other, &loaded[0]);
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_are_generated_once_private_and_reused() {
        let dir = temp_dir();
        let first = generate_keys(&dir, &["user"]).unwrap();
        assert_eq!(first, vec!["user".to_owned()]);
        let pem = std::fs::read_to_string(dir.join("user.key")).unwrap();
        assert!(generate_keys(&dir, &["user"]).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(dir.join("user.key")).unwrap(), pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("user.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn production_does_not_generate_keys() {
        let dir = temp_dir();
        let keys = MeshKeys::load(&dir, Profile::Production, &["order"]).unwrap();
        assert!(matches!(
            keys.signer("order"),
            Err(IdentityError::MissingKey { .. })
        ));
        let absent = dir.join("absent");
        assert!(matches!(
            MeshKeys::load(&absent, Profile::Production, &["order"]),
            Err(IdentityError::MissingDir(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
