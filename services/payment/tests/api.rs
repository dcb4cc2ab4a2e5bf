//! Integration tests of the payment service over gRPC, against the local PostgreSQL. Every test
//! gets a fresh database named by a UUID, its own run directory (service identity keys) and its
//! own server on a free port, started through the platform's `Mesh` (the harness is
//! `shopmesh_testkit`).

// The helpers outside `#[test]` functions are test code too (clippy.toml's allowance covers only
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use shopmesh_contracts::pb::shopmesh::events::v1 as events;
use shopmesh_contracts::pb::shopmesh::payment::v1 as pb;
use shopmesh_contracts::pb::shopmesh::payment::v1::payment_service_client::PaymentServiceClient;
use shopmesh_payment::PaymentConfig;
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_testkit::TestUser as User;
use shopmesh_testkit::{PgDatabase, TestEnv, TestMesh, bad_fields, usd, with_bearer};
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

const SUCCEEDS: &str = "4242424242424242";
const DECLINED: &str = "4000000000000002";
const INSUFFICIENT: &str = "4000000000009995";
const TRANSIENT: &str = "4000000000000119";

struct TestApp {
    database: PgDatabase,
    mesh: TestMesh,
    channel: Channel,
    /// Direct access for assertions on rows the API does not expose (the ledger).
    db: PgPool,
    admin: User,
    customer: User,
}

fn test_config() -> PaymentConfig {
    PaymentConfig {
        provider_backoff: Duration::from_millis(20),
        ..PaymentConfig::default()
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(test_config()).await
}

async fn spawn_app_with(config: PaymentConfig) -> TestApp {
    let database = PgDatabase::new("payment_test");
    let env = TestEnv::new("payment")
        .serve("payment")
        .database("payment", database.url());
    let services = Mesh::new(vec![
        Arc::new(shopmesh_payment::Payment::with_config(config)) as Arc<dyn Service>,
    ]);
    // The order service does not run here, but its key must be in the trust bundle so that the
    // tests can call as it.
    let mesh = TestMesh::start(&env, &services, &["payment"], &["order"]).await;
    let channel = mesh.channel("payment").await;
    let db = database.pool().await;
    TestApp {
        admin: mesh.users.admin(),
        customer: mesh.users.customer(),
        database,
        mesh,
        channel,
        db,
    }
}

fn card(number: &str) -> pb::TokenizeCardRequest {
    pb::TokenizeCardRequest {
        card_number: number.into(),
        exp_month: 12,
        exp_year: 2099,
        cvc: "9317".into(),
    }
}

impl TestApp {
    fn client(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(self.channel.clone())
    }

    fn new_customer(&self) -> User {
        self.mesh.users.customer()
    }

    /// A call as the order service (its service token, no user token).
    fn order<T>(&self, message: T) -> Request<T> {
        self.mesh.as_service("order", message)
    }

    async fn tokenize_as(&self, user: &User, number: &str) -> pb::TokenizeCardResponse {
        self.client()
            .tokenize_card(with_bearer(card(number), &user.token))
            .await
            .expect("card tokenized")
            .into_inner()
    }

    async fn charge_request(
        &self,
        order_id: Uuid,
        user: &User,
        amount: i64,
        token: &str,
    ) -> Result<pb::Payment, Status> {
        self.client()
            .charge(self.order(pb::ChargeRequest {
                order_id: order_id.to_string(),
                user_id: user.id.clone(),
                amount: usd(amount),
                payment_method_token: token.into(),
            }))
            .await
            .map(|r| r.into_inner().payment.expect("payment"))
    }

    /// Tokenizes `number` for the customer and charges a new order with it.
    async fn charge_card(&self, number: &str, amount: i64) -> pb::Payment {
        let token = self.tokenize_as(&self.customer, number).await;
        self.charge_request(
            Uuid::now_v7(),
            &self.customer,
            amount,
            &token.payment_method_token,
        )
        .await
        .expect("charge answered")
    }

    async fn refund(
        &self,
        payment_id: &str,
        amount: Option<i64>,
        key: &str,
    ) -> Result<pb::RefundResponse, Status> {
        self.client()
            .refund(with_bearer(
                pb::RefundRequest {
                    payment_id: payment_id.into(),
                    amount: amount.and_then(usd),
                    reason: pb::RefundReason::CustomerRequest.into(),
                    note: "test".into(),
                    idempotency_key: key.into(),
                },
                &self.admin.token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn ledger(&self, payment_id: &str, kind: &str) -> (i64, i64) {
        sqlx::query_as(
            "select count(*), coalesce(sum(amount_minor), 0)::bigint from ledger_entries \
             where payment_id = $1::uuid and kind = $2",
        )
        .bind(payment_id)
        .bind(kind)
        .fetch_one(&self.db)
        .await
        .expect("ledger")
    }

    async fn outbox(&self, event_type: &str, payment_id: &str) -> Vec<Vec<u8>> {
        sqlx::query_scalar(
            "select payload from outbox where event_type = $1 and aggregate_id = $2 order by seq",
        )
        .bind(event_type)
        .bind(payment_id)
        .fetch_all(&self.db)
        .await
        .expect("outbox")
    }

    async fn get_as(&self, user: &User, payment_id: &str) -> Result<pb::Payment, Status> {
        self.client()
            .get_payment(with_bearer(
                pb::GetPaymentRequest {
                    payment_id: payment_id.into(),
                },
                &user.token,
            ))
            .await
            .map(|r| r.into_inner().payment.expect("payment"))
    }

    /// Stops the server, drops the database and removes the run directory.
    async fn teardown(self) {
        drop(self.channel);
        self.mesh.stop().await;
        self.db.close().await;
        self.database.drop().await;
    }
}

fn status_of(payment: &pb::Payment) -> pb::PaymentStatus {
    pb::PaymentStatus::try_from(payment.status).expect("known status")
}

fn reason_of(payment: &pb::Payment) -> pb::PaymentFailureReason {
    pb::PaymentFailureReason::try_from(payment.failure_reason).expect("known reason")
}

#[tokio::test]
async fn each_test_card_ends_in_its_outcome() {
    let app = spawn_app().await;

    let paid = app.charge_card(SUCCEEDS, 2599).await;
    assert_eq!(status_of(&paid), pb::PaymentStatus::Succeeded);
    assert_eq!(paid.card_brand, "visa");
    assert_eq!(paid.card_last4, "4242");
    assert_eq!(paid.user_id, app.customer.id);
    assert_eq!(paid.amount, usd(2599));
    assert_eq!(paid.refunded_amount, usd(0));
    assert!(paid.provider_reference.starts_with("ch_"));
    assert_eq!(reason_of(&paid), pb::PaymentFailureReason::Unspecified);
    assert_eq!(app.ledger(&paid.id, "capture").await, (1, 2599));
    let events = app.outbox("payment.succeeded", &paid.id).await;
    assert_eq!(events.len(), 1);
    let event = events::PaymentSucceeded::decode(events[0].as_slice()).unwrap();
    assert_eq!(event.order_id, paid.order_id);
    assert_eq!(event.amount, usd(2599));

    // Any other valid number succeeds too (a Mastercard here).
    let other = app.charge_card("5555 5555 5555 4444", 100).await;
    assert_eq!(status_of(&other), pb::PaymentStatus::Succeeded);
    assert_eq!(other.card_brand, "mastercard");
    assert_eq!(other.card_last4, "4444");

    for (number, reason, code) in [
        (
            DECLINED,
            pb::PaymentFailureReason::CardDeclined,
            "card_declined",
        ),
        (
            INSUFFICIENT,
            pb::PaymentFailureReason::InsufficientFunds,
            "insufficient_funds",
        ),
    ] {
        let failed = app.charge_card(number, 2599).await;
        assert_eq!(status_of(&failed), pb::PaymentStatus::Failed, "{number}");
        assert_eq!(reason_of(&failed), reason, "{number}");
        assert_eq!(failed.decline_code, code);
        assert!(!failed.failure_message.is_empty());
        assert_eq!(failed.card_last4, &number[12..]);
        assert_eq!(app.ledger(&failed.id, "capture").await, (0, 0));
        let events = app.outbox("payment.failed", &failed.id).await;
        assert_eq!(events.len(), 1);
        let event = events::PaymentFailed::decode(events[0].as_slice()).unwrap();
        assert_eq!(event.decline_code, code);
        assert!(app.outbox("payment.succeeded", &failed.id).await.is_empty());
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_transient_card_fails_with_a_processor_error_after_retries() {
    let app = spawn_app().await;
    let started = Instant::now();
    let failed = app.charge_card(TRANSIENT, 1000).await;
    assert_eq!(status_of(&failed), pb::PaymentStatus::Failed);
    assert_eq!(reason_of(&failed), pb::PaymentFailureReason::ProcessorError);
    assert_eq!(failed.decline_code, "processing_error");
    // Three attempts with 20 ms and 40 ms of backoff between them.
    let attempts: i32 = sqlx::query_scalar("select attempts from payments where id = $1::uuid")
        .bind(&failed.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(attempts, 3);
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(app.ledger(&failed.id, "capture").await, (0, 0));
    app.teardown().await;
}

#[tokio::test]
async fn unknown_used_or_foreign_tokens_fail_as_invalid_payment_methods() {
    let app = spawn_app().await;
    let unknown = app
        .charge_request(Uuid::now_v7(), &app.customer, 500, "pm_doesnotexist")
        .await
        .unwrap();
    assert_eq!(status_of(&unknown), pb::PaymentStatus::Failed);
    assert_eq!(
        reason_of(&unknown),
        pb::PaymentFailureReason::InvalidPaymentMethod
    );

    // A token is for one charge.
    let token = app.tokenize_as(&app.customer, SUCCEEDS).await;
    assert_eq!(token.brand, "visa");
    assert_eq!(token.last4, "4242");
    assert!(token.payment_method_token.starts_with("pm_"));
    let first = app
        .charge_request(
            Uuid::now_v7(),
            &app.customer,
            500,
            &token.payment_method_token,
        )
        .await
        .unwrap();
    assert_eq!(status_of(&first), pb::PaymentStatus::Succeeded);
    let reused = app
        .charge_request(
            Uuid::now_v7(),
            &app.customer,
            500,
            &token.payment_method_token,
        )
        .await
        .unwrap();
    assert_eq!(
        reason_of(&reused),
        pb::PaymentFailureReason::InvalidPaymentMethod
    );

    // Another customer's token cannot pay for this customer's order.
    let stranger = app.new_customer();
    let theirs = app.tokenize_as(&stranger, SUCCEEDS).await;
    let foreign = app
        .charge_request(
            Uuid::now_v7(),
            &app.customer,
            500,
            &theirs.payment_method_token,
        )
        .await
        .unwrap();
    assert_eq!(
        reason_of(&foreign),
        pb::PaymentFailureReason::InvalidPaymentMethod
    );
    app.teardown().await;
}

#[tokio::test]
async fn tokenize_names_every_invalid_field_without_echoing_the_card() {
    let app = spawn_app().await;
    let status = app
        .client()
        .tokenize_card(with_bearer(
            pb::TokenizeCardRequest {
                card_number: "4242 4242 4242 4241".into(),
                exp_month: 13,
                exp_year: 2020,
                cvc: "12".into(),
            },
            &app.customer.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields(&status),
        ["card_number", "exp_month", "exp_year", "cvc"]
    );
    let details = format!(
        "{:?} {}",
        status.get_details_bad_request(),
        status.message()
    );
    assert!(!details.contains("4241"), "{details}");

    for (number, month, year) in [
        ("4242", 12, 2099),
        ("4242 4242 4242 4242 4242", 12, 2099),
        ("4242-abcd-4242-4242", 12, 2099),
    ] {
        let mut request = card(number);
        request.exp_month = month;
        request.exp_year = year;
        let status = app
            .client()
            .tokenize_card(with_bearer(request, &app.customer.token))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["card_number"], "{number}");
    }
    // Last month of the current year is in the past unless it is January.
    let now = chrono::Utc::now();
    let mut last_year = card(SUCCEEDS);
    last_year.exp_year = chrono::Datelike::year(&now) - 1;
    let status = app
        .client()
        .tokenize_card(with_bearer(last_year, &app.customer.token))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["exp_year"]);

    // Tokenizing needs a signed-in user.
    let status = app
        .client()
        .tokenize_card(card(SUCCEEDS))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    app.teardown().await;
}

#[tokio::test]
async fn card_numbers_and_cvcs_are_stored_nowhere() {
    let app = spawn_app().await;
    let numbers = [
        SUCCEEDS,
        DECLINED,
        INSUFFICIENT,
        TRANSIENT,
        "5555555555554444",
    ];
    for number in numbers {
        app.charge_card(number, 700).await;
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables \
         where table_schema = 'public' and table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(tables.contains(&"payment_methods".to_owned()));
    let mut scanned = 0;
    for table in &tables {
        // Every column of every row, as JSON text.
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("select row_to_json(t)::text from \"{table}\" t"))
                .fetch_all(&app.db)
                .await
                .unwrap();
        for row in rows {
            scanned += 1;
            for number in numbers {
                assert!(!row.contains(number), "{table} holds a card number: {row}");
                assert!(
                    !row.contains(&number[..12]),
                    "{table} holds a card prefix: {row}"
                );
            }
            assert!(!row.contains("\"9317\""), "{table} holds the CVC: {row}");
            assert!(!row.contains(":9317"), "{table} holds the CVC: {row}");
        }
    }
    // Every text column of every table, as its own value.
    let columns: Vec<(String, String)> = sqlx::query_as(
        "select table_name::text, column_name::text from information_schema.columns \
         where table_schema = 'public' and data_type in ('text', 'character varying')",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    for (table, column) in columns {
        let hits: i64 = sqlx::query_scalar(&format!(
            "select count(*) from \"{table}\" where \"{column}\" = '9317' \
             or regexp_replace(\"{column}\", '[^0-9]', '', 'g') like any ($1)"
        ))
        .bind(numbers.iter().map(|n| format!("%{n}%")).collect::<Vec<_>>())
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(hits, 0, "{table}.{column} holds card data");
    }
    assert!(scanned >= 10, "scanned only {scanned} rows");
    app.teardown().await;
}

/// Everything logged while it is the default subscriber (a current-thread test runtime keeps the
/// server's tasks on the test's thread).
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn card_numbers_and_cvcs_are_never_logged() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app().await;
    for number in [SUCCEEDS, TRANSIENT, DECLINED] {
        app.charge_card(number, 100).await;
    }
    // A refused card, so that error paths are logged too.
    let status = app
        .client()
        .tokenize_card(with_bearer(
            pb::TokenizeCardRequest {
                card_number: "4242424242424241".into(),
                exp_month: 1,
                exp_year: 2001,
                cvc: "9317".into(),
            },
            &app.customer.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    app.teardown().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("provider charge failed"),
        "logs were captured"
    );
    for number in [SUCCEEDS, TRANSIENT, DECLINED, "4242424242424241"] {
        assert!(!text.contains(number), "{number} was logged");
    }
    // A four-digit CVC could match any number in the logs by chance; a logged request or card
    // would carry its field name.
    let fields: Vec<&str> = text
        .lines()
        .filter(|line| line.to_lowercase().contains("cvc") || line.contains("card_number"))
        .collect();
    assert!(fields.is_empty(), "card fields were logged: {fields:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_charges_of_one_order_make_one_payment_and_one_capture() {
    let app = spawn_app_with(PaymentConfig {
        provider_delay: Duration::from_millis(100),
        ..test_config()
    })
    .await;
    let token = app.tokenize_as(&app.customer, SUCCEEDS).await;
    let order_id = Uuid::now_v7();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = app.client();
            let request = app.order(pb::ChargeRequest {
                order_id: order_id.to_string(),
                user_id: app.customer.id.clone(),
                amount: usd(4200),
                payment_method_token: token.payment_method_token.clone(),
            });
            tokio::spawn(async move { client.charge(request).await })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        let payment = call
            .await
            .unwrap()
            .expect("charge answered")
            .into_inner()
            .payment
            .unwrap();
        assert_eq!(status_of(&payment), pb::PaymentStatus::Succeeded);
        ids.push(payment.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one payment for the order");
    let payments: i64 = sqlx::query_scalar("select count(*) from payments where order_id = $1")
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(payments, 1);
    assert_eq!(app.ledger(&ids[0], "capture").await, (1, 4200));
    assert_eq!(app.outbox("payment.succeeded", &ids[0]).await.len(), 1);
    app.teardown().await;
}

#[tokio::test]
async fn a_repeated_charge_returns_the_first_payment_or_refuses_another_amount() {
    let app = spawn_app().await;
    let token = app.tokenize_as(&app.customer, SUCCEEDS).await;
    let order_id = Uuid::now_v7();
    let first = app
        .charge_request(order_id, &app.customer, 1500, &token.payment_method_token)
        .await
        .unwrap();
    let again = app
        .charge_request(order_id, &app.customer, 1500, &token.payment_method_token)
        .await
        .unwrap();
    assert_eq!(again, first, "unchanged");
    let status = app
        .charge_request(order_id, &app.customer, 1600, &token.payment_method_token)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    // A declined charge is final too: its repeat does not charge again.
    let declined_token = app.tokenize_as(&app.customer, DECLINED).await;
    let declined_order = Uuid::now_v7();
    let declined = app
        .charge_request(
            declined_order,
            &app.customer,
            900,
            &declined_token.payment_method_token,
        )
        .await
        .unwrap();
    let fresh = app.tokenize_as(&app.customer, SUCCEEDS).await;
    let repeat = app
        .charge_request(
            declined_order,
            &app.customer,
            900,
            &fresh.payment_method_token,
        )
        .await
        .unwrap();
    assert_eq!(repeat, declined);
    assert_eq!(app.ledger(&first.id, "capture").await, (1, 1500));
    app.teardown().await;
}

#[tokio::test]
async fn a_pending_payment_left_by_a_crash_is_completed_by_the_repeat() {
    let app = spawn_app().await;
    let token = app.tokenize_as(&app.customer, SUCCEEDS).await;
    // What a crash between recording the charge and hearing from the provider leaves behind.
    let (payment_id, order_id) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "insert into payments (id, order_id, user_id, amount_minor, currency, status, card_brand, \
         card_last4) values ($1, $2, $3, 800, 'USD', 'PENDING', 'visa', '4242')",
    )
    .bind(payment_id)
    .bind(order_id)
    .bind(&app.customer.id)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("update payment_methods set payment_id = $1 where token = $2")
        .bind(payment_id)
        .bind(&token.payment_method_token)
        .execute(&app.db)
        .await
        .unwrap();
    let pending = app
        .get_as(&app.customer, &payment_id.to_string())
        .await
        .unwrap();
    assert_eq!(status_of(&pending), pb::PaymentStatus::Pending);

    let done = app
        .charge_request(order_id, &app.customer, 800, &token.payment_method_token)
        .await
        .unwrap();
    assert_eq!(done.id, payment_id.to_string());
    assert_eq!(status_of(&done), pb::PaymentStatus::Succeeded);
    assert_eq!(app.ledger(&done.id, "capture").await, (1, 800));
    app.teardown().await;
}

#[tokio::test]
async fn a_stranded_pending_payment_is_settled_in_the_background() {
    let app = spawn_app_with(PaymentConfig {
        recover_after: Duration::from_millis(300),
        recovery_interval: Duration::from_millis(100),
        ..test_config()
    })
    .await;
    let token = app.tokenize_as(&app.customer, SUCCEEDS).await;
    let payment_id = Uuid::now_v7();
    sqlx::query(
        "insert into payments (id, order_id, user_id, amount_minor, currency, status, updated_at) \
         values ($1, $2, $3, 650, 'USD', 'PENDING', now() - interval '1 minute')",
    )
    .bind(payment_id)
    .bind(Uuid::now_v7())
    .bind(&app.customer.id)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("update payment_methods set payment_id = $1 where token = $2")
        .bind(payment_id)
        .bind(&token.payment_method_token)
        .execute(&app.db)
        .await
        .unwrap();
    // Nobody repeats the Charge: the recovery sweeper settles it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let payment = app
            .get_as(&app.customer, &payment_id.to_string())
            .await
            .unwrap();
        if status_of(&payment) != pb::PaymentStatus::Pending {
            break payment;
        }
        assert!(
            Instant::now() < deadline,
            "the stranded payment was never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status_of(&done), pb::PaymentStatus::Succeeded);
    assert_eq!(app.ledger(&done.id, "capture").await, (1, 650));
    assert_eq!(app.outbox("payment.succeeded", &done.id).await.len(), 1);
    app.teardown().await;
}

#[tokio::test]
async fn a_slow_provider_answers_pending_and_the_charge_completes_later() {
    let app = spawn_app_with(PaymentConfig {
        provider_delay: Duration::from_millis(1200),
        provider_wait: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let token = app.tokenize_as(&app.customer, SUCCEEDS).await;
    let order_id = Uuid::now_v7();
    let started = Instant::now();
    let pending = app
        .charge_request(order_id, &app.customer, 300, &token.payment_method_token)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(1200));
    assert_eq!(status_of(&pending), pb::PaymentStatus::Pending);
    assert_eq!(app.ledger(&pending.id, "capture").await, (0, 0));

    // The charge goes on without the caller.
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let payment = app.get_as(&app.customer, &pending.id).await.unwrap();
        if status_of(&payment) != pb::PaymentStatus::Pending {
            break payment;
        }
        assert!(Instant::now() < deadline, "the charge never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status_of(&done), pb::PaymentStatus::Succeeded);
    assert_eq!(app.ledger(&done.id, "capture").await, (1, 300));
    app.teardown().await;
}

#[tokio::test]
async fn refunds_go_partial_then_full_and_never_above_the_rest() {
    let app = spawn_app().await;
    let paid = app.charge_card(SUCCEEDS, 1000).await;

    let partial = app.refund(&paid.id, Some(300), "r-1").await.unwrap();
    let refund = partial.refund.unwrap();
    assert_eq!(refund.amount, usd(300));
    assert_eq!(refund.status, i32::from(pb::RefundStatus::Succeeded));
    assert_eq!(refund.requested_by, app.admin.id);
    assert_eq!(refund.reason, i32::from(pb::RefundReason::CustomerRequest));
    let payment = partial.payment.unwrap();
    assert_eq!(status_of(&payment), pb::PaymentStatus::PartiallyRefunded);
    assert_eq!(payment.refunded_amount, usd(300));

    // The same key is the same refund.
    let again = app.refund(&paid.id, Some(300), "r-1").await.unwrap();
    assert_eq!(again.refund.unwrap().id, refund.id);
    let status = app.refund(&paid.id, Some(200), "r-1").await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    let status = app.refund(&paid.id, Some(701), "r-2").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("700"), "{}", status.message());

    // No amount: the rest.
    let full = app.refund(&paid.id, None, "r-3").await.unwrap();
    assert_eq!(full.refund.unwrap().amount, usd(700));
    let payment = full.payment.unwrap();
    assert_eq!(status_of(&payment), pb::PaymentStatus::Refunded);
    assert_eq!(payment.refunded_amount, usd(1000));
    assert_eq!(payment.refunds.len(), 2);
    let status = app.refund(&paid.id, None, "r-4").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(app.ledger(&paid.id, "refund").await, (2, 1000));
    assert_eq!(app.ledger(&paid.id, "capture").await, (1, 1000));
    let events: Vec<events::PaymentRefunded> = app
        .outbox("payment.refunded", &paid.id)
        .await
        .iter()
        .map(|payload| events::PaymentRefunded::decode(payload.as_slice()).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].refunded_amount, usd(300));
    assert!(!events[0].fully_refunded);
    assert_eq!(events[1].amount, usd(700));
    assert_eq!(events[1].refunded_amount, usd(1000));
    assert!(events[1].fully_refunded);

    // Nothing to refund on a payment that did not succeed.
    let declined = app.charge_card(DECLINED, 1000).await;
    let status = app.refund(&declined.id, None, "r-5").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    // Bad input is named field by field; an unknown payment is NOT_FOUND.
    let status = app.refund(&paid.id, Some(-5), "").await.unwrap_err();
    assert_eq!(
        bad_fields(&status),
        ["amount.amount_minor", "idempotency_key"]
    );
    let status = app
        .refund(&Uuid::now_v7().to_string(), None, "r-6")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // The order service may refund too; it is recorded as nobody's request.
    let other = app.charge_card(SUCCEEDS, 500).await;
    let by_service = app
        .client()
        .refund(app.order(pb::RefundRequest {
            payment_id: other.id.clone(),
            amount: None,
            reason: pb::RefundReason::OrderCancelled.into(),
            note: String::new(),
            idempotency_key: "cancel".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_service.refund.unwrap().requested_by, "");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_never_exceed_what_was_captured() {
    let app = spawn_app().await;
    let paid = app.charge_card(SUCCEEDS, 1000).await;
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut client = app.client();
            let request = with_bearer(
                pb::RefundRequest {
                    payment_id: paid.id.clone(),
                    amount: usd(150),
                    reason: pb::RefundReason::GoodsReturned.into(),
                    note: String::new(),
                    idempotency_key: format!("part-{i}"),
                },
                &app.admin.token,
            );
            tokio::spawn(async move { client.refund(request).await })
        })
        .collect();
    let (mut won, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((won, refused), (6, 14));
    let payment = app.get_as(&app.admin, &paid.id).await.unwrap();
    assert_eq!(payment.refunded_amount, usd(900));
    assert_eq!(app.ledger(&paid.id, "refund").await, (6, 900));

    // Ten "refund the rest" at once: one gets the last 100, the others find nothing left.
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let mut client = app.client();
            let request = with_bearer(
                pb::RefundRequest {
                    payment_id: paid.id.clone(),
                    amount: None,
                    reason: pb::RefundReason::Other.into(),
                    note: String::new(),
                    idempotency_key: format!("rest-{i}"),
                },
                &app.admin.token,
            );
            tokio::spawn(async move { client.refund(request).await })
        })
        .collect();
    let mut won = Vec::new();
    for call in calls {
        if let Ok(response) = call.await.unwrap() {
            won.push(response.into_inner().refund.unwrap().amount);
        }
    }
    assert_eq!(won, [usd(100)]);
    let payment = app.get_as(&app.admin, &paid.id).await.unwrap();
    assert_eq!(status_of(&payment), pb::PaymentStatus::Refunded);
    assert_eq!(app.ledger(&paid.id, "refund").await, (7, 1000));
    app.teardown().await;
}

#[tokio::test]
async fn only_the_order_service_may_charge() {
    let app = spawn_app().await;
    let token = app.tokenize_as(&app.customer, SUCCEEDS).await;
    let charge = || pb::ChargeRequest {
        order_id: Uuid::now_v7().to_string(),
        user_id: app.customer.id.clone(),
        amount: usd(100),
        payment_method_token: token.payment_method_token.clone(),
    };
    for token in [&app.customer.token, &app.admin.token] {
        let status = app
            .client()
            .charge(with_bearer(charge(), token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let status = app.client().charge(charge()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // A customer may not refund either.
    let paid = app.charge_card(SUCCEEDS, 100).await;
    let status = app
        .client()
        .refund(with_bearer(
            pb::RefundRequest {
                payment_id: paid.id,
                amount: None,
                reason: 0,
                note: String::new(),
                idempotency_key: "mine".into(),
            },
            &app.customer.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Bad charge input is named field by field.
    let status = app
        .client()
        .charge(app.order(pb::ChargeRequest {
            order_id: "not-a-uuid".into(),
            user_id: String::new(),
            amount: usd(0),
            payment_method_token: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        bad_fields(&status),
        [
            "order_id",
            "user_id",
            "amount.amount_minor",
            "payment_method_token"
        ]
    );
    app.teardown().await;
}

#[tokio::test]
async fn customers_see_only_their_own_payments() {
    let app = spawn_app().await;
    let token = app.tokenize_as(&app.customer, SUCCEEDS).await;
    let order_id = Uuid::now_v7();
    let paid = app
        .charge_request(order_id, &app.customer, 1200, &token.payment_method_token)
        .await
        .unwrap();
    let list = |user: &User| {
        let mut client = app.client();
        let request = with_bearer(
            pb::ListPaymentsByOrderRequest {
                order_id: order_id.to_string(),
            },
            &user.token,
        );
        async move {
            client
                .list_payments_by_order(request)
                .await
                .map(|r| r.into_inner().payments)
        }
    };

    assert_eq!(app.get_as(&app.customer, &paid.id).await.unwrap(), paid);
    assert_eq!(
        list(&app.customer).await.unwrap(),
        std::slice::from_ref(&paid)
    );
    assert_eq!(app.get_as(&app.admin, &paid.id).await.unwrap(), paid);
    assert_eq!(list(&app.admin).await.unwrap(), std::slice::from_ref(&paid));

    let stranger = app.new_customer();
    let status = app.get_as(&stranger, &paid.id).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = list(&stranger).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // An unknown order looks the same as someone else's.
    let status = app
        .client()
        .list_payments_by_order(with_bearer(
            pb::ListPaymentsByOrderRequest {
                order_id: Uuid::now_v7().to_string(),
            },
            &stranger.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // The order service sees every payment.
    let seen = app
        .client()
        .get_payment(app.order(pb::GetPaymentRequest {
            payment_id: paid.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(seen, paid);
    let empty = app
        .client()
        .list_payments_by_order(app.order(pb::ListPaymentsByOrderRequest {
            order_id: Uuid::now_v7().to_string(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(empty.payments.is_empty());
    app.teardown().await;
}
