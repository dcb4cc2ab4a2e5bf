//! Fault injection for drills through `/api/admin/faults`: an admin makes one service method
//! fail or slow down for every caller, the edge answers what it would if the service really
//! failed, and clearing the rule restores it; off by default, refused to customers; and the same
//! across processes, with the service in a process of its own.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shopmesh_contracts::pb::shopmesh::platform::v1 as pb;
use shopmesh_contracts::pb::shopmesh::platform::v1::fault_injection_service_client::FaultInjectionServiceClient;
use shopmesh_platform::mesh::{addr_key, url_key};
use tonic::Code;

use crate::checkout::stock_product;
use crate::helpers::{
    Options, PASSWORD, PgDatabase, Reply, TempDir, free_port, mongodb_url, postgres_server,
    redis_url, spawn_app, spawn_app_with,
};
use crate::process::shopmesh;

const ENABLED: (&str, &str) = ("FAULT_INJECTION_ENABLED", "true");

async fn put(http: &reqwest::Client, base: &str, body: Value, token: Option<&str>) -> Reply {
    let mut req = http.put(format!("{base}/api/admin/faults")).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    Reply::from(req.send().await.unwrap()).await
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = Reply::from(
        http.request(method, url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (reply, started.elapsed())
}

/// Polls `url` with `token` until it answers `status` (a circuit breaker opened by the drill
/// may take a few seconds to let calls through again); returns the last answer and its time.
async fn until_status(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    status: u16,
) -> (Reply, Duration) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (reply, elapsed) = call(http, reqwest::Method::GET, url.to_owned(), token).await;
        if reply.status == status {
            return (reply, elapsed);
        }
        assert!(
            Instant::now() < until,
            "{url} never answered {status}: {} {}",
            reply.status,
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn an_injected_fault_fails_or_slows_one_method_for_every_caller_until_cleared() {
    let app = spawn_app_with(Options {
        env: vec![(ENABLED.0, ENABLED.1.to_owned())],
        ..Options::default()
    })
    .await;
    let admin = app.admin("drill@example.com").await;
    let customer = app.customer("shopper@example.com").await;
    let id = stock_product(&app, &admin, "DRILL-1", 1500, 5).await;
    // The shopper's reads carry a token: the edge's micro-cache never answers them.
    let product = app.url(&format!("/api/products/{id}"));
    let (before, _) = until_status(&app.http, &product, &customer, 200).await;
    assert_eq!(before.body["sku"], "DRILL-1");

    let listed = app.get("/api/admin/faults", Some(&admin)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body, json!({"enabled": true, "faults": []}));

    // Only admins.
    let rule =
        json!({"service": "product", "method": "GetProduct", "latency_ms": 0, "error_rate": 1.0});
    put(&app.http, &app.edge, rule.clone(), Some(&customer))
        .await
        .assert_problem(403);
    put(&app.http, &app.edge, rule.clone(), None)
        .await
        .assert_problem(401);
    app.get("/api/admin/faults", Some(&customer))
        .await
        .assert_problem(403);

    // Every rule that cannot be is 422, naming the field.
    for (body, field) in [
        (
            json!({"service": "warehouse", "method": "*", "error_rate": 0.5}),
            "service",
        ),
        (
            json!({"service": "product", "method": "NoSuchMethod", "error_rate": 0.5}),
            "method",
        ),
        (
            json!({"service": "product", "method": "*", "latency_ms": 30001}),
            "latency_ms",
        ),
        (
            json!({"service": "product", "method": "*", "error_rate": 1.5}),
            "error_rate",
        ),
        (
            json!({"service": "product", "method": "*", "latency_ms": 0, "error_rate": 0.0}),
            "latency_ms",
        ),
    ] {
        let reply = put(&app.http, &app.edge, body.clone(), Some(&admin)).await;
        let problem = reply.assert_problem(422);
        assert_eq!(
            problem["errors"][0]["field"], field,
            "{body}: {}",
            reply.text
        );
    }

    // Every GetProduct fails: the edge answers what a down product service gets, 503.
    let set = put(&app.http, &app.edge, rule.clone(), Some(&admin)).await;
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.body, rule);
    let (failed, _) = call(&app.http, reqwest::Method::GET, product.clone(), &customer).await;
    failed.assert_problem(503);
    // The other services are untouched.
    let me = app.get("/api/users/me", Some(&customer)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    let listed = app.get("/api/admin/faults", Some(&admin)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body, json!({"enabled": true, "faults": [rule]}));

    // The same method, slowed instead: the rule is replaced, and reads take 300 ms more.
    let slow =
        json!({"service": "product", "method": "GetProduct", "latency_ms": 300, "error_rate": 0.0});
    let set = put(&app.http, &app.edge, slow.clone(), Some(&admin)).await;
    assert_eq!(set.status, 200, "{}", set.text);
    let (ok, elapsed) = until_status(&app.http, &product, &customer, 200).await;
    assert_eq!(ok.body["sku"], "DRILL-1");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    let listed = app.get("/api/admin/faults", Some(&admin)).await;
    assert_eq!(listed.body["faults"], json!([slow]), "{}", listed.text);

    // The server counted what it injected.
    let metrics = app
        .http
        .get(format!("{}/metrics", app.gateway))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for kind in ["error", "latency"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("grpc_server_injected_faults_total")
                    && l.contains("method=\"GetProduct\"")
                    && l.contains(&format!("kind=\"{kind}\""))),
            "{metrics}"
        );
    }

    // Clearing the rule (an unknown one is no error) restores full speed.
    let (cleared, _) = call(
        &app.http,
        reqwest::Method::DELETE,
        app.url("/api/admin/faults?service=product&method=GetProduct"),
        &admin,
    )
    .await;
    assert_eq!(cleared.status, 204, "{}", cleared.text);
    let (again, _) = call(
        &app.http,
        reqwest::Method::DELETE,
        app.url("/api/admin/faults?service=product&method=GetProduct"),
        &admin,
    )
    .await;
    assert_eq!(again.status, 204, "{}", again.text);
    let (ok, elapsed) = until_status(&app.http, &product, &customer, 200).await;
    assert_eq!(ok.body["sku"], "DRILL-1");
    assert!(elapsed < Duration::from_millis(300), "{elapsed:?}");
    let listed = app.get("/api/admin/faults", Some(&admin)).await;
    assert_eq!(listed.body, json!({"enabled": true, "faults": []}));

    // A `*` rule covers every method of the service; clearing everything removes it.
    let all = json!({"service": "product", "method": "*", "latency_ms": 0, "error_rate": 1.0});
    let set = put(&app.http, &app.edge, all, Some(&admin)).await;
    assert_eq!(set.status, 200, "{}", set.text);
    let (failed, _) = call(
        &app.http,
        reqwest::Method::GET,
        app.url("/api/products?q=drill"),
        &customer,
    )
    .await;
    failed.assert_problem(503);
    let (method_only, _) = call(
        &app.http,
        reqwest::Method::DELETE,
        app.url("/api/admin/faults?method=GetProduct"),
        &admin,
    )
    .await;
    method_only.assert_problem(422);
    let (cleared, _) = call(
        &app.http,
        reqwest::Method::DELETE,
        app.url("/api/admin/faults"),
        &admin,
    )
    .await;
    assert_eq!(cleared.status, 204, "{}", cleared.text);
    until_status(&app.http, &app.url("/api/products?q=drill"), &customer, 200).await;
}

#[tokio::test]
async fn fault_injection_is_off_unless_enabled_and_only_the_gateway_may_call_it() {
    let app = spawn_app().await;
    let admin = app.admin("drill-off@example.com").await;
    let listed = app.get("/api/admin/faults", Some(&admin)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body, json!({"enabled": false, "faults": []}));
    let rule = json!({"service": "product", "method": "*", "latency_ms": 0, "error_rate": 1.0});
    let refused = put(&app.http, &app.edge, rule, Some(&admin)).await;
    let problem = refused.assert_problem(409);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("FAULT_INJECTION_ENABLED=true"),
        "{}",
        refused.text
    );
    let (cleared, _) = call(
        &app.http,
        reqwest::Method::DELETE,
        app.url("/api/admin/faults"),
        &admin,
    )
    .await;
    cleared.assert_problem(409);
    // Nothing changed: the catalog answers.
    let search = app.get("/api/products?q=anything", Some(&admin)).await;
    assert_eq!(search.status, 200, "{}", search.text);

    // On the gRPC side the service is open to the gateway's identity only.
    let channel = tonic::transport::Channel::from_shared(app.product_grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FaultInjectionServiceClient::new(channel);
    let listed = client
        .list_faults(app.as_service("gateway", pb::ListFaultsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!listed.enabled);
    assert!(!listed.instance_id.is_empty());
    let status = client
        .list_faults(app.as_service("order", pb::ListFaultsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client
        .list_faults(pb::ListFaultsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client
        .set_fault(app.as_service(
            "gateway",
            pb::SetFaultRequest {
                fault: Some(pb::Fault {
                    target: "product".into(),
                    method: "*".into(),
                    latency_ms: 10,
                    error_rate: 0.0,
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

/// The gateway, user and product services as three processes, as in microservices mode.
#[tokio::test]
async fn a_fault_set_at_the_gateway_takes_effect_in_the_service_process() {
    let dir = TempDir::new("shopmesh-faults");
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let mut env: HashMap<String, String> = [
        ("SHOPMESH_PROFILE", "dev".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("MONGODB_URL", mongodb_url()),
        ("MONGODB_DATABASE", format!("test_{unique}")),
        ("REDIS_URL", redis_url()),
        ("REDIS_KEY_PREFIX", format!("test:{unique}:")),
        ("EVENTS_EXCHANGE", format!("test.{unique}.events")),
        ("EVENTS_QUEUE_PREFIX", format!("test.{unique}.")),
        ("EVENTS_QUEUE_EXPIRES_MS", "600000".to_owned()),
        (
            "PRODUCT_DATABASE_URL",
            format!("{}/product_{unique}", postgres_server()),
        ),
        (ENABLED.0, ENABLED.1.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let _database = PgDatabase(format!("product_{unique}"));
    // Every service gets an address; only user and product run.
    for service in shopmesh::services() {
        let port = free_port();
        env.insert(addr_key(service.name()), format!("127.0.0.1:{port}"));
        env.insert(url_key(service.name()), format!("http://127.0.0.1:{port}"));
    }
    let gateway_port = free_port();
    env.insert("GATEWAY_ADDR".into(), format!("127.0.0.1:{gateway_port}"));
    let spawn = |target: &str| {
        let mut env = env.clone();
        env.insert("METRICS_ADDR".into(), format!("127.0.0.1:{}", free_port()));
        shopmesh(&env, &dir)
            .args(["serve", "--target", target])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let _gateway = spawn("gateway");
    let _user = spawn("user");
    let _product = spawn("product");
    let edge = format!("http://127.0.0.1:{gateway_port}");
    crate::helpers::wait_ready(&reqwest::Client::new(), &format!("{edge}/healthz")).await;
    let created = shopmesh(&env, &dir)
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
    assert!(created.status.success(), "{created:?}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // The user process may still be starting.
    let token = {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let login = http
                .post(format!("{edge}/api/auth/login"))
                .json(&json!({"email": "ops@example.com", "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            if login.status() == 200 {
                let body: Value = login.json().await.unwrap();
                break body["access_token"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < until, "login: {}", login.status());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let product = {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let created = Reply::from(
                http.post(format!("{edge}/api/admin/products"))
                    .bearer_auth(&token)
                    .json(&json!({
                        "sku": "SPLIT-DRILL", "name": "Split drill",
                        "price": {"amount": 100, "currency": "USD"}
                    }))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            if created.status == 201 {
                break format!(
                    "{edge}/api/products/{}",
                    created.body["id"].as_str().unwrap()
                );
            }
            assert!(Instant::now() < until, "create: {}", created.text);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    until_status(&http, &product, &token, 200).await;

    let rule =
        json!({"service": "product", "method": "GetProduct", "latency_ms": 0, "error_rate": 1.0});
    let set = put(&http, &edge, rule.clone(), Some(&token)).await;
    assert_eq!(set.status, 200, "{}", set.text);
    let (failed, _) = call(&http, reqwest::Method::GET, product.clone(), &token).await;
    failed.assert_problem(503);
    // The services that do not run are left out of the listing; the product process has it.
    let (listed, _) = call(
        &http,
        reqwest::Method::GET,
        format!("{edge}/api/admin/faults"),
        &token,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body, json!({"enabled": true, "faults": [rule]}));
    let (cleared, _) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{edge}/api/admin/faults?service=product"),
        &token,
    )
    .await;
    assert_eq!(cleared.status, 204, "{}", cleared.text);
    until_status(&http, &product, &token, 200).await;
}

/// Two product instances behind one balanced upstream: a drill reaches both, whichever one a
/// shopper's read lands on, and the listing counts the rule once.
#[tokio::test]
async fn a_fault_reaches_every_instance_of_a_balanced_service() {
    let dir = TempDir::new("shopmesh-faults-lb");
    let (mut env, _, _db) = crate::process::base_env();
    env.insert(ENABLED.0.to_owned(), ENABLED.1.to_owned());
    let (port_a, port_b) = (free_port(), free_port());
    let gateway_port = free_port();
    env.insert(
        "PRODUCT_GRPC_URL".to_owned(),
        format!("http://127.0.0.1:{port_a},http://127.0.0.1:{port_b}"),
    );
    env.insert(
        "GATEWAY_ADDR".to_owned(),
        format!("127.0.0.1:{gateway_port}"),
    );
    let product = |port: u16| {
        let mut env = env.clone();
        env.insert("PRODUCT_GRPC_ADDR".to_owned(), format!("127.0.0.1:{port}"));
        env.insert(
            "METRICS_ADDR".to_owned(),
            format!("127.0.0.1:{}", free_port()),
        );
        shopmesh(&env, &dir)
            .args(["serve", "--target", "product"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let _a = product(port_a);
    let _b = product(port_b);
    let mut rest_env = env.clone();
    rest_env.insert(
        "METRICS_ADDR".to_owned(),
        format!("127.0.0.1:{}", free_port()),
    );
    let _rest = shopmesh(&rest_env, &dir)
        .args([
            "serve",
            "--target",
            "gateway,user,cart,order,payment,delivery,notification,analytics",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let edge = format!("http://127.0.0.1:{gateway_port}");
    let http = reqwest::Client::new();
    crate::helpers::wait_ready(&http, &format!("{edge}/readyz")).await;
    let token = crate::process::admin_token(&env, &dir, &edge, "lb-drill@example.com").await;
    let created = Reply::from(
        http.post(format!("{edge}/api/admin/products"))
            .bearer_auth(&token)
            .json(&json!({"sku": "LB-DRILL", "name": "Balanced drill", "price": {"amount": 100, "currency": "USD"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let page = format!(
        "{edge}/api/products/{}",
        created.body["id"].as_str().unwrap()
    );
    let slow =
        json!({"service": "product", "method": "GetProduct", "latency_ms": 200, "error_rate": 0.0});
    let set = put(&http, &edge, slow.clone(), Some(&token)).await;
    assert_eq!(set.status, 200, "{}", set.text);
    // Reads take turns over the instances: every one of them is slow.
    for _ in 0..6 {
        let (reply, elapsed) = call(&http, reqwest::Method::GET, page.clone(), &token).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    }
    let (listed, _) = call(
        &http,
        reqwest::Method::GET,
        format!("{edge}/api/admin/faults"),
        &token,
    )
    .await;
    assert_eq!(
        listed.body,
        json!({"enabled": true, "faults": [slow]}),
        "{}",
        listed.text
    );
    let (cleared, _) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{edge}/api/admin/faults"),
        &token,
    )
    .await;
    assert_eq!(cleared.status, 204, "{}", cleared.text);
    for _ in 0..6 {
        let (reply, elapsed) = call(&http, reqwest::Method::GET, page.clone(), &token).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(elapsed < Duration::from_millis(200), "{elapsed:?}");
    }
}
