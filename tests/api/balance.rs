//! Client-side load balancing: an upstream listed with several instances keeps serving when one
//! is killed mid-load, and takes the instance back when it returns.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::helpers::{TempDir, free_port, wait_ready};
use crate::process::{admin_token, base_env, shopmesh};

/// The sum of the Prometheus series at `url` named `metric` whose labels contain every one of
/// `labels` (`None` when there is no such series).
async fn series(http: &reqwest::Client, url: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    let values: Vec<f64> = text
        .lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{'))
                && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// How many `GetProduct` calls the product process behind `metrics` has served.
async fn served(http: &reqwest::Client, metrics: u16) -> u64 {
    let url = format!("http://127.0.0.1:{metrics}/metrics");
    series(http, &url, "grpc_server_requests_total", &["GetProduct"])
        .await
        .unwrap_or(0.0) as u64
}

/// Whether the gateway counts the product instance on `port` as in, per its
/// `grpc_client_endpoint_up` gauge.
async fn gateway_sees_up(http: &reqwest::Client, edge: &str, port: u16) -> Option<bool> {
    let endpoint = format!("endpoint=\"http://127.0.0.1:{port}\"");
    let labels = ["upstream=\"product\"", endpoint.as_str()];
    series(
        http,
        &format!("{edge}/metrics"),
        "grpc_client_endpoint_up",
        &labels,
    )
    .await
    .map(|up| up == 1.0)
}

/// How many calls the gateway retried on the product service.
async fn gateway_retries(http: &reqwest::Client, edge: &str) -> u64 {
    let labels = ["upstream=\"product\""];
    series(
        http,
        &format!("{edge}/metrics"),
        "grpc_client_retries_total",
        &labels,
    )
    .await
    .unwrap_or(0.0) as u64
}

/// Four shoppers reading one product page as fast as they can until `stop`; every status seen.
fn load(
    http: &reqwest::Client,
    url: String,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<u16>>> {
    (0..4)
        .map(|_| {
            let (http, url, stop) = (http.clone(), url.clone(), Arc::clone(stop));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let status = match http.get(&url).send().await {
                        Ok(response) => response.status().as_u16(),
                        Err(_) => 0,
                    };
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect()
}

async fn finish(shoppers: Vec<tokio::task::JoinHandle<Vec<u16>>>) -> Vec<u16> {
    let mut all = Vec::new();
    for shopper in shoppers {
        all.extend(shopper.await.unwrap());
    }
    all
}

#[tokio::test]
async fn a_killed_product_instance_is_ejected_and_rejoins_without_failed_requests() {
    let dir = TempDir::new("shopmesh-balance");
    let (mut env, _, _db) = base_env();
    let (port_a, port_b) = (free_port(), free_port());
    let (metrics_a, metrics_b) = (free_port(), free_port());
    let gateway_port = free_port();
    env.insert(
        "PRODUCT_GRPC_URL".to_owned(),
        format!("http://127.0.0.1:{port_a},http://127.0.0.1:{port_b}"),
    );
    env.insert(
        "GATEWAY_ADDR".to_owned(),
        format!("127.0.0.1:{gateway_port}"),
    );
    for key in ["RATE_LIMIT_IP_PER_SECOND", "RATE_LIMIT_IP_BURST"] {
        env.insert(key.to_owned(), "100000".to_owned());
    }
    let product = |port: u16, metrics: u16| {
        let mut env = env.clone();
        env.insert("PRODUCT_GRPC_ADDR".to_owned(), format!("127.0.0.1:{port}"));
        env.insert("METRICS_ADDR".to_owned(), format!("127.0.0.1:{metrics}"));
        shopmesh(&env, &dir)
            .args(["serve", "--target", "product"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let http = reqwest::Client::new();
    let mut instance_a = product(port_a, metrics_a);
    wait_ready(&http, &format!("http://127.0.0.1:{metrics_a}/metrics")).await;
    let _instance_b = product(port_b, metrics_b);
    let mut rest_env = env.clone();
    rest_env.insert(
        "METRICS_ADDR".to_owned(),
        format!("127.0.0.1:{}", free_port()),
    );
    let _rest = shopmesh(&rest_env, &dir)
        .args([
            "serve",
            "--target",
            "gateway,user,cart,order,payment,delivery,notification,analytics",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let edge = format!("http://127.0.0.1:{gateway_port}");
    wait_ready(&http, &format!("{edge}/readyz")).await;

    let token = admin_token(&env, &dir, &edge, "lb@example.com").await;
    let created: serde_json::Value = http
        .post(format!("{edge}/api/admin/products"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "sku": "LB-1", "name": "Balanced", "price": {"amount": 1200, "currency": "USD"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page = format!("{edge}/api/products/{}", created["id"].as_str().unwrap());

    // Both instances take their share of the load.
    let stop = Arc::new(AtomicBool::new(false));
    let shoppers = load(&http, page.clone(), &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a_before, b_before) = (
        served(&http, metrics_a).await,
        served(&http, metrics_b).await,
    );
    assert!(
        a_before > 10 && b_before > 10,
        "both instances serve: {a_before} and {b_before} calls"
    );

    // Instance A dies without warning in the middle of the load.
    let retries_before = gateway_retries(&http, &edge).await;
    instance_a.start_kill().unwrap();
    instance_a.wait().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let statuses = finish(shoppers).await;
    let failed: Vec<&u16> = statuses.iter().filter(|&&status| status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} page views failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
    assert_eq!(
        gateway_sees_up(&http, &edge, port_a).await,
        Some(false),
        "the gateway ejected the dead instance"
    );
    assert_eq!(gateway_sees_up(&http, &edge, port_b).await, Some(true));
    // Only the calls that were in flight on A, or sent before it was ejected, were retried:
    // the rest went straight to B.
    let retried = gateway_retries(&http, &edge).await - retries_before;
    assert!(
        retried * 20 < statuses.len() as u64,
        "{retried} retries for {} page views: traffic kept going to the dead instance",
        statuses.len()
    );
    let b_after = served(&http, metrics_b).await;
    assert!(
        b_after > b_before + 20,
        "instance B took over: {b_before} → {b_after} calls"
    );

    // A comes back on its address and is taken back into the rotation by the health checks.
    let _instance_a = product(port_a, metrics_a);
    wait_ready(&http, &format!("http://127.0.0.1:{metrics_a}/metrics")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let shoppers = load(&http, page, &stop);
    let mut rejoined = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rejoined = served(&http, metrics_a).await;
        if rejoined > 10 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = finish(shoppers).await;
    assert!(
        rejoined > 10,
        "the restarted instance serves again: {rejoined} calls"
    );
    assert_eq!(gateway_sees_up(&http, &edge, port_a).await, Some(true));
    assert!(
        statuses.iter().all(|&status| status == 200),
        "no failures while it rejoined: {:?}",
        statuses
            .iter()
            .filter(|&&status| status != 200)
            .collect::<Vec<_>>()
    );
}
