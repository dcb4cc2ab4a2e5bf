use futures::future::join_all;
use serde_json::json;

use crate::helpers::{PASSWORD, spawn_app};

#[tokio::test]
async fn malformed_and_mistyped_bodies_are_problems_and_store_nothing() {
    let app = spawn_app().await;

    let malformed = app
        .http
        .post(app.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body("{\"email\": \"a@example.com\", ")
        .send()
        .await
        .unwrap();
    crate::helpers::Reply::from(malformed)
        .await
        .assert_problem(400);

    let missing = app
        .post(
            "/api/auth/register",
            json!({"email": "a@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    let body = missing.assert_problem(422);
    assert!(body["detail"].as_str().unwrap().contains("name"), "{body}");

    let unknown = app
        .post(
            "/api/auth/register",
            json!({"email": "a@example.com", "password": PASSWORD, "name": "A", "role": "admin"}),
            None,
        )
        .await;
    let body = unknown.assert_problem(422);
    assert!(body["detail"].as_str().unwrap().contains("role"), "{body}");

    let not_json = app
        .http
        .post(app.url("/api/auth/register"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    crate::helpers::Reply::from(not_json)
        .await
        .assert_problem(415);

    let invalid_email = app
        .post(
            "/api/auth/register",
            json!({"email": "not-an-email", "password": PASSWORD, "name": "A"}),
            None,
        )
        .await;
    let body = invalid_email.assert_problem(422);
    assert_eq!(body["errors"][0]["field"], "email");

    let weak = app
        .post(
            "/api/auth/register",
            json!({"email": "weak@example.com", "password": "password", "name": "A"}),
            None,
        )
        .await;
    let body = weak.assert_problem(422);
    assert_eq!(body["errors"][0]["field"], "password");

    // 1 MiB: over the body limit (the edge refuses it before it reaches the gateway).
    let huge =
        json!({"email": "big@example.com", "password": PASSWORD, "name": "x".repeat(1 << 20)});
    let too_large = app.post("/api/auth/register", huge, None).await;
    too_large.assert_problem(413);

    assert_eq!(app.stored_users().await, 0, "nothing was stored");
}

#[tokio::test]
async fn duplicate_email_in_any_letter_case_is_409() {
    let app = spawn_app().await;
    assert_eq!(app.register("Turing@Example.com", "Alan").await.status, 201);
    for variant in [
        "turing@example.com",
        "TURING@EXAMPLE.COM",
        "  TuRiNg@example.com ",
    ] {
        let again = app.register(variant, "Impostor").await;
        again.assert_problem(409);
    }
    assert_eq!(app.stored_users().await, 1);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = spawn_app().await;
    app.register("known@example.com", "Known").await;
    let wrong = app
        .post(
            "/api/auth/login",
            json!({"email": "known@example.com", "password": "Not-The-Password-1"}),
            None,
        )
        .await;
    let unknown = app
        .post(
            "/api/auth/login",
            json!({"email": "nobody@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    wrong.assert_problem(401);
    unknown.assert_problem(401);
    assert_eq!(wrong.text, unknown.text, "indistinguishable bodies");
    assert_eq!(
        wrong.headers.get("www-authenticate"),
        unknown.headers.get("www-authenticate")
    );
}

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_email_create_one_account() {
    let app = spawn_app().await;
    let attempts = (0..50).map(|i| {
        let app = &app;
        async move {
            let email = if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@example.com"
            };
            app.register(email, "Racer").await.status
        }
    });
    let statuses = join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    assert_eq!(app.stored_users().await, 1);
}

#[tokio::test]
async fn profile_and_address_validation() {
    let app = spawn_app().await;
    let token = app.customer("val@example.com").await;
    let bad_phone = app
        .patch("/api/users/me", json!({"phone": "call me maybe"}), &token)
        .await;
    assert_eq!(bad_phone.assert_problem(422)["errors"][0]["field"], "phone");
    let empty_name = app
        .patch("/api/users/me", json!({"name": "  "}), &token)
        .await;
    assert_eq!(empty_name.assert_problem(422)["errors"][0]["field"], "name");
    let me = app.get("/api/users/me", Some(&token)).await;
    assert_eq!(me.body["name"], "Test Customer", "nothing changed");

    let bad_address = app
        .post(
            "/api/users/me/addresses",
            json!({"recipient": "", "line1": "x", "city": "y", "postal_code": "1", "country": "Germany"}),
            Some(&token),
        )
        .await;
    let body = bad_address.assert_problem(422);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["recipient", "country"]);
    let list = app.get("/api/users/me/addresses", Some(&token)).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 0);
}
