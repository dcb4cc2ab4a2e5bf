//! Ending access before an access token expires: logout, refresh-token reuse and access changes
//! (demotion) refuse the tokens already handed out, at the gateway and in the user service.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Reply, TestApp, spawn_app};

/// How long a revocation may take to reach every process (their caches hold entries for 1 s).
const PROPAGATION: Duration = Duration::from_secs(3);

/// Repeats `GET path` until it answers `status` (returning that reply) or `PROPAGATION` passed.
async fn eventually(app: &TestApp, path: &str, token: &str, status: u16) -> Reply {
    let started = Instant::now();
    loop {
        let reply = app.get(path, Some(token)).await;
        if reply.status == status || started.elapsed() > PROPAGATION {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Reply {
    app.post(
        "/api/auth/refresh",
        json!({"refresh_token": refresh_token}),
        None,
    )
    .await
}

async fn logout(app: &TestApp, refresh_token: &str) -> Reply {
    app.post(
        "/api/auth/logout",
        json!({"refresh_token": refresh_token}),
        None,
    )
    .await
}

fn assert_session_refused(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.text);
    reply.assert_problem(401);
    assert!(
        reply.headers.get("www-authenticate").is_some(),
        "{what}: WWW-Authenticate"
    );
}

#[tokio::test]
async fn logout_ends_the_access_token_of_that_session_only() {
    let app = spawn_app().await;
    app.register("ada@example.com", "Ada").await;
    let (phone, phone_refresh) = app.login("ada@example.com").await;
    let (laptop, laptop_refresh) = app.login("ada@example.com").await;
    let other = app.customer("grace@example.com").await;
    assert_eq!(app.get("/api/users/me", Some(&phone)).await.status, 200);

    let started = Instant::now();
    assert_eq!(logout(&app, &phone_refresh).await.status, 204);
    let refused = eventually(&app, "/api/users/me", &phone, 401).await;
    assert_session_refused(&refused, "access token after logout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused promptly"
    );
    let addresses = app.get("/api/users/me/addresses", Some(&phone)).await;
    assert_session_refused(&addresses, "another route after logout");

    // The refresh token of the ended session is dead as well.
    refresh(&app, &phone_refresh).await.assert_problem(401);

    // Other sessions of the same account, and other accounts, are untouched.
    assert_eq!(app.get("/api/users/me", Some(&laptop)).await.status, 200);
    assert_eq!(app.get("/api/users/me", Some(&other)).await.status, 200);
    let renewed = refresh(&app, &laptop_refresh).await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    let renewed = renewed.body["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/users/me", Some(renewed)).await.status, 200);

    // Logging out twice, or with a token of nobody's, changes nothing and is not an error.
    assert_eq!(logout(&app, &phone_refresh).await.status, 204);
    assert_eq!(app.get("/api/users/me", Some(&laptop)).await.status, 200);
}

#[tokio::test]
async fn the_gateway_refuses_an_ended_session_on_routes_of_other_services() {
    let app = spawn_app().await;
    app.admin("root@example.com").await;
    let (access, refresh_token) = app.login("root@example.com").await;
    // An admin route served by the product service: only the gateway checks the session.
    let inventory = "/api/admin/inventory/NO-SUCH-SKU";
    let before = app.get(inventory, Some(&access)).await;
    assert!(![401, 403].contains(&before.status), "{}", before.text);
    assert_eq!(logout(&app, &refresh_token).await.status, 204);
    let refused = eventually(&app, inventory, &access, 401).await;
    assert_session_refused(&refused, "ended session on a product route");
}

#[tokio::test]
async fn refresh_token_reuse_ends_the_session_of_its_access_tokens() {
    let app = spawn_app().await;
    app.register("victim@example.com", "Victim").await;
    let (_, stolen) = app.login("victim@example.com").await;
    let rotated = refresh(&app, &stolen).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let access = rotated.body["access_token"].as_str().unwrap().to_owned();
    let next = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/api/users/me", Some(&access)).await.status, 200);

    // The old refresh token comes back: the family is revoked, and so are its access tokens.
    refresh(&app, &stolen).await.assert_problem(401);
    let refused = eventually(&app, "/api/users/me", &access, 401).await;
    assert_session_refused(&refused, "access token of a reused family");
    refresh(&app, &next).await.assert_problem(401);
}

#[tokio::test]
async fn a_demoted_admin_loses_admin_access_on_the_next_request() {
    let app = spawn_app().await;
    let root = app.admin("root@example.com").await;
    let deputy = app.admin("deputy@example.com").await;
    let customer = app.customer("shopper@example.com").await;
    let inventory = "/api/admin/inventory/NO-SUCH-SKU";
    assert_eq!(app.get("/api/admin/users", Some(&deputy)).await.status, 200);
    let before = app.get(inventory, Some(&deputy)).await;
    assert!(
        ![401, 403].contains(&before.status),
        "an admin is admitted: {}",
        before.text
    );
    let me = app.get("/api/users/me", Some(&deputy)).await;
    let deputy_id = me.body["id"].as_str().unwrap().to_owned();

    let demoted = app
        .patch(
            &format!("/api/admin/users/{deputy_id}"),
            json!({"role": "customer"}),
            &root,
        )
        .await;
    assert_eq!(demoted.status, 200, "{}", demoted.text);
    assert_eq!(demoted.body["role"], "customer");

    // The very next request with the old token is refused: its role is stale, so it is a 401
    // (log in again), not a 403.
    let refused = app.get("/api/admin/users", Some(&deputy)).await;
    assert_session_refused(&refused, "demoted admin on the user service");
    let refused = eventually(&app, inventory, &deputy, 401).await;
    assert_session_refused(&refused, "demoted admin at the gateway");

    // Logged in again, the account is a customer: no admin access, its own data still there.
    let (fresh, _) = app.login("deputy@example.com").await;
    app.get("/api/admin/users", Some(&fresh))
        .await
        .assert_problem(403);
    app.get(inventory, Some(&fresh)).await.assert_problem(403);
    let me = app.get("/api/users/me", Some(&fresh)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["role"], "customer");

    // Nobody else is affected.
    assert_eq!(app.get("/api/admin/users", Some(&root)).await.status, 200);
    assert_ne!(app.get(inventory, Some(&root)).await.status, 401);
    assert_eq!(app.get("/api/users/me", Some(&customer)).await.status, 200);

    // Setting the same role again changes nothing, so it ends nothing.
    let same = app
        .patch(
            &format!("/api/admin/users/{deputy_id}"),
            json!({"role": "customer"}),
            &root,
        )
        .await;
    assert_eq!(same.status, 200, "{}", same.text);
    assert_eq!(app.get("/api/users/me", Some(&fresh)).await.status, 200);
}
