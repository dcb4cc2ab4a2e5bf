//! What session revocation costs on `GET /api/users/me`. Every authenticated request asks
//! whether its session was ended (logout) or its account's token version moved on (role, tier
//! or password change); the answer is cached in-process for a second, so the hot path stays off
//! Redis. Measured here, in one run on real Redis, MongoDB wire server and nginx:
//!
//! 1. `/api/users/me` through the gateway at concurrency 32: req/s, p50, p99.
//! 2. The revocation check alone: a cache hit (the common case) and a miss (a Redis round trip,
//!    once per session per second), per call.
//! 3. The check's cost per `/me` request, amortised (every request pays a hit; the one session of
//!    the load pays a miss once a second) and as a share of the mean request time.
//!
//! Run with `./scripts/bench-sessions`, or `cargo bench --bench sessions` when MongoDB and nginx
//! are already available.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use shopmesh_platform::auth::{Identity, Session};
use shopmesh_platform::revocation::{RedisRevocations, RevocationCheck, Verdict};

use helpers::{Options, spawn_app_with};

const CONCURRENCY: usize = 32;
const RUN_TIME: Duration = Duration::from_secs(8);
const WARM_UP: Duration = Duration::from_secs(2);

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn load(url: &str, token: &str, time: Duration) -> (usize, usize, Vec<Duration>, Duration) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let started = Instant::now();
    let results = futures::future::join_all((0..CONCURRENCY).map(|_| {
        let http = http.clone();
        let url = url.to_owned();
        let token = token.to_owned();
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while started.elapsed() < time {
                let t0 = Instant::now();
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.bytes().await;
                        latencies.push(t0.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let mut all = Vec::new();
    let mut errors = 0;
    for (latencies, e) in results {
        all.extend(latencies);
        errors += e;
    }
    all.sort();
    (all.len(), errors, all, elapsed)
}

async fn check_cost(check: &RevocationCheck, calls: usize) -> Duration {
    let identity = Identity {
        user_id: "bench-user".to_owned(),
        role: shopmesh_platform::auth::Role::Customer,
        tier: shopmesh_platform::auth::Tier::Standard,
    };
    let session = Session {
        id: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        version: 0,
    };
    assert_eq!(
        check.check(&identity, &session).await.unwrap(),
        Verdict::Active
    );
    let t0 = Instant::now();
    for _ in 0..calls {
        assert_eq!(
            check.check(&identity, &session).await.unwrap(),
            Verdict::Active
        );
    }
    t0.elapsed() / calls as u32
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = Arc::new(
            spawn_app_with(Options {
                env: vec![("RUST_LOG", "error".to_owned())],
                ..Options::default()
            })
            .await,
        );
        let token = app.customer("bench-me@example.com").await;
        let url = format!("{}/api/users/me", app.gateway);
        println!(
            "GET /api/users/me through the gateway, concurrency {CONCURRENCY}, rate limits raised for the run"
        );
        let _ = load(&url, &token, WARM_UP).await;
        let (ok, errors, latencies, elapsed) = load(&url, &token, RUN_TIME).await;
        let rps = ok as f64 / elapsed.as_secs_f64();
        let mean = latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32;
        println!(
            "  {rps:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   mean {:>6.2} ms   errors {errors}",
            pct(&latencies, 0.50),
            pct(&latencies, 0.99),
            mean.as_secs_f64() * 1000.0,
        );

        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
        let store = Arc::new(RedisRevocations::new(&redis, &prefix).unwrap());
        let cached = RevocationCheck::new(store.clone());
        let uncached = RevocationCheck::with_cache(store, Duration::ZERO, 1);
        let hit = check_cost(&cached, 200_000).await;
        let miss = check_cost(&uncached, 5_000).await;
        println!("revocation check per call");
        println!(
            "  cache hit   {:>8.2} µs   (every request within a second of the session's last check)",
            hit.as_secs_f64() * 1e6
        );
        println!(
            "  cache miss  {:>8.2} µs   (a Redis round trip, once per session per second)",
            miss.as_secs_f64() * 1e6
        );
        // One session in the load: one miss per second, spread over that second's requests.
        let amortised = hit.as_secs_f64() + miss.as_secs_f64() / rps.max(1.0);
        println!(
            "  per /me request {:>6.2} µs amortised = {:.4}% of the mean request time",
            amortised * 1e6,
            amortised / mean.as_secs_f64().max(1e-9) * 100.0
        );
        drop(app);
    });
}
