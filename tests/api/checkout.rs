//! The checkout saga end to end through nginx: cart → order → product, payment and delivery over
//! real gRPC, against real PostgreSQL and Redis.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Options, Reply, TestApp, spawn_app, spawn_app_with};

pub const VISA_OK: &str = "4242424242424242";
pub const VISA_DECLINED: &str = "4000000000000002";
pub const VISA_NO_FUNDS: &str = "4000000000009995";

pub fn card(number: &str) -> Value {
    json!({"card_number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"})
}

pub fn address() -> Value {
    json!({
        "recipient": "Ada Lovelace", "line1": "12 St James's Square", "city": "London",
        "postal_code": "SW1Y 4JH", "country": "GB"
    })
}

/// Creates an active product with `stock` units and returns its id.
pub async fn stock_product(
    app: &TestApp,
    admin: &str,
    sku: &str,
    price: i64,
    stock: i32,
) -> String {
    let reply = app
        .post(
            "/api/admin/products",
            json!({
                "sku": sku, "name": format!("Product {sku}"),
                "description": "A thing for the checkout tests",
                "price": {"amount": price, "currency": "USD"}, "initial_stock": stock
            }),
            Some(admin),
        )
        .await;
    assert_eq!(reply.status, 201, "create product: {}", reply.text);
    reply.body["id"].as_str().unwrap().to_owned()
}

pub async fn add(app: &TestApp, token: &str, sku: &str, quantity: i64) -> Reply {
    app.post(
        "/api/cart/items",
        json!({"sku": sku, "quantity": quantity}),
        Some(token),
    )
    .await
}

pub async fn checkout(app: &TestApp, token: &str, key: &str, card_number: &str) -> Reply {
    let req = app
        .http
        .post(app.url("/api/cart/checkout"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"shipping_address": address(), "payment": card(card_number)}));
    Reply::from(req.send().await.unwrap()).await
}

/// (on_hand, reserved, available) of a SKU.
pub async fn stock(app: &TestApp, admin: &str, sku: &str) -> (i64, i64, i64) {
    let reply = app
        .get(&format!("/api/admin/inventory/{sku}"), Some(admin))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let s = &reply.body["stock"];
    (
        s["on_hand"].as_i64().unwrap(),
        s["reserved"].as_i64().unwrap(),
        s["available"].as_i64().unwrap(),
    )
}

/// Polls the order until `done` holds for it (or fails after `within`).
pub async fn wait_order(
    app: &TestApp,
    token: &str,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + within;
    loop {
        let reply = app.get(&format!("/api/orders/{id}"), Some(token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if done(&reply.body) {
            return reply.body;
        }
        assert!(
            Instant::now() < until,
            "order never got there: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rows of a test's own database of `service`, through `psql`-free sqlx.
pub async fn count(app: &TestApp, service: &str, sql: &str) -> i64 {
    let url = app
        .env
        .raw(&format!("{}_DATABASE_URL", service.to_ascii_uppercase()))
        .unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn a_shopper_checks_out_and_follows_the_delivery_to_completed() {
    let app = spawn_app().await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "MUG-1", 1250, 10).await;
    stock_product(&app, &admin, "TEE-1", 2000, 5).await;
    let shopper = app.customer("ada@example.com").await;

    assert_eq!(add(&app, &shopper, "MUG-1", 2).await.status, 201);
    let cart = add(&app, &shopper, "TEE-1", 1).await;
    assert_eq!(cart.status, 201, "{}", cart.text);
    assert_eq!(cart.body["total"]["amount"], 4500);
    assert_eq!(cart.body["item_count"], 3);

    let placed = checkout(&app, &shopper, "first-checkout", VISA_OK).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let order = &placed.body;
    assert_eq!(order["status"], "PAID", "{}", placed.text);
    assert_eq!(order["total"]["amount"], 4500);
    assert_eq!(order["lines"].as_array().unwrap().len(), 2);
    assert_eq!(order["lines"][0]["sku"], "MUG-1");
    assert_eq!(order["lines"][0]["unit_price"]["amount"], 1250);
    assert_eq!(order["shipping_address"]["city"], "London");
    let id = order["id"].as_str().unwrap().to_owned();

    // The cart is empty once the order exists; the stock is sold, not just held.
    let cart = app.get("/api/cart", Some(&shopper)).await;
    assert_eq!(cart.body["item_count"], 0, "{}", cart.text);
    assert_eq!(stock(&app, &admin, "MUG-1").await, (8, 0, 8));
    assert_eq!(stock(&app, &admin, "TEE-1").await, (4, 0, 4));

    // One successful payment, the card shown only as brand and last four digits.
    let payments = app
        .get(&format!("/api/orders/{id}/payments"), Some(&shopper))
        .await;
    assert_eq!(payments.status, 200, "{}", payments.text);
    let list = payments.body["payments"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", payments.text);
    assert_eq!(list[0]["status"], "SUCCEEDED");
    assert_eq!(list[0]["card_last4"], "4242");
    assert!(!payments.text.contains(VISA_OK));

    // The tracking stream shows every step, then ends.
    let sse = app
        .http
        .get(app.url(&format!("/api/orders/{id}/shipment/events")))
        .bearer_auth(&shopper)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert!(
        sse.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = String::new();
    let mut chunks = sse.bytes_stream();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = chunks.next().await {
            body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await;
    assert!(read.is_ok(), "the stream ends after DELIVERED: {body}");
    let statuses: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| {
            serde_json::from_str::<Value>(d.trim()).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        statuses,
        [
            "LABEL_CREATED",
            "IN_TRANSIT",
            "OUT_FOR_DELIVERY",
            "DELIVERED"
        ],
        "{body}"
    );

    let done = wait_order(&app, &shopper, &id, Duration::from_secs(10), |o| {
        o["status"] == "COMPLETED"
    })
    .await;
    let history: Vec<&str> = done["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["to"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["CREATED", "PAID", "SHIPPED", "COMPLETED"]);
    // Every step the saga took is counted by step and outcome.
    let metrics = reqwest::get(format!("{}/metrics", app.gateway))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for step in [
        "RESERVE_STOCK",
        "CHARGE_PAYMENT",
        "COMMIT_STOCK",
        "CREATE_SHIPMENT",
    ] {
        let series = format!("saga_steps_total{{step=\"SAGA_STEP_{step}\",outcome=\"advanced\"}} ");
        assert!(
            metrics.lines().any(|line| line.starts_with(&series)),
            "{series} in {metrics}"
        );
    }
    let shipment = app
        .get(&format!("/api/orders/{id}/shipment"), Some(&shopper))
        .await;
    assert_eq!(shipment.status, 200, "{}", shipment.text);
    assert_eq!(shipment.body["status"], "DELIVERED");
    assert!(
        shipment.body["tracking_number"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    // Replaying the key returns the same order and charges nothing more.
    let replay = checkout(&app, &shopper, "first-checkout", VISA_OK).await;
    assert!(
        replay.status == 200 || replay.status == 201,
        "{}",
        replay.text
    );
    assert_eq!(replay.body["id"], id.as_str());
    assert_eq!(
        count(&app, "payment", "select count(*) from payments").await,
        1
    );

    // The order is listed; other shoppers cannot see it.
    let mine = app.get("/api/orders", Some(&shopper)).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    let other = app.customer("eve@example.com").await;
    app.get(&format!("/api/orders/{id}"), Some(&other))
        .await
        .assert_problem(404);
    app.get(&format!("/api/orders/{id}/payments"), Some(&other))
        .await
        .assert_problem(404);
    app.get(&format!("/api/orders/{id}/shipment"), Some(&other))
        .await
        .assert_problem(404);
    assert_eq!(
        app.get("/api/orders", Some(&other)).await.body["items"],
        json!([])
    );
}

#[tokio::test]
async fn a_declined_card_cancels_the_order_and_gives_the_stock_back() {
    let app = spawn_app().await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "LAMP-1", 4999, 3).await;
    let shopper = app.customer("ada@example.com").await;
    add(&app, &shopper, "LAMP-1", 2).await;

    for (number, code) in [
        (VISA_DECLINED, "card_declined"),
        (VISA_NO_FUNDS, "insufficient_funds"),
    ] {
        let placed = checkout(&app, &shopper, &format!("try-{number}"), number).await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        assert_eq!(placed.body["status"], "CANCELLED", "{}", placed.text);
        assert_eq!(placed.body["cancellation_reason"], "PAYMENT_FAILED");
        assert_eq!(placed.body["cancellation_note"], code);
        let id = placed.body["id"].as_str().unwrap();
        // Compensation finishes: the reservation is released.
        wait_order(&app, &shopper, id, Duration::from_secs(10), |o| {
            o["checkout_step"] == "COMPENSATED"
        })
        .await;
        assert_eq!(stock(&app, &admin, "LAMP-1").await, (3, 0, 3));
        // The cart is intact, so the shopper can try another card.
        let cart = app.get("/api/cart", Some(&shopper)).await;
        assert_eq!(cart.body["item_count"], 2, "{}", cart.text);
    }
    // Nothing was captured.
    assert_eq!(
        count(
            &app,
            "payment",
            "select count(*) from payments where status = 'SUCCEEDED'"
        )
        .await,
        0
    );

    let paid = checkout(&app, &shopper, "third-try", VISA_OK).await;
    assert_eq!(paid.body["status"], "PAID", "{}", paid.text);
    assert_eq!(stock(&app, &admin, "LAMP-1").await, (1, 0, 1));
}

#[tokio::test]
async fn twenty_concurrent_checkouts_with_one_key_make_one_order_and_one_charge() {
    let app = spawn_app().await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "BAG-1", 3000, 10).await;
    let shopper = app.customer("ada@example.com").await;
    add(&app, &shopper, "BAG-1", 1).await;

    let replies = futures::future::join_all(
        (0..20).map(|_| checkout(&app, &shopper, "same-key-20", VISA_OK)),
    )
    .await;
    let mut ids = std::collections::HashSet::new();
    for reply in &replies {
        assert!(reply.status == 200 || reply.status == 201, "{}", reply.text);
        ids.insert(reply.body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one order for one key");
    let id = ids.into_iter().next().unwrap();
    wait_order(&app, &shopper, &id, Duration::from_secs(10), |o| {
        o["status"] == "PAID" || o["status"] == "SHIPPED" || o["status"] == "COMPLETED"
    })
    .await;
    assert_eq!(
        app.get("/api/orders", Some(&shopper)).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        count(&app, "payment", "select count(*) from payments").await,
        1
    );
    assert_eq!(
        count(
            &app,
            "payment",
            "select count(*) from ledger_entries where kind = 'capture'"
        )
        .await,
        1
    );
    assert_eq!(stock(&app, &admin, "BAG-1").await, (9, 0, 9));
}

#[tokio::test]
async fn a_hundred_buyers_of_five_units_make_exactly_five_paid_orders() {
    let app = spawn_app().await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "HOT-1", 999, 5).await;
    let buyers: Vec<String> = futures::stream::iter(0..100)
        .map(|i| {
            let app = &app;
            async move {
                let token = app.customer(&format!("buyer{i}@example.com")).await;
                assert_eq!(add(app, &token, "HOT-1", 1).await.status, 201);
                token
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    let keys: Vec<String> = (0..buyers.len()).map(|i| format!("hot-{i}")).collect();
    let replies = futures::future::join_all(
        buyers
            .iter()
            .zip(&keys)
            .map(|(token, key)| checkout(&app, token, key, VISA_OK)),
    )
    .await;
    let mut paid = 0;
    for reply in &replies {
        assert_eq!(reply.status, 201, "{}", reply.text);
        match reply.body["status"].as_str().unwrap() {
            "PAID" => paid += 1,
            "CANCELLED" => assert_eq!(reply.body["cancellation_reason"], "OUT_OF_STOCK"),
            other => panic!("unexpected status {other}: {}", reply.text),
        }
    }
    assert_eq!(paid, 5);
    assert_eq!(stock(&app, &admin, "HOT-1").await, (0, 0, 0));
    assert_eq!(
        count(
            &app,
            "payment",
            "select count(*) from payments where status = 'SUCCEEDED'"
        )
        .await,
        5
    );
}

#[tokio::test]
async fn bad_checkout_input_is_refused_and_nothing_is_held() {
    let app = spawn_app().await;
    let admin = app.admin("shop-admin@example.com").await;
    let gone = stock_product(&app, &admin, "GONE-1", 500, 5).await;
    stock_product(&app, &admin, "KEEP-1", 500, 5).await;
    let shopper = app.customer("ada@example.com").await;

    // An empty cart cannot check out.
    checkout(&app, &shopper, "empty-cart", VISA_OK)
        .await
        .assert_problem(409);
    // Quantities outside 1..=99, unknown SKUs.
    add(&app, &shopper, "KEEP-1", 0).await.assert_problem(422);
    add(&app, &shopper, "KEEP-1", 100).await.assert_problem(422);
    add(&app, &shopper, "NOPE-1", 1).await.assert_problem(404);
    // A product that stops being sold after it was added.
    assert_eq!(add(&app, &shopper, "GONE-1", 1).await.status, 201);
    let deleted = app
        .http
        .delete(app.url(&format!("/api/admin/products/{gone}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    add(&app, &shopper, "GONE-1", 1).await.assert_problem(409);
    checkout(&app, &shopper, "inactive-line", VISA_OK)
        .await
        .assert_problem(409);
    let del = app
        .http
        .delete(app.url("/api/cart/items/GONE-1"))
        .bearer_auth(&shopper)
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success());

    // Missing Idempotency-Key.
    add(&app, &shopper, "KEEP-1", 1).await;
    let no_key = app
        .http
        .post(app.url("/api/cart/checkout"))
        .bearer_auth(&shopper)
        .json(&json!({"shipping_address": address(), "payment": card(VISA_OK)}))
        .send()
        .await
        .unwrap();
    Reply::from(no_key).await.assert_problem(400);
    // A card number that fails the checksum is a field error, and no order is made.
    let bad_card = checkout(&app, &shopper, "bad-card", "4242424242424241").await;
    bad_card.assert_problem(422);
    assert!(!bad_card.text.contains("4242424242424241"));
    assert_eq!(
        app.get("/api/orders", Some(&shopper)).await.body["items"],
        json!([])
    );
    assert_eq!(stock(&app, &admin, "KEEP-1").await, (5, 0, 5));

    // A paid order: refunds above what was captured are refused.
    let paid = checkout(&app, &shopper, "good", VISA_OK).await;
    assert_eq!(paid.body["status"], "PAID", "{}", paid.text);
    let id = paid.body["id"].as_str().unwrap();
    let refund = |amount: i64, key: &'static str| {
        app.http
            .post(app.url("/api/admin/refunds"))
            .bearer_auth(&admin)
            .header("idempotency-key", key)
            .json(&json!({"order_id": id, "amount": {"amount": amount, "currency": "USD"}}))
            .send()
    };
    let over = Reply::from(refund(501, "r-over").await.unwrap()).await;
    over.assert_problem(409);
    let part = Reply::from(refund(200, "r-part").await.unwrap()).await;
    assert_eq!(part.status, 200, "{}", part.text);
    assert_eq!(part.body["refunded_total"]["amount"], 200);
    // The same key again is the same refund, not a second one.
    let again = Reply::from(refund(200, "r-part").await.unwrap()).await;
    assert_eq!(
        again.body["refunded_total"]["amount"], 200,
        "{}",
        again.text
    );
    Reply::from(refund(301, "r-rest-over").await.unwrap())
        .await
        .assert_problem(409);
    let rest = Reply::from(refund(300, "r-rest").await.unwrap()).await;
    assert_eq!(rest.body["refunded_total"]["amount"], 500, "{}", rest.text);
    assert_eq!(rest.body["status"], "REFUNDED");
    // Customers cannot refund.
    let customer_refund = app
        .http
        .post(app.url("/api/admin/refunds"))
        .bearer_auth(&shopper)
        .json(&json!({"order_id": id}))
        .send()
        .await
        .unwrap();
    Reply::from(customer_refund).await.assert_problem(403);
}

#[tokio::test]
async fn a_paid_order_cancelled_before_pick_up_is_refunded_and_restocked() {
    let app = spawn_app_with(Options {
        // The courier does not come during this test.
        env: vec![("DELIVERY_COURIER_STEP_MS", "600000".to_owned())],
        ..Options::default()
    })
    .await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "CHAIR-1", 7000, 4).await;
    let shopper = app.customer("ada@example.com").await;
    add(&app, &shopper, "CHAIR-1", 2).await;
    let placed = checkout(&app, &shopper, "chairs", VISA_OK).await;
    assert_eq!(placed.body["status"], "PAID", "{}", placed.text);
    let id = placed.body["id"].as_str().unwrap();
    assert_eq!(stock(&app, &admin, "CHAIR-1").await, (2, 0, 2));

    let cancelled = app
        .post(
            &format!("/api/orders/{id}/cancel"),
            json!({"reason": "changed my mind"}),
            Some(&shopper),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.body["status"], "CANCELLED");
    assert_eq!(cancelled.body["cancellation_reason"], "CUSTOMER_REQUESTED");
    let done = wait_order(&app, &shopper, id, Duration::from_secs(10), |o| {
        o["checkout_step"] == "COMPENSATED"
    })
    .await;
    assert_eq!(done["refunded_total"]["amount"], 14000);
    assert_eq!(stock(&app, &admin, "CHAIR-1").await, (4, 0, 4));
    let shipment = app
        .get(&format!("/api/orders/{id}/shipment"), Some(&shopper))
        .await;
    assert_eq!(shipment.body["status"], "CANCELLED", "{}", shipment.text);
    // Cancelling again changes nothing; a completed order cannot be cancelled.
    let again = app
        .post(
            &format!("/api/orders/{id}/cancel"),
            json!({}),
            Some(&shopper),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["refunded_total"]["amount"], 14000);
    // Illegal hand-made transitions are refused.
    app.post(
        &format!("/api/admin/orders/{id}/status"),
        json!({"status": "SHIPPED"}),
        Some(&admin),
    )
    .await
    .assert_problem(409);
    let listed = app
        .get("/api/admin/orders?status=CANCELLED", Some(&admin))
        .await;
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        listed.text
    );
}

#[tokio::test]
async fn checkout_fails_cleanly_within_its_deadline_when_payment_is_down() {
    let app = spawn_app_with(Options {
        services: Some(vec!["user", "product", "cart", "order", "delivery"]),
        env: vec![("ORDER_CHECKOUT_BUDGET_MS", "1500".to_owned())],
        ..Options::default()
    })
    .await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "DESK-1", 15000, 2).await;
    let shopper = app.customer("ada@example.com").await;
    add(&app, &shopper, "DESK-1", 1).await;

    // The card cannot even be tokenized: the payment service is down.
    let started = Instant::now();
    let reply = checkout(&app, &shopper, "no-payment", VISA_OK).await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(reply.headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(stock(&app, &admin, "DESK-1").await, (2, 0, 2));
    let cart = app.get("/api/cart", Some(&shopper)).await;
    assert_eq!(cart.body["item_count"], 1);
}

#[tokio::test]
async fn a_payment_service_that_times_out_is_compensated_and_any_late_charge_refunded() {
    let app = spawn_app_with(Options {
        env: vec![
            // Every charge takes 4 s at the provider; the order service waits 500 ms per attempt
            // and gives the whole checkout 1.5 s.
            ("PAYMENT_PROVIDER_DELAY_MS", "4000".to_owned()),
            ("ORDER_CALL_TIMEOUT_MS", "500".to_owned()),
            ("ORDER_CHECKOUT_BUDGET_MS", "1500".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "SOFA-1", 50000, 1).await;
    let shopper = app.customer("ada@example.com").await;
    add(&app, &shopper, "SOFA-1", 1).await;

    let started = Instant::now();
    let reply = checkout(&app, &shopper, "slow-payment", VISA_OK).await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(reply.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The unit is available again at once, and the cart kept.
    assert_eq!(stock(&app, &admin, "SOFA-1").await, (1, 0, 1));
    assert_eq!(
        app.get("/api/cart", Some(&shopper)).await.body["item_count"],
        1
    );

    let orders = app.get("/api/orders", Some(&shopper)).await;
    let order = &orders.body["items"][0];
    assert_eq!(order["status"], "CANCELLED", "{}", orders.text);
    assert_eq!(order["cancellation_reason"], "SERVICE_UNAVAILABLE");
    let id = order["id"].as_str().unwrap();
    // The charge the provider finished late is refunded: no charge without an order.
    wait_order(&app, &shopper, id, Duration::from_secs(30), |o| {
        o["checkout_step"] == "COMPENSATED"
    })
    .await;
    let payments = app
        .get(&format!("/api/orders/{id}/payments"), Some(&shopper))
        .await;
    for p in payments.body["payments"].as_array().unwrap() {
        assert!(
            p["status"] == "REFUNDED" || p["status"] == "FAILED",
            "{}",
            payments.text
        );
    }
}

#[tokio::test]
async fn watch_order_streams_every_status_change_until_completed() {
    use shopmesh_contracts::pb::shopmesh::order::v1 as pb;
    use shopmesh_contracts::pb::shopmesh::order::v1::order_service_client::OrderServiceClient;

    let app = spawn_app_with(Options {
        // Slow enough that the watch starts while the order is still PAID.
        env: vec![("DELIVERY_COURIER_STEP_MS", "1500".to_owned())],
        ..Options::default()
    })
    .await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "WATCH-1", 800, 3).await;
    let shopper = app.customer("ada@example.com").await;
    add(&app, &shopper, "WATCH-1", 1).await;
    let placed = checkout(&app, &shopper, "watched", VISA_OK).await;
    assert_eq!(placed.body["status"], "PAID", "{}", placed.text);
    let id = placed.body["id"].as_str().unwrap().to_owned();

    let channel = tonic::transport::Endpoint::from_shared(app.grpc["order"].clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = OrderServiceClient::new(channel);
    let watch = |token: &str| {
        let mut request = tonic::Request::new(pb::WatchOrderRequest {
            order_id: id.clone(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let mut stream = client
        .watch_order(watch(&shopper))
        .await
        .unwrap()
        .into_inner();
    let mut statuses = Vec::new();
    let mut changes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = stream.next().await {
            let message = message.unwrap();
            statuses.push(message.order.unwrap().status);
            if let Some(change) = message.change {
                changes.push(change.to_status);
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stream ends at COMPLETED: {statuses:?}");
    assert_eq!(statuses.first(), Some(&(pb::OrderStatus::Paid as i32)));
    assert_eq!(statuses.last(), Some(&(pb::OrderStatus::Completed as i32)));
    assert_eq!(
        changes,
        [
            pb::OrderStatus::Shipped as i32,
            pb::OrderStatus::Completed as i32
        ]
    );
    // Another customer's order is not found.
    let other = app.customer("eve@example.com").await;
    let refused = client.watch_order(watch(&other)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn one_user_cannot_hold_more_than_the_limit_in_checkouts_still_running() {
    let app = spawn_app_with(Options {
        env: vec![
            ("ORDER_MAX_HELD_UNITS", "3".to_owned()),
            // Each charge takes a while, so the first checkout still holds its units.
            ("PAYMENT_PROVIDER_DELAY_MS", "2500".to_owned()),
            ("ORDER_CALL_TIMEOUT_MS", "6000".to_owned()),
            ("ORDER_CHECKOUT_BUDGET_MS", "10000".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "HOLD-1", 100, 50).await;
    let shopper = app.customer("ada@example.com").await;
    add(&app, &shopper, "HOLD-1", 2).await;

    let first = checkout(&app, &shopper, "hold-1", VISA_OK);
    let second = async {
        // Tokenizing takes 2.5 s too: this one places its order while the first is charged.
        tokio::time::sleep(Duration::from_millis(500)).await;
        checkout(&app, &shopper, "hold-2", VISA_OK).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.body["status"], "PAID", "{}", first.text);
    let problem = second.assert_problem(409);
    assert!(
        problem["detail"].as_str().unwrap().contains("held"),
        "{problem}"
    );
    // Once the first checkout is done, the units are no longer held.
    add(&app, &shopper, "HOLD-1", 2).await;
    let third = checkout(&app, &shopper, "hold-3", VISA_OK).await;
    assert_eq!(third.body["status"], "PAID", "{}", third.text);
}

/// How many calls of `method` the product service has served (the whole mesh runs in this
/// process, so the gateway's `/metrics` shows it).
async fn product_calls(app: &TestApp, method: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.gateway))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let path = format!("method=\"/shopmesh.product.v1.ProductService/{method}\"");
    text.lines()
        .filter(|line| line.starts_with("grpc_server_requests_total{") && line.contains(&path))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn adding_to_a_cart_reads_each_product_from_the_catalog_once() {
    let app = spawn_app().await;
    let admin = app.admin("cart-admin@example.com").await;
    stock_product(&app, &admin, "ONCE-1", 1250, 10).await;
    stock_product(&app, &admin, "ONCE-2", 800, 10).await;
    let shopper = app.customer("once@example.com").await;

    // The first product: looked up by SKU, and the cart of one line is priced from that answer.
    let (by_sku, batch) = (
        product_calls(&app, "GetProductBySku").await,
        product_calls(&app, "BatchGetProducts").await,
    );
    let first = add(&app, &shopper, "ONCE-1", 2).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["total"]["amount"], 2500);
    assert_eq!(product_calls(&app, "GetProductBySku").await, by_sku + 1.0);
    assert_eq!(product_calls(&app, "BatchGetProducts").await, batch);

    // The second: its own lookup, and one read of the other line's current price.
    let second = add(&app, &shopper, "ONCE-2", 1).await;
    assert_eq!(second.status, 201, "{}", second.text);
    assert_eq!(second.body["total"]["amount"], 3300);
    assert_eq!(second.body["item_count"], 3);
    assert_eq!(product_calls(&app, "GetProductBySku").await, by_sku + 2.0);
    assert_eq!(product_calls(&app, "BatchGetProducts").await, batch + 1.0);
}
