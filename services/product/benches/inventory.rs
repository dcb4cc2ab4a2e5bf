//! Inventory and catalog throughput against the local PostgreSQL, end to end over gRPC (token
//! verification, tonic, sqlx, PostgreSQL on loopback). Run with `cargo bench -p shopmesh-product`.
//!
//! Each case runs for at most a few seconds (or a bounded number of operations) against a fresh
//! database that is dropped at the end, and prints operations per second with p50 and p99
//! latency. Cases: Reserve of one unit on one hot SKU and on a random one of 1,000 SKUs, and
//! catalog searches over the demo catalog, each at concurrency 1, 8 and 64.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::product::v1 as pb;
use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_client::InventoryServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_platform::auth::{Identity, Role, Tier};
use shopmesh_platform::identity::{self, SERVICE_TOKEN, ServiceSigner};
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_platform::{Env, Settings};
use shopmesh_product::ProductConfig;
use shopmesh_user::token::TokenSigner;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tonic::Request;
use tonic::transport::Channel;
use uuid::Uuid;

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const CONCURRENCY: [usize; 3] = [1, 8, 64];
const CASE_TIME: Duration = Duration::from_secs(3);
const CASE_MAX_OPS: usize = 20_000;
const MANY_SKUS: usize = 1_000;
const SEARCHES: &[&str] = &[
    "wireless headphones",
    "running shoes",
    "cast iron pan",
    "coffee grinder",
    "waterproof tent",
    "oak desk",
    "strategy board game",
    "down jacket",
    "smart speaker",
    "leather boots",
];

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

struct Stats {
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[rank].as_secs_f64() * 1000.0
    }
}

/// Runs `op(i)` from `concurrency` workers until the time or operation budget is spent.
async fn measure<F, Fut>(concurrency: usize, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = op.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= CASE_MAX_OPS || started.elapsed() >= CASE_TIME {
                        break;
                    }
                    let t0 = Instant::now();
                    if op(i).await.is_err() {
                        errors += 1;
                    }
                    latencies.push(t0.elapsed());
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((l, e)) = worker.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Stats {
        ops: latencies.len(),
        errors,
        elapsed,
        latencies,
    }
}

fn report(case: &str, concurrency: usize, stats: &Stats) {
    println!(
        "{case:<28} {concurrency:>4} {:>7} {:>6} {:>10.0} {:>9.2} {:>9.2}",
        stats.ops,
        stats.errors,
        stats.ops as f64 / stats.elapsed.as_secs_f64(),
        stats.percentile(0.50),
        stats.percentile(0.99),
    );
}

fn product(sku: String, name: String, price: i64) -> pb::ProductInput {
    pb::ProductInput {
        sku,
        name,
        price: Some(Money {
            amount_minor: price,
            currency: "USD".into(),
        }),
        active: true,
        ..Default::default()
    }
}

/// A Reserve of one unit as the order service, the only caller Reserve admits.
fn reserve_request(order: &ServiceSigner, sku: String) -> Request<pb::ReserveRequest> {
    let mut request = Request::new(pb::ReserveRequest {
        order_id: Uuid::now_v7().to_string(),
        lines: vec![pb::ReservationLine { sku, quantity: 1 }],
        ttl: None,
    });
    if let Some(value) = order
        .header_value()
        .and_then(|v| v.to_str().ok().and_then(|v| v.parse().ok()))
    {
        request.metadata_mut().insert(SERVICE_TOKEN, value);
    }
    request
}

async fn run() -> anyhow::Result<()> {
    let id = Uuid::new_v4().simple();
    let db_name = format!("product_bench_{id}");
    let run_dir = std::env::temp_dir().join(format!("shopmesh-product-bench-{id}"));
    let map: HashMap<String, String> = [
        ("SHOPMESH_PROFILE", "dev".to_owned()),
        ("LOG_FORMAT", "pretty".to_owned()),
        ("SHOPMESH_RUN_DIR", run_dir.to_string_lossy().into_owned()),
        ("PRODUCT_DATABASE_URL", format!("{SERVER}/{db_name}")),
        ("PRODUCT_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("SHUTDOWN_GRACE_SECS", "5".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let env = Env::from_map(map)?;
    let settings = Settings::from_env(&env)?;
    let config = ProductConfig {
        max_connections: 32,
        ..ProductConfig::default()
    };
    // The order service's key must be in the trust bundle for the Reserve calls to carry it.
    identity::generate_keys(&settings.mesh_keys_dir, &["order"])?;
    let mesh = Mesh::new(vec![
        Arc::new(shopmesh_product::Product::with_config(config)) as Arc<dyn Service>,
    ]);
    let result = match mesh.start(&env, &settings, &["product"]).await {
        Ok(started) => {
            // User tokens are signed by the user service alone, which does not run here: the
            // verifier trusts a bench signer's public key instead.
            let signer = TokenSigner::from_key(
                &ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
                &settings.jwt,
                Duration::from_secs(900),
            )?;
            started.jwks.verifier().set_keys(&[signer.jwk().clone()]);
            let order = started.keys.signer("order")?;
            let result = cases(&env, &signer, &order, started.addrs["product"].port()).await;
            started.stop().await;
            result
        }
        Err(err) => Err(err),
    };
    let _ = std::fs::remove_dir_all(&run_dir);
    let options: PgConnectOptions = format!("{SERVER}/postgres").parse()?;
    let mut conn = PgConnection::connect_with(&options).await?;
    sqlx::query(&format!(
        "drop database if exists \"{db_name}\" with (force)"
    ))
    .execute(&mut conn)
    .await?;
    result
}

async fn cases(
    env: &Env,
    signer: &TokenSigner,
    order: &ServiceSigner,
    port: u16,
) -> anyhow::Result<()> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    let token = |role| {
        signer.sign(&Identity {
            user_id: Uuid::now_v7().to_string(),
            role,
            tier: Tier::Standard,
        })
    };
    let admin: Arc<str> = token(Role::Admin)?.into();

    // Fixtures: one hot SKU, 1,000 more through two import batches, and the demo catalog.
    let mut products = ProductServiceClient::new(channel.clone());
    products
        .create_product(bearer(
            pb::CreateProductRequest {
                product: Some(product("HOT-1".into(), "Hot item".into(), 999)),
                initial_stock: 100_000_000,
                low_stock_threshold: 0,
            },
            &admin,
        ))
        .await?;
    let rows: Vec<pb::ImportProductRow> = (0..MANY_SKUS)
        .map(|n| pb::ImportProductRow {
            row_number: n as i64,
            product: Some(product(
                format!("MANY-{n:04}"),
                format!("Bench item {n}"),
                500,
            )),
            initial_stock: 10_000_000,
        })
        .collect();
    let batches: Vec<pb::ImportProductsRequest> = rows
        .chunks(500)
        .map(|rows| pb::ImportProductsRequest {
            rows: rows.to_vec(),
        })
        .collect();
    let imported = products
        .import_products(bearer(tokio_stream::iter(batches), &admin))
        .await?
        .into_inner();
    anyhow::ensure!(
        imported.products_created as usize == MANY_SKUS,
        "import failed"
    );
    let seeded = shopmesh_product::seed(env).await?;
    println!("\nfixtures: 1 hot SKU, {MANY_SKUS} other SKUs, demo catalog: {seeded}\n");

    println!(
        "{:<28} {:>4} {:>7} {:>6} {:>10} {:>9} {:>9}",
        "case", "conc", "ops", "errors", "ops/s", "p50 ms", "p99 ms"
    );
    let mut hot_reserved = 0;
    for concurrency in CONCURRENCY {
        let inventory = InventoryServiceClient::new(channel.clone());
        let order = order.clone();
        let stats = measure(concurrency, move |_| {
            let mut client = inventory.clone();
            let request = reserve_request(&order, "HOT-1".into());
            async move { client.reserve(request).await.map(|_| ()) }
        })
        .await;
        hot_reserved += stats.ops - stats.errors;
        report("reserve, one hot SKU", concurrency, &stats);
    }
    for concurrency in CONCURRENCY {
        let inventory = InventoryServiceClient::new(channel.clone());
        let order = order.clone();
        let stats = measure(concurrency, move |i| {
            let mut client = inventory.clone();
            // A fixed scatter over the SKUs (Knuth's multiplicative hash of the op index).
            let sku = format!("MANY-{:04}", (i.wrapping_mul(2_654_435_761)) % MANY_SKUS);
            let request = reserve_request(&order, sku);
            async move { client.reserve(request).await.map(|_| ()) }
        })
        .await;
        report("reserve, 1000 SKUs", concurrency, &stats);
    }
    for concurrency in CONCURRENCY {
        let products = ProductServiceClient::new(channel.clone());
        let stats = measure(concurrency, move |i| {
            let mut client = products.clone();
            let request = pb::SearchProductsRequest {
                q: SEARCHES[i % SEARCHES.len()].into(),
                page_size: 20,
                in_stock_only: i % 2 == 0,
                ..Default::default()
            };
            async move { client.search_products(request).await.map(|_| ()) }
        })
        .await;
        report("search (full text, ranked)", concurrency, &stats);
    }
    for concurrency in CONCURRENCY {
        let products = ProductServiceClient::new(channel.clone());
        let stats = measure(concurrency, move |_| {
            let mut client = products.clone();
            let request = pb::SearchProductsRequest {
                sort: pb::ProductSort::PriceAsc.into(),
                page_size: 20,
                ..Default::default()
            };
            async move { client.search_products(request).await.map(|_| ()) }
        })
        .await;
        report("browse (price sort, no q)", concurrency, &stats);
    }

    // The hot SKU's books must balance after all that concurrency.
    let stock = InventoryServiceClient::new(channel)
        .get_stock(pb::GetStockRequest {
            sku: "HOT-1".into(),
        })
        .await?
        .into_inner()
        .stock
        .ok_or_else(|| anyhow::anyhow!("no stock"))?;
    anyhow::ensure!(
        stock.reserved as usize == hot_reserved,
        "hot SKU reserved {} but {hot_reserved} reservations succeeded",
        stock.reserved
    );
    println!(
        "\nhot SKU check: {hot_reserved} reservations succeeded, reserved = {}",
        stock.reserved
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; there is nothing to filter, so arguments are ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}
