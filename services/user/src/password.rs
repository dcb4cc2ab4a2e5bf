//! Password hashing: Argon2id with the crate's recommended parameters (19 MiB, two passes, one
//! lane), stored as PHC strings.
//!
//! Each hash needs a 19 MiB work area. Hashing is pure CPU, so more hashes at once than there
//! are cores only adds memory: a burst of 32 sign-ins once held 32 work areas (and glibc kept
//! most of them after they were freed, ~800 MiB of RSS). Here at most one hash per core runs at
//! a time, on the blocking pool, each in a work area taken from a small pool and given back, so
//! the memory spent on hashing is bounded by the number of cores and allocated once. Callers
//! beyond that wait their turn, which is what the CPU would make them do anyway.

use std::sync::{Mutex, OnceLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use crate::error::Error;

/// The pool of hashing slots and their work areas.
struct Pool {
    slots: Semaphore,
    /// Work areas of the default parameters' size, idle between hashes.
    areas: Mutex<Vec<Vec<Block>>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Pool {
            slots: Semaphore::new(cores),
            areas: Mutex::new(Vec::new()),
        }
    })
}

/// Runs `work` on the blocking pool in one of the hashing slots, with a work area of
/// `blocks` blocks (reused when it has the default size).
async fn in_slot<T: Send + 'static>(
    blocks: usize,
    work: impl FnOnce(&mut [Block]) -> T + Send + 'static,
) -> Result<T, Error> {
    let pool = pool();
    let _slot = pool
        .slots
        .acquire()
        .await
        .map_err(|_| Error::Internal(anyhow::anyhow!("the hashing pool is closed")))?;
    let default_blocks = Params::default().block_count();
    tokio::task::spawn_blocking(move || {
        let reused = (blocks == default_blocks)
            .then(|| pool.areas.lock().ok().and_then(|mut idle| idle.pop()))
            .flatten();
        let mut area = reused.unwrap_or_else(|| vec![Block::default(); blocks]);
        let result = work(&mut area);
        if blocks == default_blocks
            && let Ok(mut idle) = pool.areas.lock()
        {
            idle.push(area);
        }
        result
    })
    .await
    .map_err(|err| Error::Internal(anyhow::anyhow!("hashing task failed: {err}")))
}

/// Hashes a new password with a fresh salt.
pub async fn hash(password: String) -> Result<String, Error> {
    let params = Params::default();
    in_slot(params.block_count(), move |area| {
        hash_with(&password, &params, area)
    })
    .await?
}

fn hash_with(password: &str, params: &Params, area: &mut [Block]) -> Result<String, Error> {
    let failed = |err: &dyn std::fmt::Display| Error::Internal(anyhow::anyhow!("argon2: {err}"));
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|err| failed(&err))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, area)
        .map_err(|err| failed(&err))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|err| failed(&err))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|err| failed(&err))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string (false for anything that does not parse),
/// compared in constant time. Hashes made with other Argon2 parameters still verify.
pub async fn verify(password: String, stored: String) -> Result<bool, Error> {
    let Some(blocks) = PasswordHash::new(&stored)
        .ok()
        .and_then(|parsed| Params::try_from(&parsed).ok())
        .map(|params| params.block_count())
    else {
        return Ok(false);
    };
    in_slot(blocks, move |area| verify_with(&password, &stored, area)).await
}

fn verify_with(password: &str, stored: &str, area: &mut [Block]) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from);
    let (Ok(version), Ok(params)) = (version, Params::try_from(&parsed)) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, area)
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let stored = hash("correct horse battery".into()).await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(
            verify("correct horse battery".into(), stored.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify("correct horse batterY".into(), stored.clone())
                .await
                .unwrap()
        );
        assert!(!verify(String::new(), stored).await.unwrap());
        assert!(!verify("x".into(), "not a hash".into()).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_are_interchangeable_with_the_argon2_crate() {
        // Accounts stored before the pool (hashed by `Argon2::default().hash_password`) still
        // sign in, and the pool's hashes are standard PHC strings any Argon2 verifier accepts.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let older = Argon2::default()
            .hash_password(b"an older passphrase", &salt)
            .unwrap()
            .to_string();
        assert!(verify("an older passphrase".into(), older).await.unwrap());

        let ours = hash("a newer passphrase".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"a newer passphrase", &parsed)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn other_parameters_still_verify() {
        let params = Params::new(4096, 3, 1, None).unwrap();
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"smaller work area", &salt)
            .unwrap()
            .to_string();
        assert!(
            verify("smaller work area".into(), stored.clone())
                .await
                .unwrap()
        );
        assert!(!verify("bigger work area".into(), stored).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_hashes_reuses_at_most_one_work_area_per_core() {
        let hashes = (0..12).map(|i| tokio::spawn(hash(format!("burst passphrase {i}"))));
        for hash in futures::future::join_all(hashes).await {
            hash.unwrap().unwrap();
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let idle = pool().areas.lock().unwrap().len();
        assert!(
            (1..=cores).contains(&idle),
            "{idle} idle work areas for {cores} cores"
        );
    }
}
