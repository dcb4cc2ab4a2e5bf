//! Tests of the `shopmesh` binary as a process: graceful shutdown, start-up refusal, admin CLI.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use shopmesh_platform::mesh::{addr_key, url_key};

use crate::helpers::{
    PASSWORD, PgDatabase, TempDir, free_port, mongodb_url, postgres_server, redis_url,
};

/// Environment for one process test: its own databases and key prefixes, and an address for
/// every service; the guards drop its PostgreSQL databases afterwards.
pub fn base_env() -> (HashMap<String, String>, String, Vec<PgDatabase>) {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("test_{unique}");
    let mut env: HashMap<String, String> = [
        ("SHOPMESH_PROFILE", "dev".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("MONGODB_URL", mongodb_url()),
        ("MONGODB_DATABASE", database.clone()),
        ("REDIS_URL", redis_url()),
        ("REDIS_KEY_PREFIX", format!("test:{unique}:")),
        ("CART_KEY_PREFIX", format!("test:{unique}:cart:")),
        ("SHUTDOWN_GRACE_SECS", "10".to_owned()),
        ("EVENTS_EXCHANGE", format!("test.{unique}.events")),
        ("EVENTS_QUEUE_PREFIX", format!("test.{unique}.")),
        ("EVENTS_QUEUE_EXPIRES_MS", "600000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut guards = Vec::new();
    for service in [
        "product",
        "order",
        "payment",
        "delivery",
        "notification",
        "analytics",
    ] {
        let name = format!("{service}_{unique}");
        env.insert(
            format!("{}_DATABASE_URL", service.to_ascii_uppercase()),
            format!("{}/{name}", postgres_server()),
        );
        guards.push(PgDatabase(name));
    }
    for service in shopmesh::services() {
        let port = free_port();
        env.insert(addr_key(service.name()), format!("127.0.0.1:{port}"));
        env.insert(url_key(service.name()), format!("http://127.0.0.1:{port}"));
    }
    (env, database, guards)
}

pub fn shopmesh(env: &HashMap<String, String>, dir: &TempDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shopmesh"));
    // A directory without a .env file, so only the given environment counts.
    command
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn an_in_flight_request_completes_when_sigterm_arrives() {
    let dir = TempDir::new("shopmesh-proc");
    let (mut env, _, _db) = base_env();
    let gateway_port = free_port();
    let user_port = free_port();
    env.insert(
        "GATEWAY_ADDR".to_owned(),
        format!("127.0.0.1:{gateway_port}"),
    );
    env.insert(
        "USER_GRPC_ADDR".to_owned(),
        format!("127.0.0.1:{user_port}"),
    );
    env.insert(
        "USER_GRPC_URL".to_owned(),
        format!("http://127.0.0.1:{user_port}"),
    );
    let product_port = free_port();
    env.insert(
        "PRODUCT_GRPC_ADDR".to_owned(),
        format!("127.0.0.1:{product_port}"),
    );
    env.insert(
        "PRODUCT_GRPC_URL".to_owned(),
        format!("http://127.0.0.1:{product_port}"),
    );
    let mut child = shopmesh(&env, &dir)
        .args(["serve", "--target", "all"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    crate::helpers::wait_ready(&http, &format!("http://127.0.0.1:{gateway_port}/readyz")).await;

    // Start a registration but hold back half of its body, so it is in flight.
    let body =
        format!(r#"{{"email":"inflight@example.com","password":"{PASSWORD}","name":"In Flight"}}"#);
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(("127.0.0.1", gateway_port))
        .await
        .unwrap();
    let request_head = format!(
        "POST /api/auth/register HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{head}",
        body.len()
    );
    stream.write_all(request_head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    // Give the server ample time (CI runs tests in parallel on two cores) to read the head.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let pid = child.id().unwrap().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // New connections are no longer accepted while the old one drains.
    assert!(
        TcpStream::connect(("127.0.0.1", gateway_port))
            .await
            .is_err(),
        "the listener closed on SIGTERM"
    );

    stream.write_all(tail.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("response within the grace period")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("inflight@example.com"), "{response}");

    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("process exits after draining")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn production_refuses_to_start_without_a_signing_key() {
    let dir = TempDir::new("shopmesh-proc");
    let (mut env, _, _db) = base_env();
    env.insert("SHOPMESH_PROFILE".to_owned(), "production".into());
    env.insert("USER_GRPC_ADDR".to_owned(), "127.0.0.1:0".into());
    // Production names every store explicitly, the broker included.
    env.insert(
        "AMQP_URL".to_owned(),
        "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
    );
    let keys = dir.0.join("mesh");
    env.insert("MESH_KEYS_DIR".to_owned(), keys.display().to_string());
    // Production generates no keys: without the service identity keys it refuses to start.
    let output = shopmesh(&env, &dir)
        .args(["serve", "--target", "user"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("shopmesh mesh-keys"), "{stderr}");
    assert!(!keys.exists(), "production generated keys");

    let made = shopmesh(&env, &dir)
        .arg("mesh-keys")
        .output()
        .await
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(keys.join("user.key").exists() && keys.join("product.pub").exists());
    // With them, it still refuses to start the user service without its signing key.
    let output = shopmesh(&env, &dir)
        .args(["serve", "--target", "user"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_PRIVATE_KEY_PEM"), "{stderr}");
}

#[tokio::test]
async fn admin_create_is_idempotent_and_promotes_existing_accounts() {
    let dir = TempDir::new("shopmesh-proc");
    let (env, database, _db) = base_env();
    let run = |email: &'static str| {
        let mut command = shopmesh(&env, &dir);
        command.args(["admin", "create", "--email", email, "--password", PASSWORD]);
        command.output()
    };
    let first = run("boss@example.com").await.unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("created admin"));
    let second = run("BOSS@example.com").await.unwrap();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("is an admin"));

    let users = mongodb::Client::with_uri_str(mongodb_url())
        .await
        .unwrap()
        .database(&database)
        .collection::<mongodb::bson::Document>("users");
    assert_eq!(
        users.count_documents(mongodb::bson::doc! {}).await.unwrap(),
        1
    );
    let admin = users
        .find_one(mongodb::bson::doc! {"email_normalized": "boss@example.com"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.get_str("role").unwrap(), "admin");

    let weak = shopmesh(&env, &dir)
        .args([
            "admin",
            "create",
            "--email",
            "x@example.com",
            "--password",
            "short",
        ])
        .output()
        .await
        .unwrap();
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("password"));
}

/// Makes `email` an admin with the binary's `admin create` and logs in through the gateway at
/// `edge`: the access token.
pub async fn admin_token(
    env: &HashMap<String, String>,
    dir: &TempDir,
    edge: &str,
    email: &str,
) -> String {
    let admin = shopmesh(env, dir)
        .args(["admin", "create", "--email", email, "--password", PASSWORD])
        .output()
        .await
        .unwrap();
    assert!(admin.status.success(), "{admin:?}");
    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("{edge}/api/auth/login"))
        .json(&serde_json::json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["access_token"].as_str().unwrap().to_owned()
}

async fn wait_http(url: &str) {
    crate::helpers::wait_ready(&reqwest::Client::new(), url).await;
}

/// Microservices mode: one process per target, talking gRPC across processes.
#[tokio::test]
async fn split_targets_work_as_separate_processes() {
    let dir = TempDir::new("shopmesh-proc");
    let (mut env, _, _db) = base_env();
    let user_port = free_port();
    let product_port = free_port();
    let gateway_port = free_port();
    let user_metrics = free_port();
    let product_metrics = free_port();
    env.insert(
        "USER_GRPC_ADDR".to_owned(),
        format!("127.0.0.1:{user_port}"),
    );
    env.insert(
        "USER_GRPC_URL".to_owned(),
        format!("http://127.0.0.1:{user_port}"),
    );
    env.insert(
        "PRODUCT_GRPC_ADDR".to_owned(),
        format!("127.0.0.1:{product_port}"),
    );
    env.insert(
        "PRODUCT_GRPC_URL".to_owned(),
        format!("http://127.0.0.1:{product_port}"),
    );
    env.insert(
        "GATEWAY_ADDR".to_owned(),
        format!("127.0.0.1:{gateway_port}"),
    );
    let spawn = |target: &str, metrics_port: u16| {
        let mut env = env.clone();
        env.insert(
            "METRICS_ADDR".to_owned(),
            format!("127.0.0.1:{metrics_port}"),
        );
        shopmesh(&env, &dir)
            .args(["serve", "--target", target])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    // Start the gateway first: it must cope with services that come up after it.
    let _gateway = spawn("gateway", free_port());
    let _user = spawn("user", user_metrics);
    let _product = spawn("product", product_metrics);
    // The services the test does not look at still run: /readyz waits for every one.
    let _others: Vec<_> = [
        "cart",
        "order",
        "payment",
        "delivery",
        "notification",
        "analytics",
    ]
    .into_iter()
    .map(|target| spawn(target, free_port()))
    .collect();
    let edge = format!("http://127.0.0.1:{gateway_port}");
    wait_http(&format!("{edge}/readyz")).await;

    let http = reqwest::Client::new();
    let token = &admin_token(&env, &dir, &edge, "ops@example.com").await;
    // The product process verifies the token with keys it fetched from the user process.
    let created = http
        .post(format!("{edge}/api/admin/products"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "sku": "SPLIT-1", "name": "Split mode", "price": {"amount": 100, "currency": "USD"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // Processes without a gateway serve /metrics on their own port.
    let metrics = http
        .get(format!("http://127.0.0.1:{user_metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("grpc_server_requests_total"), "{metrics}");
    let metrics = http
        .get(format!("http://127.0.0.1:{product_metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("CreateProduct"), "{metrics}");
}

#[tokio::test]
async fn seed_loads_a_demo_catalog_idempotently() {
    let dir = TempDir::new("shopmesh-proc");
    let (env, _, _db) = base_env();
    let first = shopmesh(&env, &dir).arg("seed").output().await.unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // "23 categories, 308 products (308 created, 0 updated, 0 unchanged)"
    let created = |report: &str| -> u64 {
        report
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(" created"))
            .and_then(|(count, _)| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("no created count in {report:?}"))
    };
    let report = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        created(&report) >= 300,
        "the first seed creates the catalog: {report}"
    );
    let second = shopmesh(&env, &dir).arg("seed").output().await.unwrap();
    assert!(second.status.success());
    let again = String::from_utf8_lossy(&second.stdout).to_string();
    assert_eq!(created(&again), 0, "{again}");
    assert!(
        again.contains(&format!("{} unchanged", created(&report))),
        "{again}"
    );
}
