//! `shopmesh`: one binary for every service. `serve --target all` runs every service and the
//! gateway in one process (each on its own port, still talking gRPC); `--target user` runs one.
//! The targets come from the list of services in `lib.rs`.

use anyhow::Context;
use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use shopmesh::run;
use shopmesh_platform::{Env, Settings};

/// mimalloc rather than glibc's malloc: a profile of add-to-cart spent about 13% of shopmesh's
/// CPU in glibc malloc/free (arena locks and consolidation across the runtime's threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "shopmesh", version, about = "shopmesh e-commerce backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run services and the gateway: `all`, `gateway`, or a service (repeat or comma-separate).
    Serve {
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "all",
            value_parser = PossibleValuesParser::new(run::target_names(&shopmesh::mesh()))
        )]
        target: Vec<String>,
    },
    /// Create databases, indexes and schema of every store, and every consumer's event queues
    /// (idempotent).
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
    /// Print the gRPC reference the gateway serves at /docs/grpc.
    GrpcDocs,
    /// Print the docker-compose file for the list of services.
    Compose,
    /// Write the Kubernetes manifests for the list of services: a kustomize base and the dev
    /// and production overlays.
    K8s {
        /// The directory to write them into, e.g. deploy/k8s.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// List the services: name, default gRPC port, gRPC services (tab-separated).
    Services,
    /// Print a 60-second service token of one service, from its key in MESH_KEYS_DIR, for
    /// calling internal RPCs by hand (grpcurl -H "x-shopmesh-service-token: …").
    ServiceToken {
        /// The service to speak as, e.g. order.
        #[arg(long = "as")]
        service: String,
    },
    /// Create the identity key pair of every service that has none in the directory.
    MeshKeys {
        #[arg(long, env = "MESH_KEYS_DIR")]
        dir: std::path::PathBuf,
    },
    /// Put load on the REST edge: browse, cart, checkout or a weighted mix, open loop at a
    /// fixed rate (latency from each scheduled start) or closed loop at a fixed concurrency;
    /// prints a latency table per endpoint, writes a JSON report and an SVG chart.
    Loadgen {
        #[command(flatten)]
        args: Box<shopmesh_loadgen::LoadgenArgs>,
    },
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
    /// Rotate the access-token signing key: a new key signs from now on, the old one still
    /// verifies until its tokens expire. With key files (the dev profile) a running user
    /// service picks it up within seconds; with JWT_PRIVATE_KEY_PEM, prints the new key to
    /// deploy (the old one goes to JWT_PREVIOUS_KEY_PEM).
    RotateSigningKey,
}

fn main() -> anyhow::Result<()> {
    // A missing .env is normal; real environment variables win over it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match &cli.command {
        Command::Openapi => {
            print!("{}", shopmesh_gateway::openapi_json());
            return Ok(());
        }
        Command::GrpcDocs => {
            print!("{}", shopmesh_contracts::GRPC_REFERENCE_HTML);
            return Ok(());
        }
        Command::Compose => {
            print!("{}", shopmesh::compose::render(&shopmesh::mesh()));
            return Ok(());
        }
        Command::K8s { out } => {
            let written = shopmesh::k8s::write(&shopmesh::mesh(), out)?;
            println!("wrote {} files to {}", written.len(), out.display());
            return Ok(());
        }
        Command::Services => {
            for service in shopmesh::mesh().services() {
                println!(
                    "{}\t{}\t{}",
                    service.name(),
                    service.default_port(),
                    service.grpc_services().join(",")
                );
            }
            return Ok(());
        }
        Command::MeshKeys { dir } => {
            let created =
                shopmesh_platform::identity::generate_keys(dir, &shopmesh::mesh().identities())?;
            println!("identity keys in {}: created {created:?}", dir.display());
            return Ok(());
        }
        // A client of the edge: it needs none of the services' settings.
        Command::Loadgen { args } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(shopmesh_loadgen::main(args))?;
            return Ok(());
        }
        _ => {}
    }
    let env = Env::from_process()?;
    let settings = Settings::from_env(&env)?;
    if let Command::ServiceToken { service } = &cli.command {
        let keys = shopmesh::mesh().keys(&settings)?;
        let token = keys
            .signer(service)?
            .token_issued_at(shopmesh_platform::auth::now_secs())?;
        println!("{token}");
        return Ok(());
    }
    let _telemetry = shopmesh_platform::telemetry::init(
        settings.log_format,
        &settings.log_filter,
        &settings.tracing,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { target } => run::serve(env, settings, target).await,
            Command::Migrate => {
                run::migrate(&env, &settings).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Seed => {
                let report = shopmesh_product::seed(&env)
                    .await
                    .context("seeding the catalog")?;
                println!("{report}");
                Ok(())
            }
            Command::Admin {
                command: AdminCommand::Create { email, password },
            } => admin_create(&env, &settings, &email, &password).await,
            Command::Admin {
                command: AdminCommand::RotateSigningKey,
            } => rotate_signing_key(&env, &settings),
            Command::Openapi
            | Command::GrpcDocs
            | Command::Compose
            | Command::K8s { .. }
            | Command::Services
            | Command::ServiceToken { .. }
            | Command::MeshKeys { .. }
            | Command::Loadgen { .. } => Ok(()),
        }
    })
}

fn rotate_signing_key(env: &Env, settings: &Settings) -> anyhow::Result<()> {
    let user = shopmesh_user::UserSettings::from_env(env)?;
    if user.private_key_pem.is_some() {
        // The key lives in the deployment's secrets, which this command cannot change.
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = key
            .to_pkcs8_pem(Default::default())
            .map_err(|_| anyhow::anyhow!("could not encode the new key"))?;
        eprintln!(
            "Deploy the user service with JWT_PREVIOUS_KEY_PEM set to the current JWT_PRIVATE_KEY_PEM \
             and JWT_PRIVATE_KEY_PEM set to this new key (keep both until the old tokens have \
             expired, {} s):",
            user.access_ttl.as_secs()
        );
        print!("{}", pem.as_str());
        return Ok(());
    }
    if settings.profile != shopmesh_platform::Profile::Dev {
        anyhow::bail!("JWT_PRIVATE_KEY_PEM is required in the production profile");
    }
    let kid =
        shopmesh_user::token::rotate_key_files(&settings.run_dir, &settings.jwt, user.access_ttl)?;
    println!(
        "access tokens are now signed with key {kid}; the previous key verifies until its tokens \
         expire ({} s)",
        user.access_ttl.as_secs()
    );
    Ok(())
}

async fn admin_create(
    env: &Env,
    settings: &Settings,
    email: &str,
    password: &str,
) -> anyhow::Result<()> {
    let user = shopmesh_user::UserSettings::from_env(env)?;
    shopmesh_user::migrate(&user).await?;
    let service = shopmesh_user::connect(settings, &user).await?;
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
