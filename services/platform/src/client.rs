//! The one resilient gRPC client every gateway → service and service → service call goes
//! through.
//!
//! [`MeshChannel`] wraps a lazily connecting [`tonic::transport::Channel`] and is itself a tower
//! service, so generated clients are `FooClient<MeshChannel>`. Per call it reads the RPC's
//! policy from the contracts ([`shopmesh_contracts::policy::lookup`]) and:
//!
//! - enforces a deadline: the caller's `grpc-timeout` (set with `tonic::Request::set_timeout`
//!   from the edge's remaining budget) or the policy's default, re-sent upstream as the
//!   *remaining* budget on every attempt; an expired budget answers `DEADLINE_EXCEEDED`;
//! - retries idempotent, non-client-streaming methods across connection failures and
//!   trailers-only `UNAVAILABLE` answers, with jittered exponential backoff, never past the
//!   deadline;
//! - keeps a circuit breaker per upstream that fails fast while the upstream is down;
//! - balances over the upstream's instances when its address lists several, ejecting one
//!   that fails and readmitting it when healthy ([`crate::balance`]);
//! - turns every transport failure into a clean `Status`, so callers only ever see statuses.
//!
//! It never sets `Endpoint::timeout`: that timer covers the whole exchange and used to cut
//! client streams short. Deadlines are per call and policy-driven here instead.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use metrics::SharedString;
use rand::Rng;
use shopmesh_contracts::MethodPolicy;

use crate::balance::Pool;
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use tower::{Service as _, ServiceExt};
use tracing::Instrument;

/// The metadata key carrying how many seconds to wait before calling a tripped upstream again.
pub const RETRY_AFTER: &str = "retry-after";

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The longest backoff between two attempts, whatever the attempt number.
const BACKOFF_CAP: Duration = Duration::from_secs(1);

/// A tonic server answers CANCELLED (not DEADLINE_EXCEEDED) when the `grpc-timeout` we sent
/// expires. Its timer starts a little after ours, so such an answer usually loses the race
/// against our own deadline; when it wins by a hair, it is still our deadline that expired.
const CANCELLED_AT_DEADLINE_SLACK: Duration = Duration::from_millis(20);

/// Timeouts, retries and circuit breaking of one upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientPolicy {
    /// How long establishing a TCP + HTTP/2 connection may take before the attempt fails as
    /// UNAVAILABLE. Default 2 s.
    pub connect_timeout: Duration,
    /// The budget of a call whose caller sent no `grpc-timeout`, for ordinary (not
    /// long-running) methods. Default 5 s.
    pub unary_timeout: Duration,
    /// The budget of a call whose caller sent no `grpc-timeout`, for methods the contracts mark
    /// long-running (imports, exports, watches). For a long-running server stream it bounds
    /// only the wait for the response head, not the stream. Default 300 s.
    pub stream_timeout: Duration,
    /// Attempts per call (first try included) for idempotent, non-client-streaming methods;
    /// every other method gets exactly one. Values below 1 count as 1. Default 3.
    pub max_attempts: u32,
    /// The base of the full-jitter exponential backoff: before retry `n` (from 0) the client
    /// sleeps a random time in `[0, min(1 s, backoff_base * 2^n)]`. Default 25 ms.
    pub backoff_base: Duration,
    /// Consecutive failed attempts (connection errors, UNAVAILABLE, DEADLINE_EXCEEDED) that
    /// open the circuit. Values below 1 count as 1. Default 5.
    pub breaker_failures: u32,
    /// How long an open circuit fails calls fast before one probe call is let through.
    /// Default 5 s.
    pub breaker_open_for: Duration,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            unary_timeout: Duration::from_secs(5),
            stream_timeout: Duration::from_secs(300),
            max_attempts: 3,
            backoff_base: Duration::from_millis(25),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
        }
    }
}

/// What the client needs to know about one RPC: a projection of the contracts'
/// [`MethodPolicy`] without the access-control fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcPolicy {
    /// `/package.Service/Method`; also the `method` label of the client metrics.
    pub path: &'static str,
    /// Safe to send again after a transient failure.
    pub idempotent: bool,
    /// Runs under [`ClientPolicy::stream_timeout`] instead of [`ClientPolicy::unary_timeout`].
    pub long_running: bool,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

impl From<&MethodPolicy> for RpcPolicy {
    fn from(policy: &MethodPolicy) -> Self {
        Self {
            path: policy.path,
            idempotent: policy.idempotent,
            long_running: policy.long_running,
            client_streaming: policy.client_streaming,
            server_streaming: policy.server_streaming,
        }
    }
}

/// Finds the policy of the RPC at a request path. A method it does not know gets one attempt,
/// the unary budget, and a deadline on the response head only (it may be a stream).
pub type PolicyResolver = fn(&str) -> Option<RpcPolicy>;

/// Called on every attempt, just before it is sent, to add metadata (the calling service's
/// identity token, for instance).
pub type MetadataHook = Arc<dyn Fn(&mut http::HeaderMap) + Send + Sync>;

/// The standard health service every shopmesh server registers. It is not part of the
/// contracts, but gateways and services call it: `Check` is a read, `Watch` a long-lived stream.
const HEALTH_RPCS: [RpcPolicy; 2] = [
    RpcPolicy {
        path: "/grpc.health.v1.Health/Check",
        idempotent: true,
        long_running: false,
        client_streaming: false,
        server_streaming: false,
    },
    RpcPolicy {
        path: "/grpc.health.v1.Health/Watch",
        idempotent: true,
        long_running: true,
        client_streaming: false,
        server_streaming: true,
    },
];

/// The resolver [`MeshChannel::new`] installs: the contracts' policy table, then the standard
/// health service.
pub fn contract_policy(path: &str) -> Option<RpcPolicy> {
    shopmesh_contracts::policy::lookup(path)
        .map(RpcPolicy::from)
        .or_else(|| HEALTH_RPCS.iter().find(|rpc| rpc.path == path).copied())
}

/// The state of an upstream's circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; consecutive failures are being counted.
    Closed,
    /// Calls fail fast with UNAVAILABLE without touching the network.
    Open,
    /// The open period is over: the next call is a probe whose outcome closes or re-opens the
    /// circuit; calls arriving while the probe runs fail fast.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `grpc_client_circuit_state` gauge.
    fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// The seconds a caller should wait before calling again, from a fail-fast UNAVAILABLE status
/// of a tripped circuit (its `retry-after` metadata), for the gateway's `Retry-After` header.
pub fn retry_after_secs(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A resilient gRPC channel to one upstream; see the module documentation.
///
/// Clones share the connection and the circuit breaker. Errors never escape as `Err`: every
/// failure is a trailers-only gRPC status response, hence the `Infallible` error type.
#[derive(Clone)]
pub struct MeshChannel {
    pool: Arc<Pool>,
    resolver: PolicyResolver,
    metadata: Option<MetadataHook>,
    shared: Arc<Shared>,
}

/// What every clone of one `MeshChannel` shares.
struct Shared {
    upstream: Arc<str>,
    policy: ClientPolicy,
    breaker: Breaker,
}

impl fmt::Debug for MeshChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshChannel")
            .field("upstream", &self.shared.upstream)
            .field("policy", &self.shared.policy)
            .field("breaker", &self.breaker_state())
            .field("metadata_hook", &self.metadata.is_some())
            .finish_non_exhaustive()
    }
}

impl MeshChannel {
    /// A lazily connecting channel to `url` (`http://host:port`, or several such addresses
    /// separated by commas: the instances of one upstream, balanced) named `upstream` in
    /// metrics, logs and statuses. Nothing is dialled until the first call.
    pub fn new(
        upstream: impl Into<Arc<str>>,
        url: &str,
        policy: ClientPolicy,
    ) -> anyhow::Result<Self> {
        let upstream = upstream.into();
        let policy = ClientPolicy {
            max_attempts: policy.max_attempts.max(1),
            breaker_failures: policy.breaker_failures.max(1),
            ..policy
        };
        let channels = url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                let channel = Endpoint::from_shared(url.to_owned())?
                    .connect_timeout(policy.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                Ok((url.to_owned(), channel))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if channels.is_empty() {
            anyhow::bail!("no address given for upstream {upstream}");
        }
        record_breaker_state(&upstream, BreakerState::Closed);
        Ok(Self {
            pool: Pool::new(&upstream, channels),
            resolver: contract_policy,
            metadata: None,
            shared: Arc::new(Shared {
                breaker: Breaker::new(Arc::clone(&upstream), &policy),
                upstream,
                policy,
            }),
        })
    }

    /// Calls `hook` on every attempt's headers just before the attempt is sent.
    pub fn with_metadata(mut self, hook: MetadataHook) -> Self {
        self.metadata = Some(hook);
        self
    }

    /// Replaces how RPC policies are found (by default [`contract_policy`]); for tests and for
    /// upstreams outside the contracts.
    pub fn with_policy_resolver(mut self, resolver: PolicyResolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The upstream's name, as given to [`MeshChannel::new`].
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// The circuit breaker's state. An open circuit whose open period is over reports
    /// `HalfOpen`: the next call will be the probe.
    pub fn breaker_state(&self) -> BreakerState {
        self.shared.breaker.state()
    }
}

impl tower::Service<http::Request<Body>> for MeshChannel {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the inner channel is awaited per attempt, so that a dead connection
        // becomes an UNAVAILABLE answer (and a retry) rather than an error here.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let call = Call {
            pool: Arc::clone(&self.pool),
            metadata: self.metadata.clone(),
            shared: Arc::clone(&self.shared),
        };
        let rpc = (self.resolver)(request.uri().path());
        if crate::telemetry::exporting() {
            // A client span under the caller's, whose context travels as `traceparent`.
            let span = tracing::info_span!(
                "grpc.client",
                otel.name = %request.uri().path().trim_start_matches('/'),
                otel.kind = "client",
                upstream = %self.shared.upstream,
            );
            let mut request = request;
            crate::telemetry::inject(&span, request.headers_mut());
            return Box::pin(
                async move { Ok(call.run(request, rpc, started).await) }.instrument(span),
            );
        }
        Box::pin(async move { Ok(call.run(request, rpc, started).await) })
    }
}

/// One call in flight.
struct Call {
    pool: Arc<Pool>,
    metadata: Option<MetadataHook>,
    shared: Arc<Shared>,
}

/// How one attempt ended.
enum Attempt {
    /// The upstream answered with something that ends the call.
    Answered(http::Response<Body>),
    /// Worth another attempt: a connection failure or a trailers-only UNAVAILABLE, already
    /// turned into the response to give if no attempt is left.
    Transient(http::Response<Body>),
    /// The budget ran out.
    TimedOut,
    /// The circuit is open: failed fast without touching the network.
    Rejected(Status),
}

impl Call {
    async fn run(
        self,
        request: http::Request<Body>,
        rpc: Option<RpcPolicy>,
        started: Instant,
    ) -> http::Response<Body> {
        let policy = &self.shared.policy;
        let method: SharedString = match rpc {
            Some(rpc) => SharedString::const_str(rpc.path),
            None => SharedString::from(request.uri().path().to_owned()),
        };
        let budget = grpc_timeout(request.headers()).unwrap_or(match rpc {
            Some(rpc) if rpc.long_running => policy.stream_timeout,
            _ => policy.unary_timeout,
        });
        let deadline = started + budget;
        let retryable = policy.max_attempts > 1
            && rpc.is_some_and(|rpc| rpc.idempotent && !rpc.client_streaming);

        let response = if retryable {
            self.with_retries(request, deadline, budget, &method).await
        } else {
            match self.attempt(request, deadline).await {
                Attempt::Answered(response) | Attempt::Transient(response) => response,
                Attempt::TimedOut => self.deadline_exceeded(budget),
                Attempt::Rejected(status) => status.into_http(),
            }
        };

        metrics::counter!(
            "grpc_client_requests_total",
            "upstream" => SharedString::from(Arc::clone(&self.shared.upstream)),
            "method" => method,
            "code" => code_label(response.headers()),
        )
        .increment(1);

        // The deadline bounds the whole call, stream included, except for long-running server
        // streams (watches, exports), where it bounds only the wait for the response head.
        let bound_body = rpc.is_some_and(|rpc| !(rpc.long_running && rpc.server_streaming));
        if bound_body && !response.body().is_end_stream() {
            let upstream = Arc::clone(&self.shared.upstream);
            response.map(|body| {
                Body::new(DeadlineBody {
                    inner: body,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    expired: false,
                    upstream,
                })
            })
        } else {
            response
        }
    }

    /// Buffers the request so it can be re-sent, then tries up to `max_attempts` times.
    async fn with_retries(
        &self,
        request: http::Request<Body>,
        deadline: Instant,
        budget: Duration,
        method: &SharedString,
    ) -> http::Response<Body> {
        let policy = &self.shared.policy;
        let (parts, body) = request.into_parts();
        let message = match tokio::time::timeout_at(deadline, body.collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(status)) => return status.into_http(),
            Err(_) => return self.deadline_exceeded(budget),
        };

        let mut attempt = 1;
        loop {
            let request = rebuild(&parts, message.clone());
            let last = match self.attempt(request, deadline).await {
                Attempt::Answered(response) => return response,
                Attempt::TimedOut => return self.deadline_exceeded(budget),
                Attempt::Rejected(status) => return status.into_http(),
                Attempt::Transient(response) => response,
            };
            if attempt >= policy.max_attempts {
                return last;
            }
            let pause = backoff(policy.backoff_base, attempt - 1);
            // A retry that could not start before the deadline would only turn a clear
            // UNAVAILABLE into a DEADLINE_EXCEEDED.
            if Instant::now() + pause >= deadline {
                return last;
            }
            metrics::counter!(
                "grpc_client_retries_total",
                "upstream" => SharedString::from(Arc::clone(&self.shared.upstream)),
                "method" => method.clone(),
            )
            .increment(1);
            tracing::debug!(
                upstream = %self.shared.upstream,
                method = %method,
                attempt,
                backoff_ms = pause.as_millis() as u64,
                "retrying a transient upstream failure"
            );
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// One attempt: breaker admission, the remaining budget in `grpc-timeout`, the metadata
    /// hook, the exchange up to the response head, and the breaker's bookkeeping.
    async fn attempt(&self, mut request: http::Request<Body>, deadline: Instant) -> Attempt {
        let breaker = &self.shared.breaker;
        let permit = match breaker.admit() {
            Ok(permit) => permit,
            Err(wait) => return Attempt::Rejected(self.circuit_open(wait)),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            // Nothing was sent, so the upstream is not to blame; the permit is released
            // without an outcome.
            return Attempt::TimedOut;
        }
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, encode_grpc_timeout(remaining));
        if let Some(hook) = &self.metadata {
            hook(request.headers_mut());
        }

        let (instance, mut channel) = self.pool.pick();
        let exchange = async move { channel.ready().await?.call(request).await };
        match tokio::time::timeout_at(deadline, exchange).await {
            Err(_elapsed) => {
                permit.failure();
                Attempt::TimedOut
            }
            // The channel enforces the `grpc-timeout` we send as well, and its timer may fire
            // a hair before ours.
            Ok(Err(error)) if timed_out(&error) => {
                permit.failure();
                Attempt::TimedOut
            }
            Ok(Err(error)) => {
                permit.failure();
                // The instance is gone (refused, reset): the next attempt goes elsewhere.
                self.pool.eject(instance);
                tracing::warn!(upstream = %self.shared.upstream, error = %error, "upstream call failed");
                Attempt::Transient(self.unavailable().into_http())
            }
            Ok(Ok(response)) => match trailers_only_code(response.headers()) {
                Some(Code::Unavailable) => {
                    permit.failure();
                    Attempt::Transient(response)
                }
                Some(Code::DeadlineExceeded) => {
                    permit.failure();
                    Attempt::Answered(response)
                }
                Some(Code::Cancelled)
                    if deadline.saturating_duration_since(Instant::now())
                        <= CANCELLED_AT_DEADLINE_SLACK =>
                {
                    permit.failure();
                    Attempt::TimedOut
                }
                _ => {
                    permit.success();
                    Attempt::Answered(response)
                }
            },
        }
    }

    fn deadline_exceeded(&self, budget: Duration) -> http::Response<Body> {
        Status::deadline_exceeded(format!(
            "upstream {} did not answer within {} ms",
            self.shared.upstream,
            budget.as_millis()
        ))
        .into_http()
    }

    fn unavailable(&self) -> Status {
        Status::unavailable(format!("upstream {} is unavailable", self.shared.upstream))
    }

    fn circuit_open(&self, wait: Duration) -> Status {
        let mut status = self.unavailable();
        status
            .metadata_mut()
            .insert(RETRY_AFTER, MetadataValue::from(retry_after(wait)));
        status
    }
}

/// Whether a channel error is the expiry of the `grpc-timeout` it enforces.
fn timed_out(error: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Seconds to wait, rounded up, at least 1.
fn retry_after(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// A fresh copy of a buffered request for one attempt.
fn rebuild(parts: &http::request::Parts, message: Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(Full::new(message)));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// Full jitter: a random pause in `[0, min(cap, base * 2^retry)]`.
fn backoff(base: Duration, retry: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << retry.min(20)).min(BACKOFF_CAP);
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::thread_rng().gen_range(0..=micros))
}

/// The code of a trailers-only response (its status is in the head), if it is one.
fn trailers_only_code(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The `code` label: the numeric gRPC code of a trailers-only answer, or "0" for an answer that
/// streams (its status arrives in the trailers; the server-side metrics count it the same way).
fn code_label(headers: &http::HeaderMap) -> SharedString {
    const CODES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    let code = trailers_only_code(headers).map_or(0, |code| code as usize);
    SharedString::const_str(CODES.get(code).copied().unwrap_or("2"))
}

/// Reads a `grpc-timeout` header (`TimeoutValue TimeoutUnit`, at most 8 digits, units
/// H M S m u n), per the gRPC over HTTP/2 spec. An unreadable value counts as absent.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Writes a `grpc-timeout` value: whole milliseconds rounded down (never more than the budget
/// left), at least 1, or whole seconds once milliseconds need more than 8 digits.
fn encode_grpc_timeout(remaining: Duration) -> http::HeaderValue {
    const MAX_VALUE: u128 = 99_999_999;
    let millis = remaining.as_millis().max(1);
    let value = if millis <= MAX_VALUE {
        format!("{millis}m")
    } else {
        format!("{}S", u128::from(remaining.as_secs()).min(MAX_VALUE))
    };
    http::HeaderValue::try_from(value).unwrap_or(http::HeaderValue::from_static("99999999S"))
}

fn record_breaker_state(upstream: &Arc<str>, state: BreakerState) {
    metrics::gauge!(
        "grpc_client_circuit_state",
        "upstream" => SharedString::from(Arc::clone(upstream)),
    )
    .set(state.gauge_value());
}

/// A consecutive-failure circuit breaker. One short, uncontended lock per admission and one
/// per outcome; the clock is read only when the circuit is not closed or it trips.
struct Breaker {
    upstream: Arc<str>,
    inner: Mutex<BreakerInner>,
    failures_to_open: u32,
    open_for: Duration,
}

struct BreakerInner {
    state: BreakerState,
    consecutive_failures: u32,
    /// When the circuit last opened; meaningful while it is open.
    opened_at: Instant,
    /// A half-open probe is in flight.
    probing: bool,
}

impl Breaker {
    fn new(upstream: Arc<str>, policy: &ClientPolicy) -> Self {
        Self {
            upstream,
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: Instant::now(),
                probing: false,
            }),
            failures_to_open: policy.breaker_failures,
            open_for: policy.breaker_open_for,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BreakerInner> {
        // The guarded state is a few plain fields, valid even if a holder panicked.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open if inner.opened_at.elapsed() >= self.open_for => {
                BreakerState::HalfOpen
            }
            state => state,
        }
    }

    /// Lets an attempt through, or says how long the circuit stays open.
    fn admit(&self) -> Result<Permit<'_>, Duration> {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Ok(Permit::new(self, false)),
            BreakerState::Open => {
                let open_until = inner.opened_at + self.open_for;
                let now = Instant::now();
                if now < open_until {
                    return Err(open_until - now);
                }
                inner.state = BreakerState::HalfOpen;
                inner.probing = true;
                drop(inner);
                record_breaker_state(&self.upstream, BreakerState::HalfOpen);
                Ok(Permit::new(self, true))
            }
            BreakerState::HalfOpen if inner.probing => Err(Duration::ZERO),
            BreakerState::HalfOpen => {
                inner.probing = true;
                Ok(Permit::new(self, true))
            }
        }
    }

    /// Records an attempt's outcome. In the half-open state only the probe's outcome counts;
    /// outcomes of attempts admitted before the circuit opened are stale and ignored.
    fn record(&self, probe: bool, failed: bool) {
        let mut inner = self.lock();
        let before = inner.state;
        match (inner.state, probe) {
            (BreakerState::Closed, false) if failed => {
                inner.consecutive_failures += 1;
                if inner.consecutive_failures >= self.failures_to_open {
                    inner.state = BreakerState::Open;
                    inner.opened_at = Instant::now();
                }
            }
            (BreakerState::Closed, false) => inner.consecutive_failures = 0,
            (BreakerState::HalfOpen, true) => {
                inner.probing = false;
                inner.consecutive_failures = 0;
                if failed {
                    inner.state = BreakerState::Open;
                    inner.opened_at = Instant::now();
                } else {
                    inner.state = BreakerState::Closed;
                }
            }
            _ => {}
        }
        let after = inner.state;
        drop(inner);
        if after != before {
            if after == BreakerState::Open {
                tracing::warn!(upstream = %self.upstream, "circuit opened");
            } else {
                tracing::info!(upstream = %self.upstream, state = ?after, "circuit state changed");
            }
            record_breaker_state(&self.upstream, after);
        }
    }

    /// Releases the probe slot of a probe that ended without an outcome (cancelled, or its
    /// budget was already spent), so the next call probes instead.
    fn release_probe(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::HalfOpen {
            inner.probing = false;
        }
    }
}

/// The right to make one attempt; reports the attempt's outcome to the breaker.
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a Breaker, probe: bool) -> Self {
        Self {
            breaker,
            probe,
            recorded: false,
        }
    }

    fn success(mut self) {
        self.recorded = true;
        self.breaker.record(self.probe, false);
    }

    fn failure(mut self) {
        self.recorded = true;
        self.breaker.record(self.probe, true);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.breaker.release_probe();
        }
    }
}

/// A response body that fails with DEADLINE_EXCEEDED once the call's deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    expired: bool,
    upstream: Arc<str>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired = true;
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "upstream {} did not finish the response in time",
                this.upstream
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_round_trips_and_never_exceeds_the_budget() {
        let mut headers = http::HeaderMap::new();
        for (budget, expected) in [
            (Duration::from_millis(250), "250m"),
            (Duration::from_micros(250_900), "250m"),
            (Duration::from_micros(10), "1m"),
            (Duration::from_secs(200_000), "200000S"),
        ] {
            let value = encode_grpc_timeout(budget);
            assert_eq!(value, expected);
            headers.insert(GRPC_TIMEOUT, value);
            assert!(
                grpc_timeout(&headers).expect("parses") <= budget.max(Duration::from_millis(1))
            );
        }
        for (value, expected) in [
            ("30000000u", Duration::from_secs(30)),
            ("2S", Duration::from_secs(2)),
            ("1H", Duration::from_secs(3600)),
            ("5n", Duration::from_nanos(5)),
        ] {
            headers.insert(GRPC_TIMEOUT, http::HeaderValue::from_static(value));
            assert_eq!(grpc_timeout(&headers), Some(expected));
        }
        for bad in ["", "m", "123456789m", "10x", "-1m"] {
            headers.insert(GRPC_TIMEOUT, http::HeaderValue::from_static(bad));
            assert_eq!(grpc_timeout(&headers), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        let base = Duration::from_millis(25);
        for retry in 0..40 {
            let ceiling = (base * 2u32.pow(retry.min(20))).min(BACKOFF_CAP);
            for _ in 0..20 {
                assert!(backoff(base, retry) <= ceiling);
            }
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one_second() {
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_millis(200)), 1);
        assert_eq!(retry_after(Duration::from_millis(2001)), 3);
        let mut status = Status::unavailable("down");
        status
            .metadata_mut()
            .insert(RETRY_AFTER, MetadataValue::from(4u64));
        assert_eq!(retry_after_secs(&status), Some(4));
        assert_eq!(retry_after_secs(&Status::unavailable("down")), None);
    }

    #[test]
    fn health_rpcs_resolve_without_being_in_the_contracts() {
        let check = contract_policy("/grpc.health.v1.Health/Check").expect("check");
        assert!(check.idempotent && !check.long_running && !check.server_streaming);
        let watch = contract_policy("/grpc.health.v1.Health/Watch").expect("watch");
        assert!(watch.long_running && watch.server_streaming);
        assert!(contract_policy("/nope.v1.Nope/Nope").is_none());
    }

    #[tokio::test]
    async fn breaker_lets_one_probe_through_when_half_open() {
        let policy = ClientPolicy {
            breaker_failures: 2,
            breaker_open_for: Duration::from_millis(30),
            ..ClientPolicy::default()
        };
        let breaker = Breaker::new(Arc::from("test"), &policy);
        breaker.admit().expect("closed").failure();
        breaker.admit().expect("closed").success();
        breaker.admit().expect("closed").failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.admit().expect("closed").failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.admit().is_err());

        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let probe = breaker.admit().expect("probe");
        assert!(breaker.admit().is_err(), "a second probe fails fast");
        drop(probe);
        let probe = breaker.admit().expect("a cancelled probe frees the slot");
        probe.failure();
        assert_eq!(breaker.state(), BreakerState::Open);

        tokio::time::sleep(Duration::from_millis(40)).await;
        breaker.admit().expect("probe").success();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
