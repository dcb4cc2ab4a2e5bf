//! Integration tests of the notification service against the real PostgreSQL, RabbitMQ and an
//! SMTP server on loopback (Python's aiosmtpd, writing what it receives to a maildir). Every
//! test gets a fresh database, its own exchange and queue prefix, its own run directory and its
//! own SMTP server on a free port; events are published to the exchange the way producers' relays
//! publish them.

// The helpers outside `#[test]` functions are test code too (clippy.toml's allowance covers only
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::delivery::v1::ShipmentStatus;
use shopmesh_contracts::pb::shopmesh::events::v1 as events;
use shopmesh_contracts::pb::shopmesh::events::v1::EventEnvelope;
use shopmesh_contracts::pb::shopmesh::notification::v1 as pb;
use shopmesh_contracts::pb::shopmesh::notification::v1::notification_service_client::NotificationServiceClient;
use shopmesh_notification::NotificationConfig;
use shopmesh_notification::config::{EmailRetry, SmtpSettings};
use shopmesh_platform::events::relay::{self, OutgoingEvent};
use shopmesh_platform::events::{Broker, consumer, dead_letters, new_envelope};
use shopmesh_platform::mesh::{Mesh, Service};
use shopmesh_testkit::{
    PgDatabase, TestEnv, TestMesh, TestUser, bad_fields, closed_port, with_bearer,
};
use sqlx::PgPool;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

/// The consumer's attempts before a dead letter, in these tests.
const MAX_ATTEMPTS: u32 = 3;

// ---------------------------------------------------------------------------------------------
// The SMTP server.

/// The Python with aiosmtpd: `SHOPMESH_PYTHON` (scripts/test sets it), or the project's venv.
fn python() -> String {
    std::env::var("SHOPMESH_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.tools/venv/bin/python").to_owned()
    })
}

/// An aiosmtpd process on loopback that files every message it accepts in a maildir.
struct Smtp {
    child: Child,
}

impl Smtp {
    async fn start(port: u16, maildir: &Path) -> Self {
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "starting aiosmtpd with {} (set SHOPMESH_PYTHON, pip install aiosmtpd): {err}",
                    python()
                )
            });
        let mut smtp = Self { child };
        for _ in 0..400 {
            if let Some(status) = smtp.child.try_wait().unwrap() {
                panic!(
                    "aiosmtpd exited at start: {status} (is aiosmtpd installed in {}?)",
                    python()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return smtp;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        smtp.stop();
        panic!("aiosmtpd did not listen on port {port}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One received e-mail.
#[derive(Clone, Debug)]
struct Mail {
    subject: String,
    to: String,
    from: String,
    message_id: String,
    body: String,
}

/// Undoes quoted-printable (soft line breaks and `=XX`).
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(Ok(byte)) = joined
                .get(i + 1..i + 3)
                .map(|hex| u8::from_str_radix(hex, 16))
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn parse_mail(raw: &str) -> Mail {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").expect("headers and body");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body = match header("content-transfer-encoding")
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "7bit" | "8bit" => body.to_owned(),
        "quoted-printable" => quoted_printable(body),
        other => panic!("unexpected transfer encoding {other}"),
    };
    Mail {
        subject: header("subject"),
        to: header("to"),
        from: header("from"),
        message_id: header("message-id"),
        body,
    }
}

/// Every message in the maildir.
fn mails(maildir: &Path) -> Vec<Mail> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let raw = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            out.push(parse_mail(&raw));
        }
    }
    out
}

fn mails_with_subject(maildir: &Path, prefix: &str) -> Vec<Mail> {
    mails(maildir)
        .into_iter()
        .filter(|m| m.subject.starts_with(prefix))
        .collect()
}

fn free_port() -> u16 {
    closed_port()
}

// ---------------------------------------------------------------------------------------------
// The service under test.

struct TestApp {
    database: PgDatabase,
    mesh: TestMesh,
    channel: Channel,
    db: PgPool,
    broker: Broker,
    maildir: PathBuf,
    smtp_port: u16,
}

fn test_config(smtp_port: u16) -> NotificationConfig {
    NotificationConfig {
        smtp: SmtpSettings {
            port: smtp_port,
            timeout: Duration::from_secs(5),
            ..SmtpSettings::default()
        },
        retry: EmailRetry {
            max_attempts: 100,
            backoff: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
        },
        email_poll: Duration::from_millis(50),
        ..NotificationConfig::default()
    }
}

/// The service with the SMTP server on `smtp_port` (which may not be listening yet).
async fn spawn_app(smtp_port: u16) -> TestApp {
    let database = PgDatabase::new("notification_test");
    let env = TestEnv::new("notification")
        .serve("notification")
        .database("notification", database.url())
        .set("EVENTS_MAX_ATTEMPTS", MAX_ATTEMPTS.to_string())
        .set("EVENTS_RETRY_DELAY_MS", "100");
    let services = Mesh::new(vec![
        Arc::new(shopmesh_notification::Notification::with_config(
            test_config(smtp_port),
        )) as Arc<dyn Service>,
    ]);
    let mesh = TestMesh::start(&env, &services, &["notification"], &[]).await;
    let channel = mesh.channel("notification").await;
    let db = database.pool().await;
    let broker = Broker::new(mesh.settings.events.clone(), "notification-test");
    // The consumer declares its queue as it starts; declaring it here too (the same way) makes
    // sure nothing published next is dropped for want of a bound queue.
    let declaring = broker.channel().await.unwrap();
    consumer::declare(
        &broker,
        &declaring,
        &shopmesh_notification::handler::subscription(),
    )
    .await
    .unwrap();
    let _ = declaring.close(200, "declared".into()).await;
    let maildir = std::env::temp_dir().join(format!(
        "shopmesh-notification-mail-{}",
        Uuid::new_v4().simple()
    ));
    TestApp {
        database,
        mesh,
        channel,
        db,
        broker,
        maildir,
        smtp_port,
    }
}

impl TestApp {
    async fn start_smtp(&self) -> Smtp {
        Smtp::start(self.smtp_port, &self.maildir).await
    }

    fn client(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel.clone())
    }

    fn customer(&self) -> TestUser {
        self.mesh.users.customer()
    }

    async fn publish(&self, envelope: &EventEnvelope) {
        let channel = self.broker.publisher().await.unwrap();
        let payload = envelope.payload.as_ref().unwrap();
        let event = OutgoingEvent {
            id: envelope.event_id.parse().unwrap(),
            event_type: envelope.r#type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            payload_type: payload.type_url.clone(),
            payload: payload.value.clone(),
            correlation_id: String::new(),
            priority: 0,
            occurred_at: chrono::Utc::now(),
        };
        relay::publish(&channel, &self.broker.settings().exchange, "test", &[event])
            .await
            .unwrap();
        let _ = channel.close(200, "published".into()).await;
    }

    async fn register(&self, user: &TestUser, name: &str) -> EventEnvelope {
        let envelope = registered(user, name);
        self.publish(&envelope).await;
        envelope
    }

    async fn list(&self, user: &TestUser, unread_only: bool) -> Vec<pb::Notification> {
        self.client()
            .list_notifications(with_bearer(
                pb::ListNotificationsRequest {
                    page_size: 100,
                    unread_only,
                    ..Default::default()
                },
                &user.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .notifications
    }

    async fn of_kind(&self, user: &TestUser, kind: pb::NotificationKind) -> Vec<pb::Notification> {
        self.list(user, false)
            .await
            .into_iter()
            .filter(|n| n.kind == kind as i32)
            .collect()
    }

    async fn scalar(&self, sql: &str, bind: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(bind)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.broker.close().await;
        self.db.close().await;
        self.mesh.stop().await;
        self.database.drop().await;
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    // Generous: a loaded CI machine is slow; a passing run takes a second or two.
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

// ---------------------------------------------------------------------------------------------
// Events.

fn usd(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "USD".into(),
    })
}

fn email_of(user: &TestUser) -> String {
    format!("user-{}@example.com", &user.id[user.id.len() - 12..])
}

fn registered(user: &TestUser, name: &str) -> EventEnvelope {
    new_envelope(
        "user",
        &user.id,
        "user.registered",
        "UserRegistered",
        &events::UserRegistered {
            user_id: user.id.clone(),
            email: email_of(user),
            name: name.into(),
            ..Default::default()
        },
    )
}

fn order_paid(user: &TestUser, order_id: &str) -> EventEnvelope {
    new_envelope(
        "order",
        order_id,
        "order.paid",
        "OrderPaid",
        &events::OrderPaid {
            order_id: order_id.into(),
            user_id: user.id.clone(),
            lines: vec![
                events::OrderLine {
                    product_name: "Blue Mug".into(),
                    sku: "MUG-BLUE".into(),
                    quantity: 2,
                    unit_price: usd(1299),
                    line_total: usd(2598),
                    ..Default::default()
                },
                events::OrderLine {
                    product_name: "Teapot".into(),
                    sku: "TEA-1".into(),
                    quantity: 1,
                    unit_price: usd(4000),
                    line_total: usd(4000),
                    ..Default::default()
                },
            ],
            total: usd(6598),
            ..Default::default()
        },
    )
}

fn order_id() -> String {
    Uuid::now_v7().to_string()
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn an_order_paid_event_sends_one_confirmation_and_a_redelivery_changes_nothing() {
    let app = spawn_app(free_port()).await;
    let _smtp = app.start_smtp().await;
    let user = app.customer();
    app.register(&user, "Ada").await;
    eventually("the welcome e-mail", || async {
        mails_with_subject(&app.maildir, "Welcome to shopmesh").len() == 1
    })
    .await;

    let order = order_id();
    let paid = order_paid(&user, &order);
    // The same event twice (a relay that crashed before marking it published).
    app.publish(&paid).await;
    app.publish(&paid).await;
    let subject = format!("Order confirmation {order}");
    eventually("the confirmation e-mail", || async {
        !mails_with_subject(&app.maildir, &subject).is_empty()
    })
    .await;

    let confirmation = &mails_with_subject(&app.maildir, &subject)[0];
    assert!(
        confirmation.to.contains(&email_of(&user)),
        "{confirmation:?}"
    );
    assert!(confirmation.to.contains("Ada"), "{confirmation:?}");
    assert!(
        confirmation.from.contains("no-reply@shopmesh.local"),
        "{confirmation:?}"
    );
    assert!(
        confirmation.message_id.ends_with("@shopmesh.local>"),
        "{confirmation:?}"
    );
    let expected = format!(
        "Hello Ada,\n\n\
         Thank you for your order {order}. Your payment went through and we are preparing it.\n\n\
         2 x Blue Mug  USD 25.98\n\
         1 x Teapot  USD 40.00\n\n\
         Total: USD 65.98\n\n\
         We will let you know when it ships.\n\n\
         -- shopmesh\n"
    );
    assert_eq!(confirmation.body.trim_end(), expected.trim_end());

    // One in-app copy, with the same text, unread; it says it was e-mailed.
    let inbox = app.of_kind(&user, pb::NotificationKind::OrderPaid).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0].subject, subject);
    assert_eq!(inbox[0].body, expected);
    assert_eq!(inbox[0].template, "order_paid");
    assert_eq!(inbox[0].channel, pb::Channel::Email as i32);
    assert_eq!(inbox[0].user_id, user.id);
    assert!(!inbox[0].read);

    // The redelivery (and a third one, after the first was applied) changes nothing.
    app.publish(&paid).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(mails_with_subject(&app.maildir, &subject).len(), 1);
    assert_eq!(
        app.of_kind(&user, pb::NotificationKind::OrderPaid)
            .await
            .len(),
        1
    );
    assert_eq!(
        app.scalar(
            "select count(*) from email_jobs where subject like 'Order confirmation%' and user_id = $1",
            &user.id
        )
        .await,
        1
    );
    assert_eq!(
        app.scalar(
            "select count(*) from inbox where event_id = $1::uuid",
            &paid.event_id
        )
        .await,
        1
    );
    let sent: String = sqlx::query_scalar("select status from email_jobs where subject = $1")
        .bind(&subject)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sent, "sent");
    app.stop().await;
}

#[tokio::test]
async fn a_muted_kind_reaches_the_inbox_but_not_the_mailbox() {
    let app = spawn_app(free_port()).await;
    let _smtp = app.start_smtp().await;
    let user = app.customer();

    // Preferences start empty; unknown kinds are refused with their field.
    let prefs = app
        .client()
        .get_preferences(with_bearer(pb::GetPreferencesRequest {}, &user.token))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert!(prefs.email_muted.is_empty());
    let refused = app
        .client()
        .update_preferences(with_bearer(
            pb::UpdatePreferencesRequest {
                preferences: Some(pb::Preferences {
                    email_muted: vec![pb::NotificationKind::OrderPaid as i32, 0, 99],
                }),
            },
            &user.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields(&refused),
        ["preferences.email_muted[1]", "preferences.email_muted[2]"]
    );
    let stored = app
        .client()
        .update_preferences(with_bearer(
            pb::UpdatePreferencesRequest {
                preferences: Some(pb::Preferences {
                    email_muted: vec![
                        pb::NotificationKind::OrderShipped as i32,
                        pb::NotificationKind::OrderPaid as i32,
                        pb::NotificationKind::OrderPaid as i32,
                    ],
                }),
            },
            &user.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert_eq!(
        stored.email_muted,
        [
            pb::NotificationKind::OrderPaid as i32,
            pb::NotificationKind::OrderShipped as i32
        ]
    );
    let read_back = app
        .client()
        .get_preferences(with_bearer(pb::GetPreferencesRequest {}, &user.token))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert_eq!(read_back, stored);

    app.register(&user, "Grace").await;
    let order = order_id();
    app.publish(&order_paid(&user, &order)).await;
    eventually("the in-app confirmation", || async {
        app.of_kind(&user, pb::NotificationKind::OrderPaid)
            .await
            .len()
            == 1
    })
    .await;
    // The welcome (not muted) is e-mailed: by the time it arrives, the sender has seen both.
    eventually("the welcome e-mail", || async {
        mails_with_subject(&app.maildir, "Welcome to shopmesh").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(mails_with_subject(&app.maildir, "Order confirmation").is_empty());
    let inbox = app.of_kind(&user, pb::NotificationKind::OrderPaid).await;
    assert_eq!(inbox[0].channel, pb::Channel::InApp as i32);
    assert_eq!(
        app.scalar(
            "select count(*) from email_jobs where user_id = $1 and subject like 'Order%'",
            &user.id
        )
        .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn an_email_sent_while_smtp_is_down_arrives_after_retries() {
    let port = free_port();
    let app = spawn_app(port).await;
    let user = app.customer();
    app.register(&user, "Linus").await;
    let order = order_id();
    app.publish(&order_paid(&user, &order)).await;
    let subject = format!("Order confirmation {order}");

    // Nothing listens: the job keeps failing and is retried; the inbox has it all along.
    eventually("failed attempts recorded", || async {
        let row: Option<(i32, Option<String>, String)> = sqlx::query_as(
            "select attempts, last_error, status from email_jobs where subject = $1",
        )
        .bind(&subject)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        matches!(row, Some((attempts, Some(_), status)) if attempts >= 3 && status == "pending")
    })
    .await;
    assert_eq!(
        app.of_kind(&user, pb::NotificationKind::OrderPaid)
            .await
            .len(),
        1
    );

    let _smtp = app.start_smtp().await;
    eventually("the confirmation after the server came up", || async {
        mails_with_subject(&app.maildir, &subject).len() == 1
    })
    .await;
    eventually("the job marked sent", || async {
        let status: String = sqlx::query_scalar("select status from email_jobs where subject = $1")
            .bind(&subject)
            .fetch_one(&app.db)
            .await
            .unwrap();
        status == "sent"
    })
    .await;
    let mail = &mails_with_subject(&app.maildir, &subject)[0];
    assert!(mail.body.contains("Total: USD 65.98"), "{mail:?}");
    // The in-app copy is still there, once.
    let inbox = app.of_kind(&user, pb::NotificationKind::OrderPaid).await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].subject, subject);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mails_with_subject(&app.maildir, &subject).len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_event_for_an_unknown_recipient_is_dead_lettered_and_applies_on_redrive() {
    let app = spawn_app(free_port()).await;
    let _smtp = app.start_smtp().await;
    let user = app.customer();
    let order = order_id();
    let paid = order_paid(&user, &order);
    app.publish(&paid).await;

    eventually("the dead letter", || async {
        dead_letters::list(&app.broker, "notification", 10)
            .await
            .unwrap()
            .items
            .iter()
            .any(|d| d.event_id == paid.event_id)
    })
    .await;
    let parked = dead_letters::list(&app.broker, "notification", 10)
        .await
        .unwrap();
    let letter = parked
        .items
        .iter()
        .find(|d| d.event_id == paid.event_id)
        .unwrap();
    assert_eq!(letter.error, format!("recipient {} unknown", user.id));
    assert_eq!(letter.attempts, MAX_ATTEMPTS);
    assert_eq!(letter.event_type, "order.paid");
    assert!(app.list(&user, false).await.is_empty());
    assert_eq!(
        app.scalar(
            "select count(*) from email_jobs where user_id = $1",
            &user.id
        )
        .await,
        0
    );

    // The user arrives; the re-drive applies the order.
    app.register(&user, "Barbara").await;
    eventually("the welcome", || async {
        app.of_kind(&user, pb::NotificationKind::Welcome)
            .await
            .len()
            == 1
    })
    .await;
    assert!(
        dead_letters::redrive(&app.broker, "notification", &paid.event_id)
            .await
            .unwrap()
    );
    eventually("the re-driven confirmation", || async {
        app.of_kind(&user, pb::NotificationKind::OrderPaid)
            .await
            .len()
            == 1
    })
    .await;
    let subject = format!("Order confirmation {order}");
    eventually("its e-mail", || async {
        mails_with_subject(&app.maildir, &subject).len() == 1
    })
    .await;
    assert!(
        dead_letters::list(&app.broker, "notification", 10)
            .await
            .unwrap()
            .items
            .iter()
            .all(|d| d.event_id != paid.event_id)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_user_cannot_read_mark_or_delete_another_users_notification() {
    let app = spawn_app(free_port()).await;
    let owner = app.customer();
    let other = app.customer();
    app.register(&owner, "Owner").await;
    app.register(&other, "Other").await;
    app.publish(&order_paid(&owner, &order_id())).await;
    eventually("the owner's two notifications", || async {
        app.list(&owner, false).await.len() == 2
    })
    .await;
    eventually("the other's welcome", || async {
        app.list(&other, false).await.len() == 1
    })
    .await;
    let mine = app.list(&owner, false).await;
    // Newest first.
    assert_eq!(mine[0].kind, pb::NotificationKind::OrderPaid as i32);
    assert_eq!(mine[1].kind, pb::NotificationKind::Welcome as i32);
    let target = mine[0].id.clone();

    // Someone else's id, a malformed one and an unknown one: all NOT_FOUND.
    for id in [
        target.clone(),
        "not-a-uuid".to_owned(),
        Uuid::now_v7().to_string(),
    ] {
        let read = app
            .client()
            .mark_read(with_bearer(
                pb::MarkReadRequest {
                    notification_id: id.clone(),
                },
                &other.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(read.code(), Code::NotFound, "{id}");
        let deleted = app
            .client()
            .delete_notification(with_bearer(
                pb::DeleteNotificationRequest {
                    notification_id: id.clone(),
                },
                &other.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(deleted.code(), Code::NotFound, "{id}");
    }
    assert!(app.list(&other, false).await.iter().all(|n| n.id != target));
    // Untouched.
    let still = app.list(&owner, true).await;
    assert_eq!(still.len(), 2);

    // No token at all.
    let anonymous = app
        .client()
        .list_notifications(pb::ListNotificationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    // The owner marks it read (twice: the same answer), counts, filters and pages.
    let marked = app
        .client()
        .mark_read(with_bearer(
            pb::MarkReadRequest {
                notification_id: target.clone(),
            },
            &owner.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .notification
        .unwrap();
    assert!(marked.read);
    assert!(marked.read_time.is_some());
    let again = app
        .client()
        .mark_read(with_bearer(
            pb::MarkReadRequest {
                notification_id: target.clone(),
            },
            &owner.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .notification
        .unwrap();
    assert_eq!(again.read_time, marked.read_time);
    let unread = app.list(&owner, true).await;
    assert_eq!(unread.len(), 1);
    assert_eq!(unread[0].kind, pb::NotificationKind::Welcome as i32);
    let count = app
        .client()
        .get_unread_count(with_bearer(pb::GetUnreadCountRequest {}, &owner.token))
        .await
        .unwrap()
        .into_inner()
        .unread_count;
    assert_eq!(count, 1);

    let first = app
        .client()
        .list_notifications(with_bearer(
            pb::ListNotificationsRequest {
                page_size: 1,
                ..Default::default()
            },
            &owner.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.notifications.len(), 1);
    assert_eq!(first.notifications[0].id, target);
    assert!(!first.next_page_token.is_empty());
    let second = app
        .client()
        .list_notifications(with_bearer(
            pb::ListNotificationsRequest {
                page_size: 1,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
            &owner.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.notifications.len(), 1);
    assert_eq!(second.notifications[0].id, mine[1].id);
    assert!(second.next_page_token.is_empty());
    // A token of another filter, garbage, and a page too large are refused.
    let mismatched = app
        .client()
        .list_notifications(with_bearer(
            pb::ListNotificationsRequest {
                page_size: 1,
                page_token: first.next_page_token.clone(),
                unread_only: true,
                ..Default::default()
            },
            &owner.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(mismatched.code(), Code::InvalidArgument);
    assert!(bad_fields(&mismatched).is_empty());
    let too_big = app
        .client()
        .list_notifications(with_bearer(
            pb::ListNotificationsRequest {
                page_size: 101,
                ..Default::default()
            },
            &owner.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&too_big), ["page_size"]);

    // The owner deletes it; a second delete finds nothing; the other notification stays.
    app.client()
        .delete_notification(with_bearer(
            pb::DeleteNotificationRequest {
                notification_id: target.clone(),
            },
            &owner.token,
        ))
        .await
        .unwrap();
    let gone = app
        .client()
        .delete_notification(with_bearer(
            pb::DeleteNotificationRequest {
                notification_id: target.clone(),
            },
            &owner.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let left = app.list(&owner, false).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, mine[1].id);
    // Its e-mail job is kept (the sender never depends on the inbox copy).
    assert_eq!(
        app.scalar(
            "select count(*) from email_jobs where user_id = $1 and subject like 'Order%'",
            &owner.id
        )
        .await,
        1
    );

    let all = app
        .client()
        .mark_all_read(with_bearer(pb::MarkAllReadRequest {}, &owner.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.marked_count, 1);
    assert!(app.list(&owner, true).await.is_empty());
    // The other user's inbox is untouched by all of it.
    assert_eq!(app.list(&other, true).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn one_delivery_told_by_two_events_is_one_notification() {
    let app = spawn_app(free_port()).await;
    let user = app.customer();
    app.register(&user, "Margaret").await;
    let order = order_id();
    let in_transit = new_envelope(
        "delivery",
        "s1",
        "shipment.status_changed",
        "ShipmentStatusChanged",
        &events::ShipmentStatusChanged {
            shipment_id: "s1".into(),
            order_id: order.clone(),
            user_id: user.id.clone(),
            to_status: ShipmentStatus::InTransit as i32,
            ..Default::default()
        },
    );
    let delivered = new_envelope(
        "delivery",
        "s1",
        "shipment.status_changed",
        "ShipmentStatusChanged",
        &events::ShipmentStatusChanged {
            shipment_id: "s1".into(),
            order_id: order.clone(),
            user_id: user.id.clone(),
            from_status: ShipmentStatus::OutForDelivery as i32,
            to_status: ShipmentStatus::Delivered as i32,
            ..Default::default()
        },
    );
    let completed = new_envelope(
        "order",
        &order,
        "order.completed",
        "OrderCompleted",
        &events::OrderCompleted {
            order_id: order.clone(),
            user_id: user.id.clone(),
            total: usd(6598),
        },
    );
    let shipped = new_envelope(
        "order",
        &order,
        "order.shipped",
        "OrderShipped",
        &events::OrderShipped {
            order_id: order.clone(),
            user_id: user.id.clone(),
            shipment_id: "s1".into(),
            carrier: "ACME Post".into(),
            tracking_number: "TRK-42".into(),
        },
    );
    for envelope in [&shipped, &in_transit, &delivered, &completed] {
        app.publish(envelope).await;
    }
    eventually("shipped and delivered", || async {
        app.of_kind(&user, pb::NotificationKind::OrderShipped)
            .await
            .len()
            == 1
            && app
                .of_kind(&user, pb::NotificationKind::OrderDelivered)
                .await
                .len()
                == 1
    })
    .await;
    eventually("every event applied", || async {
        app.scalar(
            "select count(*) from inbox where consumer = $1",
            "notification",
        )
        .await
            == 5
    })
    .await;
    let shipped = app.of_kind(&user, pb::NotificationKind::OrderShipped).await;
    assert!(shipped[0].body.contains("on its way with ACME Post."));
    assert!(shipped[0].body.contains("Tracking number: TRK-42"));
    let all = app.list(&user, false).await;
    // Welcome, shipped, delivered: nothing for IN_TRANSIT, one for the delivery.
    assert_eq!(all.len(), 3, "{all:?}");
    app.stop().await;
}
