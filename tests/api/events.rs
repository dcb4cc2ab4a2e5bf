//! Events end to end: a checkout's state changes reach notification (in-app + e-mail over real
//! SMTP) and analytics exactly once in effect, through RabbitMQ, even when the broker goes away
//! mid-burst; a poison event is parked and re-driven through the admin API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::events::v1 as events;
use shopmesh_platform::events::{Broker, EventSettings, OutgoingEvent, new_envelope, relay};
use shopmesh_platform::mesh::url_key;
use shopmesh_testkit::RabbitNode;
use tokio::process::{Child, Command};

use crate::checkout::{VISA_OK, add, checkout, count, stock_product};
use crate::helpers::{Options, TempDir, TestApp, free_port, spawn_app_with};

// ---------------------------------------------------------------------------------------------
// A real SMTP server on loopback: aiosmtpd filing every message in a maildir.

fn python() -> String {
    std::env::var("SHOPMESH_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.tools/venv/bin/python").into())
}

struct Smtp {
    child: Child,
    port: u16,
    maildir: TempDir,
}

impl Smtp {
    async fn start() -> Self {
        let maildir = TempDir::new("shopmesh-maildir");
        let port = free_port();
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            // aiosmtpd creates the maildir (an existing empty directory is not one).
            .arg(maildir.0.join("mail"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("aiosmtpd starts (SHOPMESH_PYTHON with aiosmtpd installed)");
        let until = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < until, "aiosmtpd never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            port,
            maildir,
        }
    }

    /// Every received message as (Message-ID, Subject).
    fn mails(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.0.join("mail").join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                out.push(headers(&entry.path()));
            }
        }
        out
    }

    /// Distinct messages (by Message-ID) whose subject contains `needle`.
    fn distinct_with(&self, needle: &str) -> BTreeSet<String> {
        self.mails()
            .into_iter()
            .filter(|(_, subject)| subject.contains(needle))
            .map(|(id, _)| id)
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn headers(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut id = String::new();
    let mut subject = String::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("message-id:") {
            id = line[11..].trim().to_owned();
        } else if lower.starts_with("subject:") {
            subject = line[8..].trim().to_owned();
        }
    }
    (id, subject)
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn smtp_env(smtp: &Smtp) -> Vec<(&'static str, String)> {
    vec![
        ("NOTIFICATION_SMTP_PORT", smtp.port.to_string()),
        ("NOTIFICATION_EMAIL_BACKOFF_MS", "100".to_owned()),
        // The courier stays away: these tests count what checkout causes.
        ("DELIVERY_COURIER_STEP_MS", "3600000".to_owned()),
        // A loaded test machine: checkouts wait longer for their saga than in production.
        ("ORDER_CHECKOUT_WAIT_MS", "30000".to_owned()),
        ("GRPC_REQUEST_TIMEOUT_MS", "30000".to_owned()),
        ("GRPC_SERVER_TIMEOUT_MS", "30000".to_owned()),
        ("REQUEST_TIMEOUT_MS", "30000".to_owned()),
    ]
}

/// The caller's order confirmations (in-app).
async fn confirmations(app: &TestApp, token: &str) -> Vec<Value> {
    let reply = app.get("/api/notifications", Some(token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "order_paid")
        .cloned()
        .collect()
}

async fn summary(app: &TestApp, admin: &str) -> Value {
    let reply = app.get("/api/admin/analytics/summary", Some(admin)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

async fn paid_checkout(app: &TestApp, token: &str, sku: &str, key: &str) -> String {
    let added = add(app, token, sku, 1).await;
    assert!(added.status == 201 || added.status == 200, "{}", added.text);
    // A loaded machine may answer 503/504 (Retry-After): a client retries with the same
    // idempotency key, which can never place a second order.
    let mut placed = checkout(app, token, key, VISA_OK).await;
    for _ in 0..5 {
        if placed.status != 503 && placed.status != 504 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        placed = checkout(app, token, key, VISA_OK).await;
    }
    assert_eq!(placed.status, 201, "{}", placed.text);
    assert_eq!(placed.body["status"], "PAID", "{}", placed.text);
    placed.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_paid_checkout_sends_one_confirmation_one_notification_and_counts_once() {
    let smtp = Smtp::start().await;
    let app = spawn_app_with(Options {
        env: smtp_env(&smtp),
        ..Options::default()
    })
    .await;
    let admin = app.admin("shop-admin@example.com").await;
    stock_product(&app, &admin, "EVT-1", 2500, 10).await;
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let order = paid_checkout(&app, &ada, "EVT-1", "evt-once").await;

    // The confirmation: one in-app notification, one e-mail, one order in analytics.
    let confirmation = format!("Order confirmation {order}");
    eventually(
        "the in-app confirmation",
        Duration::from_secs(30),
        || async { !confirmations(&app, &ada).await.is_empty() },
    )
    .await;
    let found = confirmations(&app, &ada).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let notification = found[0].clone();
    assert!(notification["subject"].as_str().unwrap().contains(&order));
    let body = notification["body"].as_str().unwrap();
    assert!(body.contains("Product EVT-1"), "{body}");
    assert!(body.contains("25.00"), "{body}");
    eventually(
        "the confirmation e-mail",
        Duration::from_secs(30),
        || async { smtp.distinct_with(&confirmation).len() == 1 },
    )
    .await;
    eventually(
        "analytics counts the order",
        Duration::from_secs(30),
        || async { summary(&app, &admin).await["paid_orders"] == 1 },
    )
    .await;
    let s = summary(&app, &admin).await;
    assert_eq!(s["orders"], 1, "{s}");
    assert_eq!(s["revenue"], 2500, "{s}");
    assert_eq!(s["average_order_value"], 2500, "{s}");

    // Nothing more arrives later (no redelivery turns into a second effect).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        smtp.mails()
            .iter()
            .filter(|(_, s)| s.contains(&confirmation))
            .count(),
        1
    );
    assert_eq!(
        count(
            &app,
            "notification",
            &format!("select count(*) from notifications where kind = 'order_paid' and subject like '%{order}%'")
        )
        .await,
        1
    );
    assert_eq!(summary(&app, &admin).await["paid_orders"], 1);

    // Bob cannot see, read or delete Ada's notification.
    let id = notification["id"].as_str().unwrap();
    let bobs = app.get("/api/notifications", Some(&bob)).await;
    assert!(
        bobs.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["id"] != id),
        "{}",
        bobs.text
    );
    let read = app
        .http
        .put(app.url(&format!("/api/notifications/{id}/read")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 404);
    let deleted = app.delete(&format!("/api/notifications/{id}"), &bob).await;
    deleted.assert_problem(404);
    // Ada can.
    let read = app
        .http
        .put(app.url(&format!("/api/notifications/{id}/read")))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let unread = app.get("/api/notifications?unread=true", Some(&ada)).await;
    assert!(
        unread.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["id"] != id)
    );
}

const BURST_SKUS: usize = 10;

async fn stock_burst(app: &TestApp, admin: &str) {
    for n in 0..BURST_SKUS {
        stock_product(app, admin, &format!("BURST-{n}"), 1000, 100).await;
    }
}

/// `orders` checkouts from `shoppers` in parallel; calls `midway` once half are placed.
async fn burst(
    app: &Arc<TestApp>,
    shoppers: &[String],
    orders: usize,
    prefix: &str,
    midway: impl FnOnce() + Send + 'static,
) -> Vec<String> {
    let per = orders / shoppers.len();
    type Midway = Box<dyn FnOnce() + Send>;
    let midway: Arc<std::sync::Mutex<Option<Midway>>> =
        Arc::new(std::sync::Mutex::new(Some(Box::new(midway))));
    let placed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = shoppers
        .iter()
        .enumerate()
        .map(|(worker, token)| {
            let app = app.clone();
            let token = token.clone();
            let prefix = prefix.to_owned();
            let midway = midway.clone();
            let placed = placed.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..per {
                    // Spread over SKUs: this measures events, not one hot stock row.
                    let sku = format!("BURST-{}", (worker + i) % BURST_SKUS);
                    ids.push(
                        paid_checkout(&app, &token, &sku, &format!("{prefix}-{worker}-{i}")).await,
                    );
                    if placed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == orders / 2 {
                        let run = midway.lock().unwrap().take();
                        if let Some(run) = run {
                            run();
                        }
                    }
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    ids
}

/// Every order has exactly one confirmation (in-app and e-mail) and analytics counts each once.
async fn assert_exact(app: &TestApp, smtp: &Smtp, admin: &str, ids: &[String], within: Duration) {
    let expected = ids.len() as i64;
    eventually("one in-app confirmation per order", within, || async {
        count(
            app,
            "notification",
            "select count(*) from notifications where kind = 'order_paid'",
        )
        .await
            >= expected
    })
    .await;
    eventually("one e-mail per order", within, || async {
        smtp.distinct_with("Order confirmation").len() as i64 >= expected
    })
    .await;
    eventually("analytics counts every order", within, || async {
        summary(app, admin).await["paid_orders"].as_i64().unwrap() >= expected
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(
            app,
            "notification",
            "select count(*) from notifications where kind = 'order_paid'"
        )
        .await,
        expected
    );
    // Distinct messages per order (a resend after a crash between SMTP and the mark carries the
    // same Message-ID, which is how a receiver drops it).
    let mut mailed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (message_id, subject) in smtp.mails() {
        if subject.contains("Order confirmation") {
            let order = subject.rsplit(' ').next().unwrap_or_default().to_owned();
            mailed.entry(order).or_default().insert(message_id);
        }
    }
    assert!(mailed.values().all(|ids| ids.len() == 1), "{mailed:?}");
    let wanted: BTreeSet<&String> = ids.iter().collect();
    let got: BTreeSet<&String> = mailed.keys().collect();
    assert_eq!(
        got, wanted,
        "every order, and only those, has a confirmation e-mail"
    );
    assert_eq!(smtp.distinct_with("Order confirmation").len(), ids.len());
    let s = summary(app, admin).await;
    assert_eq!(s["paid_orders"].as_i64().unwrap(), expected, "{s}");
    assert_eq!(s["orders"].as_i64().unwrap(), expected, "{s}");
    assert_eq!(s["revenue"].as_i64().unwrap(), expected * 1000, "{s}");
}

#[tokio::test]
async fn a_broker_restart_mid_burst_loses_nothing_and_doubles_nothing() {
    let smtp = Smtp::start().await;
    // A broker of the test's own, so that stopping it disturbs no other test.
    let broker = Arc::new(RabbitNode::start().await);
    let mut env = smtp_env(&smtp);
    env.push(("AMQP_URL", broker.amqp_url()));
    let app = Arc::new(
        spawn_app_with(Options {
            env,
            ..Options::default()
        })
        .await,
    );
    let admin = app.admin("shop-admin@example.com").await;
    stock_burst(&app, &admin).await;
    let mut shoppers = Vec::new();
    for i in 0..5 {
        shoppers.push(app.customer(&format!("shopper{i}@example.com")).await);
    }
    // The broker is stopped in the middle of the burst and started again 3 s later: every
    // producer and consumer loses its connection, messages in flight are settled or not;
    // checkouts go on (the outboxes keep the events).
    let restarted = Arc::new(tokio::sync::Notify::new());
    let done = restarted.clone();
    let node = broker.clone();
    let ids = burst(&app, &shoppers, 300, "restart", move || {
        tokio::spawn(async move {
            node.stop().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            node.restart().await;
            done.notify_one();
        });
    })
    .await;
    assert_eq!(ids.len(), 300);
    tokio::time::timeout(Duration::from_secs(120), restarted.notified())
        .await
        .expect("the broker was stopped and started again");
    assert_exact(&app, &smtp, &admin, &ids, Duration::from_secs(600)).await;
}

/// The consumers as a process of their own, on the addresses the gateway was given.
fn consumers_process(app: &TestApp, dir: &TempDir) -> Child {
    let mut vars = app.vars.clone();
    // Where the test's process serves the other services.
    for (service, url) in &app.grpc {
        vars.insert(url_key(service), url.clone());
    }
    vars.insert("METRICS_ADDR".into(), format!("127.0.0.1:{}", free_port()));
    crate::process::shopmesh(&vars, dir)
        .args(["serve", "--target", "notification,analytics"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the consumers start")
}

#[tokio::test]
async fn consumers_killed_mid_burst_and_restarted_lose_nothing_and_double_nothing() {
    let smtp = Smtp::start().await;
    let mut env = smtp_env(&smtp);
    // Notification and analytics run in a child process on these ports; the rest in the test.
    for (addr, url) in [
        ("NOTIFICATION_GRPC_ADDR", "NOTIFICATION_GRPC_URL"),
        ("ANALYTICS_GRPC_ADDR", "ANALYTICS_GRPC_URL"),
    ] {
        let port = free_port();
        env.push((addr, format!("127.0.0.1:{port}")));
        env.push((url, format!("http://127.0.0.1:{port}")));
    }
    let app = Arc::new(
        spawn_app_with(Options {
            env,
            services: Some(vec![
                "user", "product", "cart", "order", "payment", "delivery",
            ]),
            ..Options::default()
        })
        .await,
    );
    let dir = TempDir::new("shopmesh-consumers");
    // `migrate` declares every consumer's queue: what is published before the consumers first
    // start waits for them.
    let migrated = crate::process::shopmesh(&app.vars, &dir)
        .arg("migrate")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .await
        .unwrap();
    assert!(migrated.success());
    let admin = app.admin("shop-admin@example.com").await;
    stock_burst(&app, &admin).await;
    let mut shoppers = Vec::new();
    for i in 0..5 {
        shoppers.push(app.customer(&format!("shopper{i}@example.com")).await);
    }
    let consumers = Arc::new(tokio::sync::Mutex::new(consumers_process(&app, &dir)));
    crate::helpers::wait_ready(&app.http, &format!("{}/readyz", app.edge)).await;

    // Half-way through, the consumers' process is killed (SIGKILL: no drain, unacknowledged
    // deliveries and unsent e-mails in flight) and started again 2 s later.
    let restart = consumers.clone();
    let again = app.clone();
    let dir = Arc::new(dir);
    let restart_dir = dir.clone();
    let restarted = Arc::new(tokio::sync::Notify::new());
    let done = restarted.clone();
    let ids = burst(&app, &shoppers, 300, "restart", move || {
        tokio::spawn(async move {
            let mut child = restart.lock().await;
            child.kill().await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            *child = consumers_process(&again, &restart_dir);
            done.notify_one();
        });
    })
    .await;
    assert_eq!(ids.len(), 300);
    tokio::time::timeout(Duration::from_secs(30), restarted.notified())
        .await
        .expect("the consumers were killed and started again");
    assert_exact(&app, &smtp, &admin, &ids, Duration::from_secs(600)).await;
    let recipients = count(&app, "notification", "select count(*) from recipients").await;
    assert_eq!(
        recipients, 6,
        "the admin and every shopper, registered before the consumers first started, are known"
    );
    consumers.lock().await.kill().await.unwrap();
}

async fn publish(settings: &EventSettings, envelope: &events::EventEnvelope) {
    let broker = Broker::new(settings.clone(), "events-test");
    let channel = broker.publisher().await.unwrap();
    let any = envelope.payload.clone().unwrap();
    relay::publish(
        &channel,
        &settings.exchange,
        "test",
        &[OutgoingEvent {
            id: envelope.event_id.parse().unwrap(),
            event_type: envelope.r#type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            payload_type: any.type_url,
            payload: any.value,
            correlation_id: String::new(),
            priority: 0,
            occurred_at: chrono::Utc::now(),
        }],
    )
    .await
    .unwrap();
    broker.close().await;
}

#[tokio::test]
async fn a_poison_event_is_parked_listed_and_redriven_through_the_admin_api() {
    let smtp = Smtp::start().await;
    let mut env = smtp_env(&smtp);
    env.push(("EVENTS_MAX_ATTEMPTS", "3".to_owned()));
    let app = spawn_app_with(Options {
        env,
        ..Options::default()
    })
    .await;
    let admin = app.admin("shop-admin@example.com").await;
    let settings = app.settings.events.clone();
    // An order paid by a customer the notification service has not heard of (their
    // registration event is late): it cannot be addressed, and is retried, then parked.
    let ghost = uuid::Uuid::now_v7().to_string();
    let order_id = uuid::Uuid::now_v7().to_string();
    let usd = |amount_minor| {
        Some(Money {
            amount_minor,
            currency: "USD".into(),
        })
    };
    let paid = new_envelope(
        "order",
        &order_id,
        "order.paid",
        "OrderPaid",
        &events::OrderPaid {
            order_id: order_id.clone(),
            user_id: ghost.clone(),
            total: usd(1000),
            lines: vec![events::OrderLine {
                product_id: "p1".into(),
                sku: "GHOST-1".into(),
                product_name: "Ghost mug".into(),
                unit_price: usd(1000),
                quantity: 1,
                line_total: usd(1000),
            }],
            ..Default::default()
        },
    );
    publish(&settings, &paid).await;
    let find = || async {
        let reply = app
            .get(
                "/api/admin/dead-letters?consumer=notification",
                Some(&admin),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["consumers"][0]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["event_id"] == paid.event_id.as_str())
            .cloned()
    };
    eventually(
        "the event is dead-lettered",
        Duration::from_secs(30),
        || async { find().await.is_some() },
    )
    .await;
    let parked = find().await.unwrap();
    assert_eq!(parked["event_type"], "order.paid");
    assert_eq!(parked["attempts"], 3, "{parked}");
    assert!(
        parked["error"].as_str().unwrap().contains(&ghost),
        "{parked}"
    );
    // Other events flow meanwhile, and the queue is not blocked: a real checkout is confirmed.
    let customer = app.customer("real@example.com").await;
    stock_product(&app, &admin, "REAL-1", 700, 5).await;
    let real = paid_checkout(&app, &customer, "REAL-1", "real-1").await;
    eventually(
        "the real order is confirmed",
        Duration::from_secs(30),
        || async {
            !smtp
                .distinct_with(&format!("Order confirmation {real}"))
                .is_empty()
        },
    )
    .await;
    // Customers may not look.
    app.get("/api/admin/dead-letters", Some(&customer))
        .await
        .assert_problem(403);
    // Unknown consumers and unknown events are 404s.
    let nothing = app
        .post(
            &format!("/api/admin/dead-letters/nobody/{}/redrive", paid.event_id),
            Value::Null,
            Some(&admin),
        )
        .await;
    nothing.assert_problem(404);

    // The fix: the customer's registration arrives. Then the re-drive delivers it.
    publish(
        &settings,
        &new_envelope(
            "user",
            &ghost,
            "user.registered",
            "UserRegistered",
            &events::UserRegistered {
                user_id: ghost.clone(),
                email: "ghost@example.com".into(),
                name: "Ghost".into(),
                ..Default::default()
            },
        ),
    )
    .await;
    let redrive = app
        .post(
            &format!(
                "/api/admin/dead-letters/notification/{}/redrive",
                paid.event_id
            ),
            Value::Null,
            Some(&admin),
        )
        .await;
    assert_eq!(redrive.status, 200, "{}", redrive.text);
    assert_eq!(redrive.body["redriven"], true);
    eventually(
        "the re-driven confirmation",
        Duration::from_secs(30),
        || async {
            smtp.distinct_with(&format!("Order confirmation {order_id}"))
                .len()
                == 1
        },
    )
    .await;
    let left = app
        .get(
            "/api/admin/dead-letters?consumer=notification",
            Some(&admin),
        )
        .await;
    assert_eq!(left.body["consumers"][0]["total"], 0, "{}", left.text);
    let again = app
        .post(
            &format!(
                "/api/admin/dead-letters/notification/{}/redrive",
                paid.event_id
            ),
            Value::Null,
            Some(&admin),
        )
        .await;
    again.assert_problem(404);
}
