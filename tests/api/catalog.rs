use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_app};

async fn put(app: &TestApp, path: &str, body: Value, token: &str, if_match: Option<&str>) -> Reply {
    let mut req = app.http.put(app.url(path)).json(&body).bearer_auth(token);
    if let Some(etag) = if_match {
        req = req.header("if-match", etag);
    }
    Reply::from(req.send().await.unwrap()).await
}

fn product(sku: &str, name: &str, amount: i64) -> Value {
    json!({
        "sku": sku, "name": name, "description": format!("{name} for everyday use"),
        "price": {"amount": amount, "currency": "USD"}, "initial_stock": 10,
        "attributes": {"colour": "red"}
    })
}

#[tokio::test]
async fn admins_manage_products_with_etags_and_everyone_reads_them() {
    let app = spawn_app().await;
    let admin = app.admin("catalog-admin@example.com").await;
    let customer = app.customer("shopper@example.com").await;

    let category = app
        .post(
            "/api/admin/categories",
            json!({"name": "Shoes", "slug": "shoes"}),
            Some(&admin),
        )
        .await;
    assert_eq!(category.status, 201, "{}", category.text);
    let category_id = category.body["id"].as_str().unwrap().to_owned();

    let mut body = product("SHOE-RED-42", "Red running shoe", 8999);
    body["category_id"] = json!(category_id);
    app.post("/api/admin/products", body.clone(), Some(&customer))
        .await
        .assert_problem(403);
    app.post("/api/admin/products", body.clone(), None)
        .await
        .assert_problem(401);
    let created = app
        .post("/api/admin/products", body.clone(), Some(&admin))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let etag = created.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        created.headers["location"],
        format!("/api/products/{id}").as_str()
    );
    assert_eq!(
        created.body["price"],
        json!({"amount": 8999, "currency": "USD"})
    );
    assert_eq!(created.body["attributes"]["colour"], "red");
    assert_eq!(created.body["in_stock"], true);

    // Anyone reads it, by id and by SKU, with the same ETag.
    let by_id = app.get(&format!("/api/products/{id}"), None).await;
    assert_eq!(by_id.status, 200);
    assert_eq!(by_id.headers["etag"].to_str().unwrap(), etag);
    let by_sku = app.get("/api/products/sku/SHOE-RED-42", None).await;
    assert_eq!(by_sku.body["id"], id.as_str());

    // Optimistic concurrency: a write needs the current ETag.
    let replace = json!({
        "name": "Red running shoe v2", "description": "Lighter",
        "price": {"amount": 9499, "currency": "USD"}, "active": true,
        "category_id": category_id
    });
    put(
        &app,
        &format!("/api/admin/products/{id}"),
        replace.clone(),
        &admin,
        None,
    )
    .await
    .assert_problem(428);
    // A blank If-Match names no version either: 428, not a field error.
    for blank in ["", "\"\"", "W/\"\""] {
        put(
            &app,
            &format!("/api/admin/products/{id}"),
            replace.clone(),
            &admin,
            Some(blank),
        )
        .await
        .assert_problem(428);
    }
    let updated = put(
        &app,
        &format!("/api/admin/products/{id}"),
        replace.clone(),
        &admin,
        Some(&etag),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["name"], "Red running shoe v2");
    let new_etag = updated.headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let stale = put(
        &app,
        &format!("/api/admin/products/{id}"),
        replace,
        &admin,
        Some(&etag),
    )
    .await;
    stale.assert_problem(412);
    // Read with credentials: past the edge's one-second cache of anonymous reads.
    assert_eq!(
        app.get(&format!("/api/products/{id}"), Some(&customer))
            .await
            .body["price"]["amount"],
        9499,
        "the stale write changed nothing"
    );

    // `If-Match: *` writes whatever the current version is.
    let mut unconditional = json!({
        "name": "Red running shoe v3", "price": {"amount": 9499, "currency": "USD"}, "active": true
    });
    unconditional["category_id"] = json!(category_id);
    let forced = put(
        &app,
        &format!("/api/admin/products/{id}"),
        unconditional,
        &admin,
        Some("*"),
    )
    .await;
    assert_eq!(forced.status, 200, "{}", forced.text);
    let new_etag = forced.headers["etag"].to_str().unwrap().to_owned();

    // Soft delete: gone from search, still readable.
    let delete = app
        .http
        .delete(app.url(&format!("/api/admin/products/{id}")))
        .bearer_auth(&admin)
        .header("if-match", &new_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    let search = app.get("/api/products?q=running", Some(&customer)).await;
    assert_eq!(search.body["items"].as_array().unwrap().len(), 0);
    let deleted = app
        .get(&format!("/api/products/{id}"), Some(&customer))
        .await;
    assert!(deleted.body["deleted_at"].is_string());

    let trail = app
        .post(
            "/api/admin/categories",
            json!({"name": "Trail shoes", "slug": "trail-shoes", "parent_id": category_id}),
            Some(&admin),
        )
        .await;
    assert_eq!(trail.status, 201, "{}", trail.text);
    let categories = app.get("/api/categories", None).await;
    assert_eq!(categories.body["items"][0]["slug"], "shoes");
    assert_eq!(categories.body["items"].as_array().unwrap().len(), 2);
    let children = app
        .get(&format!("/api/categories?parent_id={category_id}"), None)
        .await;
    let slugs: Vec<&str> = children.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["trail-shoes"]);
    let roots = app.get("/api/categories?parent_id=", None).await;
    assert_eq!(roots.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn catalog_bad_input_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let admin = app.admin("catalog-admin@example.com").await;
    assert_eq!(
        app.post(
            "/api/admin/products",
            product("MUG-1", "Mug", 1200),
            Some(&admin)
        )
        .await
        .status,
        201
    );

    let negative = app
        .post(
            "/api/admin/products",
            product("MUG-2", "Mug", -5),
            Some(&admin),
        )
        .await;
    negative.assert_problem(422);
    let mut unknown_currency = product("MUG-3", "Mug", 500);
    unknown_currency["price"]["currency"] = json!("XYZ");
    app.post("/api/admin/products", unknown_currency, Some(&admin))
        .await
        .assert_problem(422);
    app.post(
        "/api/admin/products",
        product("MUG-1", "Another mug", 900),
        Some(&admin),
    )
    .await
    .assert_problem(409);
    app.get("/api/products?limit=1000", None)
        .await
        .assert_problem(400);
    app.get("/api/products?cursor=not-a-cursor", None)
        .await
        .assert_problem(400);

    let all = app.get("/api/products", None).await;
    let skus: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["MUG-1"]);
}

#[tokio::test]
async fn search_ranks_multi_word_queries_and_filters() {
    let app = spawn_app().await;
    let admin = app.admin("catalog-admin@example.com").await;
    for (sku, name, price) in [
        ("P-1", "Blue running shoe", 7000),
        ("P-2", "Red running shoe", 9000),
        ("P-3", "Red cotton shirt", 2500),
        ("P-4", "Garden hose", 3000),
    ] {
        let created = app
            .post(
                "/api/admin/products",
                product(sku, name, price),
                Some(&admin),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
    }
    let ranked = app.get("/api/products?q=red%20running%20shoe", None).await;
    assert_eq!(ranked.status, 200, "{}", ranked.text);
    let names: Vec<&str> = ranked.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"Red running shoe"), "{names:?}");
    assert!(!names.contains(&"Garden hose"));

    let cheap = app
        .get(
            "/api/products?max_price=3000&currency=USD&sort=price_asc",
            None,
        )
        .await;
    let skus: Vec<&str> = cheap.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["P-3", "P-4"]);

    // Paging visits each product once.
    let mut seen = Vec::new();
    let mut path = "/api/products?limit=3&sort=newest".to_owned();
    loop {
        let page = app.get(&path, None).await;
        assert_eq!(page.status, 200, "{}", page.text);
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["sku"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/products?limit=3&sort=newest&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["P-4", "P-3", "P-2", "P-1"]);
}

#[tokio::test]
async fn imports_are_all_or_nothing_per_batch_and_report_bad_rows() {
    let app = spawn_app().await;
    let admin = app.admin("catalog-admin@example.com").await;
    let mut csv = String::from("sku,name,description,price_amount,currency,initial_stock\n");
    for i in 0..250 {
        csv.push_str(&format!(
            "IMP-{i:03},Item {i},\"Line one\nline two\",{},USD,3\n",
            100 + i
        ));
    }
    // Row 260 (in the second batch of 200) is bad: the second batch is rejected whole.
    csv.push_str("IMP-BAD,Broken,desc,not-a-number,USD,1\n");
    let reply = Reply::from(
        app.http
            .post(app.url("/api/admin/products/import"))
            .bearer_auth(&admin)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["batches_committed"], 1);
    assert_eq!(reply.body["batches_rejected"], 1);
    assert_eq!(reply.body["products_created"], 200);
    let errors = reply.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["field"], "price_amount");
    assert_eq!(errors[0]["batch"], 1);

    let first = app.get("/api/products/sku/IMP-000", None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["description"], "Line one\nline two");
    app.get("/api/products/sku/IMP-210", None)
        .await
        .assert_problem(404);

    let ndjson = [
        json!({"sku": "NDJ-1", "name": "Json one", "price": {"amount": 100, "currency": "USD"}}),
        json!({"sku": "NDJ-2", "name": "Json two", "price": {"amount": -1, "currency": "USD"}}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let reply = Reply::from(
        app.http
            .post(app.url("/api/admin/products/import"))
            .bearer_auth(&admin)
            .header("content-type", "application/x-ndjson")
            .body(ndjson)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["batches_rejected"], 1, "{}", reply.text);
    assert_eq!(reply.body["errors"][0]["line"], 2);
    app.get("/api/products/sku/NDJ-1", None)
        .await
        .assert_problem(404);
}

#[tokio::test]
async fn inventory_levels_history_and_adjustments() {
    let app = spawn_app().await;
    let admin = app.admin("stock-admin@example.com").await;
    let customer = app.customer("shopper@example.com").await;
    app.post(
        "/api/admin/products",
        product("STOCK-1", "Stocked item", 500),
        Some(&admin),
    )
    .await;

    let adjusted = app
        .post(
            "/api/admin/inventory/STOCK-1/adjust",
            json!({"delta": 5, "reason": "receiving", "note": "pallet 7"}),
            Some(&admin),
        )
        .await;
    assert_eq!(adjusted.status, 200, "{}", adjusted.text);
    assert_eq!(adjusted.body["stock"]["on_hand"], 15);
    assert_eq!(adjusted.body["stock"]["available"], 15);
    assert_eq!(adjusted.body["movement"]["delta"], 5);

    app.post(
        "/api/admin/inventory/STOCK-1/adjust",
        json!({"delta": -100, "reason": "damage"}),
        Some(&admin),
    )
    .await
    .assert_problem(409);
    app.post(
        "/api/admin/inventory/STOCK-1/adjust",
        json!({"delta": 1, "reason": "correction"}),
        Some(&customer),
    )
    .await
    .assert_problem(403);

    let inventory = app.get("/api/admin/inventory/STOCK-1", Some(&admin)).await;
    assert_eq!(inventory.status, 200, "{}", inventory.text);
    assert_eq!(inventory.body["stock"]["on_hand"], 15);
    let movements = inventory.body["movements"].as_array().unwrap();
    assert_eq!(movements.len(), 2, "initial receiving and the adjustment");
    assert_eq!(movements[0]["note"], "pallet 7", "newest first");
    assert_eq!(movements[0]["on_hand_after"], 15);
    assert_eq!(movements[1]["on_hand_after"], 10);
    app.get("/api/admin/inventory/NOPE-1", Some(&admin))
        .await
        .assert_problem(404);
}

async fn import_csv(app: &crate::helpers::TestApp, admin: &str, csv: String) -> Reply {
    Reply::from(
        app.http
            .post(app.url("/api/admin/products/import"))
            .bearer_auth(admin)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn an_oversized_import_row_is_that_rows_error_and_other_batches_commit() {
    let app = spawn_app().await;
    let admin = app.admin("big-row-admin@example.com").await;
    let mut csv = String::from("sku,name,description,price_amount,currency\n");
    for i in 0..450 {
        // Row 300 (line 302, in the second batch) carries a 5 MB description.
        let description = if i == 300 {
            "x".repeat(5 * 1024 * 1024)
        } else {
            format!("item {i}")
        };
        csv.push_str(&format!(
            "BIG-{i:03},Item {i},{description},{},USD\n",
            100 + i
        ));
    }
    let reply = import_csv(&app, &admin, csv).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        &reply.text[..reply.text.len().min(500)]
    );
    assert!(reply.text.len() < 4096, "{}", &reply.text[..500]);
    assert_eq!(reply.body["batches_committed"], 2, "{}", reply.text);
    assert_eq!(reply.body["batches_rejected"], 1, "{}", reply.text);
    assert_eq!(reply.body["products_created"], 250, "{}", reply.text);
    assert_eq!(reply.body["incomplete"], false);
    let errors = reply.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", reply.text);
    assert_eq!(errors[0]["batch"], 1);
    assert_eq!(errors[0]["line"], 302);
    assert_eq!(errors[0]["sku"], "BIG-300");
    assert_eq!(errors[0]["message"], "row is longer than 65536 bytes");

    for (sku, status) in [
        ("BIG-000", 200),
        ("BIG-199", 200),
        ("BIG-200", 404),
        ("BIG-300", 404),
        ("BIG-399", 404),
        ("BIG-400", 200),
        ("BIG-449", 200),
    ] {
        assert_eq!(
            app.get(&format!("/api/products/sku/{sku}"), None)
                .await
                .status,
            status,
            "{sku}"
        );
    }
}

#[tokio::test]
async fn an_unterminated_quoted_import_record_is_not_echoed_whole() {
    let app = spawn_app().await;
    let admin = app.admin("quote-admin@example.com").await;
    let mut csv = String::from("sku,name,description,price_amount,currency\n");
    for i in 0..5 {
        csv.push_str(&format!("QT-{i},Item {i},desc,100,USD\n"));
    }
    // An opening quote that is never closed swallows the rest of the upload (3 MB).
    csv.push('"');
    csv.push_str(&"Q".repeat(3 * 1024 * 1024));
    let reply = import_csv(&app, &admin, csv).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        &reply.text[..reply.text.len().min(500)]
    );
    assert!(reply.text.len() < 2048, "{}", &reply.text[..500]);
    assert_eq!(reply.body["batches_committed"], 0, "{}", reply.text);
    assert_eq!(reply.body["batches_rejected"], 1, "{}", reply.text);
    let errors = reply.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", reply.text);
    assert_eq!(errors[0]["line"], 7);
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("row is longer than 65536 bytes"),
        "{message}"
    );
    let sku = errors[0]["sku"].as_str().unwrap();
    assert!(
        sku.starts_with("QQQ") && sku.chars().count() <= 201,
        "{sku}"
    );
}

#[tokio::test]
async fn import_batches_of_large_rows_stay_under_the_grpc_message_limit() {
    let app = spawn_app().await;
    let admin = app.admin("wide-row-admin@example.com").await;
    let mut csv = String::from("sku,name,description,price_amount,currency\n");
    for i in 0..200 {
        csv.push_str(&format!("OK-{i:03},Item {i},fine,100,USD\n"));
    }
    // 100 rows of 60 KB, each under the row limit but too long a description for the catalog:
    // together far over 4 MiB, so they must travel in several smaller batches.
    let wide = "w".repeat(60 * 1024);
    for i in 0..100 {
        csv.push_str(&format!("WIDE-{i:03},Wide {i},{wide},100,USD\n"));
    }
    let reply = import_csv(&app, &admin, csv).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        &reply.text[..reply.text.len().min(500)]
    );
    assert_eq!(reply.body["batches_committed"], 1, "{}", &reply.text[..500]);
    assert_eq!(reply.body["products_created"], 200);
    assert!(reply.body["batches_rejected"].as_i64().unwrap() >= 2);
    let errors = reply.body["errors"].as_array().unwrap();
    assert!(errors.len() >= 100, "{}", errors.len());
    assert!(
        errors
            .iter()
            .all(|e| e["field"] == "description" && e["batch"].as_i64().unwrap() >= 1)
    );
    assert!(!reply.text.contains(&wide[..300]));
}

#[tokio::test]
async fn an_import_row_nested_too_deep_is_that_rows_error_not_a_broken_import() {
    let app = spawn_app().await;
    let admin = app.admin("deep-import@example.com").await;
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({ "k": deep });
    }
    let ndjson = [
        json!({"sku": "DEEP-OK", "name": "Fine", "price": {"amount": 100, "currency": "USD"}}),
        json!({"sku": "DEEP-BAD", "name": "Deep", "price": {"amount": 100, "currency": "USD"},
               "attributes": deep}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let reply = Reply::from(
        app.http
            .post(app.url("/api/admin/products/import"))
            .bearer_auth(&admin)
            .header("content-type", "application/x-ndjson")
            .body(ndjson)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["incomplete"], false, "{}", reply.text);
    assert_eq!(reply.body["batches_rejected"], 1, "{}", reply.text);
    assert_eq!(reply.body["errors"][0]["line"], 2, "{}", reply.text);
    assert_eq!(
        reply.body["errors"][0]["field"], "attributes",
        "{}",
        reply.text
    );
    app.get("/api/products/sku/DEEP-OK", None)
        .await
        .assert_problem(404);
}
