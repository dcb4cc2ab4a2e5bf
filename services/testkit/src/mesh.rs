//! Services of a test, started through the platform's `Mesh`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use shopmesh_platform::identity::{self, ServiceSigner};
use shopmesh_platform::mesh::{Built, Context, Mesh, Service, Started};
use shopmesh_platform::{Env, Settings};
use tonic::Request;
use tonic::transport::Channel;

use crate::{TestEnv, TestUsers};

/// A service of the mesh that the test does not run: its peers only need its address (from
/// `<SVC>_GRPC_URL`, or its default port).
pub struct NotStarted {
    name: &'static str,
    port: u16,
    grpc_services: &'static [&'static str],
}

impl NotStarted {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            port: 0,
            grpc_services: &[],
        }
    }

    /// The default port and gRPC services it would have.
    pub fn like(name: &'static str, port: u16, grpc_services: &'static [&'static str]) -> Self {
        Self {
            name,
            port,
            grpc_services,
        }
    }
}

impl Service for NotStarted {
    fn name(&self) -> &'static str {
        self.name
    }

    fn default_port(&self) -> u16 {
        self.port
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        self.grpc_services
    }

    fn migrate(&self, _env: Env, _settings: Settings) -> BoxFuture<'static, anyhow::Result<()>> {
        async { Ok(()) }.boxed()
    }

    fn build(&self, _ctx: Context) -> BoxFuture<'static, anyhow::Result<Built>> {
        let name = self.name;
        async move { anyhow::bail!("the {name} service does not run in these tests") }.boxed()
    }
}

/// A port nothing listens on (bound, then released), for a peer that is down.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A channel to `service`, one of those `started` runs.
pub async fn connect(started: &Started, service: &str) -> Channel {
    let addr = started.addrs[service];
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("server accepts connections")
}

/// The running services of one test, with what the test calls them with.
pub struct TestMesh {
    pub env: Env,
    pub settings: Settings,
    /// The services started first.
    pub started: Started,
    /// Instances started later (e.g. more instances on the same database).
    pub others: Vec<Started>,
    /// Signs the user tokens the services accept.
    pub users: TestUsers,
    run_dir: PathBuf,
}

impl TestMesh {
    /// Starts `targets` of `mesh` with `env`, first generating the identity keys of `callers`
    /// (services that do not run here but that the tests call as).
    ///
    /// User tokens: unless the real user service is among the targets, the services verify them
    /// with the key of [`TestMesh::users`]; with it, they fetch the user service's own keys,
    /// which this waits for.
    pub async fn start(env: &TestEnv, mesh: &Mesh, targets: &[&str], callers: &[&str]) -> Self {
        let settings = env.settings();
        identity::generate_keys(&settings.mesh_keys_dir, callers).expect("caller identity keys");
        let users = TestUsers::new(&settings);
        let env_map = env.env();
        let started = mesh
            .start(&env_map, &settings, targets)
            .await
            .expect("the services start");
        let mut test = Self {
            env: env_map,
            settings,
            started,
            others: Vec::new(),
            users,
            run_dir: env.run_dir().to_owned(),
        };
        if targets.contains(&"user") {
            let until = Instant::now() + Duration::from_secs(10);
            while !test.started.jwks.is_loaded() {
                assert!(Instant::now() < until, "the JWKS never loaded");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            test.trust_test_users_in_started();
        }
        test
    }

    fn trust_test_users_in_started(&mut self) {
        let jwk = self.users.signer().jwk().clone();
        self.started.jwks.verifier().set_keys(&[jwk]);
    }

    /// Starts `targets` of `mesh` once more with `env` (the same run directory and keys),
    /// trusting the test users; returns the new instance.
    pub async fn start_more(&mut self, env: &Env, mesh: &Mesh, targets: &[&str]) -> &Started {
        let started = mesh
            .start(env, &self.settings, targets)
            .await
            .expect("another instance starts");
        started
            .jwks
            .verifier()
            .set_keys(&[self.users.signer().jwk().clone()]);
        self.others.push(started);
        self.others.last().expect("just pushed")
    }

    /// A channel to `service` (of the services started first).
    pub async fn channel(&self, service: &str) -> Channel {
        connect(&self.started, service).await
    }

    /// The signer of `service`'s identity.
    pub fn signer(&self, service: &str) -> ServiceSigner {
        self.started.keys.signer(service).expect("service signer")
    }

    /// A request as `service` (its service token, no user token).
    pub fn as_service<T>(&self, service: &str, message: T) -> Request<T> {
        crate::as_service(&self.started.keys, service, message)
    }

    /// Stops every instance and removes the run directory.
    pub async fn stop(self) {
        for other in self.others {
            other.stop().await;
        }
        self.started.stop().await;
        std::fs::remove_dir_all(&self.run_dir).expect("remove the run directory");
    }
}
