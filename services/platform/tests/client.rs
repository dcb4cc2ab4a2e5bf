//! `MeshChannel` against real tonic servers over TCP: the standard health service behind a
//! layer that can fail the next calls with UNAVAILABLE or answer slowly, and counts what it saw.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use shopmesh_platform::client::{
    BreakerState, ClientPolicy, MeshChannel, RpcPolicy, retry_after_secs,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const CHECK: &str = "/grpc.health.v1.Health/Check";

/// What the upstream does and what it saw.
#[derive(Default)]
struct Control {
    hits: AtomicUsize,
    fail_next: AtomicUsize,
    delay_ms: AtomicU64,
    /// The `grpc-timeout` and `x-test-token` headers of every call, in order.
    seen: Mutex<Vec<(Option<String>, Option<String>)>>,
}

impl Control {
    fn failing(calls: usize) -> Arc<Self> {
        let control = Self::default();
        control.fail_next.store(calls, Ordering::SeqCst);
        Arc::new(control)
    }

    fn slow(delay: Duration) -> Arc<Self> {
        let control = Self::default();
        control
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        Arc::new(control)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn seen_timeouts(&self) -> Vec<Duration> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(timeout, _)| parse_millis(timeout.as_deref().expect("grpc-timeout sent")))
            .collect()
    }
}

fn parse_millis(value: &str) -> Duration {
    let millis = value
        .strip_suffix('m')
        .unwrap_or_else(|| panic!("{value:?} is in milliseconds"));
    Duration::from_millis(millis.parse().expect("a number"))
}

#[derive(Clone)]
struct Flaky<S> {
    inner: S,
    control: Arc<Control>,
}

impl<S> tower::Service<http::Request<Body>> for Flaky<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let control = Arc::clone(&self.control);
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        control
            .seen
            .lock()
            .unwrap()
            .push((header("grpc-timeout"), header("x-test-token")));
        control.hits.fetch_add(1, Ordering::SeqCst);
        let fail = control
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let delay = Duration::from_millis(control.delay_ms.load(Ordering::SeqCst));
        let future = self.inner.call(request);
        Box::pin(async move {
            if fail {
                return Ok(Status::unavailable("flaky upstream").into_http());
            }
            tokio::time::sleep(delay).await;
            future.await
        })
    }
}

/// A real tonic server with the health service behind `Flaky`.
struct Upstream {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Upstream {
    async fn start(addr: SocketAddr, control: Arc<Control>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(tower::layer::layer_fn(move |inner| Flaky {
                    inner,
                    control: Arc::clone(&control),
                }))
                .add_service(health)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        Self { addr, stop, task }
    }

    async fn spawn(control: Arc<Control>) -> Self {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 0)), control).await
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .expect("server drains")
            .expect("server task");
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn fast_policy() -> ClientPolicy {
    ClientPolicy {
        connect_timeout: Duration::from_millis(500),
        unary_timeout: Duration::from_secs(2),
        backoff_base: Duration::from_millis(10),
        breaker_open_for: Duration::from_millis(400),
        ..ClientPolicy::default()
    }
}

fn client(url: &str, policy: ClientPolicy) -> (MeshChannel, HealthClient<MeshChannel>) {
    let channel = MeshChannel::new("health", url, policy).expect("channel");
    (channel.clone(), HealthClient::new(channel))
}

async fn check(client: &mut HealthClient<MeshChannel>) -> Result<(), Status> {
    check_with(client, Request::new(HealthCheckRequest::default())).await
}

async fn check_with(
    client: &mut HealthClient<MeshChannel>,
    request: Request<HealthCheckRequest>,
) -> Result<(), Status> {
    client.check(request).await.map(drop)
}

fn check_not_idempotent(path: &str) -> Option<RpcPolicy> {
    (path == CHECK).then_some(RpcPolicy {
        path: CHECK,
        idempotent: false,
        long_running: false,
        client_streaming: false,
        server_streaming: false,
    })
}

fn check_client_streaming(path: &str) -> Option<RpcPolicy> {
    (path == CHECK).then_some(RpcPolicy {
        path: CHECK,
        idempotent: true,
        long_running: false,
        client_streaming: true,
        server_streaming: false,
    })
}

#[tokio::test]
async fn an_idempotent_read_is_retried_across_a_transient_unavailable() {
    let control = Control::failing(1);
    let upstream = Upstream::spawn(Arc::clone(&control)).await;
    let (channel, _) = client(&upstream.url(), fast_policy());
    let hook: Arc<dyn Fn(&mut http::HeaderMap) + Send + Sync> = Arc::new(|headers| {
        headers.insert("x-test-token", http::HeaderValue::from_static("svc-token"));
    });
    let mut health = HealthClient::new(channel.with_metadata(hook));

    check(&mut health).await.expect("the retry succeeds");

    assert_eq!(control.hits(), 2);
    let seen = control.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|(_, token)| token.as_deref() == Some("svc-token")),
        "the metadata hook runs on every attempt: {seen:?}"
    );
    // Without a caller budget the unary default applies, re-sent as what is left per attempt.
    let timeouts = control.seen_timeouts();
    assert!(timeouts[0] <= Duration::from_secs(2), "{timeouts:?}");
    assert!(timeouts[1] <= timeouts[0], "{timeouts:?}");
    upstream.stop().await;
}

#[tokio::test]
async fn a_non_idempotent_or_client_streaming_method_is_tried_once() {
    for resolver in [
        check_not_idempotent as fn(&str) -> _,
        check_client_streaming,
    ] {
        let control = Control::failing(1);
        let upstream = Upstream::spawn(Arc::clone(&control)).await;
        let channel = MeshChannel::new("health", &upstream.url(), fast_policy())
            .expect("channel")
            .with_policy_resolver(resolver);
        let mut health = HealthClient::new(channel);

        let status = check(&mut health).await.expect_err("no retry");

        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(control.hits(), 1);
        upstream.stop().await;
    }
}

#[tokio::test]
async fn a_slow_upstream_yields_deadline_exceeded_within_the_budget() {
    let control = Control::slow(Duration::from_secs(3));
    let upstream = Upstream::spawn(Arc::clone(&control)).await;
    let (_, mut health) = client(
        &upstream.url(),
        ClientPolicy {
            unary_timeout: Duration::from_millis(250),
            ..fast_policy()
        },
    );

    // The caller's budget (the edge's remaining time) wins over the policy default.
    let budget = Duration::from_millis(400);
    let mut request = Request::new(HealthCheckRequest::default());
    request.set_timeout(budget);
    let started = Instant::now();
    let status = check_with(&mut health, request)
        .await
        .expect_err("too slow");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        elapsed >= budget - Duration::from_millis(20) && elapsed < budget * 2,
        "{elapsed:?}"
    );

    // Without one, the policy's unary timeout is the budget.
    let started = Instant::now();
    let status = check(&mut health).await.expect_err("too slow");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");

    let timeouts = control.seen_timeouts();
    assert_eq!(timeouts.len(), 2, "a timed-out call is not retried");
    assert!(
        timeouts[0] <= budget && timeouts[0] > budget - Duration::from_millis(100),
        "{timeouts:?}"
    );
    assert!(timeouts[1] <= Duration::from_millis(250), "{timeouts:?}");
    upstream.stop().await;
}

#[tokio::test]
async fn a_stopped_upstream_is_unavailable_quickly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let (_, mut health) = client(&format!("http://{addr}"), fast_policy());

    let started = Instant::now();
    let status = check(&mut health).await.expect_err("nothing listens");

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "upstream health is unavailable");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_half_opens_and_closes_after_a_good_probe() {
    let control = Control::failing(usize::MAX);
    let upstream = Upstream::spawn(Arc::clone(&control)).await;
    let policy = ClientPolicy {
        max_attempts: 1,
        breaker_failures: 3,
        ..fast_policy()
    };
    let (channel, mut health) = client(&upstream.url(), policy);

    for _ in 0..3 {
        assert_eq!(channel.breaker_state(), BreakerState::Closed);
        let status = check(&mut health).await.expect_err("failing upstream");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(retry_after_secs(&status), None);
    }
    assert_eq!(control.hits(), 3);
    assert_eq!(channel.breaker_state(), BreakerState::Open);

    // Open: fail fast, without reaching the server, with a retry hint.
    let started = Instant::now();
    let status = check(&mut health).await.expect_err("circuit open");
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(retry_after_secs(&status), Some(1));
    assert_eq!(control.hits(), 3);

    // Half-open with the upstream gone: the probe fails and the circuit re-opens.
    let addr = upstream.addr;
    upstream.stop().await;
    tokio::time::sleep(policy.breaker_open_for + Duration::from_millis(50)).await;
    assert_eq!(channel.breaker_state(), BreakerState::HalfOpen);
    let status = check(&mut health).await.expect_err("upstream down");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(channel.breaker_state(), BreakerState::Open);

    // The upstream is back (same port); after the open period one slow probe goes through,
    // a call arriving meanwhile fails fast, and the probe's success closes the circuit.
    let control = Control::slow(Duration::from_millis(200));
    let upstream = Upstream::start(addr, Arc::clone(&control)).await;
    tokio::time::sleep(policy.breaker_open_for + Duration::from_millis(50)).await;
    assert_eq!(channel.breaker_state(), BreakerState::HalfOpen);
    let mut prober = health.clone();
    let probe = tokio::spawn(async move { check(&mut prober).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = check(&mut health).await.expect_err("only one probe");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(retry_after_secs(&status), Some(1));
    probe
        .await
        .expect("probe task")
        .expect("the probe succeeds");
    assert_eq!(channel.breaker_state(), BreakerState::Closed);
    assert_eq!(control.hits(), 1);

    check(&mut health).await.expect("closed again");
    assert_eq!(control.hits(), 2);
    upstream.stop().await;
}

fn watch_not_long_running(path: &str) -> Option<RpcPolicy> {
    (path == "/grpc.health.v1.Health/Watch").then_some(RpcPolicy {
        path: "/grpc.health.v1.Health/Watch",
        idempotent: true,
        long_running: false,
        client_streaming: false,
        server_streaming: true,
    })
}

#[tokio::test]
async fn a_long_running_stream_outlives_its_budget_and_an_ordinary_one_does_not() {
    let upstream = Upstream::spawn(Arc::default()).await;
    let budget = Duration::from_millis(200);
    let watch = |mut health: HealthClient<MeshChannel>| async move {
        let mut request = Request::new(HealthCheckRequest::default());
        request.set_timeout(budget);
        let mut stream = health.watch(request).await.expect("watch").into_inner();
        stream
            .message()
            .await
            .expect("first update")
            .expect("an update");
        stream
    };

    // Health/Watch is long-running: the budget bounds only the response head.
    let (_, health) = client(&upstream.url(), fast_policy());
    let mut stream = watch(health).await;
    let next = tokio::time::timeout(budget * 3, stream.message()).await;
    assert!(next.is_err(), "the stream is still open: {next:?}");
    drop(stream);

    // The same stream as an ordinary server stream is cut at the deadline.
    let channel = MeshChannel::new("health", &upstream.url(), fast_policy())
        .expect("channel")
        .with_policy_resolver(watch_not_long_running);
    let started = Instant::now();
    let mut stream = watch(HealthClient::new(channel)).await;
    let status = stream.message().await.expect_err("cut at the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < budget * 2, "{:?}", started.elapsed());

    drop(stream);
    upstream.stop().await;
}
