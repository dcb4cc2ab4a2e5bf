//! The order service killed at every saga step boundary: after a restart each order ends either
//! PAID with a shipment or CANCELLED with its stock released, and nothing is captured twice.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::checkout::{VISA_OK, add, checkout, count, stock, stock_product, wait_order};
use crate::helpers::{Options, TestApp, spawn_app_with};

/// Starts `shopmesh serve --target order` as its own process, on the address the rest of the
/// test's mesh expects it at, with the same databases and identity keys.
async fn start_order(app: &TestApp, crash_at: Option<&str>) -> Child {
    let url = app.env.raw("ORDER_GRPC_URL").unwrap();
    let addr = url.trim_start_matches("http://").to_owned();
    let mut command = Command::new(env!("CARGO_BIN_EXE_shopmesh"));
    command
        .args(["serve", "--target", "order"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for key in app.env.keys_read() {
        if let Some(value) = app.env.raw(&key) {
            command.env(&key, value);
        }
    }
    for (name, url) in &app.grpc {
        command.env(format!("{}_GRPC_URL", name.to_ascii_uppercase()), url);
    }
    command
        .env("ORDER_GRPC_ADDR", &addr)
        .env("ORDER_GRPC_URL", &url)
        .env("ORDER_FAULT_CRASH_AT", crash_at.unwrap_or(""))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn");
    let child = command.spawn().expect("the order service starts");
    let until = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(Instant::now() < until, "the order service never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test]
async fn a_killed_order_service_finishes_or_compensates_every_saga_on_restart() {
    let app = spawn_app_with(Options {
        // The order service runs as a child process of this test.
        services: Some(vec!["user", "product", "payment", "delivery", "cart"]),
        env: vec![
            ("ORDER_SAGA_LEASE_MS", "1000".to_owned()),
            ("ORDER_RECOVERY_INTERVAL_MS", "200".to_owned()),
            // Every checkout below fails on purpose; the cart must keep calling the order service.
            ("GRPC_BREAKER_FAILURES", "1000".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "KILL-1", 1000, 20).await;
    let shopper = app.customer("ada@example.com").await;

    let points = [
        "before:reserve_stock",
        "after:reserve_stock",
        "before:charge_payment",
        "after:charge_payment",
        "before:commit_stock",
        "after:commit_stock",
        "before:create_shipment",
        "after:create_shipment",
    ];
    let mut paid_units = 0;
    for (i, point) in points.iter().enumerate() {
        let mut crashing = start_order(&app, Some(point)).await;
        let cleared = app
            .http
            .delete(app.url("/api/cart"))
            .bearer_auth(&shopper)
            .send()
            .await
            .unwrap();
        assert!(cleared.status().is_success());
        assert_eq!(add(&app, &shopper, "KILL-1", 1).await.status, 201);
        let reply = checkout(&app, &shopper, &format!("kill-{i}"), VISA_OK).await;
        assert!(
            reply.status >= 500,
            "{point}: the order service died, so no success: {}",
            reply.text
        );
        let exit = tokio::time::timeout(Duration::from_secs(10), crashing.wait())
            .await
            .expect("the crash hook fired")
            .unwrap();
        assert!(!exit.success(), "{point}: {exit:?}");

        let mut healthy = start_order(&app, None).await;
        let orders = app.get("/api/orders", Some(&shopper)).await;
        let items = orders.body["items"].as_array().unwrap();
        assert_eq!(
            items.len(),
            i + 1,
            "{point}: one order per checkout: {}",
            orders.text
        );
        let id = items[0]["id"].as_str().unwrap().to_owned();
        let order = wait_order(&app, &shopper, &id, Duration::from_secs(40), |o| {
            o["checkout_step"] == "COMPLETED" || o["checkout_step"] == "COMPENSATED"
        })
        .await;
        match order["status"].as_str().unwrap() {
            "PAID" | "SHIPPED" | "COMPLETED" => {
                assert!(
                    order["shipment_id"].as_str().is_some_and(|s| !s.is_empty()),
                    "{point}: a paid order has its shipment: {order}"
                );
                paid_units += 1;
            }
            "CANCELLED" => {}
            other => panic!("{point}: order ended {other}: {order}"),
        }
        // Whatever happened, nothing stays reserved and sold stock matches paid orders.
        let (on_hand, reserved, _) = stock(&app, &admin, "KILL-1").await;
        assert_eq!(reserved, 0, "{point}");
        assert_eq!(on_hand, 20 - paid_units, "{point}");
        healthy.kill().await.unwrap();
    }
    // A crash after charging must not lead to a second capture.
    assert_eq!(
        count(
            &app,
            "payment",
            "select count(*) from (select payment_id from ledger_entries \
             where kind = 'capture' group by payment_id having count(*) > 1) twice"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app,
            "payment",
            "select count(*) from payments where status = 'SUCCEEDED'"
        )
        .await,
        paid_units
    );
}
