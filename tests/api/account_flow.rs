use serde_json::json;

use crate::helpers::{PASSWORD, spawn_app};

#[tokio::test]
async fn register_login_profile_addresses_refresh_reuse_and_logout_through_nginx() {
    let app = spawn_app().await;

    let reply = app
        .register("Ada.Lovelace@Example.com", "Ada Lovelace")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body["email"], "Ada.Lovelace@Example.com");
    assert_eq!(reply.body["role"], "customer");
    assert_eq!(reply.body["tier"], "standard");
    assert!(reply.body.get("password").is_none() && !reply.text.contains("argon2"));

    // Login is case-insensitive on the email.
    let login = app
        .post(
            "/api/auth/login",
            json!({"email": "ada.lovelace@example.COM", "password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    let access = login.body["access_token"].as_str().unwrap().to_owned();
    let refresh1 = login.body["refresh_token"].as_str().unwrap().to_owned();

    let me = app.get("/api/users/me", Some(&access)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["name"], "Ada Lovelace");
    assert_eq!(me.body["phone"], serde_json::Value::Null);

    let updated = app
        .patch(
            "/api/users/me",
            json!({"name": "Augusta Ada King", "phone": "+44 20 7946 0958"}),
            &access,
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["name"], "Augusta Ada King");
    assert_eq!(updated.body["phone"], "+44 20 7946 0958");

    let address = app
        .post(
            "/api/users/me/addresses",
            json!({
                "recipient": "Ada King", "line1": "12 St James's Square", "city": "London",
                "postal_code": "SW1Y 4JH", "country": "gb"
            }),
            Some(&access),
        )
        .await;
    assert_eq!(address.status, 201, "{}", address.text);
    assert_eq!(address.body["country"], "GB");
    assert_eq!(
        address.body["is_default"], true,
        "the first address is the default"
    );

    let me = app.get("/api/users/me", Some(&access)).await;
    assert_eq!(me.body["name"], "Augusta Ada King");
    assert_eq!(me.body["addresses"].as_array().unwrap().len(), 1);

    // Refresh rotates: a new pair, and the old refresh token is spent.
    let rotated = app
        .post(
            "/api/auth/refresh",
            json!({"refresh_token": refresh1}),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let refresh2 = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh1);
    let access2 = rotated.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/api/users/me", Some(&access2)).await.status, 200);

    // Re-using the rotated token is treated as theft: 401, and the whole family is revoked,
    // so even the newest token stops working.
    let reused = app
        .post(
            "/api/auth/refresh",
            json!({"refresh_token": refresh1}),
            None,
        )
        .await;
    reused.assert_problem(401);
    let newest = app
        .post(
            "/api/auth/refresh",
            json!({"refresh_token": refresh2}),
            None,
        )
        .await;
    newest.assert_problem(401);

    // A fresh login starts a new family; logout revokes it.
    let (_, refresh3) = app.login("ada.lovelace@example.com").await;
    let logout = app
        .post("/api/auth/logout", json!({"refresh_token": refresh3}), None)
        .await;
    assert_eq!(logout.status, 204);
    let after = app
        .post(
            "/api/auth/refresh",
            json!({"refresh_token": refresh3}),
            None,
        )
        .await;
    after.assert_problem(401);
}

#[tokio::test]
async fn addresses_keep_exactly_one_default() {
    let app = spawn_app().await;
    let token = app.customer("grace@example.com").await;
    let new_address = |city: &str| {
        json!({"recipient": "Grace Hopper", "line1": "1 Navy Way", "city": city,
               "postal_code": "20001", "country": "US"})
    };
    let first = app
        .post(
            "/api/users/me/addresses",
            new_address("Arlington"),
            Some(&token),
        )
        .await;
    let second = app
        .post(
            "/api/users/me/addresses",
            new_address("New York"),
            Some(&token),
        )
        .await;
    assert_eq!(second.status, 201);
    assert_eq!(second.body["is_default"], false);
    let first_id = first.body["id"].as_str().unwrap().to_owned();
    let second_id = second.body["id"].as_str().unwrap().to_owned();

    let moved = app
        .patch(
            &format!("/api/users/me/addresses/{second_id}"),
            json!({"is_default": true, "line2": "Suite 5"}),
            &token,
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(moved.body["is_default"], true);
    assert_eq!(moved.body["line2"], "Suite 5");

    let list = app.get("/api/users/me/addresses", Some(&token)).await;
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0]["id"],
        second_id.as_str(),
        "the default is listed first"
    );
    assert_eq!(items.iter().filter(|a| a["is_default"] == true).count(), 1);

    // Deleting the default hands it to the remaining address.
    let deleted = app
        .delete(&format!("/api/users/me/addresses/{second_id}"), &token)
        .await;
    assert_eq!(deleted.status, 204);
    let list = app.get("/api/users/me/addresses", Some(&token)).await;
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], first_id.as_str());
    assert_eq!(items[0]["is_default"], true);

    let missing = app
        .delete(&format!("/api/users/me/addresses/{second_id}"), &token)
        .await;
    missing.assert_problem(404);

    // Another user cannot touch this address.
    let other = app.customer("other@example.com").await;
    let foreign = app
        .patch(
            &format!("/api/users/me/addresses/{first_id}"),
            json!({"city": "Elsewhere"}),
            &other,
        )
        .await;
    foreign.assert_problem(404);
}

async fn login_as(app: &crate::helpers::TestApp, email: &str, password: &str) -> u16 {
    app.post(
        "/api/auth/login",
        json!({"email": email, "password": password}),
        None,
    )
    .await
    .status
}

fn retry_after(reply: &crate::helpers::Reply) -> u64 {
    reply
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", reply.headers))
}

#[tokio::test]
async fn failed_logins_back_off_per_account_and_per_client_ip() {
    let app = spawn_app().await;
    for (email, name) in [
        ("guessed@example.com", "Guessed"),
        ("bystander@example.com", "Bystander"),
    ] {
        assert_eq!(app.register(email, name).await.status, 201);
    }
    for _ in 0..6 {
        let status = login_as(&app, "guessed@example.com", "wrong password 1").await;
        assert!(status == 401 || status == 429, "{status}");
    }
    let refused = app
        .post(
            "/api/auth/login",
            json!({"email": "guessed@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    refused.assert_problem(429);
    let wait = retry_after(&refused);
    assert!((1..=900).contains(&wait), "{wait}");

    // The client IP is not yet at its own limit: another account still logs in.
    assert_eq!(login_as(&app, "bystander@example.com", PASSWORD).await, 200);

    // After the wait the right password works, and resets the account.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    assert_eq!(login_as(&app, "guessed@example.com", PASSWORD).await, 200);
    assert_eq!(
        login_as(&app, "guessed@example.com", "wrong again").await,
        401
    );

    // Guesses spread over many accounts from one client reach the per-IP limit, which then
    // holds back every account from that client.
    let mut refused_at = None;
    for i in 0..40 {
        let status = login_as(&app, &format!("nobody-{i}@example.com"), "wrong").await;
        if status == 429 {
            refused_at = Some(i);
            break;
        }
        assert_eq!(status, 401);
    }
    assert!(refused_at.is_some_and(|i| i >= 10), "{refused_at:?}");
    let held = app
        .post(
            "/api/auth/login",
            json!({"email": "bystander@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    held.assert_problem(429);
    assert!(retry_after(&held) >= 1);
}
