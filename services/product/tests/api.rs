//! Integration tests of the product service over gRPC, against the local PostgreSQL. Every test
//! gets a fresh database named by a UUID, its own run directory (service identity keys) and its
//! own server on a free port, started through the platform's `Mesh` (the harness is
//! `shopmesh_testkit`).

// The helpers outside `#[test]` functions are test code too (clippy.toml's allowance covers only
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::product::v1 as pb;
use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_client::InventoryServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_product::ProductConfig;
use shopmesh_testkit::{PgDatabase, TestEnv, TestMesh, bad_fields, usd, with_bearer};
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

struct TestApp {
    database: PgDatabase,
    mesh: TestMesh,
    channel: Channel,
    /// Direct access for assertions on rows the API does not expose (outbox, reservations).
    db: PgPool,
    admin_token: String,
    customer_token: String,
}

fn test_config() -> ProductConfig {
    ProductConfig {
        sweep_interval: Duration::from_millis(200),
        ..ProductConfig::default()
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(test_config()).await
}

async fn spawn_app_with(config: ProductConfig) -> TestApp {
    let database = PgDatabase::new("product_test");
    let env = TestEnv::new("product")
        .serve("product")
        .database("product", database.url());
    let services = Mesh::new(vec![
        Arc::new(shopmesh_product::Product::with_config(config)) as Arc<dyn Service>,
    ]);
    // The product service creates its database itself (through the maintenance database). The
    // order service does not run here, but its key must be in the trust bundle so that the tests
    // can call as it.
    let mesh = TestMesh::start(&env, &services, &["product"], &["order"]).await;
    let channel = mesh.channel("product").await;
    let db = database.pool().await;
    TestApp {
        admin_token: mesh.users.admin_token(),
        customer_token: mesh.users.customer_token(&Uuid::now_v7().to_string()),
        database,
        mesh,
        channel,
        db,
    }
}

impl TestApp {
    fn products(&self) -> ProductServiceClient<Channel> {
        ProductServiceClient::new(self.channel.clone())
    }

    fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.channel.clone())
    }

    fn admin<T>(&self, message: T) -> Request<T> {
        with_bearer(message, &self.admin_token)
    }

    fn customer<T>(&self, message: T) -> Request<T> {
        with_bearer(message, &self.customer_token)
    }

    /// A call as the order service (its service token, no user token).
    fn order<T>(&self, message: T) -> Request<T> {
        self.mesh.as_service("order", message)
    }

    async fn create(&self, input: pb::ProductInput, initial_stock: i32) -> pb::Product {
        self.create_with_threshold(input, initial_stock, 0).await
    }

    async fn create_with_threshold(
        &self,
        input: pb::ProductInput,
        initial_stock: i32,
        low_stock_threshold: i32,
    ) -> pb::Product {
        self.products()
            .create_product(self.admin(pb::CreateProductRequest {
                product: Some(input),
                initial_stock,
                low_stock_threshold,
            }))
            .await
            .expect("product created")
            .into_inner()
            .product
            .expect("product")
    }

    async fn stock(&self, sku: &str) -> pb::Stock {
        self.inventory()
            .get_stock(pb::GetStockRequest { sku: sku.into() })
            .await
            .expect("stock")
            .into_inner()
            .stock
            .expect("stock")
    }

    async fn reserve(
        &self,
        order_id: Uuid,
        lines: &[(&str, i32)],
        ttl: Option<Duration>,
    ) -> Result<pb::Reservation, Status> {
        self.inventory()
            .reserve(self.order(reserve_request(order_id, lines, ttl)))
            .await
            .map(|r| r.into_inner().reservation.expect("reservation"))
    }

    async fn commit(&self, order_id: Uuid) -> Result<pb::Reservation, Status> {
        self.inventory()
            .commit(self.order(pb::CommitRequest {
                order_id: order_id.to_string(),
            }))
            .await
            .map(|r| r.into_inner().reservation.expect("reservation"))
    }

    async fn release(&self, order_id: Uuid) -> Result<Option<pb::Reservation>, Status> {
        self.inventory()
            .release(self.order(pb::ReleaseRequest {
                order_id: order_id.to_string(),
            }))
            .await
            .map(|r| r.into_inner().reservation)
    }

    async fn adjust(
        &self,
        sku: &str,
        delta: i32,
        reason: pb::StockMovementReason,
        key: &str,
    ) -> Result<pb::AdjustResponse, Status> {
        self.inventory()
            .adjust(self.admin(pb::AdjustRequest {
                sku: sku.into(),
                delta,
                reason: reason.into(),
                note: "test".into(),
                order_id: String::new(),
                idempotency_key: key.into(),
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every movement of a SKU, oldest first.
    async fn movements(&self, sku: &str) -> Vec<pb::StockMovement> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .inventory()
                .list_stock_movements(self.admin(pb::ListStockMovementsRequest {
                    sku: sku.into(),
                    page_size: 7,
                    page_token: token.clone(),
                }))
                .await
                .expect("movements")
                .into_inner();
            all.extend(page.movements);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        all.reverse();
        all
    }

    async fn search(
        &self,
        request: pb::SearchProductsRequest,
    ) -> Result<pb::SearchProductsResponse, Status> {
        self.products()
            .search_products(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn outbox_count(&self, event_type: &str, aggregate_id: &str) -> i64 {
        sqlx::query_scalar(
            "select count(*) from outbox where event_type = $1 and aggregate_id = $2",
        )
        .bind(event_type)
        .bind(aggregate_id)
        .fetch_one(&self.db)
        .await
        .expect("outbox count")
    }

    /// Stops the server, drops the database and removes the run directory.
    async fn teardown(self) {
        drop(self.channel);
        self.mesh.stop().await;
        self.db.close().await;
        self.database.drop().await;
    }
}

fn reserve_request(
    order_id: Uuid,
    lines: &[(&str, i32)],
    ttl: Option<Duration>,
) -> pb::ReserveRequest {
    pb::ReserveRequest {
        order_id: order_id.to_string(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| pb::ReservationLine {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        ttl: ttl.map(|ttl| prost_types::Duration {
            seconds: i64::try_from(ttl.as_secs()).unwrap(),
            nanos: i32::try_from(ttl.subsec_nanos()).unwrap(),
        }),
    }
}

fn input(sku: &str, name: &str, price: i64) -> pb::ProductInput {
    pb::ProductInput {
        sku: sku.into(),
        name: name.into(),
        description: String::new(),
        category_id: String::new(),
        price: usd(price),
        image_urls: Vec::new(),
        attributes: None,
        active: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_sells_exactly_the_stock() {
    let app = spawn_app().await;
    app.create(input("FLASH-1", "Limited Edition Sneaker", 19999), 10)
        .await;

    let attempts: Vec<_> = (0..200)
        .map(|_| {
            let inventory = app.inventory();
            let request = app.order(pb::ReserveRequest {
                order_id: Uuid::now_v7().to_string(),
                lines: vec![pb::ReservationLine {
                    sku: "FLASH-1".into(),
                    quantity: 1,
                }],
                ttl: None,
            });
            tokio::spawn(async move {
                let mut inventory = inventory;
                inventory.reserve(request).await
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(response) => won.push(response.into_inner().reservation.expect("reservation")),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().contains("FLASH-1"), "{}", status.message());
                refused += 1;
            }
        }
    }
    assert_eq!(won.len(), 10);
    assert_eq!(refused, 190);
    assert!(
        won.iter()
            .all(|r| r.status == i32::from(pb::ReservationStatus::Active))
    );

    let stock = app.stock("FLASH-1").await;
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (10, 10, 0)
    );

    // The audit trail agrees with the level: one RECEIVING, ten RESERVE, and the running totals
    // of the deltas end where the stock row is.
    let movements = app.movements("FLASH-1").await;
    assert_eq!(movements.len(), 11);
    assert_eq!(
        movements[0].reason,
        i32::from(pb::StockMovementReason::Receiving)
    );
    let reserves = movements
        .iter()
        .filter(|m| m.reason == i32::from(pb::StockMovementReason::Reserve))
        .count();
    assert_eq!(reserves, 10);
    let (mut on_hand, mut reserved) = (0, 0);
    for movement in &movements {
        on_hand += movement.delta;
        reserved += movement.reserved_delta;
        assert_eq!(
            (movement.on_hand_after, movement.reserved_after),
            (on_hand, reserved)
        );
    }
    assert_eq!((on_hand, reserved), (stock.on_hand, stock.reserved));

    let reservations: i64 = sqlx::query_scalar("select count(*) from reservations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(reservations, 10);
    // Available crossed the default threshold (5) once: exactly one low-stock event.
    assert_eq!(app.outbox_count("inventory.low_stock", "FLASH-1").await, 1);

    // Selling one of them moves both counters.
    let order = Uuid::parse_str(&won[0].order_id).unwrap();
    app.commit(order).await.expect("commit");
    let stock = app.stock("FLASH-1").await;
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (9, 9, 0));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_line_reserves_nothing() {
    let app = spawn_app().await;
    app.create(input("MULTI-A", "Alpha", 1000), 5).await;
    app.create(input("MULTI-B", "Bravo", 1000), 1).await;
    app.create(input("MULTI-C", "Charlie", 1000), 5).await;

    let order = Uuid::now_v7();
    let status = app
        .reserve(
            order,
            &[("MULTI-A", 2), ("MULTI-B", 2), ("MULTI-C", 1)],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "insufficient stock for SKU MULTI-B");
    let details = status.get_details_precondition_failure().expect("details");
    assert_eq!(details.violations[0].subject, "MULTI-B");
    for sku in ["MULTI-A", "MULTI-B", "MULTI-C"] {
        assert_eq!(app.stock(sku).await.reserved, 0, "{sku}");
        assert_eq!(app.movements(sku).await.len(), 1, "{sku}");
    }

    // Both short lines are named.
    let status = app
        .reserve(order, &[("MULTI-A", 9), ("MULTI-B", 2)], None)
        .await
        .unwrap_err();
    assert_eq!(
        status.message(),
        "insufficient stock for SKU MULTI-A, MULTI-B"
    );

    // An unknown SKU is NOT_FOUND, and also reserves nothing.
    let status = app
        .reserve(order, &[("MULTI-A", 1), ("NOPE-1", 1)], None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("NOPE-1"));
    assert_eq!(app.stock("MULTI-A").await.reserved, 0);

    // A failed attempt leaves no reservation behind: the order can try again.
    let reservation = app
        .reserve(order, &[("MULTI-A", 2), ("MULTI-B", 1)], None)
        .await
        .expect("fits now");
    assert_eq!(reservation.lines.len(), 2);
    assert_eq!(app.stock("MULTI-B").await.available, 0);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_an_order_does_not_double() {
    let app = spawn_app().await;
    app.create(input("IDEM-1", "Idempotent Mug", 1500), 50)
        .await;

    let order = Uuid::now_v7();
    let first = app.reserve(order, &[("IDEM-1", 3)], None).await.unwrap();
    let again = app.reserve(order, &[("idem-1", 3)], None).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(app.stock("IDEM-1").await.reserved, 3);

    let status = app
        .reserve(order, &[("IDEM-1", 4)], None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    // Twenty concurrent first attempts of one order reserve once.
    let order = Uuid::now_v7();
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let mut inventory = app.inventory();
            let request = app.order(pb::ReserveRequest {
                order_id: order.to_string(),
                lines: vec![pb::ReservationLine {
                    sku: "IDEM-1".into(),
                    quantity: 2,
                }],
                ttl: None,
            });
            tokio::spawn(async move { inventory.reserve(request).await })
        })
        .collect();
    for attempt in attempts {
        attempt.await.unwrap().expect("every repeat succeeds");
    }
    assert_eq!(app.stock("IDEM-1").await.reserved, 5);
    let reserves = app
        .movements("IDEM-1")
        .await
        .iter()
        .filter(|m| m.reason == i32::from(pb::StockMovementReason::Reserve))
        .count();
    assert_eq!(reserves, 2);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_releases_expired_reservations() {
    let app = spawn_app().await;
    app.create(input("TTL-1", "Hourglass", 2500), 10).await;

    let order = Uuid::now_v7();
    app.reserve(order, &[("TTL-1", 4)], Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(app.stock("TTL-1").await.reserved, 4);

    let deadline = Instant::now() + Duration::from_secs(10);
    while app.stock("TTL-1").await.reserved != 0 {
        assert!(
            Instant::now() < deadline,
            "the sweeper never released the stock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stock = app.stock("TTL-1").await;
    assert_eq!((stock.on_hand, stock.available), (10, 10));
    let last = app.movements("TTL-1").await.pop().unwrap();
    assert_eq!(last.reason, i32::from(pb::StockMovementReason::Expire));
    assert_eq!(last.reserved_delta, -4);
    assert_eq!(last.actor_id, "", "the sweeper acts as the service itself");

    // The reservation reads as expired, cannot be committed, and releasing it is a no-op.
    let repeat = app
        .reserve(order, &[("TTL-1", 4)], Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(repeat.status, i32::from(pb::ReservationStatus::Expired));
    let status = app.commit(order).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("expired"), "{}", status.message());
    let released = app.release(order).await.unwrap().unwrap();
    assert_eq!(released.status, i32::from(pb::ReservationStatus::Expired));
    assert_eq!(app.stock("TTL-1").await.reserved, 0);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_release_follow_the_life_cycle() {
    // No sweeper in this test: expiry must be handled by Commit itself.
    let app = spawn_app_with(ProductConfig {
        sweep_interval: Duration::from_secs(3600),
        ..ProductConfig::default()
    })
    .await;
    app.create(input("LIFE-1", "Lifecycle Lamp", 4999), 10)
        .await;

    // Commit sells; committing again returns the same sale; releasing a sale is refused.
    let sold = Uuid::now_v7();
    app.reserve(sold, &[("LIFE-1", 2)], None).await.unwrap();
    let committed = app.commit(sold).await.unwrap();
    assert_eq!(
        committed.status,
        i32::from(pb::ReservationStatus::Committed)
    );
    assert_eq!(app.commit(sold).await.unwrap(), committed);
    let stock = app.stock("LIFE-1").await;
    assert_eq!((stock.on_hand, stock.reserved), (8, 0));
    assert_eq!(
        app.release(sold).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // Release gives back; releasing twice is fine; committing a released one fails cleanly.
    let released = Uuid::now_v7();
    app.reserve(released, &[("LIFE-1", 3)], None).await.unwrap();
    assert_eq!(app.stock("LIFE-1").await.reserved, 3);
    let r = app.release(released).await.unwrap().unwrap();
    assert_eq!(r.status, i32::from(pb::ReservationStatus::Released));
    assert_eq!(
        app.release(released).await.unwrap().unwrap().status,
        r.status
    );
    assert_eq!(app.stock("LIFE-1").await.reserved, 0);
    let status = app.commit(released).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("released"),
        "{}",
        status.message()
    );

    // An order without a reservation: Release succeeds empty, Commit is NOT_FOUND.
    let nobody = Uuid::now_v7();
    assert_eq!(app.release(nobody).await.unwrap(), None);
    assert_eq!(app.commit(nobody).await.unwrap_err().code(), Code::NotFound);

    // Past its TTL but not swept: Commit refuses and gives the stock back on the spot.
    let late = Uuid::now_v7();
    app.reserve(late, &[("LIFE-1", 5)], Some(Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(app.stock("LIFE-1").await.reserved, 5, "nothing swept it");
    let status = app.commit(late).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("expired"), "{}", status.message());
    let stock = app.stock("LIFE-1").await;
    assert_eq!((stock.on_hand, stock.reserved), (8, 0));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_ranks_multi_word_queries_and_filters() {
    let app = spawn_app().await;
    let mut products = app.products();
    let clothing = products
        .create_category(app.admin(pb::CreateCategoryRequest {
            name: "Clothing".into(),
            slug: "clothing".into(),
            parent_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .category
        .unwrap();
    let footwear = products
        .create_category(app.admin(pb::CreateCategoryRequest {
            name: "Footwear".into(),
            slug: "footwear".into(),
            parent_id: clothing.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .category
        .unwrap();

    let named = app
        .create(
            pb::ProductInput {
                category_id: footwear.id.clone(),
                description: "Lugged sole.".into(),
                ..input("SHOE-1", "Trail Running Shoe", 12999)
            },
            5,
        )
        .await;
    let described = app
        .create(
            pb::ProductInput {
                description: "A sneaker that is also great for trail running.".into(),
                ..input("SNEAK-1", "Everyday Sneaker", 7999)
            },
            0,
        )
        .await;
    app.create(input("SOCK-1", "Running Socks", 1299), 5).await;
    app.create(input("MAP-1", "Trail Map", 999), 5).await;

    let query = |q: &str| pb::SearchProductsRequest {
        q: q.into(),
        ..Default::default()
    };
    let found = app.search(query("trail running")).await.unwrap();
    let ids: Vec<&str> = found.products.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [named.id.as_str(), described.id.as_str()]);
    // Stemming: "runs" and "shoes" find the shoe; the category name is searchable too.
    let found = app.search(query("shoes that run")).await.unwrap();
    assert_eq!(found.products[0].id, named.id);
    let found = app.search(query("footwear")).await.unwrap();
    assert_eq!(found.products.len(), 1);
    assert_eq!(found.products[0].id, named.id);

    // Category filter includes descendants.
    let in_clothing = app
        .search(pb::SearchProductsRequest {
            category_id: clothing.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(in_clothing.products.len(), 1);
    assert_eq!(in_clothing.products[0].sku, "SHOE-1");

    // Price range, in-stock only, price sort.
    let cheap = app
        .search(pb::SearchProductsRequest {
            min_price: usd(1000),
            max_price: usd(10000),
            sort: pb::ProductSort::PriceAsc.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let skus: Vec<&str> = cheap.products.iter().map(|p| p.sku.as_str()).collect();
    assert_eq!(skus, ["SOCK-1", "SNEAK-1"]);
    let running_in_stock = app
        .search(pb::SearchProductsRequest {
            q: "running".into(),
            in_stock_only: true,
            sort: pb::ProductSort::PriceDesc.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let skus: Vec<&str> = running_in_stock
        .products
        .iter()
        .map(|p| p.sku.as_str())
        .collect();
    assert_eq!(skus, ["SHOE-1", "SOCK-1"]);
    assert!(running_in_stock.products.iter().all(|p| p.in_stock));
    app.teardown().await;
}

async fn collect_pages(app: &TestApp, request: pb::SearchProductsRequest) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .search(pb::SearchProductsRequest {
                page_token: token.clone(),
                ..request.clone()
            })
            .await
            .expect("page");
        assert!(page.products.len() <= usize::try_from(request.page_size).unwrap());
        ids.extend(page.products.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
        // Give the concurrent inserts room between pages.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_hold_every_product_once_while_products_are_added() {
    let app = spawn_app().await;
    let mut initial = HashSet::new();
    for n in 0..60 {
        // A few equal prices make the id tie-break matter.
        let product = app
            .create(
                input(
                    &format!("PAGE-{n:03}"),
                    &format!("Widget number {n}"),
                    1000 + (n % 7) * 100,
                ),
                i32::try_from(n % 3).unwrap(),
            )
            .await;
        initial.insert(product.id);
    }

    let sorts = [
        pb::SearchProductsRequest {
            page_size: 7,
            ..Default::default()
        },
        pb::SearchProductsRequest {
            page_size: 7,
            sort: pb::ProductSort::PriceAsc.into(),
            ..Default::default()
        },
        pb::SearchProductsRequest {
            page_size: 7,
            sort: pb::ProductSort::PriceDesc.into(),
            ..Default::default()
        },
        pb::SearchProductsRequest {
            q: "widget".into(),
            page_size: 7,
            ..Default::default()
        },
    ];
    for (round, request) in sorts.into_iter().enumerate() {
        let writer = {
            let mut products = app.products();
            let token = app.admin_token.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    let price = 500 + (n % 11) * 150;
                    let request = with_bearer(
                        pb::CreateProductRequest {
                            product: Some(input(
                                &format!("NEW-{round}-{n:03}"),
                                &format!("Widget newcomer {n}"),
                                price,
                            )),
                            initial_stock: 1,
                            low_stock_threshold: 0,
                        },
                        &token,
                    );
                    products.create_product(request).await.expect("insert");
                }
            })
        };
        let seen = collect_pages(&app, request.clone()).await;
        writer.await.unwrap();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "a product appeared twice ({request:?})"
        );
        for id in &initial {
            assert!(
                unique.contains(id),
                "product {id} was skipped ({request:?})"
            );
        }
    }
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused() {
    let app = spawn_app().await;
    let mut products = app.products();
    let create = |input: pb::ProductInput| pb::CreateProductRequest {
        product: Some(input),
        initial_stock: 0,
        low_stock_threshold: 0,
    };

    let status = products
        .create_product(app.admin(create(input("BAD-1", "Negative", -100))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["price.amount_minor"]);

    let mut unknown_currency = input("BAD-1", "Unknown currency", 100);
    unknown_currency.price = Some(Money {
        amount_minor: 100,
        currency: "XYZ".into(),
    });
    let status = products
        .create_product(app.admin(create(unknown_currency)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["price.currency"]);

    let status = products
        .create_product(app.admin(create(input("bad sku!", "", 100))))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["sku", "name"]);

    let original = app.create(input("DUP-1", "Original", 100), 0).await;
    let status = products
        .create_product(app.admin(create(input("dup-1", "Copy", 100))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    // Stale etag: the first update wins, a second write with the old etag is ABORTED.
    let update = |etag: &str, name: &str| pb::UpdateProductRequest {
        product_id: original.id.clone(),
        product: Some(pb::ProductInput {
            name: name.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
        etag: etag.into(),
    };
    let updated = products
        .update_product(app.admin(update(&original.etag, "Renamed")))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_ne!(updated.etag, original.etag);
    let status = products
        .update_product(app.admin(update(&original.etag, "Lost update")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    let status = products
        .update_product(app.admin(update("", "No etag")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut sku_change = update(&updated.etag, "x");
    sku_change.update_mask = Some(prost_types::FieldMask {
        paths: vec!["sku".into()],
    });
    let status = products
        .update_product(app.admin(sku_change))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Paging input.
    let status = app
        .search(pb::SearchProductsRequest {
            page_size: 101,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_size"));
    let status = app
        .search(pb::SearchProductsRequest {
            page_token: "definitely-not-a-cursor".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    app.create(input("DUP-2", "Second", 200), 0).await;
    let first_page = app
        .search(pb::SearchProductsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!first_page.next_page_token.is_empty());
    let status = app
        .search(pb::SearchProductsRequest {
            page_size: 1,
            sort: pb::ProductSort::PriceAsc.into(),
            page_token: first_page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "a token of another sort"
    );

    // Non-admin writes.
    let status = products
        .create_product(app.customer(create(input("CUST-1", "Mine", 100))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = products
        .create_product(Request::new(create(input("ANON-1", "Anyone's", 100))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = products
        .delete_product(app.customer(pb::DeleteProductRequest {
            product_id: original.id.clone(),
            etag: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = products
        .create_category(app.customer(pb::CreateCategoryRequest {
            name: "Mine".into(),
            slug: "mine".into(),
            parent_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = products
        .import_products(app.customer(tokio_stream::iter(Vec::<pb::ImportProductsRequest>::new())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = app
        .search(pb::SearchProductsRequest {
            include_inactive: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut inventory = app.inventory();
    let adjust = pb::AdjustRequest {
        sku: "DUP-1".into(),
        delta: 100,
        reason: pb::StockMovementReason::Receiving.into(),
        ..Default::default()
    };
    let status = inventory
        .adjust(app.customer(adjust.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = inventory.adjust(Request::new(adjust)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Adjust also admits the order service (restocking a cancelled order).
    let restocked = inventory
        .adjust(app.order(pb::AdjustRequest {
            sku: "DUP-1".into(),
            delta: 1,
            reason: pb::StockMovementReason::Return.into(),
            ..Default::default()
        }))
        .await
        .expect("the order service may adjust")
        .into_inner();
    assert_eq!(restocked.stock.unwrap().on_hand, 1);
    // Reserve, Commit and Release admit only the order service: no token is UNAUTHENTICATED,
    // a user's token (even an admin's) is PERMISSION_DENIED, and nothing is reserved.
    let order_id = Uuid::now_v7();
    let status = inventory
        .reserve(Request::new(reserve_request(
            order_id,
            &[("DUP-1", 1)],
            None,
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    for token in [&app.customer_token, &app.admin_token] {
        let status = inventory
            .reserve(with_bearer(
                reserve_request(order_id, &[("DUP-1", 1)], None),
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = inventory
            .commit(with_bearer(
                pb::CommitRequest {
                    order_id: order_id.to_string(),
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = inventory
            .release(with_bearer(
                pb::ReleaseRequest {
                    order_id: order_id.to_string(),
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    assert_eq!(app.stock("DUP-1").await.reserved, 0);
    let reserved = app
        .reserve(order_id, &[("DUP-1", 1)], None)
        .await
        .expect("the order service may reserve");
    assert_eq!(reserved.status, i32::from(pb::ReservationStatus::Active));
    let released = app.release(order_id).await.expect("and release").unwrap();
    assert_eq!(released.status, i32::from(pb::ReservationStatus::Released));
    let status = inventory
        .list_stock(app.customer(pb::ListStockRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A forged token is refused before any handler runs.
    let status = inventory
        .get_stock(with_bearer(
            pb::GetStockRequest {
                sku: "DUP-1".into(),
            },
            "not.a.token",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Reservation input.
    let status = app
        .reserve(Uuid::now_v7(), &[("DUP-1", 0), ("DUP-1", 1)], None)
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["lines[0].quantity", "lines[1].sku"]);
    let status = app
        .reserve(
            Uuid::now_v7(),
            &[("DUP-1", 1)],
            Some(Duration::from_secs(7200)),
        )
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["ttl"]);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_are_read_updated_and_soft_deleted() {
    let app = spawn_app().await;
    let mut products = app.products();
    let mut attributes = prost_types::Struct::default();
    attributes.fields.insert(
        "colour".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("teal".into())),
        },
    );
    let created = app
        .create(
            pb::ProductInput {
                description: "Keeps drinks cold for 24 hours.".into(),
                image_urls: vec!["https://img.example.com/bottle.jpg".into()],
                attributes: Some(attributes.clone()),
                ..input("BOTTLE-1", "Insulated Bottle", 2999)
            },
            7,
        )
        .await;
    assert!(created.in_stock);
    assert_eq!(created.attributes, Some(attributes));
    assert!(Uuid::parse_str(&created.id).unwrap().get_version_num() == 7);

    let by_sku = products
        .get_product_by_sku(pb::GetProductBySkuRequest {
            sku: "bottle-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(by_sku, created);
    let missing = Uuid::now_v7().to_string();
    let batch = products
        .batch_get_products(pb::BatchGetProductsRequest {
            product_ids: vec![
                missing.clone(),
                created.id.clone(),
                "junk".into(),
                created.id.clone(),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.products.len(), 1);
    assert_eq!(batch.not_found_ids, [missing, "junk".to_owned()]);
    assert_eq!(
        products
            .get_product(pb::GetProductRequest {
                product_id: Uuid::now_v7().to_string()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // A masked update changes only the price; an unchanged write keeps the etag.
    let updated = products
        .update_product(app.admin(pb::UpdateProductRequest {
            product_id: created.id.clone(),
            product: Some(pb::ProductInput {
                price: usd(2499),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["price".into()],
            }),
            etag: created.etag.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(updated.price, usd(2499));
    assert_eq!(updated.name, created.name);
    let same = products
        .update_product(app.admin(pb::UpdateProductRequest {
            product_id: created.id.clone(),
            product: Some(pb::ProductInput {
                price: usd(2499),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["price".into()],
            }),
            etag: updated.etag.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(same.etag, updated.etag);

    // Deleting with a stale etag is refused; with the current one it hides the product from
    // search but keeps it readable; deleting again succeeds.
    let status = products
        .delete_product(app.admin(pb::DeleteProductRequest {
            product_id: created.id.clone(),
            etag: created.etag.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    let deleted = products
        .delete_product(app.admin(pb::DeleteProductRequest {
            product_id: created.id.clone(),
            etag: updated.etag.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert!(deleted.delete_time.is_some() && !deleted.active);
    let again = products
        .delete_product(app.admin(pb::DeleteProductRequest {
            product_id: created.id.clone(),
            etag: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(again, deleted);
    let found = app
        .search(pb::SearchProductsRequest {
            q: "bottle".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(found.products.is_empty());
    let read = products
        .get_product(pb::GetProductRequest {
            product_id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert!(read.delete_time.is_some());
    let status = products
        .update_product(app.admin(pb::UpdateProductRequest {
            product_id: created.id.clone(),
            product: Some(input("BOTTLE-1", "Back", 100)),
            update_mask: None,
            etag: deleted.etag.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    // The SKU stays taken.
    let status = products
        .create_product(app.admin(pb::CreateProductRequest {
            product: Some(input("BOTTLE-1", "Reborn", 100)),
            initial_stock: 0,
            low_stock_threshold: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    for event in ["product.created", "product.updated", "product.deleted"] {
        assert_eq!(app.outbox_count(event, &created.id).await, 1, "{event}");
    }
    app.teardown().await;
}

fn import_row(row_number: i64, sku: &str, name: &str, price: i64) -> pb::ImportProductRow {
    pb::ImportProductRow {
        row_number,
        product: Some(input(sku, name, price)),
        initial_stock: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_apply_each_batch_all_or_nothing() {
    let app = spawn_app().await;
    let batches = vec![
        pb::ImportProductsRequest {
            rows: vec![
                import_row(1, "IMP-1", "Imported One", 1000),
                import_row(2, "IMP-2", "Imported Two", 2000),
            ],
        },
        pb::ImportProductsRequest {
            rows: vec![
                import_row(3, "IMP-3", "Fine Row", 3000),
                import_row(4, "IMP-4", "Negative Row", -1),
                import_row(5, "IMP-3", "Duplicate Row", 3000),
            ],
        },
        pb::ImportProductsRequest {
            rows: vec![
                import_row(6, "IMP-1", "Imported One, Renamed", 1000),
                import_row(7, "IMP-2", "Imported Two", 2000),
                import_row(8, "IMP-5", "Imported Five", 5000),
            ],
        },
    ];
    let response = app
        .products()
        .import_products(app.admin(tokio_stream::iter(batches)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.batches_committed, 2);
    assert_eq!(response.batches_rejected, 1);
    assert_eq!(response.products_created, 3);
    assert_eq!(response.products_updated, 2);
    let errors: Vec<(i32, i64, &str, &str)> = response
        .errors
        .iter()
        .map(|e| {
            (
                e.batch_index,
                e.row_number,
                e.sku.as_str(),
                e.field.as_str(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (1, 4, "IMP-4", "price.amount_minor"),
            (1, 5, "IMP-3", "sku")
        ]
    );
    let mut products = app.products();
    let status = products
        .get_product_by_sku(pb::GetProductBySkuRequest {
            sku: "IMP-3".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "the rejected batch left nothing"
    );
    let renamed = products
        .get_product_by_sku(pb::GetProductBySkuRequest {
            sku: "IMP-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(renamed.name, "Imported One, Renamed");
    assert_eq!(renamed.etag, "v2");
    // Initial stock applies to created products only.
    assert_eq!(app.stock("IMP-1").await.on_hand, 3);
    assert_eq!(app.stock("IMP-5").await.on_hand, 3);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments_audit_and_signal_low_stock_once_per_crossing() {
    let app = spawn_app().await;
    app.create_with_threshold(input("LOW-1", "Scarce Item", 999), 10, 3)
        .await;
    use pb::StockMovementReason as Reason;

    let response = app.adjust("LOW-1", -6, Reason::Damage, "").await.unwrap();
    assert_eq!(response.stock.as_ref().unwrap().available, 4);
    let movement = response.movement.unwrap();
    assert_eq!((movement.delta, movement.on_hand_after), (-6, 4));
    assert!(!movement.actor_id.is_empty(), "the admin is recorded");
    assert_eq!(app.outbox_count("inventory.low_stock", "LOW-1").await, 0);

    app.adjust("LOW-1", -1, Reason::Correction, "")
        .await
        .unwrap();
    assert_eq!(app.outbox_count("inventory.low_stock", "LOW-1").await, 1);
    app.adjust("LOW-1", -1, Reason::Damage, "").await.unwrap();
    assert_eq!(
        app.outbox_count("inventory.low_stock", "LOW-1").await,
        1,
        "still low: no repeat"
    );
    app.adjust("LOW-1", 10, Reason::Receiving, "")
        .await
        .unwrap();
    app.adjust("LOW-1", -10, Reason::Damage, "").await.unwrap();
    assert_eq!(
        app.outbox_count("inventory.low_stock", "LOW-1").await,
        2,
        "a second crossing"
    );
    assert_eq!(app.outbox_count("inventory.adjusted", "LOW-1").await, 5);

    // Idempotency key: a repeat returns the first movement and adjusts nothing.
    let first = app
        .adjust("LOW-1", 5, Reason::Return, "return:1")
        .await
        .unwrap();
    let repeat = app
        .adjust("LOW-1", 5, Reason::Return, "return:1")
        .await
        .unwrap();
    assert_eq!(first.movement, repeat.movement);
    assert_eq!(app.stock("LOW-1").await.on_hand, 7);

    // Never below reserved (or zero); SALE is not an adjustment.
    app.reserve(Uuid::now_v7(), &[("LOW-1", 4)], None)
        .await
        .unwrap();
    let status = app
        .adjust("LOW-1", -4, Reason::Damage, "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = app.adjust("LOW-1", 1, Reason::Sale, "").await.unwrap_err();
    assert_eq!(bad_fields(&status), ["reason"]);
    let status = app
        .adjust("NONE-1", 1, Reason::Receiving, "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let stock = app.stock("LOW-1").await;
    assert_eq!((stock.on_hand, stock.reserved), (7, 4));

    // Low-stock listing and the threshold setter.
    let mut inventory = app.inventory();
    let low = inventory
        .list_stock(app.admin(pb::ListStockRequest {
            low_stock_only: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(low.stocks.len(), 1);
    let raised = inventory
        .set_low_stock_threshold(app.admin(pb::SetLowStockThresholdRequest {
            sku: "LOW-1".into(),
            low_stock_threshold: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .stock
        .unwrap();
    assert_eq!(raised.low_stock_threshold, 0);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn categories_form_a_tree() {
    let app = spawn_app().await;
    let mut products = app.products();
    let create = |name: &str, slug: &str, parent: &str| {
        let request = app.admin(pb::CreateCategoryRequest {
            name: name.into(),
            slug: slug.into(),
            parent_id: parent.into(),
        });
        let mut client = products.clone();
        async move { client.create_category(request).await }
    };
    let zoo = create("Zoo", "zoo", "")
        .await
        .unwrap()
        .into_inner()
        .category
        .unwrap();
    let art = create("Art", "art", "")
        .await
        .unwrap()
        .into_inner()
        .category
        .unwrap();
    let paint = create("Paint", "paint", &art.id)
        .await
        .unwrap()
        .into_inner()
        .category
        .unwrap();
    let status = create("Art again", "art", "").await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let status = create("Orphan", "orphan", &Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["parent_id"]);
    let status = create("Bad", "Bad Slug", "").await.unwrap_err();
    assert_eq!(bad_fields(&status), ["slug"]);

    let listed = products
        .list_categories(pb::ListCategoriesRequest {})
        .await
        .unwrap()
        .into_inner()
        .categories;
    let slugs: Vec<&str> = listed.iter().map(|c| c.slug.as_str()).collect();
    assert_eq!(slugs, ["art", "paint", "zoo"]);
    assert_eq!(listed[1].parent_id, art.id);
    assert_eq!(listed[2].id, zoo.id);
    let _ = paint;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_is_idempotent() {
    let app = spawn_app().await;
    let first = shopmesh_product::seed(&app.mesh.env).await.expect("seed");
    assert!(first.products_created >= 300, "{first}");
    assert_eq!(first.products_updated + first.products_unchanged, 0);
    let second = shopmesh_product::seed(&app.mesh.env)
        .await
        .expect("seed again");
    assert_eq!(
        second.products_unchanged, first.products_created,
        "{second}"
    );
    assert_eq!(second.products_created + second.products_updated, 0);
    assert_eq!(second.categories, first.categories);

    let found = app
        .search(pb::SearchProductsRequest {
            q: "wireless headphones".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!found.products.is_empty());
    let categories = app
        .products()
        .list_categories(pb::ListCategoriesRequest {})
        .await
        .unwrap()
        .into_inner()
        .categories;
    assert_eq!(categories.len(), first.categories);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossing_multi_line_orders_never_deadlock() {
    let app = spawn_app().await;
    app.create(input("CROSS-A", "Left", 100), 100).await;
    app.create(input("CROSS-B", "Right", 100), 100).await;

    // Half the orders name A first, half B first: every path locks in one order regardless.
    let orders: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    let reserves: Vec<_> = orders
        .iter()
        .enumerate()
        .map(|(i, order)| {
            let mut inventory = app.inventory();
            let (first, second) = if i % 2 == 0 {
                ("CROSS-A", "CROSS-B")
            } else {
                ("CROSS-B", "CROSS-A")
            };
            let request = app.order(pb::ReserveRequest {
                order_id: order.to_string(),
                lines: vec![
                    pb::ReservationLine {
                        sku: first.into(),
                        quantity: 1,
                    },
                    pb::ReservationLine {
                        sku: second.into(),
                        quantity: 2,
                    },
                ],
                ttl: None,
            });
            tokio::spawn(async move { inventory.reserve(request).await })
        })
        .collect();
    for reserve in reserves {
        reserve.await.unwrap().expect("no deadlock, enough stock");
    }

    // Commit half and release the other half, all at once.
    let settles: Vec<_> = orders
        .iter()
        .enumerate()
        .map(|(i, order)| {
            let mut inventory = app.inventory();
            let id = order.to_string();
            let (commit, release) = (
                app.order(pb::CommitRequest {
                    order_id: id.clone(),
                }),
                app.order(pb::ReleaseRequest { order_id: id }),
            );
            tokio::spawn(async move {
                if i % 2 == 0 {
                    inventory.commit(commit).await.map(|_| ())
                } else {
                    inventory.release(release).await.map(|_| ())
                }
            })
        })
        .collect();
    for settle in settles {
        settle.await.unwrap().expect("no deadlock");
    }
    // The lines asked for 1 of the first SKU and 2 of the second, so A and B differ per order.
    let a = app.stock("CROSS-A").await;
    let b = app.stock("CROSS-B").await;
    assert_eq!(a.reserved + b.reserved, 0);
    assert_eq!(
        (100 - a.on_hand) + (100 - b.on_hand),
        20 * 3,
        "20 orders of 3 units sold"
    );
    app.teardown().await;
}

fn struct_of(value: serde_json::Value) -> prost_types::Struct {
    fn to_pb(value: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match value {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
                values: items.into_iter().map(to_pb).collect(),
            }),
            serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
                fields: map.into_iter().map(|(k, v)| (k, to_pb(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match to_pb(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => unreachable!("an object"),
    }
}

#[tokio::test]
async fn strings_that_would_break_the_store_are_refused() {
    let app = spawn_app().await;
    let mut products = app.products();
    let create = |input: pb::ProductInput| pb::CreateProductRequest {
        product: Some(input),
        initial_stock: 0,
        low_stock_threshold: 0,
    };

    // Search text with NUL or other control characters: INVALID_ARGUMENT without fields (400).
    for q in ["a\0b", "a\u{1b}b", "a\nb"] {
        let status = app
            .search(pb::SearchProductsRequest {
                q: q.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{q:?}");
        assert!(status.message().contains("control"), "{}", status.message());
    }
    let status = products
        .get_product_by_sku(pb::GetProductBySkuRequest { sku: "A\0B".into() })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["sku"]);

    // Attributes: depth, control characters and size, all 422 naming `attributes`.
    let mut deep = serde_json::json!("leaf");
    for _ in 0..20 {
        deep = serde_json::json!({ "n": deep });
    }
    for attributes in [
        deep,
        serde_json::json!({ "k\u{0}": "v" }),
        serde_json::json!({ "k": ["ok", "v\u{0}"] }),
        serde_json::json!({ "blob": "x".repeat(17 * 1024) }),
    ] {
        let mut bad = input("ATTR-BAD", "Attributes", 100);
        bad.attributes = Some(struct_of(attributes));
        let status = products
            .create_product(app.admin(create(bad)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["attributes"]);
    }

    // Prices are capped well below i64::MAX, and so are price filters.
    for amount in [i64::MAX, 1_000_000_001] {
        let status = products
            .create_product(app.admin(create(input("PRICE-BIG", "Pricey", amount))))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["price.amount_minor"]);
    }
    let status = app
        .search(pb::SearchProductsRequest {
            min_price: usd(i64::MAX),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["min_price.amount_minor"]);

    // Adjustments: a NUL in the idempotency key is a field error, not a database error.
    app.create(input("KEY-1", "Keyed", 100), 1).await;
    let status = app
        .inventory()
        .adjust(app.admin(pb::AdjustRequest {
            sku: "KEY-1".into(),
            delta: 1,
            reason: pb::StockMovementReason::Receiving.into(),
            idempotency_key: "k\0ey".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["idempotency_key"]);
    app.teardown().await;
}

/// Reservations that arrive together are applied in batches: orders that each want the hot SKU
/// and, some of them, a scarce second one; every order sent twice at once. All lines or none
/// per order, each order reserved once, and the stock rows, movements and reservation lines
/// agree to the unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_batch_all_or_nothing_and_once_per_order() {
    let app = spawn_app().await;
    app.create(input("BATCH-HOT", "Hot", 1000), 60).await;
    app.create(input("BATCH-RARE", "Rare", 1000), 5).await;

    let orders: Vec<(Uuid, bool)> = (0..120).map(|i| (Uuid::now_v7(), i % 3 == 0)).collect();
    let mut tasks = Vec::new();
    for (order, wants_rare) in &orders {
        let mut lines = vec![pb::ReservationLine {
            sku: "BATCH-HOT".into(),
            quantity: 1,
        }];
        if *wants_rare {
            lines.push(pb::ReservationLine {
                sku: "BATCH-RARE".into(),
                quantity: 1,
            });
        }
        // The same order twice, concurrently (a retried call).
        for _ in 0..2 {
            let mut inventory = app.inventory();
            let request = app.order(pb::ReserveRequest {
                order_id: order.to_string(),
                lines: lines.clone(),
                ttl: None,
            });
            let order = *order;
            tasks.push(tokio::spawn(async move {
                (order, inventory.reserve(request).await)
            }));
        }
    }
    let mut won: std::collections::BTreeMap<Uuid, Vec<pb::Reservation>> = Default::default();
    let mut refused: std::collections::BTreeMap<Uuid, usize> = Default::default();
    for task in tasks {
        let (order, result) = task.await.expect("task");
        match result {
            Ok(reply) => won
                .entry(order)
                .or_default()
                .push(reply.into_inner().reservation.expect("reservation")),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                *refused.entry(order).or_default() += 1;
            }
        }
    }
    // Both calls of a reserved order answer the same reservation; a refused order was refused
    // both times or reserved by one call and answered by the other.
    for (order, replies) in &won {
        assert!(replies.iter().all(|r| r.order_id == order.to_string()));
        assert!(
            replies.len() == 2 || refused.get(order) == Some(&1),
            "{order}: {replies:?}"
        );
    }
    let reserved_orders: Vec<&(Uuid, bool)> =
        orders.iter().filter(|(o, _)| won.contains_key(o)).collect();
    let hot = reserved_orders.len() as i32;
    let rare = reserved_orders.iter().filter(|(_, r)| *r).count() as i32;
    assert_eq!(hot, 60, "the hot SKU sells out exactly");
    assert!(rare <= 5);

    let stock = app.stock("BATCH-HOT").await;
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (60, 60, 0)
    );
    let stock = app.stock("BATCH-RARE").await;
    assert_eq!(stock.reserved, rare);
    let lines: i64 = sqlx::query_scalar("select count(*) from reservation_lines")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        lines,
        i64::from(hot + rare),
        "every line of every reserved order, once"
    );
    let reservations: i64 = sqlx::query_scalar("select count(*) from reservations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(reservations, i64::from(hot));
    // The audit trail's running totals end where the rows are.
    for sku in ["BATCH-HOT", "BATCH-RARE"] {
        let movements = app.movements(sku).await;
        let stock = app.stock(sku).await;
        let (mut on_hand, mut reserved) = (0, 0);
        for movement in &movements {
            on_hand += movement.delta;
            reserved += movement.reserved_delta;
            assert_eq!(
                (movement.on_hand_after, movement.reserved_after),
                (on_hand, reserved),
                "{sku}"
            );
        }
        assert_eq!(
            (on_hand, reserved),
            (stock.on_hand, stock.reserved),
            "{sku}"
        );
    }
    app.teardown().await;
}
