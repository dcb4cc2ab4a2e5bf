//! The mesh platform over real gRPC and through the edge: service identity on internal RPCs,
//! and what a client sees when an upstream is down, slow, or comes back.

use std::time::{Duration, Instant};

use futures::StreamExt;

use serde_json::json;
use shopmesh_contracts::pb::shopmesh::product::v1 as pb;
use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_client::InventoryServiceClient;
use shopmesh_platform::identity::{SERVICE_TOKEN, ServiceSigner};
use tonic::Code;

use crate::helpers::{Nginx, Options, TestApp, spawn_app, spawn_app_with};

async fn inventory(app: &TestApp) -> InventoryServiceClient<tonic::transport::Channel> {
    InventoryServiceClient::connect(app.product_grpc.clone())
        .await
        .expect("product gRPC")
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    request
}

fn with_service_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(SERVICE_TOKEN, token.parse().expect("metadata"));
    request
}

/// An admin creates a one-unit product with this SKU; returns its id.
async fn one_product(app: &TestApp, admin: &str, sku: &str) -> String {
    let created = app
        .post(
            "/api/admin/products",
            json!({"sku": sku, "name": "Lamp", "description": "A lamp",
                   "price": {"amount": 5000, "currency": "USD"}, "initial_stock": 1}),
            Some(admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    created.body["id"].as_str().unwrap().to_owned()
}

/// Holds a lock every read of the product table waits for, as a stuck migration would, until
/// `rollback` is run on the returned connection.
async fn lock_products(app: &TestApp) -> sqlx::PgConnection {
    use sqlx::Connection;
    let url = app.env.raw("PRODUCT_DATABASE_URL").unwrap();
    let mut lock = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("begin").execute(&mut lock).await.unwrap();
    sqlx::query("lock table products in access exclusive mode")
        .execute(&mut lock)
        .await
        .unwrap();
    lock
}

fn reserve(order_id: &str) -> pb::ReserveRequest {
    pb::ReserveRequest {
        order_id: order_id.to_owned(),
        lines: vec![pb::ReservationLine {
            sku: "MESH-SKU-1".into(),
            quantity: 2,
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn internal_inventory_rpcs_admit_only_the_order_service() {
    let app = spawn_app().await;
    let admin = app.admin("mesh-admin@example.com").await;
    let customer = app.customer("mesh-customer@example.com").await;
    let created = app
        .post(
            "/api/admin/products",
            json!({"sku": "MESH-SKU-1", "name": "Mesh mug", "description": "A mug",
                   "price": {"amount": 1200, "currency": "USD"}, "initial_stock": 5}),
            Some(&admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let mut client = inventory(&app).await;
    let order_id = uuid::Uuid::now_v7().to_string();

    // Users, even admins, may not reserve, commit or release: PERMISSION_DENIED.
    for token in [&customer, &admin] {
        let status = client
            .reserve(bearer(reserve(&order_id), token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let status = client
            .commit(bearer(
                pb::CommitRequest {
                    order_id: order_id.clone(),
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = client
            .release(bearer(
                pb::ReleaseRequest {
                    order_id: order_id.clone(),
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    // No credential at all: UNAUTHENTICATED.
    let status = client.reserve(reserve(&order_id)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Another service's identity (the gateway's) is not the order service's.
    let status = client
        .reserve(app.as_service("gateway", reserve(&order_id)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A key outside this installation's trust bundle that claims to be the order service.
    let forged = ServiceSigner::new(
        "order",
        &ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
    )
    .unwrap()
    .token_issued_at(shopmesh_platform::auth::now_secs())
    .unwrap();
    let status = client
        .reserve(with_service_token(reserve(&order_id), &forged))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // The real order key, but expired.
    let expired = app
        .keys
        .signer("order")
        .unwrap()
        .token_issued_at(shopmesh_platform::auth::now_secs() - 600)
        .unwrap();
    let status = client
        .reserve(with_service_token(reserve(&order_id), &expired))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Nothing was held by any of that.
    let stock = app
        .get("/api/admin/inventory/MESH-SKU-1", Some(&admin))
        .await;
    assert_eq!(stock.status, 200, "{}", stock.text);
    assert_eq!(stock.body["stock"]["reserved"], 0, "{}", stock.text);

    // The order service's identity is admitted, and the hold shows.
    let reservation = client
        .reserve(app.as_service("order", reserve(&order_id)))
        .await
        .expect("the order service reserves")
        .into_inner()
        .reservation
        .expect("reservation");
    assert_eq!(reservation.order_id, order_id);
    let stock = app
        .get("/api/admin/inventory/MESH-SKU-1", Some(&admin))
        .await;
    assert_eq!(stock.body["stock"]["reserved"], 2, "{}", stock.text);
    client
        .release(app.as_service(
            "order",
            pb::ReleaseRequest {
                order_id: order_id.clone(),
            },
        ))
        .await
        .expect("the order service releases");
    let stock = app
        .get("/api/admin/inventory/MESH-SKU-1", Some(&admin))
        .await;
    assert_eq!(stock.body["stock"]["reserved"], 0, "{}", stock.text);
}

#[tokio::test]
async fn a_stopped_upstream_is_a_clean_503_with_retry_after_and_opens_the_breaker() {
    let app = spawn_app_with(Options {
        services: Some(vec!["user"]),
        env: vec![
            ("GRPC_BREAKER_FAILURES", "3".to_owned()),
            ("GRPC_BREAKER_OPEN_MS", "60000".to_owned()),
            ("REQUEST_TIMEOUT_MS", "5000".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    for attempt in 0..5 {
        let started = Instant::now();
        let reply = app.get("/api/products?q=shoes", None).await;
        reply.assert_problem(503);
        assert!(
            reply.headers.get("retry-after").is_some(),
            "attempt {attempt}: Retry-After"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered within the deadline"
        );
        assert!(!reply.text.contains("tcp"), "no internals: {}", reply.text);
    }
    // After three failures the circuit to the product service is open (state 1), and an open
    // circuit answers with its remaining open time.
    let metrics = app
        .http
        .get(format!("{}/metrics", app.gateway))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("grpc_client_circuit_state{upstream=\"product\"} 1")),
        "{metrics}"
    );
    let reply = app.get("/api/products?q=shoes", None).await;
    reply.assert_problem(503);
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 1 && retry_after <= 60, "{retry_after}");
    // The readiness of the edge says which dependency is missing.
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["checks"]["user"], "serving");
    assert_eq!(ready.body["checks"]["product"], "unreachable");
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_at_the_edge() {
    let app = spawn_app_with(Options {
        env: vec![("REQUEST_TIMEOUT_MS", "1500".to_owned())],
        ..Options::default()
    })
    .await;
    let admin = app.admin("slow-admin@example.com").await;
    let id = one_product(&app, &admin, "SLOW-1").await;
    let mut lock = lock_products(&app).await;
    let started = Instant::now();
    let reply = app.get(&format!("/api/products/{id}"), None).await;
    let elapsed = started.elapsed();
    sqlx::query("rollback").execute(&mut lock).await.unwrap();
    reply.assert_problem(504);
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    // Once the lock is gone the same read answers.
    let reply = app.get(&format!("/api/products/{id}"), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn every_grpc_server_refuses_internal_rpcs_to_anonymous_and_user_callers() {
    let app = spawn_app().await;
    let customer = app.customer("deny@example.com").await;
    let mut client = inventory(&app).await;
    // Adjust admits admins and the order service only.
    let adjust = || pb::AdjustRequest {
        sku: "NOPE".into(),
        delta: 1,
        ..Default::default()
    };
    let status = client
        .adjust(bearer(adjust(), &customer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client.adjust(adjust()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Public reads need nothing.
    let status = client
        .get_stock(pb::GetStockRequest { sku: "NOPE".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn nginx_workers_do_not_outlive_the_test() {
    let app = spawn_app().await;
    let group = app.nginx.group;
    let before = Nginx::processes(group);
    assert!(
        before.len() >= 2,
        "an nginx master and its workers: {before:?}"
    );
    drop(app);
    for _ in 0..100 {
        if Nginx::processes(group).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "nginx processes survived the test: {:?}",
        Nginx::processes(group)
    );
}

/// A CSV upload that arrives slowly: a header, then `batches` batches of 200 rows, one every
/// `pace`.
fn slow_csv(batches: usize, pace: Duration, prefix: &'static str) -> reqwest::Body {
    let chunks = futures::stream::iter(0..=batches).then(move |batch| async move {
        if batch == 0 {
            return Ok::<_, std::io::Error>(bytes::Bytes::from_static(
                b"sku,name,description,price_amount,currency,initial_stock\n",
            ));
        }
        tokio::time::sleep(pace).await;
        let mut rows = String::new();
        for i in 0..200 {
            let n = (batch - 1) * 200 + i;
            rows.push_str(&format!(
                "{prefix}-{n:04},Item {n},A thing,{},USD,1\n",
                100 + n
            ));
        }
        Ok(bytes::Bytes::from(rows))
    });
    reqwest::Body::wrap_stream(chunks)
}

#[tokio::test]
async fn a_streamed_import_runs_under_its_own_budget_not_the_unary_one() {
    // Unary calls get 400 ms everywhere; the import takes about two seconds of upload.
    let app = spawn_app_with(Options {
        env: vec![
            ("REQUEST_TIMEOUT_MS", "400".to_owned()),
            ("GRPC_REQUEST_TIMEOUT_MS", "400".to_owned()),
            ("GRPC_SERVER_TIMEOUT_MS", "400".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let admin = app.admin("import-admin@example.com").await;
    let started = Instant::now();
    // Straight to the gateway: nginx would buffer the whole upload before passing it on.
    let reply = crate::helpers::Reply::from(
        app.http
            .post(format!("{}/api/admin/products/import", app.gateway))
            .bearer_auth(&admin)
            .header("content-type", "text/csv")
            .body(slow_csv(4, Duration::from_millis(500), "BUDGET"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(started.elapsed() > Duration::from_millis(1500));
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["batches_committed"], 4, "{}", reply.text);
    assert_eq!(reply.body["products_created"], 800);
    assert_eq!(reply.body["incomplete"], false);
    let last = app.get("/api/products/sku/BUDGET-0799", None).await;
    assert_eq!(last.status, 200, "{}", last.text);
}

#[tokio::test]
async fn an_import_that_outlasts_its_budget_says_exactly_what_was_committed() {
    let app = spawn_app_with(Options {
        env: vec![("IMPORT_TIMEOUT_MS", "3500".to_owned())],
        ..Options::default()
    })
    .await;
    let admin = app.admin("import-admin@example.com").await;
    let reply = crate::helpers::Reply::from(
        app.http
            .post(format!("{}/api/admin/products/import", app.gateway))
            .bearer_auth(&admin)
            .header("content-type", "text/csv")
            .body(slow_csv(6, Duration::from_millis(700), "CUT"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["incomplete"], true, "{}", reply.text);
    assert!(reply.body["stopped_reason"].is_string(), "{}", reply.text);
    let committed = reply.body["batches_committed"].as_u64().unwrap();
    assert!((1..6).contains(&committed), "{}", reply.text);
    assert_eq!(reply.body["products_created"], committed * 200);
    // Exactly the committed batches are in the catalog: the last row of the last committed
    // batch exists, the first row after it does not.
    let last = format!("/api/products/sku/CUT-{:04}", committed * 200 - 1);
    assert_eq!(app.get(&last, None).await.status, 200);
    let next = format!("/api/products/sku/CUT-{:04}", committed * 200);
    app.get(&next, None).await.assert_problem(404);
}

#[tokio::test]
async fn the_gateway_closes_connections_that_never_finish_their_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(Options {
        env: vec![("HEADER_READ_TIMEOUT_MS", "500".to_owned())],
        ..Options::default()
    })
    .await;
    let addr = app.gateway.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: shopmesh\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    // The gateway gives up on the headers and closes the connection.
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("the connection is closed within the header timeout")
        .ok();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A client that sends its headers in time is served as usual.
    let mut prompt = tokio::net::TcpStream::connect(&addr).await.unwrap();
    prompt
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: shopmesh\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    prompt.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_server_bounds_every_rpc_by_its_own_limit_whatever_the_caller_asks() {
    let app = spawn_app_with(Options {
        env: vec![("GRPC_SERVER_TIMEOUT_MS", "400".to_owned())],
        ..Options::default()
    })
    .await;
    let admin = app.admin("server-timeout@example.com").await;
    one_product(&app, &admin, "STUCK-1").await;
    let mut lock = lock_products(&app).await;
    // A direct caller that asks for ten seconds gets the server's 400 ms.
    let mut products = shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient::connect(app.product_grpc.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::GetProductBySkuRequest {
        sku: "STUCK-1".into(),
    });
    request.set_timeout(Duration::from_secs(10));
    let started = Instant::now();
    let status = products.get_product_by_sku(request).await.unwrap_err();
    let elapsed = started.elapsed();
    sqlx::query("rollback").execute(&mut lock).await.unwrap();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}
