//! The storefront and the admin console (static files served by nginx from `ui/`) driven end to
//! end in headless Chromium by the Node specs in `tests/ui/`, against the whole mesh behind its
//! nginx edge. Each test starts its own mesh, seeds it, runs one spec and asserts it passed.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::admin_ops::{park_an_unaddressable_order_paid, queue, register};
use crate::checkout::{VISA_OK, add, checkout};
use crate::helpers::{Options, PASSWORD, Reply, TestApp, repo_root, spawn_app, spawn_app_with};

const ADMIN: &str = "console-admin@example.com";

/// The catalog the specs shop in: (SKU, name, description, price in cents, stock).
const CATALOG: [(&str, &str, &str, i64, i32); 4] = [
    (
        "MUG-1",
        "Stoneware Coffee Mug",
        "A heavy mug that keeps coffee hot",
        1250,
        10,
    ),
    (
        "POT-1",
        "Enamel Coffee Pot",
        "Brews eight cups on any stove",
        3400,
        5,
    ),
    (
        "LAMP-1",
        "Walnut Desk Lamp",
        "A warm light for late work",
        4999,
        3,
    ),
    (
        "TOWEL-1",
        "Linen Tea Towel",
        "Soft, absorbent and quick to dry",
        800,
        20,
    ),
];

/// Creates the catalog and returns an admin's token and the first product's id.
async fn seed(app: &TestApp) -> (String, String) {
    let admin = app.admin(ADMIN).await;
    let mut first = String::new();
    for (sku, name, description, price, stock) in CATALOG {
        let reply = app
            .post(
                "/api/admin/products",
                json!({
                    "sku": sku, "name": name, "description": description,
                    "price": {"amount": price, "currency": "USD"}, "initial_stock": stock
                }),
                Some(&admin),
            )
            .await;
        assert_eq!(reply.status, 201, "create {sku}: {}", reply.text);
        if first.is_empty() {
            first = reply.body["id"].as_str().unwrap().to_owned();
        }
    }
    (admin, first)
}

fn ui_package() -> PathBuf {
    repo_root().join("tests/ui")
}

/// Node, the spec package's dependencies and Chromium must be installed (scripts/test does it):
/// a missing one fails the test with what to run.
fn check_tools() {
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let version = std::process::Command::new(&node).arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|out| out.status.success()),
        "`{node}` is not runnable: install Node.js 20+ (or set NODE)"
    );
    assert!(
        ui_package()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/ui` (scripts/test does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium (scripts/test does)"
    );
}

/// Runs `node tests/ui/<spec>` against the test's edge and fails with its output unless it
/// exits 0.
async fn run_spec(app: &TestApp, spec: &str, env: &[(&str, String)]) {
    check_tools();
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let prefix = format!("ui{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let child = tokio::process::Command::new(node)
        .arg(ui_package().join(spec))
        .current_dir(ui_package())
        .env("BASE_URL", &app.edge)
        .env("UI_PREFIX", prefix)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let output = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{spec} did not finish within four minutes"))
        .expect("node output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{spec} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert!(
        stdout.starts_with("ok "),
        "{spec} reported no result:\n{stdout}\n{stderr}"
    );
}

#[tokio::test]
async fn a_shopper_signs_up_searches_checks_out_and_sees_the_order_completed() {
    let app = spawn_app().await;
    seed(&app).await;
    run_spec(&app, "shopper.mjs", &[]).await;
}

#[tokio::test]
async fn a_declined_card_shows_the_error_and_the_cart_keeps_its_items() {
    let app = spawn_app().await;
    seed(&app).await;
    run_spec(&app, "decline.mjs", &[]).await;
}

#[tokio::test]
async fn an_admin_refunds_an_order_and_sees_stock_and_analytics_change() {
    let app = spawn_app().await;
    seed(&app).await;
    let shopper = app.customer("buyer@example.com").await;
    assert_eq!(add(&app, &shopper, "TOWEL-1", 2).await.status, 201);
    let placed = checkout(&app, &shopper, "console-order", VISA_OK).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    assert_eq!(placed.body["status"], "PAID", "{}", placed.text);
    let order = placed.body["id"].as_str().unwrap().to_owned();
    run_spec(
        &app,
        "admin.mjs",
        &[
            ("ADMIN_EMAIL", ADMIN.to_owned()),
            ("ADMIN_PASSWORD", PASSWORD.to_owned()),
            ("ORDER_ID", order.clone()),
            ("ORDER_SKU", "TOWEL-1".to_owned()),
            ("ORDER_UNITS", "2".to_owned()),
            ("ORDER_TOTAL", "$16.00".to_owned()),
        ],
    )
    .await;
    // What the console showed is what the system holds.
    let admin = app.login(ADMIN).await.0;
    let after = app.get(&format!("/api/orders/{order}"), Some(&admin)).await;
    assert_eq!(after.body["status"], "REFUNDED", "{}", after.text);
    assert_eq!(after.body["refunded_total"]["amount"], 1600);
    let stock = app.get("/api/admin/inventory/TOWEL-1", Some(&admin)).await;
    assert_eq!(stock.body["stock"]["on_hand"], 20, "{}", stock.text);
}

#[tokio::test]
async fn an_admin_reads_rates_and_queues_runs_a_fault_drill_and_redrives_a_dead_letter() {
    let app = spawn_app_with(Options {
        env: vec![
            ("FAULT_INJECTION_ENABLED", "true".to_owned()),
            // A parked event within seconds.
            ("EVENTS_MAX_ATTEMPTS", "2".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let (admin, product) = seed(&app).await;
    // A parked event whose cause is then fixed: re-driven, it goes through.
    let (ghost, event) = park_an_unaddressable_order_paid(&app, &admin).await;
    register(&app, &ghost).await;
    let consumers: Vec<&str> = shopmesh::services()
        .iter()
        .flat_map(|service| service.subscriptions())
        .map(|subscription| subscription.consumer)
        .collect();
    assert!(consumers.contains(&"notification"), "{consumers:?}");
    run_spec(
        &app,
        "operations.mjs",
        &[
            ("ADMIN_EMAIL", ADMIN.to_owned()),
            ("ADMIN_PASSWORD", PASSWORD.to_owned()),
            ("PRODUCT_ID", product.clone()),
            ("PRODUCT_NAME", CATALOG[0].1.to_owned()),
            ("CONSUMERS", consumers.join(",")),
            ("DEAD_EVENT_ID", event),
        ],
    )
    .await;
    // What the console showed is what the system holds: no rule left, nothing parked, and the
    // product served again.
    let faults = app.get("/api/admin/faults", Some(&admin)).await;
    assert_eq!(
        faults.body,
        json!({"enabled": true, "faults": []}),
        "{}",
        faults.text
    );
    assert_eq!(queue(&app, &admin, "notification").await["dead_letters"], 0);
    let page = app
        .get(&format!("/api/products/{product}"), Some(&admin))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
}

#[tokio::test]
async fn the_main_pages_load_cleanly_and_are_keyboard_operable() {
    let app = spawn_app().await;
    let (_, product) = seed(&app).await;
    run_spec(&app, "smoke.mjs", &[("PRODUCT_ID", product)]).await;
}

#[tokio::test]
async fn the_edge_serves_the_ui_under_a_strict_policy_and_keeps_the_api_as_it_was() {
    let app = spawn_app().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str, accept: &str| http.get(app.url(path)).header("accept", accept).send();

    // Browsers are sent to the storefront; API clients still get the JSON index.
    let browser = get("/", "text/html,application/xhtml+xml,*/*;q=0.8")
        .await
        .unwrap();
    assert_eq!(browser.status(), 302);
    assert_eq!(browser.headers()["location"], "/shop/");
    let index = Reply::from(get("/", "application/json").await.unwrap()).await;
    assert_eq!(index.status, 200);
    assert_eq!(index.body["links"]["api"], "/api/");
    assert_eq!(index.body["links"]["shop"], "/shop/");
    assert_eq!(index.body["links"]["admin"], "/admin/");

    for (path, kind) in [
        ("/shop/", "text/html"),
        ("/admin/", "text/html"),
        ("/shop/app.js", "text/javascript"),
        ("/common/style.css", "text/css"),
    ] {
        let page = get(path, "*/*").await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let headers = page.headers();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {headers:?}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.starts_with("default-src 'self'"), "{path}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        // The server-level security headers are still there.
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
    let bare = get("/admin", "text/html").await.unwrap();
    assert_eq!(bare.status(), 301);
    assert_eq!(bare.headers()["location"], "/admin/");

    // Unknown paths, in the UI or not, are problem documents; the API carries no UI policy.
    for path in ["/shop/missing.js", "/nothing-here", "/common/"] {
        Reply::from(get(path, "text/html").await.unwrap())
            .await
            .assert_problem(404);
    }
    let posted = http.post(app.url("/shop/")).send().await.unwrap();
    Reply::from(posted).await.assert_problem(405);
    let api = get("/api/products", "application/json").await.unwrap();
    assert_eq!(api.status(), 200);
    assert!(api.headers().get("content-security-policy").is_none());
    assert!(api.headers().get("x-cache").is_some(), "the micro-cache");
}
