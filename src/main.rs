//! `shopmesh`: one binary for every service. `serve --target all` runs every service and the
//! gateway in one process (each on its own port, still talking gRPC); `--target user` runs one.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::Settings;
use shopmesh_platform::auth::TokenVerifier;
use shopmesh_platform::grpc::channel;
use shopmesh_platform::jwks::JwksCache;
use shopmesh_platform::shutdown::{self, Shutdown};
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(name = "shopmesh", version, about = "shopmesh e-commerce backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service, the gateway, or everything in one process.
    Serve {
        #[arg(long, value_enum, default_value_t = Target::All)]
        target: Target,
    },
    /// Create databases, indexes and schema of every store (idempotent).
    Migrate,
    /// Administration tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Load the demo catalog (idempotent).
    Seed,
    /// Print the OpenAPI document the gateway serves.
    Openapi,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin account, or promote the existing account with this email (idempotent).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, env = "SHOPMESH_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    All,
    Gateway,
    User,
    Product,
}

impl Target {
    fn runs(self, target: Target) -> bool {
        self == Target::All || self == target
    }
}

fn main() -> anyhow::Result<()> {
    // A missing .env is normal; real environment variables win over it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        print!("{}", shopmesh_gateway::openapi_json());
        return Ok(());
    }
    let settings = Settings::from_env()?;
    shopmesh_platform::telemetry::init(settings.log_format, &settings.log_filter);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { target } => serve(settings, target).await,
            Command::Migrate => migrate(&settings).await,
            Command::Seed => seed(&settings).await,
            Command::Admin {
                command: AdminCommand::Create { email, password },
            } => admin_create(&settings, &email, &password).await,
            Command::Openapi => Ok(()),
        }
    })
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    shopmesh_user::migrate(settings)
        .await
        .context("migrating the user store (MongoDB)")?;
    shopmesh_product::migrate(settings)
        .await
        .context("migrating the product database (PostgreSQL)")?;
    println!("migrations applied");
    Ok(())
}

async fn seed(settings: &Settings) -> anyhow::Result<()> {
    let report = shopmesh_product::seed(settings)
        .await
        .context("seeding the catalog")?;
    println!("{report}");
    Ok(())
}

async fn admin_create(settings: &Settings, email: &str, password: &str) -> anyhow::Result<()> {
    shopmesh_user::migrate(settings).await?;
    let service = shopmesh_user::connect(settings).await?;
    match service.ensure_admin(email, password).await {
        Ok((user, true)) => println!("created admin {} ({})", user.email, user.id),
        Ok((user, false)) => println!("{} ({}) is an admin", user.email, user.id),
        Err(shopmesh_user::error::Error::Invalid(errors)) => {
            for error in errors {
                eprintln!("{}: {}", error.field, error.message);
            }
            anyhow::bail!("invalid admin account");
        }
        Err(err) => return Err(anyhow::Error::new(err)),
    }
    Ok(())
}

/// Waits for every task, at most `grace` (plus a second for bookkeeping).
async fn drain(tasks: &mut JoinSet<anyhow::Result<()>>, grace: Duration) {
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

async fn serve(settings: Settings, target: Target) -> anyhow::Result<()> {
    // The edge stops first so that its in-flight requests can still reach the services.
    let (edge_trigger, edge_shutdown) = shutdown::channel();
    let (backend_trigger, backend_shutdown) = shutdown::channel();
    let mut edge: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut backends: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let grace = settings.shutdown_grace;

    if target.runs(Target::User) {
        let app = shopmesh_user::Application::build(&settings)
            .await
            .context("starting the user service")?;
        tracing::info!(port = app.port(), "user gRPC service listening");
        let stop: Shutdown = backend_shutdown.clone();
        backends.spawn(app.run_until_stopped(stop, grace));
    }
    if target.runs(Target::Product) {
        // The product service verifies tokens with the user service's public keys (JWKS),
        // so it never needs the signing key.
        let jwks = Arc::new(JwksCache::new(TokenVerifier::new(
            &settings.jwt.issuer,
            &settings.jwt.audience,
        )));
        let user = UserServiceClient::new(channel(&settings.user_grpc_url, &settings.grpc_client)?);
        backends.spawn({
            let jwks = jwks.clone();
            let stop = backend_shutdown.clone();
            async move {
                jwks.run(user, stop).await;
                Ok(())
            }
        });
        let app = shopmesh_product::Application::build_with_verifier(
            &settings,
            shopmesh_product::config::ProductConfig::from_settings(&settings)?,
            jwks.verifier().clone(),
        )
        .await
        .context("starting the product service")?;
        tracing::info!(port = app.port(), "product gRPC service listening");
        backends.spawn(app.run_until_stopped(backend_shutdown.clone(), grace));
    }
    if target.runs(Target::Gateway) {
        let app = shopmesh_gateway::Application::build(&settings)
            .await
            .context("starting the gateway")?;
        tracing::info!(addr = %app.local_addr(), "gateway listening");
        edge.spawn(app.run_until_stopped(edge_shutdown.clone()));
    } else {
        backends.spawn(shopmesh_platform::metrics::serve(
            settings.metrics_addr,
            backend_shutdown.clone(),
        ));
        tracing::info!(addr = %settings.metrics_addr, "metrics listening");
    }

    let failed = tokio::select! {
        () = shutdown::shutdown_signal() => {
            tracing::info!("shutdown requested");
            false
        }
        Some(result) = edge.join_next() => {
            tracing::error!(?result, "gateway stopped unexpectedly");
            true
        }
        Some(result) = backends.join_next() => {
            tracing::error!(?result, "a service stopped unexpectedly");
            true
        }
    };
    edge_trigger.trigger();
    drain(&mut edge, grace).await;
    backend_trigger.trigger();
    drain(&mut backends, grace).await;
    tracing::info!("stopped");
    if failed {
        anyhow::bail!("a server stopped unexpectedly");
    }
    Ok(())
}
