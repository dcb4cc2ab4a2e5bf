//! Integration tests of the user service's outbox: the events recorded in the `pending_events`
//! of the changed account's own document, and the relay's two repository functions. The real
//! user service runs in a mesh (started through the platform's `Mesh`) on the local MongoDB (a
//! database of its own per test; `MONGODB_URL`, see `shopmesh_testkit::mongodb_url`) and Redis
//! (a key prefix of its own per test).

// The helpers outside `#[test]` functions are test code too (clippy.toml's allowance covers only
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mongodb::bson::{Bson, Document, doc};
use prost::Message;
use shopmesh_contracts::pb::shopmesh::events::v1 as events_pb;
use shopmesh_contracts::user as pb;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::auth::{Role, Tier};
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_testkit::{TestEnv, TestMesh, mongodb_url, with_bearer};
use shopmesh_user::events::PendingEvent;
use shopmesh_user::repo::{MongoUserRepo, UserRepo};
use shopmesh_user::service::UserService;
use shopmesh_user::{User, UserSettings};
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

const REDIS: &str = "redis://127.0.0.1:6379";
const PASSWORD: &str = "Correct-Horse-42";

struct TestApp {
    mesh: TestMesh,
    channel: Channel,
    /// The service's MongoDB database.
    database: String,
    /// Every Redis key of the test starts with it.
    prefix: String,
    /// The raw `users` collection, for what the API does not show.
    users: mongodb::Collection<Document>,
    /// The repository as the relay uses it.
    repo: MongoUserRepo,
    /// The use cases, for what no customer RPC does (access changes, the admin command).
    service: Arc<UserService>,
}

async fn spawn_app() -> TestApp {
    let id = Uuid::new_v4().simple();
    let database = format!("user_outbox_test_{id}");
    let prefix = format!("shopmesh-test:{id}:user:");
    let env = TestEnv::new("user")
        .serve("user")
        .set("MONGODB_URL", mongodb_url())
        .set("MONGODB_DATABASE", database.as_str())
        .set("REDIS_URL", REDIS)
        .set("REDIS_KEY_PREFIX", prefix.as_str())
        // No broker: the service's relay cannot publish, so the events these tests look at stay
        // in the documents (which is also what happens while RabbitMQ is down).
        .set(
            "AMQP_URL",
            format!(
                "amqp://guest:guest@127.0.0.1:{}/%2f",
                shopmesh_testkit::closed_port()
            ),
        );
    let services = Mesh::new(vec![Arc::new(User) as Arc<dyn Service>]);
    let mesh = TestMesh::start(&env, &services, &["user"], &[]).await;
    let channel = mesh.channel("user").await;
    let user_settings = UserSettings::from_env(&mesh.env).expect("user settings");
    let service = shopmesh_user::connect(&mesh.settings, &user_settings)
        .await
        .expect("user service");
    let repo = MongoUserRepo::connect(&mongodb_url(), &database)
        .await
        .expect("repo");
    let users = mongodb::Client::with_uri_str(mongodb_url())
        .await
        .expect("mongodb")
        .database(&database)
        .collection("users");
    TestApp {
        mesh,
        channel,
        database,
        prefix,
        users,
        repo,
        service,
    }
}

fn with_request_id<T>(mut request: Request<T>, request_id: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request
}

impl TestApp {
    fn client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    /// Registers a customer over gRPC, with `request_id` as the request id.
    async fn register(&self, email: &str, name: &str, request_id: &str) -> pb::User {
        self.client()
            .register(with_request_id(
                Request::new(pb::RegisterRequest {
                    email: email.into(),
                    password: PASSWORD.into(),
                    name: name.into(),
                }),
                request_id,
            ))
            .await
            .expect("registered")
            .into_inner()
            .user
            .expect("user")
    }

    async fn login(&self, email: &str) -> String {
        self.client()
            .login(pb::LoginRequest {
                email: email.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("logged in")
            .into_inner()
            .tokens
            .expect("tokens")
            .access_token
    }

    async fn update_me(&self, token: &str, name: &str, phone: &str, request_id: &str) -> pb::User {
        self.client()
            .update_me(with_request_id(
                with_bearer(
                    pb::UpdateMeRequest {
                        name: name.into(),
                        phone: phone.into(),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["name".into(), "phone".into()],
                        }),
                    },
                    token,
                ),
                request_id,
            ))
            .await
            .expect("updated")
            .into_inner()
            .user
            .expect("user")
    }

    /// The stored document of an account, as it is in MongoDB.
    async fn document(&self, user_id: &str) -> Document {
        self.users
            .find_one(doc! { "_id": user_id })
            .await
            .expect("find")
            .expect("the account's document")
    }

    /// The pending events stored in an account's document, in their order.
    async fn stored_events(&self, user_id: &str) -> Vec<Document> {
        match self.document(user_id).await.get("pending_events") {
            Some(Bson::Array(events)) => events
                .iter()
                .map(|e| e.as_document().expect("an event document").clone())
                .collect(),
            None => Vec::new(),
            Some(other) => panic!("pending_events is {other:?}"),
        }
    }

    /// The account's pending events as the relay reads them.
    async fn events_of(&self, user_id: &str) -> Vec<PendingEvent> {
        self.repo
            .pending_events(1000)
            .await
            .expect("pending events")
            .into_iter()
            .filter(|e| e.aggregate_id == user_id)
            .collect()
    }

    /// Stops the server, drops the database, the test's Redis keys and the run directory.
    async fn teardown(self) {
        drop(self.channel);
        self.mesh.stop().await;
        mongodb::Client::with_uri_str(mongodb_url())
            .await
            .expect("mongodb")
            .database(&self.database)
            .drop()
            .await
            .expect("drop the database");
        let mut redis = redis::Client::open(REDIS)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
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
    }
}

fn registered(event: &PendingEvent) -> events_pb::UserRegistered {
    assert_eq!(event.event_type, "user.registered");
    assert_eq!(
        event.payload_type,
        "type.googleapis.com/shopmesh.events.v1.UserRegistered"
    );
    events_pb::UserRegistered::decode(event.payload.as_slice()).expect("UserRegistered")
}

fn updated(event: &PendingEvent) -> events_pb::UserUpdated {
    assert_eq!(event.event_type, "user.updated");
    assert_eq!(
        event.payload_type,
        "type.googleapis.com/shopmesh.events.v1.UserUpdated"
    );
    events_pb::UserUpdated::decode(event.payload.as_slice()).expect("UserUpdated")
}

fn email() -> String {
    format!("ada.{}@example.com", Uuid::new_v4().simple())
}

#[tokio::test]
async fn registration_records_one_user_registered_in_the_account() {
    let app = spawn_app().await;
    let address = email();
    let user = app.register(&address, "Ada Lovelace", "req-register").await;

    // The event is in the account's own document, with every field the relay needs.
    let stored = app.stored_events(&user.id).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let raw = &stored[0];
    let id = raw.get_str("id").unwrap();
    assert_eq!(Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert_eq!(raw.get_str("event_type").unwrap(), "user.registered");
    assert_eq!(raw.get_str("aggregate_id").unwrap(), user.id);
    assert_eq!(raw.get_str("correlation_id").unwrap(), "req-register");
    assert!(
        matches!(raw.get("payload"), Some(Bson::Binary(_))),
        "{raw:?}"
    );
    assert!(raw.get_datetime("created_at").is_ok(), "{raw:?}");

    let events = app.events_of(&user.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, id);
    assert_eq!(events[0].correlation_id, "req-register");
    let payload = registered(&events[0]);
    assert_eq!(payload.user_id, user.id);
    assert_eq!(payload.email, address);
    assert_eq!(payload.name, "Ada Lovelace");
    assert_eq!(payload.role(), pb::Role::Customer);
    assert_eq!(payload.tier(), pb::Tier::Standard);
    assert_eq!(
        events[0].created_at.timestamp(),
        user.create_time.unwrap().seconds
    );

    // A second registration of the address is refused and records nothing.
    let taken = app
        .client()
        .register(pb::RegisterRequest {
            email: address.to_uppercase(),
            password: PASSWORD.into(),
            name: "Someone Else".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(app.repo.pending_events(100).await.unwrap().len(), 1);

    // Without a request id the correlation id is empty.
    let other = app.register(&email(), "Charles Babbage", "").await;
    let events = app.events_of(&other.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].correlation_id, "");
    app.teardown().await;
}

#[tokio::test]
async fn a_profile_change_records_one_user_updated_with_the_whole_state() {
    let app = spawn_app().await;
    let address = email();
    let user = app.register(&address, "Ada", "").await;
    let token = app.login(&address).await;
    let changed = app
        .update_me(&token, "Ada Lovelace", "+44 20 7946 0000", "req-profile")
        .await;
    assert_eq!(changed.name, "Ada Lovelace");

    let events = app.events_of(&user.id).await;
    assert_eq!(events.len(), 2, "{events:?}");
    registered(&events[0]);
    assert_eq!(events[1].correlation_id, "req-profile");
    assert!(events[0].id < events[1].id);
    let payload = updated(&events[1]);
    assert_eq!(payload.user_id, user.id);
    assert_eq!(payload.email, address);
    assert_eq!(payload.name, "Ada Lovelace");
    assert_eq!(payload.phone, "+44 20 7946 0000");
    assert_eq!(payload.role(), pb::Role::Customer);
    assert_eq!(payload.tier(), pb::Tier::Standard);

    // The same values again change nothing and record nothing.
    app.update_me(&token, "Ada Lovelace", "+44 20 7946 0000", "req-same")
        .await;
    assert_eq!(app.events_of(&user.id).await.len(), 2);
    // Address-book changes are not profile changes: no event.
    app.client()
        .create_address(with_bearer(
            pb::CreateAddressRequest {
                address: Some(pb::AddressInput {
                    label: "Home".into(),
                    recipient: "Ada Lovelace".into(),
                    line1: "1 Analytical Way".into(),
                    city: "London".into(),
                    postal_code: "N1 9GU".into(),
                    country: "GB".into(),
                    ..pb::AddressInput::default()
                }),
            },
            &token,
        ))
        .await
        .expect("address created");
    assert_eq!(app.events_of(&user.id).await.len(), 2);
    // …and a profile change after one still records its own.
    app.update_me(&token, "Countess Lovelace", "", "req-again")
        .await;
    let events = app.events_of(&user.id).await;
    assert_eq!(events.len(), 3);
    let payload = updated(&events[2]);
    assert_eq!(
        (payload.name.as_str(), payload.phone.as_str()),
        ("Countess Lovelace", "")
    );

    // The outbox never shows in what the API returns.
    let me = app
        .client()
        .get_me(with_bearer(pb::GetMeRequest {}, &token))
        .await
        .expect("me")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(me.name, "Countess Lovelace");
    assert_eq!(me.addresses.len(), 1);
    let read = app.repo.by_id(&user.id).await.unwrap().unwrap();
    assert!(!format!("{read:?}").contains("pending"), "{read:?}");
    app.teardown().await;
}

#[tokio::test]
async fn role_and_tier_changes_record_user_updated() {
    let app = spawn_app().await;
    let address = email();
    let user = app.register(&address, "Grace Hopper", "").await;
    let vip = app
        .service
        .update_access(&user.id, None, Some(Tier::Vip), "req-tier")
        .await
        .unwrap();
    assert_eq!(vip.tier, Tier::Vip);
    // Setting what the account already has is no change.
    app.service
        .update_access(&user.id, Some(Role::Customer), Some(Tier::Vip), "req-same")
        .await
        .unwrap();
    // The admin command promotes the existing account.
    let (admin, created) = app.service.ensure_admin(&address, PASSWORD).await.unwrap();
    assert!(!created);
    assert_eq!(admin.role, Role::Admin);

    let events = app.events_of(&user.id).await;
    assert_eq!(events.len(), 3, "{events:?}");
    registered(&events[0]);
    let tier = updated(&events[1]);
    assert_eq!(events[1].correlation_id, "req-tier");
    assert_eq!(tier.tier(), pb::Tier::Vip);
    assert_eq!(tier.role(), pb::Role::Customer);
    assert_eq!(tier.name, "Grace Hopper");
    let role = updated(&events[2]);
    assert_eq!(events[2].correlation_id, "");
    assert_eq!(role.role(), pb::Role::Admin);
    assert_eq!(role.tier(), pb::Tier::Vip);

    // A new admin account is registered as one.
    let (boss, created) = app.service.ensure_admin(&email(), PASSWORD).await.unwrap();
    assert!(created);
    let events = app.events_of(&boss.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(registered(&events[0]).role(), pb::Role::Admin);
    app.teardown().await;
}

#[tokio::test]
async fn concurrent_changes_record_one_event_each() {
    let app = spawn_app().await;
    let user = app.register(&email(), "Ada", "").await;
    // Six changes of the name at once, each to a name of its own: each one applied is one
    // change and one event, in the order they were applied.
    let results = futures::future::join_all((0..6).map(|i| {
        let service = app.service.clone();
        let id = user.id.clone();
        async move {
            let patch = shopmesh_user::service::ProfilePatch {
                name: Some(format!("Ada {i}")),
                phone: None,
            };
            service.update_profile(&id, patch, "").await
        }
    }))
    .await;
    let applied: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.ok().map(|u| u.name))
        .collect();
    assert!(!applied.is_empty());
    let events = app.events_of(&user.id).await;
    let names: Vec<String> = events[1..].iter().map(|e| updated(e).name).collect();
    assert_eq!(names.len(), applied.len(), "{names:?} for {applied:?}");
    let mut sorted = (names.clone(), applied.clone());
    sorted.0.sort();
    sorted.1.sort();
    assert_eq!(sorted.0, sorted.1);
    let now = app.repo.by_id(&user.id).await.unwrap().unwrap();
    assert_eq!(names.last(), Some(&now.name));
    assert_eq!(now.version, i64::try_from(applied.len()).unwrap());
    app.teardown().await;
}

#[tokio::test]
async fn pending_events_and_mark_events_published_round_trip() {
    let app = spawn_app().await;
    let first_address = email();
    let first = app.register(&first_address, "First", "req-1").await;
    let second = app.register(&email(), "Second", "req-2").await;
    let token = app.login(&first_address).await;
    app.update_me(&token, "First Again", "", "req-3").await;

    let pending = app.repo.pending_events(10).await.unwrap();
    let order: Vec<(&str, &str)> = pending
        .iter()
        .map(|e| (e.aggregate_id.as_str(), e.correlation_id.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            (first.id.as_str(), "req-1"),
            (second.id.as_str(), "req-2"),
            (first.id.as_str(), "req-3"),
        ]
    );
    assert!(
        pending
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
    assert_eq!(registered(&pending[1]).name, "Second");
    assert_eq!(updated(&pending[2]).name, "First Again");
    // The limit takes the oldest.
    let oldest = app.repo.pending_events(2).await.unwrap();
    assert_eq!(oldest, pending[..2]);

    // Published events leave their documents; the others stay.
    let published: Vec<String> = oldest.iter().map(|e| e.id.clone()).collect();
    app.repo.mark_events_published(&published).await.unwrap();
    let left = app.repo.pending_events(10).await.unwrap();
    assert_eq!(left, pending[2..]);
    assert_eq!(app.stored_events(&first.id).await.len(), 1);
    assert!(app.stored_events(&second.id).await.is_empty());
    // A repeat, unknown ids and an empty list do no harm.
    app.repo.mark_events_published(&published).await.unwrap();
    app.repo
        .mark_events_published(&[Uuid::now_v7().to_string()])
        .await
        .unwrap();
    app.repo.mark_events_published(&[]).await.unwrap();
    assert_eq!(app.repo.pending_events(10).await.unwrap(), left);

    app.repo
        .mark_events_published(&[left[0].id.clone()])
        .await
        .unwrap();
    assert!(app.repo.pending_events(10).await.unwrap().is_empty());
    assert!(app.repo.pending_events(0).await.unwrap().is_empty());
    // The accounts are untouched by it.
    let account = app.repo.by_id(&first.id).await.unwrap().unwrap();
    assert_eq!(account.name, "First Again");
    let listed = app.repo.list(None, None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    // The relay's index exists.
    let indexes = app.users.list_index_names().await.unwrap();
    assert!(
        indexes.contains(&"pending_events_id".to_owned()),
        "{indexes:?}"
    );
    app.teardown().await;
}
