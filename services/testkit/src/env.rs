//! The environment a test's services are started with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shopmesh_platform::{Env, Settings};
use uuid::Uuid;

/// Builds the [`Env`] of one test: the dev profile, a run directory of its own under the temp
/// directory (where the service identity keys are generated), a short shutdown grace, and
/// whatever the test adds. Later values replace earlier ones, so a test can change one key and
/// start another instance.
#[derive(Clone, Debug)]
pub struct TestEnv {
    run_dir: PathBuf,
    vars: BTreeMap<String, String>,
}

impl TestEnv {
    /// The base environment; the run directory is `shopmesh-<label>-test-<uuid>` in the temp
    /// directory.
    pub fn new(label: &str) -> Self {
        let run_dir =
            std::env::temp_dir().join(format!("shopmesh-{label}-test-{}", Uuid::new_v4().simple()));
        let run = run_dir.to_str().expect("utf-8 temp dir").to_owned();
        let unique = Uuid::new_v4().simple().to_string();
        Self {
            run_dir,
            vars: BTreeMap::new(),
        }
        .set("SHOPMESH_PROFILE", "dev")
        .set("LOG_FORMAT", "pretty")
        .set("SHOPMESH_RUN_DIR", run)
        .set("SHUTDOWN_GRACE_SECS", "5")
        // Events on an exchange and queues of the test's own, deleted by RabbitMQ once unused.
        .set("EVENTS_EXCHANGE", format!("test.{unique}.events"))
        .set("EVENTS_QUEUE_PREFIX", format!("test.{unique}."))
        .set("EVENTS_QUEUE_EXPIRES_MS", "600000")
        .set("EVENTS_RETRY_DELAY_MS", "200")
        .set("EVENTS_RELAY_INTERVAL_MS", "50")
    }

    /// Sets one key.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.vars.insert(key.to_owned(), value.into());
        self
    }

    /// Binds `service` to a free port (`<SVC>_GRPC_ADDR=127.0.0.1:0`).
    pub fn serve(self, service: &str) -> Self {
        let key = format!("{}_GRPC_ADDR", service.to_ascii_uppercase());
        self.set(&key, "127.0.0.1:0")
    }

    /// Points `<SVC>_DATABASE_URL` of `service` at a test database.
    pub fn database(self, service: &str, url: &str) -> Self {
        let key = format!("{}_DATABASE_URL", service.to_ascii_uppercase());
        self.set(&key, url)
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn env(&self) -> Env {
        Env::from_map(self.vars.clone().into_iter().collect()).expect("test environment")
    }

    pub fn settings(&self) -> Settings {
        Settings::from_env(&self.env()).expect("test settings")
    }
}
