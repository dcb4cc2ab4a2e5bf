//! The edge's one-second micro-cache of anonymous catalog reads: browsing the same page twice
//! is served by nginx, a request with credentials always goes through, and no cache ever
//! stands between a price or stock change and a cart or checkout.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::checkout::{VISA_OK, add, checkout, stock_product};
use crate::helpers::{Reply, TestApp, spawn_app};

fn cache(reply: &Reply) -> &str {
    reply
        .headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn set_price(app: &TestApp, admin: &str, id: &str, sku: &str, amount: i64) {
    let reply = Reply::from(
        app.http
            .put(app.url(&format!("/api/admin/products/{id}")))
            .bearer_auth(admin)
            .header("if-match", "*")
            .json(&json!({
                "name": format!("Product {sku}"), "active": true,
                "price": {"amount": amount, "currency": "USD"}
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn anonymous_catalog_reads_are_micro_cached_and_credentials_bypass_the_cache() {
    let app = spawn_app().await;
    let admin = app.admin("cache-admin@example.com").await;
    let id = stock_product(&app, &admin, "CACHE-1", 1000, 5).await;
    let path = format!("/api/products/{id}");

    let first = app.get(&path, None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = app.get(&path, None).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        cache(&second),
        "HIT",
        "the second anonymous read comes from the edge"
    );
    assert_eq!(second.body, first.body);
    // Each response carries the id of its own request, not the one that filled the cache.
    let ids: Vec<_> = [&first, &second]
        .iter()
        .map(|r| r.headers["x-request-id"].to_str().unwrap().to_owned())
        .collect();
    assert_ne!(ids[0], ids[1]);

    let signed_in = app.get(&path, Some(&admin)).await;
    assert_eq!(signed_in.status, 200);
    assert_eq!(cache(&signed_in), "BYPASS");

    // A change is visible to anonymous readers within the cache's second.
    set_price(&app, &admin, &id, "CACHE-1", 1500).await;
    assert_eq!(
        app.get(&path, Some(&admin)).await.body["price"]["amount"],
        1500,
        "a reader with credentials sees the change at once"
    );
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let page = app.get(&path, None).await;
        if page.body["price"]["amount"] == 1500 {
            break;
        }
        assert!(Instant::now() < until, "still the old price: {}", page.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only successful reads are kept: a missing product is asked for every time.
    let missing = format!("/api/products/{}", uuid::Uuid::new_v4());
    app.get(&missing, None).await.assert_problem(404);
    let again = app.get(&missing, None).await;
    again.assert_problem(404);
    assert_ne!(cache(&again), "HIT");
}

#[tokio::test]
async fn carts_and_checkout_never_see_a_cached_price_or_stock() {
    let app = spawn_app().await;
    let admin = app.admin("cache-admin@example.com").await;
    let id = stock_product(&app, &admin, "CACHE-2", 1000, 1).await;
    let path = format!("/api/products/{id}");
    let early = app.customer("early@example.com").await;
    let late = app.customer("late@example.com").await;

    // The page is in the edge's cache at 10.00, in stock.
    app.get(&path, None).await;
    let cached = app.get(&path, None).await;
    assert_eq!(cache(&cached), "HIT");
    assert_eq!(cached.body["price"]["amount"], 1000);

    // The price goes up; carts and orders take the new one at once, whatever the cache holds.
    set_price(&app, &admin, &id, "CACHE-2", 1700).await;
    let added = add(&app, &early, "CACHE-2", 1).await;
    assert!(added.status == 201 || added.status == 200, "{}", added.text);
    let cart = app.get("/api/cart", Some(&early)).await;
    assert_eq!(cart.body["total"]["amount"], 1700, "{}", cart.text);
    let order = checkout(&app, &early, "cache-early", VISA_OK).await;
    assert_eq!(order.status, 201, "{}", order.text);
    assert_eq!(order.body["status"], "PAID", "{}", order.text);
    assert_eq!(order.body["total"]["amount"], 1700, "{}", order.text);

    // The one unit is sold. Another shopper, who may still be shown a cached page, cannot
    // buy it.
    let added = add(&app, &late, "CACHE-2", 1).await;
    if added.status == 201 || added.status == 200 {
        let order = checkout(&app, &late, "cache-late", VISA_OK).await;
        assert_ne!(order.body["status"], "PAID", "{}", order.text);
    } else {
        assert_eq!(added.status, 409, "{}", added.text);
    }
    assert_eq!(
        app.get(&path, Some(&admin)).await.body["in_stock"],
        false,
        "the product service knows it is sold out"
    );
}
