//! The whole mesh as one `shopmesh serve --target all` process with JSON logs at debug level,
//! behind nginx: a shopper's whole life and an admin's login leave structured, correlated log
//! lines, and none of them carries a password, a token, a card number or private key material.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use shopmesh_platform::mesh::{addr_key, url_key};

use crate::checkout::{VISA_DECLINED, VISA_OK, address, card};
use crate::helpers::{
    MongoDatabase, Options, PASSWORD, PgDatabase, TempDir, free_port, start_nginx, test_env,
    wait_ready,
};

/// The shopper's passwords: before and after anything that could change it.
const SHOPPER_PASSWORD: &str = "Difference-Engine-1822-secret";

/// The most verbose level the code logs at, libraries included: a whole run is a couple of
/// thousand lines (mostly sqlx and h2), which does not drown the test, so nothing is filtered
/// out (had it been too noisy: `debug,h2=info,hyper=info,tower=info,sqlx=info`).
const RUST_LOG: &str = "debug";

/// The first log line containing `needle`, for the failure message.
fn leaking<'a>(lines: &[&'a str], needle: &str) -> Option<&'a str> {
    lines.iter().copied().find(|line| line.contains(needle))
}

struct Edge {
    http: reqwest::Client,
    base: String,
}

struct Sent {
    status: u16,
    request_id: Option<String>,
    body: Value,
    text: String,
}

impl Edge {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Sent {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if path == "/api/cart/checkout" {
            req = req.header("idempotency-key", uuid::Uuid::new_v4().to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Sent {
            status,
            request_id,
            body,
            text,
        }
    }
}

/// The base64 body lines of every private key PEM in `dir` with the given extension.
fn private_key_lines(dir: &Path, extension: &str) -> Vec<(PathBuf, String)> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some(extension) {
            continue;
        }
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(
            pem.contains("PRIVATE KEY"),
            "{} is a private key",
            path.display()
        );
        for line in pem.lines() {
            let line = line.trim();
            // Short tails ("==") could match anything.
            if !line.starts_with("-----") && line.len() >= 16 {
                lines.push((path.clone(), line.to_owned()));
            }
        }
    }
    lines
}

#[tokio::test]
async fn json_logs_are_correlated_and_carry_no_secrets() {
    let run_dir = TempDir::new("shopmesh-logs");
    let (_, mut vars, database) = test_env(&Options::default(), &run_dir.0);
    let _databases: Vec<PgDatabase> = [
        "product",
        "order",
        "payment",
        "delivery",
        "notification",
        "analytics",
    ]
    .map(|service| PgDatabase(database.replacen("test_", &format!("{service}_"), 1)))
    .into();
    let _mongo = MongoDatabase(database);
    vars.insert("LOG_FORMAT".into(), "json".into());
    vars.insert("RUST_LOG".into(), RUST_LOG.into());
    let gateway_port = free_port();
    vars.insert("GATEWAY_ADDR".into(), format!("127.0.0.1:{gateway_port}"));
    for service in shopmesh::services() {
        let port = free_port();
        vars.insert(addr_key(service.name()), format!("127.0.0.1:{port}"));
        vars.insert(url_key(service.name()), format!("http://127.0.0.1:{port}"));
    }
    let vars: HashMap<String, String> = vars;

    let stdout_path = run_dir.0.join("stdout.log");
    let stderr_path = run_dir.0.join("stderr.log");
    let mut child = crate::process::shopmesh(&vars, &run_dir)
        .args(["serve", "--target", "all"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let edge_port = free_port();
    let _nginx = start_nginx(&run_dir.0.join("nginx"), edge_port, gateway_port).await;
    let edge = Edge {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base: format!("http://127.0.0.1:{edge_port}"),
    };
    wait_ready(&edge.http, &format!("{}/readyz", edge.base)).await;

    // The admin, made by the CLI (a process of its own, whose output is not the server's log).
    let made = crate::process::shopmesh(&vars, &run_dir)
        .args([
            "admin",
            "create",
            "--email",
            "ops@example.com",
            "--password",
            PASSWORD,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut tokens = Vec::new();
    let admin = edge
        .send(
            "POST",
            "/api/auth/login",
            Some(json!({"email": "ops@example.com", "password": PASSWORD})),
            None,
        )
        .await;
    assert_eq!(admin.status, 200, "{}", admin.text);
    let admin_token = admin.body["access_token"].as_str().unwrap().to_owned();
    tokens.push(admin_token.clone());
    tokens.push(admin.body["refresh_token"].as_str().unwrap().to_owned());
    let product = edge
        .send(
            "POST",
            "/api/admin/products",
            Some(json!({
                "sku": "LOG-1", "name": "Log book",
                "price": {"amount": 1500, "currency": "USD"}, "initial_stock": 10
            })),
            Some(&admin_token),
        )
        .await;
    assert_eq!(product.status, 201, "{}", product.text);

    // The shopper's life: register, log in, refresh, profile, cart, two checkouts.
    let registered = edge
        .send(
            "POST",
            "/api/auth/register",
            Some(json!({
                "email": "grace@example.com", "password": SHOPPER_PASSWORD, "name": "Grace Hopper"
            })),
            None,
        )
        .await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    let login = edge
        .send(
            "POST",
            "/api/auth/login",
            Some(json!({"email": "grace@example.com", "password": SHOPPER_PASSWORD})),
            None,
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    tokens.push(login.body["access_token"].as_str().unwrap().to_owned());
    let first_refresh = login.body["refresh_token"].as_str().unwrap().to_owned();
    tokens.push(first_refresh.clone());
    let refreshed = edge
        .send(
            "POST",
            "/api/auth/refresh",
            Some(json!({"refresh_token": first_refresh})),
            None,
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    tokens.push(refreshed.body["access_token"].as_str().unwrap().to_owned());
    tokens.push(refreshed.body["refresh_token"].as_str().unwrap().to_owned());
    // A spent refresh token is refused, and ends the session.
    let reused = edge
        .send(
            "POST",
            "/api/auth/refresh",
            Some(json!({"refresh_token": first_refresh})),
            None,
        )
        .await;
    assert_eq!(reused.status, 401, "{}", reused.text);
    // A wrong password is logged as a failed login, never with the password tried.
    let wrong = edge
        .send(
            "POST",
            "/api/auth/login",
            Some(json!({"email": "grace@example.com", "password": "Wrong-Password-Tried-77"})),
            None,
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    // There is no REST endpoint to change a password; PATCH /api/users/me takes name and phone.

    // The reuse ended the session: log in again.
    let again = edge
        .send(
            "POST",
            "/api/auth/login",
            Some(json!({"email": "grace@example.com", "password": SHOPPER_PASSWORD})),
            None,
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    let access = again.body["access_token"].as_str().unwrap().to_owned();
    tokens.push(access.clone());
    tokens.push(again.body["refresh_token"].as_str().unwrap().to_owned());

    let me = edge.send("GET", "/api/users/me", None, Some(&access)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    let request_id = me.request_id.clone().expect("responses carry x-request-id");

    let added = edge
        .send(
            "POST",
            "/api/cart/items",
            Some(json!({"sku": "LOG-1", "quantity": 2})),
            Some(&access),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let declined = edge
        .send(
            "POST",
            "/api/cart/checkout",
            Some(json!({"shipping_address": address(), "payment": card(VISA_DECLINED)})),
            Some(&access),
        )
        .await;
    assert_eq!(declined.status, 201, "{}", declined.text);
    assert_eq!(declined.body["status"], "CANCELLED", "{}", declined.text);
    let paid = edge
        .send(
            "POST",
            "/api/cart/checkout",
            Some(json!({"shipping_address": address(), "payment": card(VISA_OK)})),
            Some(&access),
        )
        .await;
    assert_eq!(paid.status, 201, "{}", paid.text);
    assert_eq!(paid.body["status"], "PAID", "{}", paid.text);
    let order_id = paid.body["id"].as_str().unwrap().to_owned();

    // Let the events of the checkout (delivery, notifications, analytics) be handled and logged,
    // then stop the process so everything it wrote is on disk.
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.start_kill().unwrap();
    let _ = child.wait().await;

    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let logs = format!("{stdout}{stderr}");
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();

    // Not vacuous: JSON lines, correlated, useful.
    assert!(lines.len() > 10, "the mesh logged at debug level: {logs}");
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()),
            "a log line is not a JSON object: {line}"
        );
    }
    assert!(
        logs.contains(&request_id),
        "the logs carry the request id {request_id} of GET /api/users/me"
    );
    assert!(
        logs.contains(&order_id),
        "the logs carry the order id {order_id} of the checkout"
    );

    // No secrets.
    for password in [SHOPPER_PASSWORD, PASSWORD, "Wrong-Password-Tried-77"] {
        let line = leaking(&lines, password);
        assert!(line.is_none(), "a password is in the logs: {line:?}");
    }
    for token in &tokens {
        assert!(token.len() >= 16, "a token: {token}");
        let line = leaking(&lines, token);
        assert!(line.is_none(), "a token is in the logs: {line:?}");
        if let Some((_, signature)) = token.rsplit_once('.')
            && signature.len() >= 16
        {
            let line = leaking(&lines, signature);
            assert!(
                line.is_none(),
                "a token's signature is in the logs: {line:?}"
            );
        }
    }
    for number in [VISA_OK, VISA_DECLINED] {
        let line = leaking(&lines, number);
        assert!(line.is_none(), "a card number is in the logs: {line:?}");
        // Nor written in groups, the last four after the rest of the number.
        let groups: Vec<&str> = (0..4).map(|i| &number[i * 4..i * 4 + 4]).collect();
        for separator in [" ", "-"] {
            let line = leaking(&lines, &groups.join(separator));
            assert!(
                line.is_none(),
                "a grouped card number is in the logs: {line:?}"
            );
        }
    }
    let signing_key = private_key_lines(&run_dir.0.join("keys"), "pem");
    assert!(
        !signing_key.is_empty(),
        "the dev profile generated the signing key"
    );
    let mesh_dir = vars
        .get("MESH_KEYS_DIR")
        .map_or_else(|| run_dir.0.join("mesh"), PathBuf::from);
    let mesh_keys = private_key_lines(&mesh_dir, "key");
    assert!(
        !mesh_keys.is_empty(),
        "the dev profile generated the mesh keys"
    );
    for (path, line) in signing_key.iter().chain(&mesh_keys) {
        let leaked = leaking(&lines, line);
        assert!(
            leaked.is_none(),
            "private key material of {} is in the logs: {leaked:?}",
            path.display()
        );
    }
}
