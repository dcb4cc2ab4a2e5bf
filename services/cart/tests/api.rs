//! Integration tests of the cart service over gRPC: the cart and a real product service run in
//! one mesh (started through the platform's `Mesh`), against the local Redis (a unique key prefix
//! per test) and PostgreSQL (a fresh catalog database per test). The order service is registered
//! in the mesh but not started: its address points at a closed port, so calls to it fail the way
//! an unreachable peer does. The user service is not started either, except in the address-book
//! test, which runs the real one on the local MongoDB (its own database).

// The helpers outside `#[test]` functions are test code too (clippy.toml's allowance covers only
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use shopmesh_contracts::pb::shopmesh::cart::v1 as pb;
use shopmesh_contracts::pb::shopmesh::cart::v1::cart_service_client::CartServiceClient;
use shopmesh_contracts::pb::shopmesh::common::v1::PostalAddress;
use shopmesh_contracts::pb::shopmesh::product::v1 as product_pb;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_contracts::user as user_pb;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_testkit::{
    NotStarted, PgDatabase, TestEnv, TestMesh, bad_fields, closed_port, mongodb_url, usd,
    with_bearer,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use uuid::Uuid;

const REDIS: &str = "redis://127.0.0.1:6379";
const TTL_SECS: i64 = 3600;

struct TestApp {
    database: PgDatabase,
    /// The user service's MongoDB database, when it runs.
    users_db: Option<String>,
    user_channel: Option<Channel>,
    /// Every Redis key of the test starts with it.
    root_prefix: String,
    prefix: String,
    cart_channel: Channel,
    product_channel: Channel,
    redis: redis::aio::MultiplexedConnection,
    admin_token: String,
    mesh: TestMesh,
}

async fn spawn_app() -> TestApp {
    spawn(false).await
}

/// With the real user service (accounts and address books in MongoDB, its own JWKS).
async fn spawn_app_with_users() -> TestApp {
    spawn(true).await
}

async fn spawn(with_users: bool) -> TestApp {
    let id = Uuid::new_v4().simple();
    let database = PgDatabase::new("cart_test");
    let root_prefix = format!("shopmesh-test:{id}:");
    let prefix = format!("{root_prefix}cart:");
    let users_db = format!("cart_test_users_{id}");
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    let env = TestEnv::new("cart")
        .serve("product")
        .database("product", database.url())
        .serve("cart")
        .set("CART_REDIS_URL", REDIS)
        .set("CART_KEY_PREFIX", prefix.as_str())
        .set("CART_TTL_SECS", TTL_SECS.to_string())
        .set("ORDER_GRPC_URL", nowhere.as_str());
    let env = if with_users {
        env.serve("user")
            .set("MONGODB_URL", mongodb_url())
            .set("MONGODB_DATABASE", users_db.as_str())
            .set("REDIS_KEY_PREFIX", format!("{root_prefix}user:"))
    } else {
        env.set("USER_GRPC_URL", nowhere.as_str())
    };
    let user: Arc<dyn Service> = if with_users {
        Arc::new(shopmesh_user::User)
    } else {
        Arc::new(NotStarted::new("user"))
    };
    let services = Mesh::new(vec![
        user,
        Arc::new(shopmesh_product::Product::default()),
        Arc::new(shopmesh_cart::Cart),
        Arc::new(NotStarted::new("order")),
    ]);
    let targets: &[&str] = if with_users {
        &["user", "product", "cart"]
    } else {
        &["product", "cart"]
    };
    // User access tokens are signed by the user service alone. Without it, the verifier is
    // handed the public key of a test signer; with it, its own keys are fetched.
    let mesh = TestMesh::start(&env, &services, targets, &[]).await;

    let cart_channel = mesh.channel("cart").await;
    let product_channel = mesh.channel("product").await;
    let user_channel = if with_users {
        Some(mesh.channel("user").await)
    } else {
        None
    };
    let redis = redis::Client::open(REDIS)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    TestApp {
        database,
        users_db: with_users.then_some(users_db),
        user_channel,
        root_prefix,
        prefix,
        cart_channel,
        product_channel,
        redis,
        admin_token: mesh.users.admin_token(),
        mesh,
    }
}

fn anonymous<T>(message: T, cart_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-shopmesh-cart-id", cart_id.parse().expect("metadata"));
    request
}

/// A customer: their id and access token.
struct Customer {
    id: String,
    token: String,
}

impl Customer {
    fn req<T>(&self, message: T) -> Request<T> {
        with_bearer(message, &self.token)
    }
}

fn add(sku: &str, quantity: i32) -> pb::AddItemRequest {
    pb::AddItemRequest {
        product_id: String::new(),
        quantity,
        sku: sku.into(),
    }
}

fn set(sku: &str, quantity: i32) -> pb::UpdateItemQuantityRequest {
    pb::UpdateItemQuantityRequest {
        product_id: String::new(),
        quantity,
        sku: sku.into(),
    }
}

fn remove(sku: &str) -> pb::RemoveItemRequest {
    pb::RemoveItemRequest {
        product_id: String::new(),
        sku: sku.into(),
    }
}

fn quantities(cart: &pb::Cart) -> Vec<(String, i32)> {
    cart.items
        .iter()
        .map(|i| (i.sku.clone(), i.quantity))
        .collect()
}

fn berlin() -> PostalAddress {
    PostalAddress {
        recipient: "Ada Lovelace".into(),
        line1: "Unter den Linden 1".into(),
        line2: String::new(),
        city: "Berlin".into(),
        region: String::new(),
        postal_code: "10117".into(),
        country: "DE".into(),
        phone: String::new(),
    }
}

fn checkout(key: &str, address: PostalAddress) -> pb::CheckoutRequest {
    pb::CheckoutRequest {
        idempotency_key: key.into(),
        shipping_address: Some(pb::checkout_request::ShippingAddress::Address(address)),
        payment_method_token: "tok_test_visa".into(),
    }
}

impl TestApp {
    fn cart(&self) -> CartServiceClient<Channel> {
        CartServiceClient::new(self.cart_channel.clone())
    }

    fn products(&self) -> ProductServiceClient<Channel> {
        ProductServiceClient::new(self.product_channel.clone())
    }

    fn customer(&self) -> Customer {
        let user = self.mesh.users.customer();
        Customer {
            id: user.id,
            token: user.token,
        }
    }

    async fn create_product(&self, sku: &str, price: i64) -> product_pb::Product {
        self.products()
            .create_product(with_bearer(
                product_pb::CreateProductRequest {
                    product: Some(product_pb::ProductInput {
                        sku: sku.into(),
                        name: format!("Product {sku}"),
                        price: usd(price),
                        active: true,
                        ..Default::default()
                    }),
                    initial_stock: 100,
                    low_stock_threshold: 0,
                },
                &self.admin_token,
            ))
            .await
            .expect("product created")
            .into_inner()
            .product
            .expect("product")
    }

    /// Changes a product as an admin (the fields named in `paths`).
    async fn update_product(
        &self,
        product: &product_pb::Product,
        input: product_pb::ProductInput,
        paths: &[&str],
    ) -> product_pb::Product {
        self.products()
            .update_product(with_bearer(
                product_pb::UpdateProductRequest {
                    product_id: product.id.clone(),
                    product: Some(input),
                    update_mask: Some(prost_types::FieldMask {
                        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                    }),
                    etag: product.etag.clone(),
                },
                &self.admin_token,
            ))
            .await
            .expect("product updated")
            .into_inner()
            .product
            .expect("product")
    }

    async fn get(&self, customer: &Customer) -> pb::Cart {
        self.cart()
            .get_cart(customer.req(pb::GetCartRequest {}))
            .await
            .expect("cart")
            .into_inner()
            .cart
            .expect("cart")
    }

    async fn add(&self, customer: &Customer, sku: &str, quantity: i32) -> Result<pb::Cart, Status> {
        self.cart()
            .add_item(customer.req(add(sku, quantity)))
            .await
            .map(|r| r.into_inner().cart.expect("cart"))
    }

    async fn redis_ttl(&self, key_suffix: &str) -> i64 {
        let mut redis = self.redis.clone();
        redis::cmd("TTL")
            .arg(format!("{}{key_suffix}", self.prefix))
            .query_async(&mut redis)
            .await
            .expect("ttl")
    }

    async fn redis_exists(&self, key_suffix: &str) -> bool {
        let mut redis = self.redis.clone();
        let n: i64 = redis::cmd("EXISTS")
            .arg(format!("{}{key_suffix}", self.prefix))
            .query_async(&mut redis)
            .await
            .expect("exists");
        n == 1
    }

    /// Stops the servers, drops the databases, the test's Redis keys and the run directory.
    async fn teardown(self) {
        drop(self.cart_channel);
        drop(self.product_channel);
        drop(self.user_channel);
        self.mesh.stop().await;
        if let Some(users_db) = &self.users_db {
            mongodb::Client::with_uri_str(mongodb_url())
                .await
                .expect("mongodb")
                .database(users_db)
                .drop()
                .await
                .expect("drop the users database");
        }
        let mut redis = self.redis.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.root_prefix))
            .query_async(&mut redis)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut redis)
                .await
                .expect("del");
        }
        self.database.drop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn items_are_added_updated_removed_and_cleared() {
    let app = spawn_app().await;
    app.create_product("TEE-RED", 1999).await;
    let mug = app.create_product("MUG-1", 850).await;
    let ada = app.customer();

    let empty = app.get(&ada).await;
    assert!(empty.items.is_empty());
    assert_eq!(empty.item_count, 0);
    assert!(empty.expire_time.is_none());

    // SKUs match in any letter case, as the catalog normalises them.
    let response = app
        .cart()
        .add_item(ada.req(add("tee-red", 2)))
        .await
        .unwrap()
        .into_inner();
    assert!(response.created);
    let response = app
        .cart()
        .add_item(ada.req(pb::AddItemRequest {
            product_id: mug.id.clone(),
            quantity: 0,
            sku: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(response.created, "a new product gets a new line");
    let response = app
        .cart()
        .add_item(ada.req(add("TEE-RED", 1)))
        .await
        .unwrap()
        .into_inner();
    assert!(!response.created, "units of a product join its line");
    let cart = response.cart.unwrap();
    assert_eq!(cart.user_id, ada.id);
    assert_eq!(
        quantities(&cart),
        [("TEE-RED".to_owned(), 3), ("MUG-1".to_owned(), 1)],
        "lines keep the order products were first added in; quantity 0 means 1"
    );
    assert_eq!(cart.items[0].name, "Product TEE-RED");
    assert_eq!(cart.items[0].unit_price, usd(1999));
    assert_eq!(cart.items[0].line_total, usd(5997));
    assert!(cart.items.iter().all(|i| i.available));
    assert_eq!(cart.total, usd(5997 + 850));
    assert_eq!(cart.item_count, 4);
    assert!(cart.expire_time.is_some() && cart.update_time.is_some());

    let cart = app
        .cart()
        .update_item_quantity(ada.req(set("TEE-RED", 5)))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(cart.items[0].quantity, 5);
    assert_eq!(cart.total, usd(5 * 1999 + 850));

    let cart = app
        .cart()
        .update_item_quantity(ada.req(set("MUG-1", 0)))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(quantities(&cart), [("TEE-RED".to_owned(), 5)], "0 removes");

    let status = app
        .cart()
        .update_item_quantity(ada.req(set("MUG-1", 2)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Removing is idempotent.
    for _ in 0..2 {
        let cart = app
            .cart()
            .remove_item(ada.req(remove("TEE-RED")))
            .await
            .unwrap()
            .into_inner()
            .cart
            .unwrap();
        assert!(cart.items.is_empty());
    }
    assert!(!app.redis_exists(&format!("user:{}", ada.id)).await);

    app.add(&ada, "MUG-1", 3).await.unwrap();
    let cart = app
        .cart()
        .clear_cart(ada.req(pb::ClearCartRequest {}))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert!(cart.items.is_empty());
    assert!(app.get(&ada).await.items.is_empty());
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quantities_and_lines_are_capped() {
    let app = spawn_app().await;
    app.create_product("CAP-0", 100).await;
    let ada = app.customer();

    for quantity in [-1, 100] {
        let status = app.add(&ada, "CAP-0", quantity).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{quantity}");
        assert_eq!(bad_fields(&status), ["quantity"]);
    }
    app.add(&ada, "CAP-0", 60).await.unwrap();
    let status = app.add(&ada, "CAP-0", 40).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    app.add(&ada, "CAP-0", 39).await.unwrap();
    let status = app.add(&ada, "CAP-0", 1).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    for quantity in [-1, 100] {
        let status = app
            .cart()
            .update_item_quantity(ada.req(set("CAP-0", quantity)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["quantity"]);
    }
    assert_eq!(app.get(&ada).await.items[0].quantity, 99);

    for i in 1..50 {
        let sku = format!("CAP-{i}");
        app.create_product(&sku, 100).await;
        app.add(&ada, &sku, 1).await.unwrap();
    }
    app.create_product("CAP-50", 100).await;
    let status = app.add(&ada, "CAP-50", 1).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("50"), "{}", status.message());
    let cart = app.get(&ada).await;
    assert_eq!(cart.items.len(), 50);
    assert!(cart.items.iter().all(|i| i.sku != "CAP-50"));
    // A product already in the full cart still takes more units.
    app.add(&ada, "CAP-1", 1).await.unwrap();

    // Merging into the full cart: quantities still add up (capped), new products are dropped.
    let cart_id = Uuid::new_v4().to_string();
    for (sku, quantity) in [("CAP-50", 1), ("CAP-0", 5), ("CAP-2", 3)] {
        app.cart()
            .add_item(anonymous(add(sku, quantity), &cart_id))
            .await
            .unwrap();
    }
    let merged = app
        .cart()
        .merge_cart(ada.req(pb::MergeCartRequest {
            anonymous_cart_id: cart_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(merged.items.len(), 50);
    assert!(merged.items.iter().all(|i| i.sku != "CAP-50"));
    let quantity = |sku: &str| merged.items.iter().find(|i| i.sku == sku).unwrap().quantity;
    assert_eq!(quantity("CAP-0"), 99);
    assert_eq!(quantity("CAP-2"), 4);
    assert!(!app.redis_exists(&format!("anon:{cart_id}")).await);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_products_are_not_found() {
    let app = spawn_app().await;
    let ada = app.customer();
    let status = app.add(&ada, "NO-SUCH-SKU", 1).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = app
        .cart()
        .add_item(ada.req(pb::AddItemRequest {
            product_id: Uuid::now_v7().to_string(),
            quantity: 1,
            sku: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = app.cart().add_item(ada.req(add("", 1))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["sku"]);
    assert!(app.get(&ada).await.items.is_empty());
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inactive_products_are_refused_and_shown_unavailable() {
    let app = spawn_app().await;
    let lamp = app.create_product("LAMP-1", 4000).await;
    app.create_product("BULB-1", 300).await;
    let ada = app.customer();
    app.add(&ada, "LAMP-1", 1).await.unwrap();
    app.add(&ada, "BULB-1", 2).await.unwrap();

    app.update_product(
        &lamp,
        product_pb::ProductInput {
            active: false,
            ..Default::default()
        },
        &["active"],
    )
    .await;

    let status = app.add(&ada, "LAMP-1", 1).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let cart = app.get(&ada).await;
    assert_eq!(cart.items.len(), 2, "the line stays until removed");
    assert!(!cart.items[0].available);
    assert!(cart.items[1].available);
    assert_eq!(
        cart.total,
        usd(600),
        "unavailable lines are not in the total"
    );
    assert_eq!(cart.item_count, 3);

    // Checkout refuses the cart before any order is attempted (the order service is down here,
    // which would be UNAVAILABLE).
    let status = app
        .cart()
        .checkout(ada.req(checkout("key-inactive", berlin())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("LAMP-1"), "{}", status.message());
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_price_changes_show_on_the_next_read() {
    let app = spawn_app().await;
    let tee = app.create_product("TEE-PRICE", 1000).await;
    let ada = app.customer();
    app.add(&ada, "TEE-PRICE", 2).await.unwrap();
    app.update_product(
        &tee,
        product_pb::ProductInput {
            price: usd(1250),
            name: "Better tee".into(),
            ..Default::default()
        },
        &["price", "name"],
    )
    .await;
    let cart = app.get(&ada).await;
    assert_eq!(cart.items[0].unit_price, usd(1250));
    assert_eq!(cart.items[0].name, "Better tee");
    assert_eq!(cart.items[0].line_total, usd(2500));
    assert_eq!(cart.total, usd(2500));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn carts_expire_after_the_ttl_which_every_read_pushes_back() {
    let app = spawn_app().await;
    app.create_product("TTL-1", 500).await;
    let ada = app.customer();
    let key = format!("user:{}", ada.id);
    app.add(&ada, "TTL-1", 1).await.unwrap();
    let ttl = app.redis_ttl(&key).await;
    assert!((TTL_SECS - 5..=TTL_SECS).contains(&ttl), "{ttl}");

    // Let the clock run down, then read.
    let mut redis = app.redis.clone();
    let _: i64 = redis::cmd("EXPIRE")
        .arg(format!("{}{key}", app.prefix))
        .arg(60)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(app.redis_ttl(&key).await <= 60);
    let cart = app.get(&ada).await;
    let ttl = app.redis_ttl(&key).await;
    assert!((TTL_SECS - 5..=TTL_SECS).contains(&ttl), "{ttl}");

    let expires = cart.expire_time.unwrap().seconds;
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now + TTL_SECS - 5..=now + TTL_SECS + 1).contains(&expires),
        "expire_time is now + TTL"
    );
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_anonymous_cart_merges_into_the_users_cart() {
    let app = spawn_app().await;
    app.create_product("SOCK-1", 500).await;
    app.create_product("HAT-1", 2500).await;
    app.create_product("SCARF-1", 3000).await;
    let ada = app.customer();
    let cart_id = Uuid::new_v4().to_string();

    // Without a token or a cart id there is no cart to act on.
    let status = app
        .cart()
        .get_cart(Request::new(pb::GetCartRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = app
        .cart()
        .get_cart(anonymous(pb::GetCartRequest {}, "not-a-uuid"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    for (sku, quantity) in [("SOCK-1", 3), ("HAT-1", 60)] {
        app.cart()
            .add_item(anonymous(add(sku, quantity), &cart_id))
            .await
            .unwrap();
    }
    let anon = app
        .cart()
        .get_cart(anonymous(pb::GetCartRequest {}, &cart_id))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(anon.user_id, "");
    assert_eq!(anon.item_count, 63);

    app.add(&ada, "HAT-1", 50).await.unwrap();
    app.add(&ada, "SCARF-1", 1).await.unwrap();

    // Merging is for signed-in users only.
    let status = app
        .cart()
        .merge_cart(anonymous(
            pb::MergeCartRequest {
                anonymous_cart_id: cart_id.clone(),
            },
            &cart_id,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let merged = app
        .cart()
        .merge_cart(ada.req(pb::MergeCartRequest {
            anonymous_cart_id: cart_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(
        quantities(&merged),
        [
            ("HAT-1".to_owned(), 99),
            ("SCARF-1".to_owned(), 1),
            ("SOCK-1".to_owned(), 3)
        ],
        "quantities add up (capped at 99); new products are appended"
    );
    assert!(!app.redis_exists(&format!("anon:{cart_id}")).await);
    let anon = app
        .cart()
        .get_cart(anonymous(pb::GetCartRequest {}, &cart_id))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert!(anon.items.is_empty());

    // Merging again (the anonymous cart is gone) leaves the user's cart as it is.
    let again = app
        .cart()
        .merge_cart(ada.req(pb::MergeCartRequest {
            anonymous_cart_id: cart_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(quantities(&again), quantities(&merged));

    let status = app
        .cart()
        .merge_cart(ada.req(pb::MergeCartRequest {
            anonymous_cart_id: "nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["anonymous_cart_id"]);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_never_pass_the_line_cap() {
    let app = spawn_app().await;
    app.create_product("RACE-1", 100).await;
    let ada = Arc::new(app.customer());
    let mut calls = Vec::new();
    for _ in 0..50 {
        let mut client = app.cart();
        let ada = ada.clone();
        calls.push(tokio::spawn(async move {
            client.add_item(ada.req(add("RACE-1", 2))).await
        }));
    }
    let mut added = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => added += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((added, refused), (49, 1));
    assert_eq!(app.get(&ada).await.items[0].quantity, 98);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_sees_only_their_own_cart() {
    let app = spawn_app().await;
    app.create_product("OWN-1", 100).await;
    let ada = app.customer();
    let bob = app.customer();
    app.add(&ada, "OWN-1", 4).await.unwrap();

    let bobs = app.get(&bob).await;
    assert!(bobs.items.is_empty());
    assert_eq!(bobs.user_id, bob.id);
    let status = app
        .cart()
        .update_item_quantity(bob.req(set("OWN-1", 1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.cart()
        .remove_item(bob.req(remove("OWN-1")))
        .await
        .unwrap();
    app.cart()
        .clear_cart(bob.req(pb::ClearCartRequest {}))
        .await
        .unwrap();
    // A user token wins over an anonymous cart id sent alongside it.
    let mut request = bob.req(pb::GetCartRequest {});
    request.metadata_mut().insert(
        "x-shopmesh-cart-id",
        Uuid::new_v4().to_string().parse().unwrap(),
    );
    let cart = app.cart().get_cart(request).await.unwrap().into_inner();
    assert_eq!(cart.cart.unwrap().user_id, bob.id);

    assert_eq!(quantities(&app.get(&ada).await), [("OWN-1".to_owned(), 4)]);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_validates_its_input_before_placing_an_order() {
    let app = spawn_app().await;
    app.create_product("CHK-1", 100).await;
    let ada = app.customer();
    app.add(&ada, "CHK-1", 1).await.unwrap();

    for key in ["", "tab\tkey", &"k".repeat(129)] {
        let status = app
            .cart()
            .checkout(ada.req(checkout(key, berlin())))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{key:?}");
        assert_eq!(bad_fields(&status), ["idempotency_key"], "{key:?}");
    }

    let status = app
        .cart()
        .checkout(ada.req(checkout(
            "key-1",
            PostalAddress {
                country: "ZZ".into(),
                city: String::new(),
                ..berlin()
            },
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields(&status),
        ["shipping_address.city", "shipping_address.country"]
    );

    let status = app
        .cart()
        .checkout(ada.req(pb::CheckoutRequest {
            idempotency_key: "key-1".into(),
            shipping_address: None,
            payment_method_token: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        bad_fields(&status),
        ["shipping_address", "payment_method_token"]
    );

    // Checkout is for signed-in users: an anonymous cart cannot check out.
    let cart_id = Uuid::new_v4().to_string();
    let status = app
        .cart()
        .checkout(anonymous(checkout("key-1", berlin()), &cart_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(app.get(&ada).await.item_count, 1);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_with_the_order_service_down_is_unavailable_and_keeps_the_cart() {
    let app = spawn_app().await;
    app.create_product("DOWN-1", 700).await;
    let ada = app.customer();
    app.add(&ada, "DOWN-1", 2).await.unwrap();
    let before = app.get(&ada).await;

    let status = app
        .cart()
        .checkout(ada.req(checkout("key-down", berlin())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        !status.message().contains("127.0.0.1"),
        "{}",
        status.message()
    );

    // An address of the address book needs the user service, which is down as well.
    let status = app
        .cart()
        .checkout(ada.req(pb::CheckoutRequest {
            idempotency_key: "key-down".into(),
            shipping_address: Some(pb::checkout_request::ShippingAddress::AddressId(
                Uuid::now_v7().to_string(),
            )),
            payment_method_token: "tok_test_visa".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let after = app.get(&ada).await;
    assert_eq!(quantities(&after), quantities(&before));
    assert_eq!(after.total, usd(1400));
    app.teardown().await;
}

/// Registers and logs in a customer at the real user service; their id and access token.
async fn register(app: &TestApp, email: &str) -> Customer {
    let mut users = UserServiceClient::new(app.user_channel.clone().expect("user service runs"));
    let password = "Correct-Horse-9";
    let user = users
        .register(user_pb::RegisterRequest {
            email: email.into(),
            password: password.into(),
            name: "Ada".into(),
        })
        .await
        .expect("registered")
        .into_inner()
        .user
        .expect("user");
    let tokens = users
        .login(user_pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .expect("logged in")
        .into_inner()
        .tokens
        .expect("tokens");
    Customer {
        id: user.id,
        token: tokens.access_token,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_resolves_address_ids_in_the_callers_own_address_book() {
    let app = spawn_app_with_users().await;
    let ada = register(&app, "ada@example.com").await;
    let bob = register(&app, "bob@example.com").await;
    let mut users = UserServiceClient::new(app.user_channel.clone().unwrap());
    let address = users
        .create_address(ada.req(user_pb::CreateAddressRequest {
            address: Some(user_pb::AddressInput {
                recipient: "Ada Lovelace".into(),
                line1: "12 St James's Square".into(),
                city: "London".into(),
                postal_code: "SW1Y 4JH".into(),
                country: "GB".into(),
                ..Default::default()
            }),
        }))
        .await
        .expect("address created")
        .into_inner()
        .address
        .expect("address");
    let with_address = |id: &str| pb::CheckoutRequest {
        idempotency_key: "key-address".into(),
        shipping_address: Some(pb::checkout_request::ShippingAddress::AddressId(id.into())),
        payment_method_token: "tok_test_visa".into(),
    };

    // Someone else's address, or no address at all, is not found.
    let status = app
        .cart()
        .checkout(bob.req(with_address(&address.id)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = app
        .cart()
        .checkout(ada.req(with_address(&Uuid::now_v7().to_string())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // The owner's address resolves, and the checkout gets as far as the order service (down).
    let status = app
        .cart()
        .checkout(ada.req(with_address(&address.id)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    app.teardown().await;
}
