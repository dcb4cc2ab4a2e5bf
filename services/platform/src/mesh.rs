//! The one registration point of a service. A service is a crate that implements [`Service`]:
//! its name, default port, the gRPC services it serves, its migrations, and how to build it
//! from a [`Context`]. The binary holds the list of services; `--target`, `migrate`, readiness,
//! the gateway's `/readyz` and upstreams, the test harness and the deployment files all follow
//! from that list through [`Mesh`].
//!
//! [`Mesh::start`] does for every service what each used to do by hand: binds its listener,
//! loads the service identity keys, wires the user service's public keys (JWKS) for token
//! verification, builds the gRPC server with health, reflection and the method guard, runs the
//! readiness loop and the service's background tasks, and stops it all within the grace period.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::TokenVerifier;
use crate::client::{ClientPolicy, MeshChannel};
use crate::grpc::{GrpcServerBuilder, GuardConfig};
use crate::identity::{MeshKeys, ServiceSigner};
use crate::jwks::JwksCache;
use crate::settings::{Env, GrpcClientSettings, Settings};
use crate::shutdown::{self, Shutdown};

/// The name the gateway signs its calls with.
pub const GATEWAY: &str = "gateway";

/// How often readiness is checked once a service is ready, and while it is not.
const READY_INTERVAL: Duration = Duration::from_secs(5);
const NOT_READY_INTERVAL: Duration = Duration::from_millis(200);

/// A backing store a service needs (the deployment files start these for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Store {
    Postgres,
    Redis,
    MongoDb,
    RabbitMq,
}

impl Store {
    /// The docker-compose service name of the store.
    pub fn compose_name(self) -> &'static str {
        match self {
            Store::Postgres => "postgres",
            Store::Redis => "redis",
            Store::MongoDb => "mongo",
            Store::RabbitMq => "rabbitmq",
        }
    }
}

/// Reports whether a service can serve (its stores answer); `Err` says why not, for the log.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;
/// Work a service runs beside its gRPC server until shutdown (sweepers, relays, consumers).
pub type Task = Box<dyn FnOnce(Shutdown) -> BoxFuture<'static, ()> + Send>;

/// What [`Service::build`] hands back: its gRPC services and what runs beside them.
pub struct Built {
    pub server: GrpcServerBuilder,
    pub ready: Option<ReadyCheck>,
    pub tasks: Vec<Task>,
    /// Runs once the server has drained (closing pools, say).
    pub stopped: Option<BoxFuture<'static, ()>>,
}

impl Built {
    pub fn new(server: GrpcServerBuilder) -> Self {
        Self {
            server,
            ready: None,
            tasks: Vec::new(),
            stopped: None,
        }
    }

    pub fn ready(mut self, check: ReadyCheck) -> Self {
        self.ready = Some(check);
        self
    }

    pub fn task(mut self, task: Task) -> Self {
        self.tasks.push(task);
        self
    }

    pub fn on_stopped(mut self, stopped: BoxFuture<'static, ()>) -> Self {
        self.stopped = Some(stopped);
        self
    }
}

/// One deployable service of the mesh.
pub trait Service: Send + Sync + 'static {
    /// Lower-case name: the `--target`, the service identity its calls carry, the prefix of its
    /// `<NAME>_GRPC_ADDR` / `<NAME>_GRPC_URL` keys and its docker-compose service.
    fn name(&self) -> &'static str;
    /// gRPC port in the dev profile.
    fn default_port(&self) -> u16;
    /// Fully qualified gRPC services it serves (health, reflection, `/readyz`).
    fn grpc_services(&self) -> &'static [&'static str];
    /// Stores its container depends on.
    fn stores(&self) -> &'static [Store] {
        &[]
    }
    /// Environment its container gets in docker-compose beyond the mesh-wide keys (store URLs,
    /// secrets as `${VAR}` references).
    fn deploy_env(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// The event consumers it runs: `migrate` declares their queues (so no event published
    /// before a consumer's first start is dropped as unroutable); dead letters and the admin
    /// re-drive follow from their names.
    fn subscriptions(&self) -> Vec<crate::events::Subscription> {
        Vec::new()
    }
    /// Reads every setting it takes from `env` (defaults where unset), so that a check can list
    /// the keys the binary reads and compare them with `.env.example`.
    fn read_settings(&self, env: &Env) -> anyhow::Result<()> {
        let _ = env;
        Ok(())
    }
    /// Creates its databases, schemas and indexes (idempotent).
    fn migrate(&self, env: Env, settings: Settings) -> BoxFuture<'static, anyhow::Result<()>>;
    /// Builds it: reads its own settings from `ctx.env`, connects its stores (migrating first),
    /// and adds its gRPC services to `ctx.server()`.
    fn build(&self, ctx: Context) -> BoxFuture<'static, anyhow::Result<Built>>;
}

/// Where each service of the mesh is reached.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    urls: BTreeMap<String, String>,
}

impl Peers {
    pub fn url(&self, service: &str) -> Option<&str> {
        self.urls.get(service).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.urls.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn insert(&mut self, service: &str, url: String) {
        self.urls.insert(service.to_owned(), url);
    }
}

/// The client policy of the process's settings.
pub fn client_policy(settings: &GrpcClientSettings) -> ClientPolicy {
    ClientPolicy {
        connect_timeout: settings.connect_timeout,
        unary_timeout: settings.request_timeout,
        stream_timeout: settings.stream_timeout,
        max_attempts: settings.retry_max_attempts,
        backoff_base: settings.retry_backoff_base,
        breaker_failures: settings.breaker_failures,
        breaker_open_for: settings.breaker_open_for,
    }
}

/// A channel to `peer` at `url` that signs every call as `identity`.
pub fn peer_channel(
    peer: &str,
    url: &str,
    settings: &GrpcClientSettings,
    identity: &ServiceSigner,
) -> anyhow::Result<MeshChannel> {
    let identity = identity.clone();
    Ok(
        MeshChannel::new(peer.to_owned(), url, client_policy(settings))?
            .with_metadata(Arc::new(move |headers| identity.attach(headers))),
    )
}

/// Everything a service is built from.
#[derive(Clone)]
pub struct Context {
    pub name: &'static str,
    pub env: Env,
    pub settings: Settings,
    /// The user service's public keys (JWKS), which verify user access tokens.
    pub jwks: Arc<JwksCache>,
    /// This service's own identity, for the calls it makes.
    pub identity: ServiceSigner,
    pub keys: MeshKeys,
    pub peers: Peers,
}

impl Context {
    /// The method guard of this process: user tokens, service tokens, server time limits.
    pub fn guard(&self) -> GuardConfig {
        GuardConfig {
            users: self.jwks.verifier().clone(),
            services: self.keys.verifier().clone(),
            limits: self.settings.grpc_server,
            jwks: Some(self.jwks.clone()),
        }
    }

    /// A connection to the message broker, named after this service; it connects on first use,
    /// so a service starts (and buffers events in its outbox) while the broker is down.
    pub fn broker(&self) -> crate::events::Broker {
        crate::events::Broker::new(self.settings.events.clone(), self.name)
    }

    /// A gRPC server builder with this process's method guard.
    pub fn server(&self) -> GrpcServerBuilder {
        GrpcServerBuilder::new(self.guard())
    }

    /// A channel to another service, signed with this service's identity.
    pub fn channel(&self, peer: &str) -> anyhow::Result<MeshChannel> {
        let url = self
            .peers
            .url(peer)
            .ok_or_else(|| anyhow::anyhow!("no address known for service {peer}"))?;
        peer_channel(peer, url, &self.settings.grpc_client, &self.identity)
    }
}

/// The services of the binary, in the order they start.
#[derive(Clone)]
pub struct Mesh {
    services: Vec<Arc<dyn Service>>,
}

/// The listen address key of a service.
pub fn addr_key(service: &str) -> String {
    format!("{}_GRPC_ADDR", service.to_ascii_uppercase())
}

/// The key of the URL other processes reach a service at.
pub fn url_key(service: &str) -> String {
    format!("{}_GRPC_URL", service.to_ascii_uppercase())
}

/// A running set of services.
pub struct Started {
    /// Bound address of each service started here.
    pub addrs: BTreeMap<&'static str, SocketAddr>,
    /// Where every service of the mesh is reached from this process.
    pub peers: Peers,
    pub keys: MeshKeys,
    pub jwks: Arc<JwksCache>,
    health: Vec<(HealthReporter, &'static [&'static str])>,
    draining: shutdown::ShutdownTrigger,
    stop: shutdown::ShutdownTrigger,
    tasks: JoinSet<anyhow::Result<()>>,
    grace: Duration,
}

impl Started {
    /// Flips every service to NOT_SERVING, so that balancers and the gateway's `/readyz` stop
    /// sending new work, while calls still in flight are served.
    pub async fn drain_health(&self) {
        self.draining.trigger();
        for (health, services) in &self.health {
            for service in *services {
                health
                    .set_service_status(*service, ServingStatus::NotServing)
                    .await;
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
        }
    }

    /// Completes when a service stops on its own (an error), with what it said.
    pub async fn failed(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(Ok(result)) => result.and_then(|()| Err(anyhow::anyhow!("a service stopped"))),
            Some(Err(err)) => Err(anyhow::Error::new(err)),
            None => std::future::pending().await,
        }
    }

    /// Stops every service: health first, then a drain bounded by the grace period.
    pub async fn stop(mut self) {
        self.drain_health().await;
        self.stop.trigger();
        drain(&mut self.tasks, self.grace).await;
    }
}

/// Waits for every task, at most `grace` (plus a second for bookkeeping).
pub async fn drain(tasks: &mut JoinSet<anyhow::Result<()>>, grace: Duration) {
    let all = async {
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(Err(err)) => tracing::error!(error = ?err, "server stopped with an error"),
                Err(err) => tracing::error!(error = %err, "server task failed"),
                Ok(Ok(())) => {}
            }
        }
    };
    if shutdown::bounded(grace + Duration::from_secs(1), all)
        .await
        .is_none()
    {
        tasks.abort_all();
    }
}

impl Mesh {
    pub fn new(services: Vec<Arc<dyn Service>>) -> Self {
        Self { services }
    }

    pub fn services(&self) -> &[Arc<dyn Service>] {
        &self.services
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Service>> {
        self.services.iter().find(|s| s.name() == name)
    }

    /// Every identity of the installation: each service of the list, the gateway, and every
    /// calling service the contracts' policies admit (services designed but not built yet
    /// included, so their keys exist when they arrive and operators can speak as them).
    pub fn identities(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.services.iter().map(|s| s.name()).collect();
        names.push(GATEWAY);
        for policy in shopmesh_contracts::policy::METHODS {
            for caller in policy.callers {
                if !names.contains(caller) {
                    names.push(caller);
                }
            }
        }
        names
    }

    /// Migrates every service's stores, in order, then declares every consumer's queues on the
    /// broker.
    pub async fn migrate(&self, env: &Env, settings: &Settings) -> anyhow::Result<()> {
        for service in &self.services {
            service
                .migrate(env.clone(), settings.clone())
                .await
                .map_err(|err| err.context(format!("migrating the {} service", service.name())))?;
        }
        let subscriptions: Vec<_> = self
            .services
            .iter()
            .flat_map(|service| service.subscriptions())
            .collect();
        if !subscriptions.is_empty() {
            crate::events::declare_queues(&settings.events, &subscriptions)
                .await
                .map_err(|err| err.context("declaring the event queues"))?;
        }
        Ok(())
    }

    /// The identity keys of this installation (generated in the dev profile when missing).
    pub fn keys(&self, settings: &Settings) -> anyhow::Result<MeshKeys> {
        Ok(MeshKeys::load(
            &settings.mesh_keys_dir,
            settings.profile,
            &self.identities(),
        )?)
    }

    /// Where every service is reached when it does not run in this process.
    pub fn configured_peers(&self, env: &Env) -> anyhow::Result<Peers> {
        let mut peers = Peers::default();
        for service in &self.services {
            let addr: SocketAddr = env.parse(
                &addr_key(service.name()),
                &format!("{}:{}", settings_host(env), service.default_port()),
            )?;
            let url = env
                .raw(&url_key(service.name()))
                .unwrap_or_else(|| format!("http://{}", loopback(addr)));
            peers.insert(service.name(), url);
        }
        Ok(peers)
    }

    /// Binds and starts the named services (all of them for `["all"]`), each on its own port.
    pub async fn start(
        &self,
        env: &Env,
        settings: &Settings,
        targets: &[&str],
    ) -> anyhow::Result<Started> {
        let selected: Vec<Arc<dyn Service>> = self
            .services
            .iter()
            .filter(|s| targets.contains(&"all") || targets.contains(&s.name()))
            .cloned()
            .collect();
        let keys = self.keys(settings)?;
        let mut peers = self.configured_peers(env)?;
        let mut listeners = Vec::new();
        let mut addrs = BTreeMap::new();
        for service in &selected {
            let addr: SocketAddr = env.parse(
                &addr_key(service.name()),
                &format!("{}:{}", settings_host(env), service.default_port()),
            )?;
            let listener = TcpListener::bind(addr).await.map_err(|err| {
                anyhow::anyhow!("binding the {} service to {addr}: {err}", service.name())
            })?;
            let bound = listener.local_addr()?;
            // Calls between services of one process stay on loopback.
            peers.insert(service.name(), format!("http://{}", loopback(bound)));
            addrs.insert(service.name(), bound);
            listeners.push(listener);
        }

        let (draining, draining_signal) = shutdown::channel();
        let (stop, stop_signal) = shutdown::channel();
        let mut tasks = JoinSet::new();
        let jwks = Arc::new(JwksCache::new(TokenVerifier::new(
            &settings.jwt.issuer,
            &settings.jwt.audience,
        )));
        if let Some(user_url) = peers.url("user") {
            // Every process verifies user tokens with the user service's public keys; the user
            // service reads its own the same way, so there is one path for all.
            let signer = keys.signer(selected.first().map_or(GATEWAY, |s| s.name()))?;
            let channel = peer_channel("user", user_url, &settings.grpc_client, &signer)?;
            let cache = jwks.clone();
            let stop = stop_signal.clone();
            tasks.spawn(async move {
                cache.run(UserServiceClient::new(channel), stop).await;
                Ok(())
            });
        }

        let mut health = Vec::new();
        for (service, listener) in selected.iter().zip(listeners) {
            let ctx = Context {
                name: service.name(),
                env: env.clone(),
                settings: settings.clone(),
                jwks: jwks.clone(),
                identity: keys.signer(service.name())?,
                keys: keys.clone(),
                peers: peers.clone(),
            };
            let built = service
                .build(ctx)
                .await
                .map_err(|err| err.context(format!("starting the {} service", service.name())))?;
            let server = built.server.serve_on(listener).await?;
            let reporter = server.health();
            let names = service.grpc_services();
            health.push((reporter.clone(), names));
            // Not serving until the first readiness check passes.
            for name in names {
                reporter
                    .set_service_status(*name, ServingStatus::NotServing)
                    .await;
            }
            tracing::info!(
                service = service.name(),
                port = server.port(),
                "gRPC service listening"
            );
            let readiness = tokio::spawn(follow_readiness(
                built.ready,
                jwks.clone(),
                reporter,
                names,
                draining_signal.clone(),
            ));
            let mut background = JoinSet::new();
            for task in built.tasks {
                background.spawn(task(stop_signal.clone()));
            }
            let stop = stop_signal.clone();
            let grace = settings.shutdown_grace;
            let stopped = built.stopped;
            tasks.spawn(async move {
                let result = server.run_until_stopped(stop, grace).await;
                readiness.abort();
                if shutdown::bounded(grace, async {
                    while background.join_next().await.is_some() {}
                })
                .await
                .is_none()
                {
                    background.abort_all();
                }
                if let Some(stopped) = stopped {
                    stopped.await;
                }
                result
            });
        }
        Ok(Started {
            addrs,
            peers,
            keys,
            jwks,
            health,
            draining,
            stop,
            tasks,
            grace: settings.shutdown_grace,
        })
    }
}

/// The host every listener binds to unless its own `*_ADDR` key says otherwise: loopback by
/// default, `0.0.0.0` in containers.
pub fn settings_host(env: &Env) -> String {
    env.string("BIND_HOST", "127.0.0.1")
}

/// `addr` with an unspecified IP (0.0.0.0, ::) replaced by loopback, for dialling it.
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Flips a service's health with its readiness check (and the token keys being loaded) until
/// the process starts draining.
async fn follow_readiness(
    check: Option<ReadyCheck>,
    jwks: Arc<JwksCache>,
    health: HealthReporter,
    services: &'static [&'static str],
    draining: Shutdown,
) {
    let mut serving = None;
    loop {
        if draining.is_triggered() {
            return;
        }
        let result = match &check {
            Some(check) => check().await,
            None => Ok(()),
        }
        .and_then(|()| {
            if jwks.is_loaded() {
                Ok(())
            } else {
                Err("the user service's public keys are not loaded yet".to_owned())
            }
        });
        let status = match &result {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if draining.is_triggered() {
            return;
        }
        if serving != Some(status) {
            if let Err(reason) = &result
                && serving.is_some()
            {
                tracing::warn!(services = ?services, reason = %reason, "not ready");
            }
            for service in services {
                health.set_service_status(*service, status).await;
            }
            serving = Some(status);
        }
        let wait = if result.is_ok() {
            READY_INTERVAL
        } else {
            NOT_READY_INTERVAL
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = draining.clone().wait() => return,
        }
    }
}
