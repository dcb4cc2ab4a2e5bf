//! gRPC plumbing shared by every service: a server that always carries health, reflection (v1 and
//! v1alpha), the method guard (who may call what, per the contracts' policy table, and how long
//! a call may run), fault injection for drills (off unless enabled), request-id spans and metrics;
//! and the metadata (request id, caller token,
//! deadline) that travels with each outbound call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::{Request, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use shopmesh_contracts::{Access, MethodPolicy, policy};

use crate::auth::{AuthError, Identity, TokenVerifier, bearer_token};
use crate::faults::{FaultInjection, FaultLayer, FaultRules};
use crate::identity::{SERVICE_TOKEN, ServiceIdentity, ServiceVerifier};
use crate::jwks::JwksCache;
use crate::settings::GrpcServerSettings;
use crate::shutdown::Shutdown;

/// Metadata key carrying the request id from the edge through every hop.
pub const REQUEST_ID: &str = "x-request-id";

/// The verified caller, or UNAUTHENTICATED.
pub fn identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("an access token is required"))
}

/// The verified caller if it is an admin: UNAUTHENTICATED without a token, PERMISSION_DENIED
/// for anyone else.
pub fn admin<T>(request: &Request<T>) -> Result<Identity, Status> {
    let caller = identity(request)?;
    if caller.is_admin() {
        Ok(caller)
    } else {
        Err(Status::permission_denied("admin role required"))
    }
}

/// A bound gRPC server, ready to run. Health starts as SERVING for each registered service.
pub struct GrpcServer {
    listener: TcpListener,
    routes: Routes,
    health: HealthReporter,
    services: Vec<&'static str>,
    guard: GuardConfig,
    faults: FaultRules,
}

/// What the method guard checks credentials with, and the server-side time limits.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    pub users: TokenVerifier,
    pub services: ServiceVerifier,
    pub limits: GrpcServerSettings,
    /// Where `users` gets its keys: asked to fetch again when a token names an unknown key
    /// (the user service may have rotated it). `None` when the verifier holds its own keys.
    pub jwks: Option<Arc<JwksCache>>,
}

/// Collects the services of one gRPC server.
pub struct GrpcServerBuilder {
    routes: Option<Routes>,
    services: Vec<&'static str>,
    guard: GuardConfig,
}

impl GrpcServerBuilder {
    /// Every call to a service added here passes the method guard of `guard`.
    pub fn new(guard: GuardConfig) -> Self {
        Self {
            routes: None,
            services: Vec::new(),
            guard,
        }
    }

    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes = Some(match self.routes.take() {
            Some(routes) => routes.add_service(service),
            None => Routes::new(service),
        });
        self.services.push(S::NAME);
        self
    }

    /// Binds `addr` (port 0 picks a free port) and adds health and reflection.
    pub async fn bind(self, addr: SocketAddr) -> anyhow::Result<GrpcServer> {
        self.serve_on(TcpListener::bind(addr).await?).await
    }

    /// Adds health, reflection and fault injection to a listener bound by the caller.
    pub async fn serve_on(self, listener: TcpListener) -> anyhow::Result<GrpcServer> {
        crate::metrics::handle();
        let (health, health_service) = tonic_health::server::health_reporter();
        for service in &self.services {
            health
                .set_service_status(*service, ServingStatus::Serving)
                .await;
        }
        health.set_service_status("", ServingStatus::Serving).await;
        // Advertise exactly what this server serves: the descriptor set holds every contract,
        // including services that run elsewhere.
        let reflection = |own_name: &str| {
            self.services.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(
                        shopmesh_contracts::pb::FILE_DESCRIPTOR_SET,
                    )
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .with_service_name("grpc.health.v1.Health")
                    .with_service_name(own_name),
                |builder, service| builder.with_service_name(*service),
            )
        };
        // Every server carries the drill service; it is not advertised through reflection, which
        // lists what the server is for.
        let faults = FaultRules::new(self.guard.limits.fault_injection);
        let routes = self
            .routes
            .ok_or_else(|| anyhow::anyhow!("a gRPC server needs at least one service"))?
            .add_service(health_service)
            .add_service(FaultInjection::server(faults.clone()))
            .add_service(reflection("grpc.reflection.v1.ServerReflection").build_v1()?)
            .add_service(reflection("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?);
        Ok(GrpcServer {
            listener,
            routes,
            health,
            services: self.services,
            guard: self.guard,
            faults,
        })
    }
}

impl GrpcServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// A handle for flipping readiness as dependencies come and go.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves until `shutdown` fires: health flips to NOT_SERVING first, then in-flight calls
    /// drain, bounded by `grace`.
    pub async fn run_until_stopped(
        self,
        shutdown: Shutdown,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let health = self.health.clone();
        let services = self.services.clone();
        let stop = shutdown.clone();
        let signal = async move {
            shutdown.wait().await;
            for service in services {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
        };
        // Nagle's algorithm would hold back small responses for ~40 ms behind delayed ACKs;
        // tonic's own tcp_nodelay only covers listeners it binds itself.
        let incoming = TcpListenerStream::new(self.listener).map(|conn| {
            if let Ok(stream) = &conn {
                let _ = stream.set_nodelay(true);
            }
            conn
        });
        let guard = self.guard.clone();
        let faults = self.faults.clone();
        let server = tonic::transport::Server::builder()
            .layer(tower::layer::layer_fn(GrpcObserve))
            .layer(tower::layer::layer_fn(move |inner| MethodGuard {
                inner,
                config: guard.clone(),
            }))
            // Inside the guard: only admitted calls are faulted, and an added delay counts
            // against the call's deadline like real slowness would.
            .layer(tower::layer::layer_fn(move |inner| FaultLayer {
                inner,
                rules: faults.clone(),
            }))
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);
        // The grace period starts when shutdown is requested; a call still running after it is
        // abandoned so the process can exit.
        tokio::select! {
            result = &mut server => result?,
            () = async {
                stop.wait().await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!("gRPC drain did not finish within the grace period"),
        }
        Ok(())
    }
}

/// Per-call span (method, request id) and metrics for a gRPC server.
#[derive(Clone, Debug)]
pub struct GrpcObserve<S>(S);

impl<S, B> tower::Service<http::Request<B>> for GrpcObserve<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let span = tracing::info_span!(
            "grpc",
            method = %method,
            request_id = %request_id,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
        );
        if crate::telemetry::exporting() {
            span.record("otel.name", method.trim_start_matches('/'));
            span.record("otel.kind", "server");
            if !crate::telemetry::continue_from_headers(&span, request.headers()) {
                crate::telemetry::continue_from_request_id(&span, &request_id);
            }
        }
        let started = Instant::now();
        let future = self.0.call(request);
        Box::pin(
            async move {
                let mut response = future.await;
                // Echo the request id so a caller can correlate the answer with its logs.
                if let (Ok(resp), Ok(value)) =
                    (&mut response, http::HeaderValue::from_str(&request_id))
                    && !request_id.is_empty()
                {
                    resp.headers_mut().insert(REQUEST_ID, value);
                }
                let code = match &response {
                    Ok(resp) => resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("0")
                        .to_owned(),
                    Err(_) => "transport".to_owned(),
                };
                let elapsed = started.elapsed();
                metrics::counter!("grpc_server_requests_total", "method" => method.clone(), "code" => code.clone())
                    .increment(1);
                metrics::histogram!("grpc_server_request_duration_seconds", "method" => method)
                    .record(elapsed.as_secs_f64());
                tracing::debug!(code = %code, elapsed_ms = elapsed.as_millis() as u64, "grpc call");
                response
            }
            .instrument(span),
        )
    }
}

/// The moment by which a call must be answered: set by the method guard from the caller's
/// `grpc-timeout` and the server's own limit, carried in the request extensions so that calls
/// made on this request's behalf get only what is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Parses a `grpc-timeout` value (`<digits><unit>`, unit one of H M S m u n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Paths every server answers for anyone: health checks and reflection.
fn open_to_all(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// Decides whether a caller may use an RPC, from the contracts' policy table. `Err` carries the
/// status to answer: UNAUTHENTICATED when no credential was presented, PERMISSION_DENIED when
/// the credentials presented are not admitted.
pub fn authorize(
    policy: &MethodPolicy,
    user: Option<&Identity>,
    service: Option<&ServiceIdentity>,
) -> Result<(), Status> {
    if let Some(service) = service
        && policy.callers.contains(&service.name.as_str())
    {
        return Ok(());
    }
    let anonymous = user.is_none() && service.is_none();
    let refuse = |message: &str| {
        if anonymous {
            Status::unauthenticated("an access token is required")
        } else {
            Status::permission_denied(message.to_owned())
        }
    };
    match policy.access {
        Access::Public => Ok(()),
        Access::User if user.is_some() => Ok(()),
        Access::User => Err(refuse("a user access token is required")),
        Access::Admin if user.is_some_and(Identity::is_admin) => Ok(()),
        Access::Admin => Err(refuse("admin role required")),
        Access::Internal => Err(refuse("this method is internal to the mesh")),
        Access::Denied => Err(refuse("this method is not open to any caller")),
    }
}

/// Applies the policy of every RPC before it reaches its handler: verifies the user token
/// (`authorization`) and the calling service's token ([`SERVICE_TOKEN`]) when sent, refuses
/// callers the method does not admit, and bounds the call by the caller's deadline and the
/// server's own limit (DEADLINE_EXCEEDED when it runs out).
#[derive(Clone, Debug)]
pub struct MethodGuard<S> {
    inner: S,
    config: GuardConfig,
}

fn status_response(status: Status) -> http::Response<Body> {
    status.into_http()
}

/// Why the guard did not let a call through.
enum Refusal {
    Status(Status),
    /// The user token names a key the verifier does not know (yet).
    UnknownKey,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

/// Longest a call with a token of an unknown key waits for the keys to be fetched again.
const UNKNOWN_KEY_WAIT: Duration = Duration::from_millis(500);

impl<S> MethodGuard<S> {
    fn check<B>(&self, request: &mut http::Request<B>) -> Result<Option<Duration>, Refusal> {
        let path = request.uri().path();
        if open_to_all(path) {
            return Ok(None);
        }
        let Some(policy) = policy::lookup(path) else {
            // Not a shopmesh RPC: the router answers UNIMPLEMENTED.
            return Ok(None);
        };
        let user = match request.headers().get("authorization") {
            None => None,
            Some(value) => {
                let token = value
                    .to_str()
                    .ok()
                    .and_then(bearer_token)
                    .ok_or_else(|| Status::unauthenticated("invalid access token"))?;
                Some(self.config.users.verify(token).map_err(|err| {
                    tracing::debug!(error = %err, "access token refused");
                    if matches!(err, AuthError::UnknownKey) {
                        Refusal::UnknownKey
                    } else {
                        Refusal::Status(Status::unauthenticated("invalid access token"))
                    }
                })?)
            }
        };
        let service = match request.headers().get(SERVICE_TOKEN) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| Status::unauthenticated("invalid service token"))
                    .and_then(|token| {
                        self.config.services.verify(token).map_err(|err| {
                            tracing::warn!(error = %err, "service token refused");
                            Status::unauthenticated("invalid service token")
                        })
                    })?,
            ),
        };
        authorize(policy, user.as_ref(), service.as_ref())?;
        let limit = if policy.long_running {
            self.config.limits.stream_timeout
        } else {
            self.config.limits.unary_timeout
        };
        let asked = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let budget = asked.map_or(limit, |asked| asked.min(limit));
        let extensions = request.extensions_mut();
        if let Some(user) = user {
            extensions.insert(user);
        }
        if let Some(service) = service {
            extensions.insert(service);
        }
        extensions.insert(Deadline::after(budget));
        Ok(Some(budget))
    }
}

impl<S, B> tower::Service<http::Request<B>> for MethodGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.check(&mut request) {
            Err(Refusal::Status(status)) => {
                Box::pin(std::future::ready(Ok(status_response(status))))
            }
            Err(Refusal::UnknownKey) => {
                // Perhaps the user service rotated its key: fetch the keys again (rate-limited)
                // and look at the call once more. The ready inner service goes with the call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let mut guard = Self {
                    inner,
                    config: self.config.clone(),
                };
                Box::pin(async move {
                    let refreshed = match &guard.config.jwks {
                        Some(jwks) => jwks.refresh_for_unknown_key(UNKNOWN_KEY_WAIT).await,
                        None => false,
                    };
                    let unknown = || Status::unauthenticated("invalid access token");
                    match (refreshed, guard.check(&mut request)) {
                        (true, Ok(budget)) => guard.run(request, budget).await,
                        (_, Err(Refusal::Status(status))) => Ok(status_response(status)),
                        _ => Ok(status_response(unknown())),
                    }
                })
            }
            Ok(budget) => self.run(request, budget),
        }
    }
}

impl<S> MethodGuard<S> {
    /// Runs an admitted call, bounded by its budget.
    fn run<B>(
        &mut self,
        request: http::Request<B>,
        budget: Option<Duration>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, S::Error>>
    where
        S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
        S::Future: Send + 'static,
    {
        let future = self.inner.call(request);
        match budget {
            None => Box::pin(future),
            Some(budget) => Box::pin(async move {
                match tokio::time::timeout(budget, future).await {
                    Ok(response) => response,
                    Err(_) => Ok(status_response(Status::deadline_exceeded(
                        "the call ran past its deadline",
                    ))),
                }
            }),
        }
    }
}

/// The calling service, when a service token verified.
pub fn calling_service<T>(request: &Request<T>) -> Option<ServiceIdentity> {
    request.extensions().get::<ServiceIdentity>().cloned()
}

/// What travels with an outbound call: the request id, the user's own access token (so the
/// callee verifies the user itself rather than trusting the hop) and the deadline.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    pub request_id: Option<String>,
    pub bearer: Option<String>,
    pub deadline: Option<Deadline>,
}

impl CallContext {
    /// The context of calls made while serving `request`: same request id, same user, and
    /// what is left of its deadline.
    pub fn from_request<T>(request: &Request<T>) -> Self {
        let metadata = request.metadata();
        Self {
            request_id: metadata
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            bearer: metadata
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token)
                .map(str::to_owned),
            deadline: request.extensions().get::<Deadline>().copied(),
        }
    }

    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(deadline) = self.deadline {
            request.set_timeout(deadline.remaining());
        }
        let metadata = request.metadata_mut();
        if let Some(id) = self.request_id.as_deref().and_then(|v| v.parse().ok()) {
            metadata.insert(REQUEST_ID, id);
        }
        if let Some(value) = self
            .bearer
            .as_deref()
            .and_then(|token| format!("Bearer {token}").parse().ok())
        {
            metadata.insert("authorization", value);
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn call_context_carries_request_id_and_caller_token() {
        let ctx = CallContext {
            request_id: Some("req-1".into()),
            bearer: Some("tok".into()),
            deadline: Some(Deadline::after(Duration::from_secs(3))),
        };
        let request = ctx.request(());
        assert_eq!(request.metadata().get(REQUEST_ID).unwrap(), "req-1");
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer tok"
        );
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .unwrap()
            .to_str()
            .unwrap();
        let sent = parse_grpc_timeout(timeout).unwrap();
        assert!(sent <= Duration::from_secs(3) && sent > Duration::from_secs(2));
        let anonymous = CallContext::default().request(());
        assert!(anonymous.metadata().get("authorization").is_none());
        assert!(anonymous.metadata().get("grpc-timeout").is_none());
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }

    fn user(role: Role) -> Identity {
        Identity {
            user_id: "u".into(),
            role,
            tier: crate::auth::Tier::Standard,
        }
    }

    fn service(name: &str) -> ServiceIdentity {
        ServiceIdentity { name: name.into() }
    }

    #[test]
    fn internal_methods_admit_only_their_callers() {
        let reserve = policy::lookup("/shopmesh.product.v1.InventoryService/Reserve").unwrap();
        let customer = user(Role::Customer);
        let admin = user(Role::Admin);
        assert!(authorize(reserve, None, Some(&service("order"))).is_ok());
        let code = |r: Result<(), Status>| r.unwrap_err().code();
        assert_eq!(
            code(authorize(reserve, None, None)),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(authorize(reserve, Some(&customer), None)),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            code(authorize(reserve, Some(&admin), None)),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            code(authorize(reserve, Some(&admin), Some(&service("gateway")))),
            tonic::Code::PermissionDenied
        );
        let adjust = policy::lookup("/shopmesh.product.v1.InventoryService/Adjust").unwrap();
        assert!(authorize(adjust, Some(&admin), Some(&service("gateway"))).is_ok());
        assert!(authorize(adjust, None, Some(&service("order"))).is_ok());
        assert_eq!(
            code(authorize(adjust, Some(&customer), None)),
            tonic::Code::PermissionDenied
        );
        let search = policy::lookup("/shopmesh.product.v1.ProductService/SearchProducts").unwrap();
        assert!(authorize(search, None, None).is_ok());
        let me = policy::lookup("/shopmesh.user.v1.UserService/GetMe").unwrap();
        assert_eq!(
            code(authorize(me, None, None)),
            tonic::Code::Unauthenticated
        );
        assert!(authorize(me, Some(&customer), None).is_ok());
    }
}
