//! Test harness: each test gets its own MongoDB database, its own Redis key prefix, a user
//! service and a gateway on free ports, and its own nginx edge in front of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;

use serde_json::{Value, json};
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::Settings;
use shopmesh_platform::auth::TokenVerifier;
use shopmesh_platform::grpc::channel;
use shopmesh_platform::jwks::JwksCache;
use shopmesh_platform::shutdown::{self, ShutdownTrigger};
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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ip_per_second: 10_000,
            ip_burst: 10_000,
            user_per_second: 10_000,
            user_burst: 10_000,
            access_ttl_secs: 900,
            product_config: ProductConfig::default(),
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
    pub settings: Settings,
    pub http: reqwest::Client,
    pub mongo: mongodb::Database,
    _nginx: Child,
    _run_dir: TempDir,
    _trigger: ShutdownTrigger,
    _database: PgDatabase,
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

/// Settings for one test: unique database and key prefix, ephemeral ports.
pub fn test_settings(options: &Options) -> (Settings, String) {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("test_{unique}");
    let env: HashMap<String, String> = [
        ("SHOPMESH_PROFILE", "dev".to_owned()),
        ("LOG_FORMAT", "pretty".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("USER_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("PRODUCT_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        (
            "PRODUCT_DATABASE_URL",
            format!("{}/product_{unique}", postgres_server()),
        ),
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
    (Settings::from_map(&env).expect("test settings"), database)
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

/// Renders the project's nginx templates for one gateway and starts nginx on `edge_port`.
pub async fn start_nginx(run_dir: &Path, edge_port: u16, gateway_port: u16) -> Child {
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
    std::fs::write(run_dir.join("nginx.conf"), main).expect("write nginx.conf");
    std::fs::write(run_dir.join("shopmesh.conf"), site).expect("write shopmesh.conf");
    Command::new(nginx_binary())
        .arg("-p")
        .arg(run_dir)
        .arg("-c")
        .arg(run_dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx must be installed (scripts/test installs it)")
}

/// Polls `url` until it answers 200, for at most ten seconds.
pub async fn wait_ready(http: &reqwest::Client, url: &str) {
    for _ in 0..200 {
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

pub async fn spawn_app_with(options: Options) -> TestApp {
    let (trigger, stop) = shutdown::channel();
    let (settings, database) = test_settings(&options);
    let product_database = database.replacen("test_", "product_", 1);
    let user = shopmesh_user::Application::build(&settings)
        .await
        .expect("user service starts");
    let user_grpc = format!("http://127.0.0.1:{}", user.port());
    tokio::spawn(user.run_until_stopped(stop.clone(), Duration::from_secs(5)));

    let mut settings = settings;
    settings.user_grpc_url = user_grpc.clone();

    // The product service verifies tokens with the user service's JWKS, as in `serve`.
    let jwks = Arc::new(JwksCache::new(TokenVerifier::new(
        &settings.jwt.issuer,
        &settings.jwt.audience,
    )));
    let user_client =
        UserServiceClient::new(channel(&user_grpc, &settings.grpc_client).expect("user channel"));
    tokio::spawn(jwks.clone().run(user_client, stop.clone()));
    let product = shopmesh_product::Application::build_with_verifier(
        &settings,
        options.product_config.clone(),
        jwks.verifier().clone(),
    )
    .await
    .expect("product service starts");
    let product_grpc = format!("http://127.0.0.1:{}", product.port());
    settings.product_grpc_url = product_grpc.clone();
    tokio::spawn(product.run_until_stopped(stop.clone(), Duration::from_secs(5)));
    let gateway = shopmesh_gateway::Application::build(&settings)
        .await
        .expect("gateway starts");
    let gateway_url = format!("http://127.0.0.1:{}", gateway.port());
    let gateway_port = gateway.port();
    tokio::spawn(gateway.run_until_stopped(stop.clone()));

    let run_dir = TempDir::new("shopmesh-nginx");
    let edge_port = free_port();
    let nginx = start_nginx(&run_dir.0, edge_port, gateway_port).await;
    let edge = format!("http://127.0.0.1:{edge_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    wait_ready(&http, &format!("{edge}/readyz")).await;

    let mongo = mongodb::Client::with_uri_str(mongodb_url())
        .await
        .expect("mongo client")
        .database(&database);
    TestApp {
        edge,
        gateway: gateway_url,
        user_grpc,
        product_grpc,
        settings,
        http,
        mongo,
        _nginx: nginx,
        _run_dir: run_dir,
        _database: PgDatabase(product_database),
        _trigger: trigger,
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

    /// Creates an admin the way `shopmesh admin create` does, and logs in.
    pub async fn admin(&self, email: &str) -> String {
        let service = shopmesh_user::connect(&self.settings)
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
