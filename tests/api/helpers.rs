//! Test harness: each test gets its own MongoDB and PostgreSQL databases, its own Redis key
//! prefix and run directory (so its own generated keys), the services of the binary's list and
//! the gateway on free ports (started by the same code as `shopmesh serve`), and its own nginx
//! edge in front of them. Everything is stopped and dropped when the test ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use shopmesh::run::{self, Running};
use shopmesh_platform::identity::{MeshKeys, SERVICE_TOKEN};
use shopmesh_platform::mesh::{Mesh, addr_key, url_key};
use shopmesh_platform::{Env, Settings};
use shopmesh_product::config::ProductConfig;
use tokio::process::{Child, Command};

pub const PASSWORD: &str = "Analytical-Engine-1843";

/// Knobs a test may turn; everything else gets test defaults.
#[derive(Clone, Debug)]
pub struct Options {
    pub ip_per_second: u32,
    pub ip_burst: u32,
    pub user_per_second: u32,
    pub user_burst: u32,
    pub access_ttl_secs: u64,
    pub product_config: ProductConfig,
    /// Services started in the test's process; the others are pointed at a closed port, as
    /// if they were down. `None`: all of them.
    pub services: Option<Vec<&'static str>>,
    /// Extra environment (e.g. shorter timeouts).
    pub env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ip_per_second: 10_000,
            ip_burst: 10_000,
            user_per_second: 10_000,
            user_burst: 10_000,
            access_ttl_secs: 900,
            product_config: ProductConfig {
                sweep_interval: Duration::from_secs(1),
                ..ProductConfig::default()
            },
            services: None,
            env: Vec::new(),
        }
    }
}

pub struct TestApp {
    /// The nginx edge, e.g. `http://127.0.0.1:40123`.
    pub edge: String,
    /// The gateway itself, bypassing nginx.
    pub gateway: String,
    /// The user service's gRPC endpoint.
    pub user_grpc: String,
    /// The product service's gRPC endpoint.
    pub product_grpc: String,
    pub env: Env,
    /// The same environment as plain variables, for a `shopmesh` child process of the test.
    pub vars: HashMap<String, String>,
    pub settings: Settings,
    pub http: reqwest::Client,
    pub mongo: mongodb::Database,
    /// This installation's service identity keys (to call internal RPCs as a service would).
    pub keys: MeshKeys,
    pub nginx: Nginx,
    /// The gRPC URL of every service running in the test, by name.
    pub grpc: std::collections::BTreeMap<String, String>,
    _running: Running,
    _run_dir: TempDir,
    _databases: Vec<PgDatabase>,
    _mongo_database: MongoDatabase,
}

/// A PostgreSQL database of one test, dropped (connections and all) when the test ends.
pub struct PgDatabase(pub String);

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("dropdb")
            .args([
                "-U",
                "postgres",
                "-h",
                "127.0.0.1",
                "--if-exists",
                "--force",
                &self.0,
            ])
            .stderr(Stdio::null())
            .status();
    }
}

/// A MongoDB database of one test, dropped when the test ends.
pub struct MongoDatabase(pub String);

impl Drop for MongoDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        // The driver is async; drop it from a thread of its own with a small runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(client) = mongodb::Client::with_uri_str(mongodb_url()).await {
                    let _ = client.database(&name).drop().await;
                }
            });
        })
        .join();
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn mongodb_url() -> String {
    std::env::var("MONGODB_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// The PostgreSQL server (no database); each test creates its own database on it.
pub fn postgres_server() -> String {
    std::env::var("POSTGRES_SERVER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free loopback port (bound and released; nginx binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The environment of one test: unique databases and key prefix, its own run directory (so its
/// own generated keys), every listener on an ephemeral port.
pub fn test_env(options: &Options, run_dir: &Path) -> (Env, HashMap<String, String>, String) {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("test_{unique}");
    let mut env: HashMap<String, String> = [
        ("SHOPMESH_PROFILE", "dev".to_owned()),
        ("LOG_FORMAT", "pretty".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("SHOPMESH_RUN_DIR", run_dir.display().to_string()),
        ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        (
            "PRODUCT_DATABASE_URL",
            format!("{}/product_{unique}", postgres_server()),
        ),
        (
            "ORDER_DATABASE_URL",
            format!("{}/order_{unique}", postgres_server()),
        ),
        (
            "PAYMENT_DATABASE_URL",
            format!("{}/payment_{unique}", postgres_server()),
        ),
        (
            "DELIVERY_DATABASE_URL",
            format!("{}/delivery_{unique}", postgres_server()),
        ),
        (
            "NOTIFICATION_DATABASE_URL",
            format!("{}/notification_{unique}", postgres_server()),
        ),
        (
            "ANALYTICS_DATABASE_URL",
            format!("{}/analytics_{unique}", postgres_server()),
        ),
        // Events of the test on an exchange and queues of its own, which RabbitMQ deletes
        // once unused.
        ("EVENTS_EXCHANGE", format!("test.{unique}.events")),
        ("EVENTS_QUEUE_PREFIX", format!("test.{unique}.")),
        ("EVENTS_QUEUE_EXPIRES_MS", "600000".to_owned()),
        ("EVENTS_RETRY_DELAY_MS", "200".to_owned()),
        ("EVENTS_RELAY_INTERVAL_MS", "50".to_owned()),
        // Small pools: the tests run side by side on one PostgreSQL (max_connections 100).
        ("PRODUCT_DB_MAX_CONNECTIONS", "6".to_owned()),
        ("PAYMENT_DB_MAX_CONNECTIONS", "6".to_owned()),
        ("DELIVERY_DB_MAX_CONNECTIONS", "4".to_owned()),
        ("ORDER_DB_MAX_CONNECTIONS", "6".to_owned()),
        ("NOTIFICATION_DB_MAX_CONNECTIONS", "6".to_owned()),
        ("ANALYTICS_DB_MAX_CONNECTIONS", "6".to_owned()),
        ("EVENTS_CONSUMER_LANES", "4".to_owned()),
        ("CART_KEY_PREFIX", format!("test:{unique}:cart:")),
        // A shopper watches the whole delivery in a few seconds.
        ("DELIVERY_COURIER_STEP_MS", "400".to_owned()),
        ("DELIVERY_PACKING_MS", "0".to_owned()),
        ("ORDER_RECOVERY_INTERVAL_MS", "300".to_owned()),
        ("ORDER_SAGA_LEASE_MS", "2000".to_owned()),
        ("MONGODB_URL", mongodb_url()),
        ("MONGODB_DATABASE", database.clone()),
        ("REDIS_URL", redis_url()),
        ("REDIS_KEY_PREFIX", format!("test:{unique}:")),
        (
            "RATE_LIMIT_IP_PER_SECOND",
            options.ip_per_second.to_string(),
        ),
        ("RATE_LIMIT_IP_BURST", options.ip_burst.to_string()),
        (
            "RATE_LIMIT_USER_PER_SECOND",
            options.user_per_second.to_string(),
        ),
        ("RATE_LIMIT_USER_BURST", options.user_burst.to_string()),
        ("ACCESS_TOKEN_TTL_SECS", options.access_ttl_secs.to_string()),
        // Test refresh tokens expire from Redis within the hour.
        ("REFRESH_TOKEN_TTL_SECS", "3600".to_owned()),
        ("CORS_ALLOWED_ORIGINS", "https://shop.example".to_owned()),
        ("SHUTDOWN_GRACE_SECS", "5".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mesh = shopmesh::mesh();
    for service in mesh.services() {
        env.insert(addr_key(service.name()), "127.0.0.1:0".to_owned());
        // A service that does not run here is down: nothing listens at its address.
        env.insert(
            url_key(service.name()),
            format!("http://127.0.0.1:{}", free_port()),
        );
    }
    for (key, value) in &options.env {
        env.insert((*key).to_owned(), value.clone());
    }
    (Env::from_map(env.clone()).expect("test env"), env, database)
}

pub fn nginx_binary() -> String {
    std::env::var("NGINX_BIN").unwrap_or_else(|_| {
        if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx".into()
        } else {
            "nginx".into()
        }
    })
}

/// An nginx edge in its own process group. Dropping it ends the whole group, workers included:
/// killing only the master would leave its workers listening.
pub struct Nginx {
    child: Child,
    pub group: i32,
}

impl Nginx {
    /// Pids of the processes still in the group (master and workers).
    pub fn processes(group: i32) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        // Fields after the parenthesised command: state, ppid, pgrp …
                        let rest = stat.rsplit_once(')')?.1.to_owned();
                        let mut fields = rest.split_whitespace();
                        let state = fields.next()?;
                        // A zombie has exited already; it only waits to be reaped.
                        if state == "Z" {
                            return None;
                        }
                        fields.nth(1)?.parse::<i32>().ok()
                    })
                    == Some(group)
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.group)])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.start_kill();
    }
}

/// Copies the directory tree `from` to `to` (created), files readable by everyone.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the directory to copy") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Renders the project's nginx templates for one gateway and starts nginx on `edge_port`.
pub async fn start_nginx(run_dir: &Path, edge_port: u16, gateway_port: u16) -> Nginx {
    let root = repo_root().join("nginx");
    let main = std::fs::read_to_string(root.join("nginx.conf.template")).expect("main template");
    let site = std::fs::read_to_string(root.join("templates/shopmesh.conf.template"))
        .expect("site template");
    let run = run_dir.display().to_string();
    let main = main.replace("${RUN_DIR}", &run);
    let site = site
        .replace("${EDGE_LISTEN}", &format!("127.0.0.1:{edge_port}"))
        .replace(
            "${GATEWAY_UPSTREAM_SERVERS}",
            &format!("server 127.0.0.1:{gateway_port} max_fails=3 fail_timeout=5s;"),
        )
        .replace("${NGINX_RATE}", "1000r/s")
        .replace("${NGINX_BURST}", "2000");
    std::fs::create_dir_all(run_dir.join("tmp")).expect("nginx tmp dir");
    // The storefront and console files, found at "ui" under nginx's prefix: copied, not
    // linked, since nginx's workers (nobody, when started by root) may not be allowed into the
    // checkout.
    copy_tree(&repo_root().join("ui"), &run_dir.join("ui"));
    std::fs::write(run_dir.join("nginx.conf"), main).expect("write nginx.conf");
    std::fs::write(run_dir.join("shopmesh.conf"), site).expect("write shopmesh.conf");
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(run_dir)
        .arg("-c")
        .arg(run_dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("nginx must be installed (scripts/test installs it)");
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .unwrap_or(-1);
    Nginx { child, group }
}

/// Polls `url` until it answers 200, for at most thirty seconds (a mesh of separate processes on
/// a busy machine takes a while).
pub async fn wait_ready(http: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if let Ok(resp) = http.get(url).send().await
            && resp.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not become ready");
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// The mesh of the binary, with the test's product tunables.
fn test_mesh(options: &Options) -> Mesh {
    let services = shopmesh::services()
        .into_iter()
        .map(|service| {
            if service.name() == "product" {
                std::sync::Arc::new(shopmesh_product::Product::with_config(
                    options.product_config.clone(),
                )) as std::sync::Arc<dyn shopmesh_platform::mesh::Service>
            } else {
                service
            }
        })
        .collect();
    Mesh::new(services)
}

/// Starts the mesh (all services, or `options.services`), the gateway and an nginx edge, all on
/// ephemeral ports, exactly as `shopmesh serve` wires them.
pub async fn spawn_app_with(options: Options) -> TestApp {
    let run_dir = TempDir::new("shopmesh-test");
    let (env, vars, database) = test_env(&options, &run_dir.0);
    let settings = Settings::from_env(&env).expect("test settings");
    let databases = [
        "product",
        "order",
        "payment",
        "delivery",
        "notification",
        "analytics",
    ]
    .map(|service| PgDatabase(database.replacen("test_", &format!("{service}_"), 1)))
    .into();
    let mesh = test_mesh(&options);
    let mut targets = vec![run::ALL];
    if let Some(services) = &options.services {
        targets = vec![shopmesh_platform::mesh::GATEWAY];
        targets.extend(services.iter().copied());
    }
    let running = run::start(&mesh, &env, &settings, &targets)
        .await
        .expect("the mesh starts");
    let url_of = |name: &str| {
        running
            .started
            .peers
            .url(name)
            .expect("every service has a URL")
            .to_owned()
    };
    let user_grpc = url_of("user");
    let product_grpc = url_of("product");
    let gateway_addr = running.gateway_addr.expect("gateway runs");
    let gateway_url = format!("http://{gateway_addr}");
    let keys = running.started.keys.clone();
    let grpc = running
        .started
        .peers
        .iter()
        .map(|(name, url)| (name.to_owned(), url.to_owned()))
        .collect();

    let nginx_dir = run_dir.0.join("nginx");
    let edge_port = free_port();
    let nginx = start_nginx(&nginx_dir, edge_port, gateway_addr.port()).await;
    let edge = format!("http://127.0.0.1:{edge_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    if options.services.is_none() {
        wait_ready(&http, &format!("{edge}/readyz")).await;
    } else {
        wait_ready(&http, &format!("{edge}/healthz")).await;
    }

    let mongo = mongodb::Client::with_uri_str(mongodb_url())
        .await
        .expect("mongo client")
        .database(&database);
    TestApp {
        edge,
        gateway: gateway_url,
        vars,
        user_grpc,
        product_grpc,
        env,
        settings,
        http,
        mongo,
        keys,
        nginx,
        grpc,
        _running: running,
        _run_dir: run_dir,
        _databases: databases,
        _mongo_database: MongoDatabase(database),
    }
}

/// A response reduced to what the tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            content_type,
            headers,
            body,
            text,
        }
    }

    /// Asserts an RFC 9457 problem with this status and returns its body.
    pub fn assert_problem(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status, body: {}",
            self.text
        );
        assert_eq!(
            self.content_type, "application/problem+json",
            "problem content type, body: {}",
            self.text
        );
        assert_eq!(self.body["status"], status, "problem status member");
        assert!(self.body["title"].is_string(), "problem title");
        assert!(self.body["detail"].is_string(), "problem detail");
        &self.body
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.edge)
    }

    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> Reply {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        Reply::from(req.send().await.expect("request")).await
    }

    pub async fn patch(&self, path: &str, body: Value, token: &str) -> Reply {
        let req = self
            .http
            .patch(self.url(path))
            .json(&body)
            .bearer_auth(token);
        Reply::from(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.http.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        Reply::from(req.send().await.expect("request")).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        let req = self.http.delete(self.url(path)).bearer_auth(token);
        Reply::from(req.send().await.expect("request")).await
    }

    pub async fn register(&self, email: &str, name: &str) -> Reply {
        self.post(
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD, "name": name}),
            None,
        )
        .await
    }

    /// Logs in and returns (access token, refresh token).
    pub async fn login(&self, email: &str) -> (String, String) {
        let reply = self
            .post(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD}),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "login: {}", reply.text);
        (
            reply.body["access_token"]
                .as_str()
                .expect("access")
                .to_owned(),
            reply.body["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        )
    }

    /// Registers a customer and logs in.
    pub async fn customer(&self, email: &str) -> String {
        let reply = self.register(email, "Test Customer").await;
        assert_eq!(reply.status, 201, "register: {}", reply.text);
        self.login(email).await.0
    }

    /// A request carrying the token of the named service, as that service would send it.
    pub fn as_service<T>(&self, service: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let token = self
            .keys
            .signer(service)
            .expect("service key")
            .header_value()
            .expect("service token");
        request.metadata_mut().insert(
            SERVICE_TOKEN,
            token.to_str().expect("ascii").parse().expect("metadata"),
        );
        request
    }

    /// The access-token signer of this installation (the generated dev key in the run dir).
    pub fn token_signer(&self) -> shopmesh_user::token::TokenSigner {
        let user = shopmesh_user::UserSettings::from_env(&self.env).expect("user settings");
        shopmesh_user::signer(&self.settings, &user).expect("signer")
    }

    /// Creates an admin the way `shopmesh admin create` does, and logs in.
    pub async fn admin(&self, email: &str) -> String {
        let user = shopmesh_user::UserSettings::from_env(&self.env).expect("user settings");
        let service = shopmesh_user::connect(&self.settings, &user)
            .await
            .expect("user service");
        service
            .ensure_admin(email, PASSWORD)
            .await
            .expect("admin created");
        self.login(email).await.0
    }

    /// Accounts stored in this test's database.
    pub async fn stored_users(&self) -> u64 {
        self.mongo
            .collection::<mongodb::bson::Document>("users")
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count users")
    }
}
