//! Checkout throughput end to end through nginx: the whole mesh (gateway, cart, order, product,
//! payment, delivery, user) in this process on real PostgreSQL, Redis and the MongoDB wire
//! server, started by the same harness as the end-to-end tests. Run with
//! `./scripts/bench-checkout` (which starts what the harness needs), or
//! `cargo bench --bench checkout` when MongoDB and nginx are already available.
//!
//! Each checkout is what a shopper does: add two items to the cart, check out with the test card
//! that succeeds, get the order back PAID. Cases: checkouts over 200 SKUs, and checkouts that all
//! want one hot SKU (plus one other), each at concurrency 1, 16 and 64, for a few seconds. Printed
//! per case: checkouts/s, p50 and p99 of the whole sequence and of the checkout call alone. Then
//! the run checks the books: the units of paid orders equal the stock committed per SKU, nothing
//! stays reserved, and the payment ledger holds exactly one capture per paid order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use helpers::{Options, TestApp, spawn_app_with};

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const CASE_TIME: Duration = Duration::from_secs(6);
const SKUS: usize = 200;
const STOCK: i32 = 100_000;

struct Case {
    checkouts: usize,
    errors: HashMap<String, usize>,
    elapsed: Duration,
    whole: Vec<Duration>,
    checkout_only: Vec<Duration>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn post(
    app: &TestApp,
    path: &str,
    token: &str,
    body: Value,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = app.http.post(app.url(path)).bearer_auth(token).json(&body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn run_case(
    app: &Arc<TestApp>,
    users: &[String],
    concurrency: usize,
    hot: bool,
    seq: &Arc<AtomicUsize>,
) -> Case {
    let started = Instant::now();
    let results = futures::future::join_all((0..concurrency).map(|worker| {
        let app = app.clone();
        let token = users[worker].clone();
        let seq = seq.clone();
        async move {
            let mut whole = Vec::new();
            let mut only = Vec::new();
            let mut errors: HashMap<String, usize> = HashMap::new();
            while started.elapsed() < CASE_TIME {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let first = if hot { "HOT-0".to_owned() } else { format!("SKU-{}", n % SKUS) };
                let second = format!("SKU-{}", (n * 7 + 3) % SKUS);
                let t0 = Instant::now();
                let mut failed = None;
                for sku in [&first, &second] {
                    let (status, _) = post(&app, "/api/cart/items", &token, json!({"sku": sku, "quantity": 1}), None).await;
                    if status != 201 && status != 200 {
                        failed = Some(format!("add {status}"));
                    }
                }
                let t1 = Instant::now();
                let (status, body) = post(
                    &app,
                    "/api/cart/checkout",
                    &token,
                    json!({
                        "shipping_address": {"recipient": "Bench", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
                        "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123"}
                    }),
                    Some(&format!("bench-{n}")),
                )
                .await;
                let done = Instant::now();
                if status != 201 || body["status"] != "PAID" {
                    failed = Some(format!("checkout {status} {}", body["status"].as_str().unwrap_or("")));
                }
                match failed {
                    None => {
                        whole.push(done - t0);
                        only.push(done - t1);
                    }
                    Some(kind) => {
                        *errors.entry(kind).or_default() += 1;
                        // Start the next checkout from an empty cart.
                        let _ = app.http.delete(app.url("/api/cart")).bearer_auth(&token).send().await;
                    }
                }
            }
            (whole, only, errors)
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let mut case = Case {
        checkouts: 0,
        errors: HashMap::new(),
        elapsed,
        whole: Vec::new(),
        checkout_only: Vec::new(),
    };
    for (whole, only, errors) in results {
        case.checkouts += whole.len();
        case.whole.extend(whole);
        case.checkout_only.extend(only);
        for (k, v) in errors {
            *case.errors.entry(k).or_default() += v;
        }
    }
    case.whole.sort();
    case.checkout_only.sort();
    case
}

async fn scalar(app: &TestApp, service: &str, sql: &str) -> i64 {
    let url = app
        .env
        .raw(&format!("{}_DATABASE_URL", service.to_ascii_uppercase()))
        .unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

#[tokio::main]
async fn main() {
    let app = Arc::new(
        spawn_app_with(Options {
            env: vec![
                ("RUST_LOG", "error".to_owned()),
                // The courier stays away: this measures checkout, not delivery.
                ("DELIVERY_COURIER_STEP_MS", "3600000".to_owned()),
                ("ORDER_MAX_HELD_UNITS", "100000".to_owned()),
            ],
            ..Options::default()
        })
        .await,
    );
    let admin = app.admin("bench-admin@example.com").await;
    futures::stream::iter((0..SKUS).map(|i| format!("SKU-{i}")).chain(["HOT-0".to_owned()]))
        .for_each_concurrent(8, |sku| {
            let app = app.clone();
            let admin = admin.clone();
            async move {
                let reply = app
                    .post(
                        "/api/admin/products",
                        json!({"sku": sku, "name": format!("Bench {sku}"), "description": "bench",
                               "price": {"amount": 1000, "currency": "USD"}, "initial_stock": STOCK}),
                        Some(&admin),
                    )
                    .await;
                assert_eq!(reply.status, 201, "{}", reply.text);
            }
        })
        .await;
    let users: Vec<String> = futures::stream::iter(0..64)
        .map(|i| {
            let app = app.clone();
            async move { app.customer(&format!("bench{i}@example.com")).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    println!(
        "checkout through nginx (add two items + checkout with 4242…, order PAID), {}s per case",
        CASE_TIME.as_secs()
    );
    println!(
        "{:<22} {:>5} {:>11} {:>9} {:>9} {:>12} {:>12}  errors",
        "case", "conc", "checkouts/s", "p50 ms", "p99 ms", "co p50 ms", "co p99 ms"
    );
    let seq = Arc::new(AtomicUsize::new(0));
    for hot in [false, true] {
        for concurrency in CONCURRENCY {
            let case = run_case(&app, &users, concurrency, hot, &seq).await;
            println!(
                "{:<22} {:>5} {:>11.1} {:>9.1} {:>9.1} {:>12.1} {:>12.1}  {:?}",
                if hot {
                    "hot SKU + one other"
                } else {
                    "200 SKUs"
                },
                concurrency,
                case.checkouts as f64 / case.elapsed.as_secs_f64(),
                pct(&case.whole, 0.5),
                pct(&case.whole, 0.99),
                pct(&case.checkout_only, 0.5),
                pct(&case.checkout_only, 0.99),
                case.errors,
            );
        }
    }

    // The books: stock committed per SKU equals the units of paid orders, nothing stays held,
    // one capture per paid order.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paid = scalar(
        &app,
        "order",
        "select count(*) from orders where status = 2",
    )
    .await;
    let sold_units = scalar(&app, "order", "select coalesce(sum(l.quantity), 0)::bigint from orders o join order_lines l on l.order_id = o.id where o.status = 2").await;
    let committed = scalar(
        &app,
        "product",
        &format!("select coalesce(sum({STOCK} - on_hand), 0)::bigint from stock"),
    )
    .await;
    let reserved = scalar(
        &app,
        "product",
        "select coalesce(sum(reserved), 0)::bigint from stock",
    )
    .await;
    let captures = scalar(
        &app,
        "payment",
        "select count(*) from ledger_entries where kind = 'capture'",
    )
    .await;
    let doubled = scalar(&app, "payment", "select count(*) from (select payment_id from ledger_entries where kind = 'capture' group by payment_id having count(*) > 1) d").await;
    println!(
        "paid orders {paid}, units sold {sold_units}, stock committed {committed}, still reserved {reserved}, captures {captures}, payments captured twice {doubled}"
    );
    assert_eq!(sold_units, committed, "paid units equal committed stock");
    assert_eq!(reserved, 0, "nothing stays reserved");
    assert_eq!(captures, paid, "one capture per paid order");
    assert_eq!(doubled, 0);
    println!("books balance");
}
