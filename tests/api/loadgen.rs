//! `shopmesh loadgen` against the real mesh through nginx: what its user sees in the JSON report
//! and the SVG chart, and that the orders it reports are in the order service's database.

use clap::Parser;
use serde_json::Value;
use shopmesh_loadgen::{
    ADD_ITEM, ADDS_PER_CART, CHECKOUT, EMPTY_CART, LoadgenArgs, MEASURING_ENDED, MEASURING_STARTED,
    PRODUCT, SEARCH, UPDATE_ITEM, VIEW_CART,
};

use crate::checkout::{count, stock_product};
use crate::helpers::{Options, TempDir, TestApp, spawn_app_with};

const SKUS: [&str; 3] = ["LG-MUG-1", "LG-TEE-1", "LG-LAMP-1"];

/// Three products with `stock` units each, and an admin's token.
async fn stocked_app(stock: i32) -> (TestApp, String) {
    let app = spawn_app_with(Options::default()).await;
    let admin = app.admin("loadgen-admin@example.com").await;
    for (sku, price) in SKUS.into_iter().zip([1250, 2000, 4999]) {
        stock_product(&app, &admin, sku, price, stock).await;
    }
    (app, admin)
}

fn args(app: &TestApp, dir: &TempDir, extra: &[&str]) -> LoadgenArgs {
    args_at(&app.edge, dir, extra)
}

/// As [`args`], against `target` (the edge or the gateway).
fn args_at(target: &str, dir: &TempDir, extra: &[&str]) -> LoadgenArgs {
    let json = dir.0.join("report.json").display().to_string();
    let svg = dir.0.join("latency.svg").display().to_string();
    let mut argv = vec![
        "loadgen",
        "--target",
        target,
        "--users",
        "6",
        "--duration",
        "3s",
        "--json",
        &json,
        "--svg",
        &svg,
        "--quiet",
    ];
    argv.extend_from_slice(extra);
    LoadgenArgs::try_parse_from(argv).unwrap()
}

/// The report as the user reads it from the file.
fn read_report(dir: &TempDir) -> Value {
    let text = std::fs::read_to_string(dir.0.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn endpoint<'a>(report: &'a Value, scenario: &str, name: &str) -> &'a Value {
    report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["scenario"] == scenario && e["endpoint"] == name)
        .unwrap_or_else(|| panic!("no {scenario} {name} in {report:#}"))
}

/// Every endpoint and scenario entry: requests made, none failed, percentiles in order.
fn assert_clean(report: &Value) {
    assert_eq!(report["errors"], 0, "{report:#}");
    for entry in report["endpoints"].as_array().unwrap() {
        assert!(entry["requests"].as_u64().unwrap() > 0, "{entry}");
        assert_eq!(entry["requests"], entry["ok"], "{entry}");
        assert_eq!(entry["errors"], serde_json::json!({}), "{entry}");
        let l = &entry["latency_ms"];
        let [p50, p90, p99, p999, max] =
            ["p50", "p90", "p99", "p99_9", "max"].map(|p| l[p].as_f64().unwrap());
        assert!(
            0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
            "{entry}"
        );
    }
    for scenario in report["scenarios"].as_array().unwrap() {
        assert!(scenario["iterations"].as_u64().unwrap() > 0, "{scenario}");
        assert_eq!(scenario["iterations"], scenario["ok"], "{scenario}");
        assert!(!scenario["timeline"].as_array().unwrap().is_empty());
        for point in scenario["timeline"].as_array().unwrap() {
            assert!(
                point["p50_ms"].as_f64() <= point["p99_ms"].as_f64(),
                "{point}"
            );
        }
    }
}

#[tokio::test]
async fn the_open_loop_mix_browses_fills_carts_and_places_the_orders_it_reports() {
    // Plenty of stock, as `shopmesh seed` provides.
    let (app, _) = stocked_app(10_000).await;
    let dir = TempDir::new("shopmesh-loadgen");
    let returned = shopmesh_loadgen::run(&args(&app, &dir, &["--scenario", "mix", "--rate", "20"]))
        .await
        .unwrap();
    // Shown when the test fails: the table the command prints.
    println!("{}", shopmesh_loadgen::report::table(&returned));

    let report = read_report(&dir);
    assert_eq!(report["mode"], "rate");
    assert_eq!(report["rate"], 20.0);
    assert_eq!(
        report["mix"],
        serde_json::json!({"browse": 70, "cart": 20, "checkout": 10})
    );
    assert_eq!(report["products_in_stock"], 3);
    // Every endpoint of each scenario was called (the empty-cart request of a checkout only
    // follows a failed one, so it is not expected here).
    for (scenario, name) in [
        ("browse", SEARCH),
        ("browse", PRODUCT),
        ("cart", ADD_ITEM),
        ("cart", UPDATE_ITEM),
        ("cart", VIEW_CART),
        ("cart", EMPTY_CART),
        ("checkout", ADD_ITEM),
        ("checkout", CHECKOUT),
    ] {
        endpoint(&report, scenario, name);
    }
    assert!(
        report["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !(e["scenario"] == "checkout" && e["endpoint"] == EMPTY_CART)),
        "no checkout failed, so none needed its cart emptied: {report:#}"
    );
    assert_clean(&report);
    // 20 iterations a second for 3 s in a 7:2:1 rotation.
    let iterations = |name: &str| {
        report["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["scenario"] == name)
            .unwrap()["iterations"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        (
            iterations("browse"),
            iterations("cart"),
            iterations("checkout")
        ),
        (42, 12, 6),
        "{report:#}"
    );

    // Each reported checkout is a paid order, and there are no others.
    let paid = report["checkouts"]["paid"].as_i64().unwrap();
    assert_eq!(paid, 6);
    assert_eq!(
        endpoint(&report, "checkout", CHECKOUT)["ok"].as_i64(),
        Some(paid)
    );
    assert_eq!(
        count(&app, "order", "select count(*) from orders").await,
        paid
    );
    assert_eq!(
        count(
            &app,
            "payment",
            "select count(*) from payments where status = 'SUCCEEDED'"
        )
        .await,
        paid
    );
    // The file and the returned report agree.
    assert_eq!(serde_json::to_value(&returned).unwrap(), report);

    let svg = std::fs::read_to_string(dir.0.join("latency.svg")).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    for label in ["browse p50", "cart p99", "checkout p99", "latency (ms)"] {
        assert!(svg.contains(label), "{label} in {svg}");
    }
    assert!(!svg.contains("<script"));
}

#[tokio::test]
async fn the_closed_loop_restocks_keeps_its_workers_busy_and_counts_deliberate_declines() {
    // Two units each: the run would sell out within a second without --restock.
    let (app, admin) = stocked_app(2).await;
    let dir = TempDir::new("shopmesh-loadgen");
    let report = shopmesh_loadgen::run(&args(
        &app,
        &dir,
        &[
            "--scenario",
            "checkout",
            "--concurrency",
            "3",
            "--decline-percent",
            "50",
            "--restock",
            "1000",
            "--admin-token",
            &admin,
        ],
    ))
    .await
    .unwrap();
    println!("{}", shopmesh_loadgen::report::table(&report));

    let file = read_report(&dir);
    assert_eq!(file["mode"], "concurrency");
    assert_eq!(file["concurrency"], 3);
    assert_eq!(file["scenarios"].as_array().unwrap().len(), 1);
    // A declined checkout answers 201 with the order CANCELLED for PAYMENT_FAILED, which is
    // what the declining card is for; its cart is then emptied.
    endpoint(&file, "checkout", EMPTY_CART);
    assert_clean(&file);
    let (paid, declined) = (report.checkouts.paid, report.checkouts.declined);
    assert!(paid > 0 && declined > 0, "{file:#}");
    assert!(paid.abs_diff(declined) <= 3, "{file:#}");
    // Three workers back to back: no shopper ever waited for another.
    assert_eq!(report.user_waits, 0);
    let checkouts = report.endpoint("checkout", CHECKOUT).unwrap();
    assert_eq!(checkouts.ok, paid + declined);

    // One order per reported checkout; the declined ones cancelled (status 5), and only the
    // paid ones charged.
    assert_eq!(
        count(&app, "order", "select count(*) from orders").await,
        i64::try_from(paid + declined).unwrap()
    );
    assert_eq!(
        count(
            &app,
            "order",
            "select count(*) from orders where status = 5"
        )
        .await,
        i64::try_from(declined).unwrap()
    );
    assert_eq!(
        count(
            &app,
            "payment",
            "select count(*) from payments where status = 'SUCCEEDED'"
        )
        .await,
        i64::try_from(paid).unwrap()
    );
    // Each product was topped up to 1,000 units; what is gone was sold in the paid orders.
    let sold = count(
        &app,
        "order",
        "select coalesce(sum(l.quantity), 0)::bigint from orders o \
         join order_lines l on l.order_id = o.id where o.status <> 5",
    )
    .await;
    let mut on_hand = 0;
    for sku in SKUS {
        on_hand += crate::checkout::stock(&app, &admin, sku).await.0;
    }
    assert!(sold > 0);
    assert_eq!(on_hand + sold, 3 * 1000, "{sold} units sold");
    assert!(
        std::fs::read_to_string(dir.0.join("latency.svg"))
            .unwrap()
            .contains("closed loop with 3 workers")
    );
}

#[tokio::test]
async fn the_loadgen_command_prints_its_table_on_stdout() {
    let (app, _) = stocked_app(10).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shopmesh"))
        .args([
            "loadgen",
            "--target",
            &app.edge,
            "--scenario",
            "browse",
            "--rate",
            "10",
            "--duration",
            "2s",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("loadgen: catalog: 3 products, 3 in stock"),
        "{stderr}"
    );
    assert!(
        stdout.starts_with("shopmesh loadgen: browse against"),
        "{stdout}"
    );
    let row = |endpoint: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with("browse") && line.contains(endpoint))
            .unwrap_or_else(|| panic!("no {endpoint} row in {stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // scenario, method, path, requests, req/s, four percentiles, errors.
    let search = row(SEARCH);
    assert_eq!(search[3], "20", "{stdout}");
    assert_eq!(search.last(), Some(&"-"), "{stdout}");
    assert_eq!(row(PRODUCT)[3], "40", "{stdout}");
    assert!(stdout.contains("60 requests, 0 failed"), "{stdout}");
}

/// The single-request scenarios scripts/bench measures endpoints with, against one test mesh.
#[tokio::test]
async fn the_single_request_scenarios_each_measure_their_one_endpoint() {
    let (app, _) = stocked_app(10_000).await;
    let dir = TempDir::new("shopmesh-loadgen");
    // Open loop at 100/s: below the test edge's nginx limit (1,000/s), which the cached
    // catalog responses would otherwise pass.
    let open_loop = ["--rate", "100"];
    let dir = &dir;
    let run = |target: &str, extra: Vec<&str>| {
        let args = args_at(target, dir, &[&open_loop[..], &extra[..]].concat());
        async move {
            let report = shopmesh_loadgen::run(&args).await.unwrap();
            println!("{}", shopmesh_loadgen::report::table(&report));
            // The file holds what was returned.
            let file = read_report(dir);
            assert_eq!(file["requests"], report.requests);
            assert_eq!(
                file["endpoints"].as_array().unwrap().len(),
                report.endpoints.len()
            );
            report
        }
    };

    // One fixed path, nothing read first: it works against any HTTP server (here the gateway's
    // /healthz, bypassing nginx), and nobody is registered.
    let healthz = run(
        &app.gateway,
        vec!["--scenario", "get", "--path", "/healthz"],
    )
    .await;
    let file = serde_json::to_value(&healthz).unwrap();
    assert_clean(&file);
    assert_eq!(file["scenario"], "get");
    assert_eq!(file["path"], "/healthz");
    assert_eq!(file["auth"], false);
    assert_eq!((healthz.users, healthz.products), (0, 0));
    assert_eq!(healthz.endpoints.len(), 1);
    let only = healthz.endpoint("get", "GET /healthz").unwrap();
    assert_eq!(only.requests, healthz.requests);
    assert_eq!(only.requests, 300, "{file:#}");

    // With --auth every request carries a registered shopper's token: /me answers 200.
    let me = run(
        &app.edge,
        vec!["--scenario", "get", "--path", "/api/users/me", "--auth"],
    )
    .await;
    assert_clean(&serde_json::to_value(&me).unwrap());
    assert!(me.auth);
    // The six shoppers of `args`.
    assert_eq!(me.users, 6);
    assert!(me.endpoint("get", "GET /api/users/me").unwrap().ok > 0);
    // A product page, and a search, per iteration: nothing else is requested.
    for (scenario, endpoint) in [("product", PRODUCT), ("search", SEARCH)] {
        let report = run(&app.edge, vec!["--scenario", scenario]).await;
        assert_clean(&serde_json::to_value(&report).unwrap());
        assert_eq!(report.products, 3);
        assert_eq!(report.users, 0);
        assert_eq!(report.endpoints.len(), 1, "{scenario}");
        let entry = report.endpoint(scenario, endpoint).unwrap();
        assert_eq!(
            entry.requests,
            report.scenario(scenario).unwrap().iterations
        );
    }

    // One unit into the shopper's cart per iteration; each of the six shoppers' carts is
    // emptied after every ADDS_PER_CART adds of its own, so that it never reaches the cart's caps.
    let carts = run(&app.edge, vec!["--scenario", "add-to-cart"]).await;
    assert_clean(&serde_json::to_value(&carts).unwrap());
    let adds = carts.endpoint("add-to-cart", ADD_ITEM).unwrap().requests;
    let empties = carts
        .endpoint("add-to-cart", EMPTY_CART)
        .map_or(0, |e| e.requests);
    let per_cart = u64::from(ADDS_PER_CART);
    assert_eq!(adds, 300, "100/s for 3 s");
    // Six shoppers with fewer than ADDS_PER_CART adds each would have made at most 6 × 39.
    assert!(empties > 0, "{adds} adds");
    assert!(
        empties * per_cart <= adds && adds < (empties + 6) * per_cart,
        "{adds} adds, {empties} carts emptied"
    );

    // Last, as its failed authentications may be rate-limited (429) after a while: without
    // --auth, /me answers 401.
    let anonymous = run(
        &app.edge,
        vec!["--scenario", "get", "--path", "/api/users/me"],
    )
    .await;
    let refused = anonymous.endpoint("get", "GET /api/users/me").unwrap();
    assert_eq!(refused.ok, 0);
    assert!(
        refused.errors.get("401").is_some_and(|n| *n > 0),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_loadgen_command_marks_when_measuring_starts_and_ends() {
    let (app, _) = stocked_app(10).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shopmesh"))
        .args([
            "loadgen",
            "--target",
            &app.gateway,
            "--scenario",
            "get",
            "--path",
            "/healthz",
            "--concurrency",
            "2",
            "--warmup",
            "1s",
            "--duration",
            "1s",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // scripts/bench samples CPU time at exactly these two lines, in this order.
    let lines: Vec<&str> = stderr.lines().collect();
    let started = lines
        .iter()
        .position(|l| l.starts_with(MEASURING_STARTED))
        .unwrap_or_else(|| panic!("{stderr}"));
    let ended = lines
        .iter()
        .position(|l| l.starts_with(MEASURING_ENDED))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(started < ended, "{stderr}");
    assert!(lines[started].contains("(1.0 s)"), "{stderr}");
    // No catalog is read for a fixed path.
    assert!(!stderr.contains("catalog:"), "{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.starts_with("get") && line.contains("GET /healthz"))
        .unwrap_or_else(|| panic!("no GET /healthz row in {stdout}"));
    assert!(row.trim_end().ends_with('-'), "no errors: {row}");
}
