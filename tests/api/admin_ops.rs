//! The admin console's operations views: the depth of every event consumer's queues on RabbitMQ
//! (`/api/admin/queues`) and the gateway's own request counters (`/api/admin/metrics`).

use std::time::{Duration, Instant};

use serde_json::Value;
use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::events::v1 as events;
use shopmesh_platform::events::{Broker, EventSettings, OutgoingEvent, new_envelope, relay};

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};

async fn publish(settings: &EventSettings, envelope: &events::EventEnvelope) {
    let broker = Broker::new(settings.clone(), "admin-ops-test");
    let channel = broker.publisher().await.unwrap();
    let any = envelope.payload.clone().unwrap();
    relay::publish(
        &channel,
        &settings.exchange,
        "test",
        &[OutgoingEvent {
            id: envelope.event_id.parse().unwrap(),
            event_type: envelope.r#type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            payload_type: any.type_url,
            payload: any.value,
            correlation_id: String::new(),
            priority: 0,
            occurred_at: chrono::Utc::now(),
        }],
    )
    .await
    .unwrap();
    broker.close().await;
}

/// Publishes an `order.paid` of a customer the notification service has never heard of: it cannot
/// be addressed, so the notification consumer retries it and parks it (with
/// `EVENTS_MAX_ATTEMPTS` 2, within seconds). Returns the customer's id and the event's.
pub(crate) async fn park_an_unaddressable_order_paid(
    app: &TestApp,
    admin: &str,
) -> (String, String) {
    let before = queue(app, admin, "notification").await["dead_letters"]
        .as_u64()
        .unwrap();
    let ghost = uuid::Uuid::now_v7().to_string();
    let order_id = uuid::Uuid::now_v7().to_string();
    let usd = |amount_minor| {
        Some(Money {
            amount_minor,
            currency: "USD".into(),
        })
    };
    let paid = new_envelope(
        "order",
        &order_id,
        "order.paid",
        "OrderPaid",
        &events::OrderPaid {
            order_id: order_id.clone(),
            user_id: ghost.clone(),
            total: usd(1000),
            lines: vec![events::OrderLine {
                product_id: "p1".into(),
                sku: "GHOST-1".into(),
                product_name: "Ghost mug".into(),
                unit_price: usd(1000),
                quantity: 1,
                line_total: usd(1000),
            }],
            ..Default::default()
        },
    );
    publish(&app.settings.events, &paid).await;
    eventually("the event is dead-lettered", async || {
        queue(app, admin, "notification").await["dead_letters"] == before + 1
    })
    .await;
    (ghost, paid.event_id)
}

/// Publishes the registration of `user_id`, after which its parked events can be delivered.
pub(crate) async fn register(app: &TestApp, user_id: &str) {
    publish(
        &app.settings.events,
        &new_envelope(
            "user",
            user_id,
            "user.registered",
            "UserRegistered",
            &events::UserRegistered {
                user_id: user_id.to_owned(),
                email: format!("{user_id}@example.com"),
                name: "Ghost".into(),
                ..Default::default()
            },
        ),
    )
    .await;
}

/// The queue entry of `consumer`.
pub(crate) async fn queue(app: &TestApp, admin: &str, consumer: &str) -> Value {
    let reply = app.get("/api/admin/queues", Some(admin)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["consumer"] == consumer)
        .cloned()
        .unwrap_or_else(|| panic!("no {consumer} queue: {}", reply.text))
}

pub(crate) async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn queue_depths_show_a_parked_event_until_it_is_redriven() {
    let app = spawn_app_with(Options {
        env: vec![("EVENTS_MAX_ATTEMPTS", "2".to_owned())],
        ..Options::default()
    })
    .await;
    let admin = app.admin("queues@example.com").await;
    let customer = app.customer("queue-watcher@example.com").await;
    app.get("/api/admin/queues", Some(&customer))
        .await
        .assert_problem(403);
    app.get("/api/admin/queues", None).await.assert_problem(401);

    // Every consumer of the mesh is listed, each read by its running consumer.
    let reply = app.get("/api/admin/queues", Some(&admin)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let prefix = &app.settings.events.queue_prefix;
    for entry in reply.body["queues"].as_array().unwrap() {
        let consumer = entry["consumer"].as_str().unwrap();
        assert_eq!(entry["queue"], format!("{prefix}{consumer}"), "{entry}");
        for field in ["messages", "retry_messages", "dead_letters"] {
            assert!(entry[field].is_u64(), "{field}: {entry}");
        }
    }
    eventually("the notification consumer reads its queue", async || {
        queue(&app, &admin, "notification").await["consumers"] == 1
    })
    .await;
    assert_eq!(queue(&app, &admin, "notification").await["dead_letters"], 0);

    // An order paid by a customer the notification service has not heard of cannot be
    // addressed: retried, then parked. The customer's registration arrives; the re-driven event
    // goes through and the dead-letter queue is empty again.
    let (ghost, event_id) = park_an_unaddressable_order_paid(&app, &admin).await;
    // Prometheus sees the parked event too, in the gateway's queue-depth gauges.
    eventually(
        "the dead-letter gauge counts the parked event",
        async || dead_letter_gauge(&app, "notification").await == Some(1.0),
    )
    .await;
    register(&app, &ghost).await;
    let redrive = app
        .post(
            &format!("/api/admin/dead-letters/notification/{event_id}/redrive"),
            Value::Null,
            Some(&admin),
        )
        .await;
    assert_eq!(redrive.status, 200, "{}", redrive.text);
    eventually("the dead-letter queue drains", async || {
        let entry = queue(&app, &admin, "notification").await;
        entry["dead_letters"] == 0 && entry["retry_messages"] == 0 && entry["messages"] == 0
    })
    .await;
    eventually("the dead-letter gauge drops back to 0", async || {
        dead_letter_gauge(&app, "notification").await == Some(0.0)
    })
    .await;
}

/// `shopmesh_events_queue_messages{consumer, queue="dead_letter"}` in the gateway's metrics.
async fn dead_letter_gauge(app: &TestApp, consumer: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", app.gateway))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let consumer = format!("consumer=\"{consumer}\"");
    text.lines()
        .find(|line| {
            line.starts_with("shopmesh_events_queue_messages{")
                && line.contains(&consumer)
                && line.contains("queue=\"dead_letter\"")
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn queue_depths_are_a_503_while_the_broker_is_unreachable() {
    let port = crate::helpers::free_port();
    // Only the user service runs (for the admin's login): the others need the broker to start.
    let app = spawn_app_with(Options {
        services: Some(vec!["user"]),
        env: vec![(
            "AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        )],
        ..Options::default()
    })
    .await;
    let admin = app.admin("queues-down@example.com").await;
    let reply = app.get("/api/admin/queues", Some(&admin)).await;
    let problem = reply.assert_problem(503);
    assert!(!reply.text.contains("guest"), "{}", reply.text);
    assert_eq!(problem["detail"], "the message broker is not available");
}

/// The count of one HTTP route and status in a metrics answer (0 when absent).
fn http_count(body: &Value, method: &str, route: &str, status: u16) -> u64 {
    body["http"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == method && c["route"] == route && c["status"] == status)
        .map_or(0, |c| c["requests"].as_u64().unwrap())
}

fn grpc_count(body: &Value, service: &str, method: &str, code: &str) -> u64 {
    body["grpc_client"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == service && c["method"] == method && c["code"] == code)
        .map_or(0, |c| c["requests"].as_u64().unwrap())
}

#[tokio::test]
async fn gateway_request_counters_grow_with_the_requests_they_count() {
    let app = spawn_app().await;
    let admin = app.admin("metrics@example.com").await;
    let customer = app.customer("counted@example.com").await;
    app.get("/api/admin/metrics", Some(&customer))
        .await
        .assert_problem(403);
    app.get("/api/admin/metrics", None)
        .await
        .assert_problem(401);

    let first = app.get("/api/admin/metrics", Some(&admin)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let uptime = first.body["uptime_seconds"].as_f64().unwrap();
    assert!(uptime > 0.0, "{}", first.text);
    let missing = uuid::Uuid::now_v7();
    // Credentials keep the edge's micro-cache out of the way: every request reaches the gateway.
    for _ in 0..3 {
        let reply = app.get("/api/users/me", Some(&customer)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        app.get(&format!("/api/products/{missing}"), Some(&customer))
            .await
            .assert_problem(404);
    }
    let second = app.get("/api/admin/metrics", Some(&admin)).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let grew = |method, route, status, by| {
        let before = http_count(&first.body, method, route, status);
        let after = http_count(&second.body, method, route, status);
        assert!(
            after >= before + by,
            "{method} {route} {status}: {before} then {after}"
        );
    };
    grew("GET", "/api/users/me", 200, 3);
    grew("GET", "/api/products/{id}", 404, 3);
    // The first metrics request itself was counted once it was answered.
    grew("GET", "/api/admin/metrics", 200, 1);
    let product = "shopmesh.product.v1.ProductService";
    let before = grpc_count(&first.body, product, "GetProduct", "NOT_FOUND");
    let after = grpc_count(&second.body, product, "GetProduct", "NOT_FOUND");
    assert!(
        after >= before + 3,
        "GetProduct NOT_FOUND: {before} then {after}"
    );
    assert!(
        grpc_count(&second.body, "shopmesh.user.v1.UserService", "GetMe", "OK") >= 3,
        "{}",
        second.text
    );
    assert!(second.body["uptime_seconds"].as_f64().unwrap() > uptime);
    // The shape the console reads.
    let entry = &second.body["http"][0];
    let mut keys: Vec<&str> = entry
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["method", "requests", "route", "status"]);
    assert!(entry["status"].is_u64(), "{entry}");
}
