//! The notification inbox through nginx and the gateway: a registration's welcome arrives by
//! event (user service outbox → RabbitMQ → notification consumer), and every route acts on the
//! caller's own notifications only.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_app};

async fn put(app: &TestApp, path: &str, body: Option<Value>, token: &str) -> Reply {
    let mut req = app.http.put(app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    Reply::from(req.send().await.expect("request")).await
}

/// The caller's inbox once it holds `count` notifications.
async fn inbox_of(app: &TestApp, token: &str, count: usize) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = app.get("/api/notifications", Some(token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if reply.body["items"].as_array().map(Vec::len) == Some(count) {
            return reply.body;
        }
        assert!(
            Instant::now() < until,
            "inbox never held {count}: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_inbox_is_the_callers_own() {
    let app = spawn_app().await;
    let ada = app.customer("ada.inbox@example.com").await;
    let bob = app.customer("bob.inbox@example.com").await;

    let inbox = inbox_of(&app, &ada, 1).await;
    let welcome = &inbox["items"][0];
    assert_eq!(welcome["kind"], "welcome");
    assert_eq!(welcome["channel"], "EMAIL");
    assert_eq!(welcome["subject"], "Welcome to shopmesh");
    assert_eq!(welcome["read"], false);
    assert!(welcome["read_at"].is_null());
    assert!(inbox["next_cursor"].is_null());
    let id = welcome["id"].as_str().unwrap().to_owned();
    inbox_of(&app, &bob, 1).await;

    // Someone else's notification, a malformed id: 404 problems, and nothing changes.
    put(&app, &format!("/api/notifications/{id}/read"), None, &bob)
        .await
        .assert_problem(404);
    app.delete(&format!("/api/notifications/{id}"), &bob)
        .await
        .assert_problem(404);
    app.delete("/api/notifications/not-a-uuid", &ada)
        .await
        .assert_problem(404);
    let unread = app.get("/api/notifications?unread=true", Some(&ada)).await;
    assert_eq!(unread.body["items"][0]["id"], id.as_str());

    // Bad query values are 400.
    for query in [
        "limit=0",
        "limit=101",
        "unread=maybe",
        "cursor=garbage",
        "page=2",
    ] {
        app.get(&format!("/api/notifications?{query}"), Some(&ada))
            .await
            .assert_problem(400);
    }
    app.get("/api/notifications", None)
        .await
        .assert_problem(401);

    // The owner reads it.
    let read = put(&app, &format!("/api/notifications/{id}/read"), None, &ada).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.body["read"], true);
    assert!(read.body["read_at"].is_string());
    let unread = app
        .get("/api/notifications?unread=true&limit=5", Some(&ada))
        .await;
    assert_eq!(unread.body["items"], json!([]));

    // Preferences: nothing muted at first; a PUT replaces them; an unknown kind is 422.
    let prefs = app.get("/api/notifications/preferences", Some(&ada)).await;
    assert_eq!(prefs.status, 200, "{}", prefs.text);
    assert_eq!(prefs.body, json!({"email_muted": []}));
    let stored = put(
        &app,
        "/api/notifications/preferences",
        Some(json!({"email_muted": ["order_shipped", "welcome", "order_shipped"]})),
        &ada,
    )
    .await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert_eq!(
        stored.body,
        json!({"email_muted": ["welcome", "order_shipped"]})
    );
    put(
        &app,
        "/api/notifications/preferences",
        Some(json!({"email_muted": ["carrier_pigeon"]})),
        &ada,
    )
    .await
    .assert_problem(422);
    let too_many = put(
        &app,
        "/api/notifications/preferences",
        Some(json!({"email_muted": vec!["welcome"; 8]})),
        &ada,
    )
    .await;
    let problem = too_many.assert_problem(422);
    assert_eq!(problem["errors"][0]["field"], "email_muted");
    let bobs = app.get("/api/notifications/preferences", Some(&bob)).await;
    assert_eq!(bobs.body, json!({"email_muted": []}));

    // Deleted once; the second time there is nothing to delete.
    let deleted = app.delete(&format!("/api/notifications/{id}"), &ada).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    app.delete(&format!("/api/notifications/{id}"), &ada)
        .await
        .assert_problem(404);
    inbox_of(&app, &ada, 0).await;
    inbox_of(&app, &bob, 1).await;
}
