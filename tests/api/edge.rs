use serde_json::Value;

use crate::helpers::{Options, Reply, repo_root, spawn_app, spawn_app_with};

#[tokio::test]
async fn served_openapi_matches_the_checked_in_document_and_docs_render() {
    let app = spawn_app().await;
    let served = app.get("/openapi.json", None).await;
    assert_eq!(served.status, 200);
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        served.body, checked_in,
        "docs/openapi.json drifted: regenerate it with `shopmesh openapi > docs/openapi.json`"
    );
    assert_eq!(served.body["openapi"], "3.1.0");
    for path in [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/users/me",
        "/api/users/me/addresses",
        "/api/admin/users",
    ] {
        assert!(
            served.body["paths"].get(path).is_some(),
            "{path} documented"
        );
    }

    // The same site documents the gRPC face: the reference the OpenAPI description links.
    assert!(
        served.body["info"]["description"]
            .as_str()
            .unwrap()
            .contains("(/docs/grpc)")
    );
    let grpc = app.http.get(app.url("/docs/grpc")).send().await.unwrap();
    assert_eq!(grpc.status(), 200);
    assert!(
        grpc.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let reference = grpc.text().await.unwrap();
    assert_eq!(
        reference,
        std::fs::read_to_string(repo_root().join("docs/grpc.html")).unwrap(),
        "docs/grpc.html drifted: regenerate it with `shopmesh grpc-docs > docs/grpc.html`"
    );
    for needle in [
        "shopmesh.product.v1.InventoryService",
        "shopmesh.user.v1.UserService",
        "internal-only",
        "EventEnvelope",
    ] {
        assert!(reference.contains(needle), "{needle} in the gRPC reference");
    }

    let docs = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
    let bundle = app
        .http
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200, "vendored assets are served locally");
}

#[tokio::test]
async fn health_readiness_request_ids_and_unknown_routes() {
    let app = spawn_app().await;
    let health = app.get("/healthz", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["checks"]["user"], "serving");
    assert_eq!(ready.body["checks"]["jwks"], "loaded");

    let minted = app.get("/healthz", None).await;
    assert!(minted.headers.get("x-request-id").is_some());
    let given = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-123");

    app.get("/api/nothing-here", None).await.assert_problem(404);
    let wrong_method = app
        .http
        .delete(app.url("/api/auth/login"))
        .send()
        .await
        .unwrap();
    Reply::from(wrong_method).await.assert_problem(405);

    // /metrics is for Prometheus on the gateway port, not for the public edge.
    app.get("/metrics", None).await.assert_problem(404);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.gateway))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
}

#[tokio::test]
async fn per_ip_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(Options {
        ip_per_second: 1,
        ip_burst: 3,
        ..Options::default()
    })
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let reply = app.get("/api/users/me", None).await;
        statuses.push(reply.status);
        if reply.status == 429 {
            limited = Some(reply);
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    limited.assert_problem(429);
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
}

#[tokio::test]
async fn per_user_limit_answers_429_for_that_user_only() {
    let app = spawn_app_with(Options {
        user_per_second: 1,
        user_burst: 2,
        ..Options::default()
    })
    .await;
    let hungry = app.customer("hungry@example.com").await;
    let calm = app.customer("calm@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.get("/api/users/me", Some(&hungry)).await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(app.get("/api/users/me", Some(&calm)).await.status, 200);
}

#[tokio::test]
async fn cors_allows_only_listed_origins() {
    let app = spawn_app().await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/api/users/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let denied = preflight("https://evil.example").await.unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn a_client_of_the_gateway_port_cannot_pick_its_own_rate_limit_key() {
    // Only 10.9.9.9 may name clients: the loopback client of this test is not a proxy.
    let app = spawn_app_with(Options {
        ip_per_second: 1,
        ip_burst: 5,
        env: vec![("TRUSTED_PROXIES", "10.9.9.9/32".to_owned())],
        ..Options::default()
    })
    .await;
    let mut limited = 0;
    for i in 0..20 {
        let reply = app
            .http
            .get(format!("{}/api/products?q=x", app.gateway))
            .header("x-real-ip", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        if reply.status() == 429 {
            limited += 1;
        }
    }
    assert!(
        limited >= 10,
        "spoofed X-Real-IP values were honoured: {limited} of 20 limited"
    );
}

#[tokio::test]
async fn the_trusted_edge_names_the_client_and_clients_cannot_override_it() {
    // Through nginx (a trusted proxy on loopback) the key is the address nginx saw, so a
    // header the client sends is replaced, not believed.
    let app = spawn_app_with(Options {
        ip_per_second: 1,
        ip_burst: 5,
        ..Options::default()
    })
    .await;
    let mut limited = 0;
    for i in 0..20 {
        // A different search each time: the edge's micro-cache answers none of them.
        let reply = app
            .http
            .get(app.url(&format!("/api/products?q=x{i}")))
            .header("x-real-ip", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        if reply.status() == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 10, "{limited} of 20 limited");
}

#[tokio::test]
async fn the_edge_replaces_request_ids_that_are_not_short_tokens() {
    let app = spawn_app().await;
    let well_formed = |id: &str| {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    let long = "a".repeat(500);
    for sent in ["<script>alert(1)</script>", long.as_str(), "with space"] {
        let reply = app
            .http
            .get(app.url("/healthz"))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        let echoed = reply.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(echoed, sent);
        assert!(well_formed(&echoed), "{echoed}");
    }
    let good = "client-trace:1.2_3";
    let reply = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", good)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.headers()["x-request-id"], good);
}
