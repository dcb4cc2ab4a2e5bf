//! gRPC plumbing shared by every service: a server that always carries health, reflection (v1 and
//! v1alpha), the auth interceptor, request-id spans and metrics; and outbound channels with
//! timeouts plus the metadata (request id, caller token) that travels with each call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::service::{Interceptor, Routes};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use crate::auth::{Identity, TokenVerifier, bearer_token};
use crate::settings::GrpcClientSettings;
use crate::shutdown::Shutdown;

/// Metadata key carrying the request id from the edge through every hop.
pub const REQUEST_ID: &str = "x-request-id";

/// Verifies the caller's access token when one is sent and records the [`Identity`] in the
/// request extensions. A request without a token passes on as anonymous; handlers that need a
/// caller ask for one with [`identity`]. A token that does not verify is refused outright.
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    verifier: TokenVerifier,
}

impl AuthInterceptor {
    pub fn new(verifier: TokenVerifier) -> Self {
        Self { verifier }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(value) = request.metadata().get("authorization") else {
            return Ok(request);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or_else(|| Status::unauthenticated("invalid access token"))?;
        match self.verifier.verify(token) {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
                Ok(request)
            }
            Err(err) => {
                tracing::debug!(error = %err, "access token refused");
                Err(Status::unauthenticated("invalid access token"))
            }
        }
    }
}

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
}

/// Collects the services of one gRPC server.
pub struct GrpcServerBuilder {
    routes: Option<Routes>,
    services: Vec<&'static str>,
    verifier: TokenVerifier,
}

impl GrpcServerBuilder {
    /// Every service added here is wrapped in the [`AuthInterceptor`] of `verifier`.
    pub fn new(verifier: TokenVerifier) -> Self {
        Self {
            routes: None,
            services: Vec::new(),
            verifier,
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
        let intercepted =
            InterceptedService::new(service, AuthInterceptor::new(self.verifier.clone()));
        self.routes = Some(match self.routes.take() {
            Some(routes) => routes.add_service(intercepted),
            None => Routes::new(intercepted),
        });
        self.services.push(S::NAME);
        self
    }

    /// Binds the listener and adds health and reflection.
    pub async fn bind(self, addr: SocketAddr) -> anyhow::Result<GrpcServer> {
        crate::metrics::handle();
        let listener = TcpListener::bind(addr).await?;
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
        let routes = self
            .routes
            .ok_or_else(|| anyhow::anyhow!("a gRPC server needs at least one service"))?
            .add_service(health_service)
            .add_service(reflection("grpc.reflection.v1.ServerReflection").build_v1()?)
            .add_service(reflection("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?);
        Ok(GrpcServer {
            listener,
            routes,
            health,
            services: self.services,
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
        let server = tonic::transport::Server::builder()
            .layer(tower::layer::layer_fn(GrpcObserve))
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
        let span = tracing::info_span!("grpc", method = %method, request_id = %request_id);
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

/// A lazily connecting channel with connect and per-call timeouts.
pub fn channel(url: &str, limits: &GrpcClientSettings) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// What travels with an outbound call: the request id and the caller's own access token (so the
/// callee verifies the caller itself rather than trusting the hop).
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    pub request_id: Option<String>,
    pub bearer: Option<String>,
}

impl CallContext {
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
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

    #[test]
    fn call_context_carries_request_id_and_caller_token() {
        let ctx = CallContext {
            request_id: Some("req-1".into()),
            bearer: Some("tok".into()),
        };
        let request = ctx.request(());
        assert_eq!(request.metadata().get(REQUEST_ID).unwrap(), "req-1");
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer tok"
        );
        let anonymous = CallContext::default().request(());
        assert!(anonymous.metadata().get("authorization").is_none());
    }
}
