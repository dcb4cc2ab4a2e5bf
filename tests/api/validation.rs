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

fn product_body(sku: &str, attributes: serde_json::Value) -> serde_json::Value {
    json!({
        "sku": sku, "name": "Validated item", "price": {"amount": 500, "currency": "USD"},
        "attributes": attributes
    })
}

fn fields(body: &serde_json::Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn nul_and_control_characters_never_reach_a_store() {
    let app = spawn_app().await;
    let admin = app.admin("nul-admin@example.com").await;

    // Query parameters: bad values are 400 (or 422 where a filter names a field).
    for path in [
        "/api/products?q=a%00b",
        "/api/products?q=a%1Bb",
        "/api/products?cursor=a%00b",
        "/api/products?category_id=a%00b",
        "/api/products?q=shoe&cursor=YQBi",
    ] {
        let reply = app.get(path, None).await;
        assert!(
            reply.status == 400 || reply.status == 422,
            "{path}: {} {}",
            reply.status,
            reply.text
        );
        reply.assert_problem(reply.status);
    }
    let reply = app.get("/api/products?q=a%00b", None).await;
    let body = reply.assert_problem(400);
    assert!(body["detail"].as_str().unwrap().contains('q'), "{body}");
    assert_eq!(app.get("/api/products?q=shoe", None).await.status, 200);

    // Path segments: the edge already refuses a NUL in a path (400); other control characters
    // reach the services, which refuse them as invalid SKUs (422).
    for path in ["/api/products/sku/AB%00CD", "/api/admin/inventory/AB%00CD"] {
        app.get(path, Some(&admin)).await.assert_problem(400);
    }
    for path in ["/api/products/sku/AB%1BCD", "/api/admin/inventory/AB%1BCD"] {
        let body = app.get(path, Some(&admin)).await;
        assert_eq!(fields(body.assert_problem(422)), ["sku"], "{path}");
    }
    let reply = app
        .post(
            "/api/admin/inventory/AB%1BCD/adjust",
            json!({"delta": 1, "reason": "receiving"}),
            Some(&admin),
        )
        .await;
    assert_eq!(fields(reply.assert_problem(422)), ["sku"]);

    // Admin user search (MongoDB): same rule as the catalog's q.
    let reply = app.get("/api/admin/users?q=a%00b", Some(&admin)).await;
    reply.assert_problem(400);
    assert_eq!(
        app.get("/api/admin/users?q=nul-admin", Some(&admin))
            .await
            .status,
        200
    );

    // Bodies: 422 naming the field.
    let mut body = product_body("NUL-1", json!({}));
    body["name"] = json!("a\u{0}b");
    body["description"] = json!("x\u{0}y");
    let reply = app.post("/api/admin/products", body, Some(&admin)).await;
    assert_eq!(
        fields(reply.assert_problem(422)),
        ["name", "description"],
        "{}",
        reply.text
    );
    let category = app
        .post(
            "/api/admin/categories",
            json!({"name": "Sh\u{0}oes", "slug": "sho\u{0}es"}),
            Some(&admin),
        )
        .await;
    assert_eq!(fields(category.assert_problem(422)), ["name", "slug"]);
    let note = app
        .post(
            "/api/admin/inventory/NUL-1/adjust",
            json!({"delta": 1, "reason": "receiving", "note": "a\u{0}b"}),
            Some(&admin),
        )
        .await;
    assert_eq!(fields(note.assert_problem(422)), ["note"]);

    // Import rows: reported per row, nothing stored.
    let reply = crate::helpers::Reply::from(
        app.http
            .post(app.url("/api/admin/products/import"))
            .bearer_auth(&admin)
            .header("content-type", "application/x-ndjson")
            .body(
                json!({"sku": "NUL-IMP", "name": "a\u{0}b", "price": {"amount": 100, "currency": "USD"},
                       "attributes": {"k": "v\u{0}"}})
                .to_string(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["batches_rejected"], 1, "{}", reply.text);
    let import_fields: Vec<&str> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(import_fields.contains(&"name"), "{}", reply.text);
    assert!(import_fields.contains(&"attributes"), "{}", reply.text);
    app.get("/api/products/sku/NUL-IMP", None)
        .await
        .assert_problem(404);
}

#[tokio::test]
async fn product_attributes_are_bounded_and_clean() {
    let app = spawn_app().await;
    let admin = app.admin("attr-admin@example.com").await;

    let mut deep = json!("leaf");
    for _ in 0..60 {
        deep = json!({ "n": deep });
    }
    let mut deep_list = json!(1);
    for _ in 0..60 {
        deep_list = json!([deep_list]);
    }
    let wide = json!({ "blob": "x".repeat(20 * 1024) });
    for (sku, attributes) in [
        ("ATTR-1", deep),
        ("ATTR-2", json!({ "list": deep_list })),
        ("ATTR-3", json!({ "k\u{0}ey": "v" })),
        ("ATTR-4", json!({ "key": "v\u{0}" })),
        ("ATTR-5", json!({ "key": ["ok", {"inner": "a\u{1b}[31m"}] })),
        ("ATTR-6", json!({ "nested": {"k\u{0}": 1} })),
        ("ATTR-7", wide),
    ] {
        let reply = app
            .post(
                "/api/admin/products",
                product_body(sku, attributes),
                Some(&admin),
            )
            .await;
        assert_eq!(
            fields(reply.assert_problem(422)),
            ["attributes"],
            "{sku}: {}",
            reply.text
        );
        app.get(&format!("/api/products/sku/{sku}"), None)
            .await
            .assert_problem(404);
    }

    let mut ok = json!("leaf");
    for _ in 0..7 {
        ok = json!({ "n": ok });
    }
    let created = app
        .post(
            "/api/admin/products",
            product_body("ATTR-OK", json!({ "deep": ok, "note": "multi\nline" })),
            Some(&admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
}

#[tokio::test]
async fn invisible_and_direction_changing_characters_are_refused() {
    let app = spawn_app().await;
    for (i, name) in ["Ad\u{202e}a", "Ad\u{200b}a", "\u{feff}Ada", "A\u{2066}da"]
        .iter()
        .enumerate()
    {
        let reply = app
            .post(
                "/api/auth/register",
                json!({"email": format!("bidi{i}@example.com"), "password": PASSWORD, "name": name}),
                None,
            )
            .await;
        assert_eq!(fields(reply.assert_problem(422)), ["name"], "{name:?}");
    }
    for email in [
        "ad\u{200b}a@example.com",
        "ada@exam\u{202e}ple.com",
        "a\u{200d}@example.com",
    ] {
        let reply = app
            .post(
                "/api/auth/register",
                json!({"email": email, "password": PASSWORD, "name": "Ada"}),
                None,
            )
            .await;
        assert_eq!(fields(reply.assert_problem(422)), ["email"], "{email:?}");
    }
    assert_eq!(app.stored_users().await, 0);

    let token = app.customer("bidi@example.com").await;
    let address = |label: &str, country: &str| {
        json!({"label": label, "recipient": "Ada", "line1": "1 Main St", "city": "Berlin",
               "postal_code": "10115", "country": country})
    };
    let reply = app
        .post(
            "/api/users/me/addresses",
            address("Ho\u{202e}me", "DE"),
            Some(&token),
        )
        .await;
    assert_eq!(fields(reply.assert_problem(422)), ["label"]);
    let admin = app.admin("bidi-admin@example.com").await;
    let reply = app
        .post(
            "/api/admin/products",
            json!({"sku": "BIDI-1", "name": "Shoe\u{2067}", "price": {"amount": 100, "currency": "USD"}}),
            Some(&admin),
        )
        .await;
    assert_eq!(fields(reply.assert_problem(422)), ["name"]);
}

#[tokio::test]
async fn countries_must_be_assigned_iso_codes() {
    let app = spawn_app().await;
    let token = app.customer("country@example.com").await;
    let address = |country: &str| {
        json!({"recipient": "Ada", "line1": "1 Main St", "city": "Berlin",
               "postal_code": "10115", "country": country})
    };
    for bad in ["ZZ", "XX", "AA", "UK", "EU"] {
        let reply = app
            .post("/api/users/me/addresses", address(bad), Some(&token))
            .await;
        assert_eq!(fields(reply.assert_problem(422)), ["country"], "{bad}");
    }
    for good in ["de", "GB", "US"] {
        let reply = app
            .post("/api/users/me/addresses", address(good), Some(&token))
            .await;
        assert_eq!(reply.status, 201, "{good}: {}", reply.text);
    }
}

#[tokio::test]
async fn prices_are_capped() {
    let app = spawn_app().await;
    let admin = app.admin("price-admin@example.com").await;
    let body = |sku: &str, amount: i64| json!({"sku": sku, "name": "Priced", "price": {"amount": amount, "currency": "USD"}});
    for (sku, amount) in [("PRICE-1", i64::MAX), ("PRICE-2", 1_000_000_001)] {
        let reply = app
            .post("/api/admin/products", body(sku, amount), Some(&admin))
            .await;
        assert_eq!(
            fields(reply.assert_problem(422)),
            ["price.amount_minor"],
            "{}",
            reply.text
        );
    }
    let reply = app
        .post(
            "/api/admin/products",
            body("PRICE-3", 1_000_000_000),
            Some(&admin),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    app.get(
        &format!("/api/products?min_price={}&currency=USD", i64::MAX),
        None,
    )
    .await
    .assert_problem(422);
}

#[tokio::test]
async fn client_errors_speak_the_apis_words() {
    let app = spawn_app().await;
    let null_body = crate::helpers::Reply::from(
        app.http
            .post(app.url("/api/auth/register"))
            .header("content-type", "application/json")
            .body("null")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let body = null_body.assert_problem(422);
    let detail = body["detail"].as_str().unwrap();
    assert!(!detail.contains("RegisterBody"), "{detail}");
    assert!(!detail.contains("invalid type"), "{detail}");

    let missing = app
        .post(
            "/api/auth/register",
            json!({"email": "a@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    let detail = missing.assert_problem(422)["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(detail, "field `name` is required");

    let mistyped = app
        .post(
            "/api/auth/register",
            json!({"email": 5, "password": PASSWORD, "name": "A"}),
            None,
        )
        .await;
    let detail = mistyped.assert_problem(422)["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(detail, "field `email` must be a string");

    let admin = app.admin("words-admin@example.com").await;
    let huge = app
        .post(
            "/api/admin/products",
            json!({"sku": "BIG-1", "name": "Big", "price": {"amount": 1e30, "currency": "USD"}}),
            Some(&admin),
        )
        .await;
    let detail = huge.assert_problem(422)["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!detail.contains("target type"), "{detail}");
    assert!(detail.contains("price.amount"), "{detail}");

    let query = app.get("/api/products?limit=abc", None).await;
    let detail = query.assert_problem(400)["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(detail, "query parameter `limit` must be a whole number");
    let query = app
        .get("/api/products?min_price=99999999999999999999999", None)
        .await;
    let detail = query.assert_problem(400)["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!detail.contains("target type"), "{detail}");
}
