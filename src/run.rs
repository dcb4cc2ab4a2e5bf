//! `serve` and `migrate` for any set of targets, shared by the binary and the test harness.

use anyhow::Context as _;
use shopmesh_gateway::Upstream;
use shopmesh_gateway::settings::GatewaySettings;
use shopmesh_platform::mesh::{GATEWAY, Mesh, Started};
use shopmesh_platform::shutdown::{self, ShutdownTrigger};
use shopmesh_platform::{Env, Settings};
use tokio::task::JoinSet;

/// The pseudo-target that runs everything.
pub const ALL: &str = "all";

/// Every valid `--target`: all, gateway, then each service.
pub fn target_names(mesh: &Mesh) -> Vec<&'static str> {
    let mut names = vec![ALL, GATEWAY];
    names.extend(mesh.services().iter().map(|s| s.name()));
    names
}

/// The gateway's upstreams: every service of the mesh, where this process reaches it.
pub fn upstreams(mesh: &Mesh, started: &Started) -> Vec<Upstream> {
    mesh.services()
        .iter()
        .filter_map(|service| {
            started.peers.url(service.name()).map(|url| Upstream {
                name: service.name(),
                url: url.to_owned(),
                health: service.grpc_services(),
                consumers: service
                    .subscriptions()
                    .iter()
                    .map(|subscription| subscription.consumer)
                    .collect(),
            })
        })
        .collect()
}

/// A running process: its services and, when asked for, the gateway.
pub struct Running {
    pub started: Started,
    pub gateway_addr: Option<std::net::SocketAddr>,
    edge: JoinSet<anyhow::Result<()>>,
    edge_trigger: ShutdownTrigger,
    metrics: Option<(ShutdownTrigger, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

/// Starts `targets` (names from [`target_names`]) of `mesh`.
pub async fn start(
    mesh: &Mesh,
    env: &Env,
    settings: &Settings,
    targets: &[&str],
) -> anyhow::Result<Running> {
    for target in targets {
        if !target_names(mesh).contains(target) {
            anyhow::bail!("unknown target {target}");
        }
    }
    let started = mesh.start(env, settings, targets).await?;
    let (edge_trigger, edge_shutdown) = shutdown::channel();
    let mut edge = JoinSet::new();
    let mut gateway_addr = None;
    let mut metrics = None;
    if targets.contains(&ALL) || targets.contains(&GATEWAY) {
        let gateway_settings = GatewaySettings::from_env(env)?;
        let app = shopmesh_gateway::Application::build(
            &gateway_settings,
            settings,
            upstreams(mesh, &started),
            started.jwks.clone(),
            &started.keys.signer(GATEWAY)?,
        )
        .await
        .context("starting the gateway")?;
        tracing::info!(addr = %app.local_addr(), "gateway listening");
        gateway_addr = Some(app.local_addr());
        edge.spawn(app.run_until_stopped(edge_shutdown));
    } else {
        let (trigger, stop) = shutdown::channel();
        let addr = settings.metrics_addr;
        tracing::info!(%addr, "metrics listening");
        metrics = Some((
            trigger,
            tokio::spawn(shopmesh_platform::metrics::serve(addr, stop)),
        ));
    }
    Ok(Running {
        started,
        gateway_addr,
        edge,
        edge_trigger,
        metrics,
    })
}

impl Running {
    /// Waits until a server stops on its own; the error says which.
    pub async fn failed(&mut self) -> anyhow::Error {
        tokio::select! {
            Some(result) = self.edge.join_next() => {
                anyhow::anyhow!("the gateway stopped unexpectedly: {result:?}")
            }
            result = self.started.failed() => match result {
                Ok(()) => anyhow::anyhow!("a service stopped unexpectedly"),
                Err(err) => err.context("a service stopped unexpectedly"),
            },
        }
    }

    /// Stops in order: every service reports NOT_SERVING first, the gateway drains (its
    /// in-flight requests can still reach the services), then the services drain.
    pub async fn stop(mut self, grace: std::time::Duration) {
        self.started.drain_health().await;
        self.edge_trigger.trigger();
        shopmesh_platform::mesh::drain(&mut self.edge, grace).await;
        self.started.stop().await;
        if let Some((trigger, task)) = self.metrics {
            trigger.trigger();
            let _ = task.await;
        }
    }
}

/// `shopmesh serve`: runs until SIGINT/SIGTERM or until a server fails.
pub async fn serve(env: Env, settings: Settings, targets: Vec<String>) -> anyhow::Result<()> {
    let mesh = crate::mesh();
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut running = start(&mesh, &env, &settings, &targets).await?;
    let failure = tokio::select! {
        () = shutdown::shutdown_signal() => {
            tracing::info!("shutdown requested");
            None
        }
        err = running.failed() => Some(err),
    };
    running.stop(settings.shutdown_grace).await;
    tracing::info!("stopped");
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// `shopmesh migrate`.
pub async fn migrate(env: &Env, settings: &Settings) -> anyhow::Result<()> {
    crate::mesh().migrate(env, settings).await
}
