use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::spawn_app;

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

const USER_SERVICE: &str = "shopmesh.user.v1.UserService";

#[tokio::test]
async fn user_grpc_server_answers_health_and_reflection_v1_and_v1alpha() {
    let app = spawn_app().await;
    server_answers_health_and_reflection(&app.user_grpc, &[USER_SERVICE]).await;
}

#[tokio::test]
async fn product_grpc_server_answers_health_and_reflection_v1_and_v1alpha() {
    let app = spawn_app().await;
    server_answers_health_and_reflection(
        &app.product_grpc,
        &[
            "shopmesh.product.v1.ProductService",
            "shopmesh.product.v1.InventoryService",
        ],
    )
    .await;
}

async fn server_answers_health_and_reflection(url: &str, services: &[&str]) {
    let mut health = HealthClient::new(channel(url).await);
    for service in std::iter::once(&"").chain(services) {
        let status = health
            .check(HealthCheckRequest {
                service: (*service).into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(url).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in services {
        assert!(names.contains(&(*service).to_owned()), "{names:?}");
    }
    // Only what this server serves is advertised, not every contract of the descriptor set.
    assert!(
        names.iter().all(|n| services.contains(&n.as_str())
            || n.starts_with("grpc.health.")
            || n.starts_with("grpc.reflection.")),
        "{names:?}"
    );
    assert_eq!(names.len(), services.len() + 2, "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(url).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                services[0].into(),
            ),
        ),
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f))
            if !f.file_descriptor_proto.is_empty()
    ));
}

/// The README's grpcurl commands work (grpcurl 1.8 speaks reflection v1alpha only).
#[tokio::test]
async fn grpcurl_lists_and_describes_the_user_service() {
    let app = spawn_app().await;
    let grpcurl = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    let addr = app.user_grpc.trim_start_matches("http://").to_owned();
    let list = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", &addr, "list"])
        .output()
        .await
        .expect("grpcurl must be installed (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(stdout.contains(USER_SERVICE), "{stdout}");
    assert!(stdout.contains("grpc.health.v1.Health"), "{stdout}");
    assert!(!stdout.contains("shopmesh.order.v1"), "{stdout}");

    let call = tokio::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-d",
            r#"{"email":"grpcurl@example.com","password":"Analytical-Engine-1843","name":"Cli"}"#,
            &addr,
            "shopmesh.user.v1.UserService/Register",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&call.stdout);
    assert!(
        call.status.success(),
        "{}",
        String::from_utf8_lossy(&call.stderr)
    );
    assert!(stdout.contains("grpcurl@example.com"), "{stdout}");
    assert_eq!(app.stored_users().await, 1);
}

#[tokio::test]
async fn grpc_servers_echo_the_request_id() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(channel(&app.user_grpc).await);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "corr-42".parse().unwrap());
    let response = health.check(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "corr-42");
}

/// The README's grpcurl call of an internal RPC: a user token is refused, the order service's
/// token from `shopmesh service-token` is admitted.
#[tokio::test]
async fn grpcurl_reaches_internal_rpcs_only_as_the_admitted_service() {
    let app = spawn_app().await;
    let admin = app.admin("grpcurl-admin@example.com").await;
    let created = app
        .post(
            "/api/admin/products",
            serde_json::json!({"sku": "CLI-1", "name": "Cli mug", "description": "A mug",
                   "price": {"amount": 900, "currency": "USD"}, "initial_stock": 3}),
            Some(&admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let grpcurl = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    let addr = app.product_grpc.trim_start_matches("http://").to_owned();
    let body = r#"{"order_id":"0190a0e0-0000-7000-8000-000000000001","lines":[{"sku":"CLI-1","quantity":1}]}"#;
    let method = "shopmesh.product.v1.InventoryService/Reserve";

    let as_admin = tokio::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {admin}"),
        ])
        .args(["-d", body, &addr, method])
        .output()
        .await
        .expect("grpcurl");
    assert!(!as_admin.status.success());
    let stderr = String::from_utf8_lossy(&as_admin.stderr);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");

    let token = tokio::process::Command::new(env!("CARGO_BIN_EXE_shopmesh"))
        .args(["service-token", "--as", "order"])
        .env_clear()
        .env("SHOPMESH_RUN_DIR", app.env.raw("SHOPMESH_RUN_DIR").unwrap())
        .output()
        .await
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let as_order = tokio::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-H",
            &format!("x-shopmesh-service-token: {token}"),
        ])
        .args(["-d", body, &addr, method])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&as_order.stdout);
    assert!(
        as_order.status.success(),
        "{}",
        String::from_utf8_lossy(&as_order.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("grpcurl prints JSON");
    assert_eq!(
        answer["reservation"]["orderId"], "0190a0e0-0000-7000-8000-000000000001",
        "{stdout}"
    );
    let stock = app.get("/api/admin/inventory/CLI-1", Some(&admin)).await;
    assert_eq!(stock.body["stock"]["reserved"], 1, "{}", stock.text);
}

/// Every service of the list answers health and reflection, through grpcurl as the README shows.
#[tokio::test]
async fn every_service_answers_health_and_reflection() {
    let app = spawn_app().await;
    for service in shopmesh::services() {
        let url = &app.grpc[service.name()];
        server_answers_health_and_reflection(url, service.grpc_services()).await;
    }
}

/// The checkout's internal RPCs refuse customer and admin tokens: only the calling service the
/// contract names may place orders, charge, or create shipments.
#[tokio::test]
async fn checkout_internal_rpcs_refuse_user_tokens() {
    let app = spawn_app().await;
    let customer = app.customer("grpc-customer@example.com").await;
    let admin = app.admin("grpc-admin@example.com").await;
    let grpcurl = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    let calls = [
        ("order", "shopmesh.order.v1.OrderService/PlaceOrder"),
        ("payment", "shopmesh.payment.v1.PaymentService/Charge"),
        (
            "delivery",
            "shopmesh.delivery.v1.DeliveryService/CreateShipment",
        ),
    ];
    for (service, method) in calls {
        let addr = app.grpc[service].trim_start_matches("http://").to_owned();
        for token in [&customer, &admin] {
            let output = tokio::process::Command::new(&grpcurl)
                .args([
                    "-plaintext",
                    "-H",
                    &format!("authorization: Bearer {token}"),
                ])
                .args(["-d", "{}", &addr, method])
                .output()
                .await
                .expect("grpcurl");
            assert!(!output.status.success(), "{method}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("PermissionDenied"), "{method}: {stderr}");
        }
    }
    // A customer cannot refund either; an admin is admitted (and told the payment is unknown).
    let addr = app.grpc["payment"].trim_start_matches("http://").to_owned();
    let body = r#"{"payment_id":"0190a0e0-0000-7000-8000-000000000001","idempotency_key":"k1"}"#;
    let refund = |token: String| {
        let grpcurl = grpcurl.clone();
        let addr = addr.clone();
        async move {
            tokio::process::Command::new(&grpcurl)
                .args([
                    "-plaintext",
                    "-H",
                    &format!("authorization: Bearer {token}"),
                ])
                .args([
                    "-d",
                    body,
                    &addr,
                    "shopmesh.payment.v1.PaymentService/Refund",
                ])
                .output()
                .await
                .expect("grpcurl")
        }
    };
    let as_customer = refund(customer.clone()).await;
    assert!(String::from_utf8_lossy(&as_customer.stderr).contains("PermissionDenied"));
    let as_admin = refund(admin.clone()).await;
    assert!(
        String::from_utf8_lossy(&as_admin.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&as_admin.stderr)
    );
}
