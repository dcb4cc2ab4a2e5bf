use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn customers_get_403_on_admin_endpoints_and_admins_succeed() {
    let app = spawn_app().await;
    let customer = app.customer("customer@example.com").await;
    let admin = app.admin("root@example.com").await;

    app.get("/api/admin/users", Some(&customer))
        .await
        .assert_problem(403);
    app.get("/api/admin/users", None).await.assert_problem(401);

    let list = app.get("/api/admin/users", Some(&admin)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let emails: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["customer@example.com", "root@example.com"]);
    assert_eq!(list.body["next_cursor"], serde_json::Value::Null);

    // Creating the admin again is idempotent: same account, still admin.
    let again = app.admin("root@example.com").await;
    let me = app.get("/api/users/me", Some(&again)).await;
    assert_eq!(me.body["role"], "admin");
    assert_eq!(app.stored_users().await, 2);
}

#[tokio::test]
async fn admin_pages_searches_and_changes_roles_and_tiers() {
    let app = spawn_app().await;
    let admin = app.admin("admin@example.com").await;
    for i in 0..5 {
        app.register(&format!("shopper{i}@example.com"), "Shopper")
            .await;
    }
    app.register("other@example.org", "Other").await;

    // Cursor paging visits every account exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/admin/users?limit=2&cursor={c}"),
            None => "/api/admin/users?limit=2".to_owned(),
        };
        let page = app.get(&path, Some(&admin)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 7);
    assert_eq!(unique.len(), 7);

    let search = app.get("/api/admin/users?q=SHOPPER", Some(&admin)).await;
    assert_eq!(search.body["items"].as_array().unwrap().len(), 5);
    let literal = app.get("/api/admin/users?q=.%2A", Some(&admin)).await;
    assert_eq!(
        literal.body["items"].as_array().unwrap().len(),
        0,
        "regex characters match literally"
    );

    app.get("/api/admin/users?limit=101", Some(&admin))
        .await
        .assert_problem(400);
    app.get("/api/admin/users?cursor=%%%", Some(&admin))
        .await
        .assert_problem(400);
    app.get("/api/admin/users?cursor=bm90LWEtdXVpZA", Some(&admin))
        .await
        .assert_problem(400);

    // Promote a customer to VIP admin; the new role shows in tokens issued afterwards.
    let customer_email = "shopper0@example.com";
    let (_, refresh) = app.login(customer_email).await;
    let target = search.body["items"][0]["id"].as_str().unwrap().to_owned();
    let changed = app
        .patch(
            &format!("/api/admin/users/{target}"),
            json!({"role": "admin", "tier": "vip"}),
            &admin,
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.body["role"], "admin");
    assert_eq!(changed.body["tier"], "vip");
    let refreshed = app
        .post("/api/auth/refresh", json!({"refresh_token": refresh}), None)
        .await;
    let promoted = refreshed.body["access_token"].as_str().unwrap();
    assert_eq!(
        app.get("/api/admin/users", Some(promoted)).await.status,
        200
    );

    app.patch(
        &format!("/api/admin/users/{target}"),
        json!({"role": "superuser"}),
        &admin,
    )
    .await
    .assert_problem(422);
    app.get(
        "/api/admin/users/0190c1b6-0000-7000-8000-000000000000",
        Some(&admin),
    )
    .await
    .assert_problem(404);
    let fetched = app
        .get(&format!("/api/admin/users/{target}"), Some(&admin))
        .await;
    assert_eq!(fetched.body["email"], customer_email);
}
