//! Fault injection for resilience drills: rules that make a server's own RPCs slow down or fail
//! with UNAVAILABLE, set at runtime through `shopmesh.platform.v1.FaultInjectionService`, which
//! [`crate::grpc::GrpcServerBuilder`] adds to every server it builds. Off unless the process was
//! started with `FAULT_INJECTION_ENABLED=true`; the rules live in the server's memory, so a
//! restart clears them. Health, reflection and the fault-injection service itself are never
//! faulted.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use shopmesh_contracts::pb::shopmesh::platform::v1 as pb;
use shopmesh_contracts::pb::shopmesh::platform::v1::fault_injection_service_server::{
    FaultInjectionService, FaultInjectionServiceServer,
};
use tonic::body::Body;
use tonic::{Request, Response, Status};

use crate::problem::field_error;
use crate::status::invalid_input;

/// Longest delay a rule may add to a call.
pub const MAX_LATENCY_MS: u32 = 30_000;

/// The method name of a rule that covers every method of the server.
pub const ALL_METHODS: &str = "*";

/// Path prefix of the fault-injection service's own RPCs.
const OWN_PREFIX: &str = "/shopmesh.platform.v1.FaultInjectionService/";

/// Added delay and failure probability of the calls a rule matches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Effect {
    pub latency: Duration,
    pub error_rate: f64,
}

/// One rule, as set.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub target: String,
    pub method: String,
    pub latency_ms: u32,
    pub error_rate: f64,
}

impl Rule {
    /// Checks a rule as a caller sent it, gathering every violation.
    pub fn parse(fault: pb::Fault) -> Result<Self, Status> {
        let mut errors = Vec::new();
        if fault.target.trim().is_empty() {
            errors.push(field_error("target", "must not be empty"));
        }
        if !valid_method(&fault.method) {
            errors.push(field_error(
                "method",
                "must be a gRPC method name such as GetProduct, or *",
            ));
        }
        if fault.latency_ms > MAX_LATENCY_MS {
            errors.push(field_error(
                "latency_ms",
                format!("must be between 0 and {MAX_LATENCY_MS}"),
            ));
        }
        if !(0.0..=1.0).contains(&fault.error_rate) {
            errors.push(field_error("error_rate", "must be between 0.0 and 1.0"));
        }
        if fault.latency_ms == 0 && fault.error_rate == 0.0 {
            errors.push(field_error(
                "latency_ms",
                "latency_ms or error_rate must be more than zero",
            ));
        }
        if !errors.is_empty() {
            return Err(invalid_input(&errors));
        }
        Ok(Self {
            target: fault.target,
            method: fault.method,
            latency_ms: fault.latency_ms,
            error_rate: fault.error_rate,
        })
    }

    pub fn to_pb(&self) -> pb::Fault {
        pb::Fault {
            target: self.target.clone(),
            method: self.method.clone(),
            latency_ms: self.latency_ms,
            error_rate: self.error_rate,
        }
    }

    fn effect(&self) -> Effect {
        Effect {
            latency: Duration::from_millis(u64::from(self.latency_ms)),
            error_rate: self.error_rate,
        }
    }
}

/// A gRPC method name (`GetProduct`) or `*`.
pub fn valid_method(method: &str) -> bool {
    method == ALL_METHODS
        || (!method.is_empty()
            && method.len() <= 100
            && method.starts_with(|c: char| c.is_ascii_alphabetic())
            && method
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// The rules of one gRPC server, shared by its fault-injection service and its fault layer.
#[derive(Clone, Debug)]
pub struct FaultRules {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    instance_id: String,
    /// By (target, method).
    rules: RwLock<BTreeMap<(String, String), Rule>>,
}

impl FaultRules {
    pub fn new(enabled: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                enabled,
                instance_id: uuid::Uuid::new_v4().to_string(),
                rules: RwLock::new(BTreeMap::new()),
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, String), Rule>> {
        // A panic while holding the lock leaves the map intact: every write is one insert or
        // retain.
        self.inner
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, String), Rule>> {
        self.inner
            .rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `rule`, replacing the rule of the same target and method.
    pub fn set(&self, rule: Rule) {
        self.write()
            .insert((rule.target.clone(), rule.method.clone()), rule);
    }

    /// Removes the rules of `target` (every rule when `None`), only the one of `method` when
    /// given; returns how many went.
    pub fn clear(&self, target: Option<&str>, method: Option<&str>) -> usize {
        let mut rules = self.write();
        let before = rules.len();
        rules.retain(|(t, m), _| {
            !(target.is_none_or(|target| target == t) && method.is_none_or(|method| method == m))
        });
        before - rules.len()
    }

    pub fn list(&self) -> Vec<Rule> {
        self.read().values().cloned().collect()
    }

    /// What applies to a call of `path` (`/package.Service/Method`): the rule of its method,
    /// else a `*` rule. Nothing while disabled, and never for health, reflection or this
    /// service.
    pub fn effect(&self, path: &str) -> Option<Effect> {
        if !self.inner.enabled || exempt(path) {
            return None;
        }
        let method = path.rsplit_once('/').map(|(_, method)| method)?;
        let rules = self.read();
        if rules.is_empty() {
            return None;
        }
        let exact = rules.values().find(|rule| rule.method == method);
        exact
            .or_else(|| rules.values().find(|rule| rule.method == ALL_METHODS))
            .map(Rule::effect)
    }
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection.")
        || path.starts_with(OWN_PREFIX)
}

fn disabled() -> Status {
    Status::failed_precondition(
        "fault injection is disabled: start the process with FAULT_INJECTION_ENABLED=true",
    )
}

/// `shopmesh.platform.v1.FaultInjectionService` over one server's rules.
#[derive(Clone, Debug)]
pub struct FaultInjection {
    rules: FaultRules,
}

impl FaultInjection {
    pub fn server(rules: FaultRules) -> FaultInjectionServiceServer<Self> {
        FaultInjectionServiceServer::new(Self { rules })
    }
}

#[tonic::async_trait]
impl FaultInjectionService for FaultInjection {
    async fn set_fault(
        &self,
        request: Request<pb::SetFaultRequest>,
    ) -> Result<Response<pb::SetFaultResponse>, Status> {
        if !self.rules.enabled() {
            return Err(disabled());
        }
        let fault = request
            .into_inner()
            .fault
            .ok_or_else(|| invalid_input(&[field_error("fault", "is required")]))?;
        let rule = Rule::parse(fault)?;
        tracing::warn!(
            target_service = %rule.target,
            method = %rule.method,
            latency_ms = rule.latency_ms,
            error_rate = rule.error_rate,
            "fault injection rule set"
        );
        let fault = rule.to_pb();
        self.rules.set(rule);
        Ok(Response::new(pb::SetFaultResponse { fault: Some(fault) }))
    }

    async fn clear_faults(
        &self,
        request: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        if !self.rules.enabled() {
            return Err(disabled());
        }
        let request = request.into_inner();
        let target = Some(request.target.as_str()).filter(|t| !t.is_empty());
        let method = Some(request.method.as_str()).filter(|m| !m.is_empty());
        if target.is_none() && method.is_some() {
            return Err(invalid_input(&[field_error(
                "target",
                "is required when method is given",
            )]));
        }
        let removed = self.rules.clear(target, method);
        if removed > 0 {
            tracing::warn!(removed, "fault injection rules cleared");
        }
        Ok(Response::new(pb::ClearFaultsResponse {
            removed: u32::try_from(removed).unwrap_or(u32::MAX),
        }))
    }

    async fn list_faults(
        &self,
        _request: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        Ok(Response::new(pb::ListFaultsResponse {
            enabled: self.rules.enabled(),
            faults: self.rules.list().iter().map(Rule::to_pb).collect(),
            instance_id: self.rules.inner.instance_id.clone(),
        }))
    }
}

/// The server layer that applies the rules: a matching call waits the rule's latency, then fails
/// with UNAVAILABLE with the rule's probability, before it reaches its handler.
#[derive(Clone, Debug)]
pub struct FaultLayer<S> {
    pub(crate) inner: S,
    pub(crate) rules: FaultRules,
}

impl<S, B> tower::Service<http::Request<B>> for FaultLayer<S>
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let Some(effect) = self.rules.effect(path) else {
            return Box::pin(self.inner.call(request));
        };
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or((String::new(), String::new()), |(s, m)| {
                (s.to_owned(), m.to_owned())
            });
        // The ready inner service goes with the call; the clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if !effect.latency.is_zero() {
                metrics::counter!(
                    "grpc_server_injected_faults_total",
                    "service" => service.clone(),
                    "method" => method.clone(),
                    "kind" => "latency",
                )
                .increment(1);
                tokio::time::sleep(effect.latency).await;
            }
            if effect.error_rate > 0.0 && rand::random::<f64>() < effect.error_rate {
                metrics::counter!(
                    "grpc_server_injected_faults_total",
                    "service" => service,
                    "method" => method,
                    "kind" => "error",
                )
                .increment(1);
                return Ok(Status::unavailable("injected fault").into_http());
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(method: &str, latency_ms: u32, error_rate: f64) -> pb::Fault {
        pb::Fault {
            target: "product".into(),
            method: method.into(),
            latency_ms,
            error_rate,
        }
    }

    #[test]
    fn rules_are_checked_with_every_violation_named() {
        assert!(Rule::parse(fault("GetProduct", 300, 0.0)).is_ok());
        assert!(Rule::parse(fault("*", 0, 1.0)).is_ok());
        let status = Rule::parse(fault("Get/Product", 30_001, 1.5)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        use tonic_types::StatusExt;
        let fields: Vec<String> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["method", "latency_ms", "error_rate"]);
        assert!(Rule::parse(fault("GetProduct", 0, 0.0)).is_err());
        assert!(Rule::parse(fault("GetProduct", 0, f64::NAN)).is_err());
    }

    #[test]
    fn an_exact_rule_wins_over_a_wildcard_and_exempt_paths_are_never_faulted() {
        let rules = FaultRules::new(true);
        rules.set(Rule::parse(fault("*", 10, 0.0)).unwrap());
        rules.set(Rule::parse(fault("GetProduct", 0, 1.0)).unwrap());
        let get = rules.effect("/shopmesh.product.v1.ProductService/GetProduct");
        assert_eq!(get.map(|e| e.error_rate), Some(1.0));
        let search = rules.effect("/shopmesh.product.v1.ProductService/SearchProducts");
        assert_eq!(search.map(|e| e.latency), Some(Duration::from_millis(10)));
        assert!(rules.effect("/grpc.health.v1.Health/Check").is_none());
        assert!(
            rules
                .effect("/shopmesh.platform.v1.FaultInjectionService/ListFaults")
                .is_none()
        );
        assert_eq!(rules.clear(Some("product"), Some("*")), 1);
        assert!(
            rules
                .effect("/shopmesh.product.v1.ProductService/SearchProducts")
                .is_none()
        );
        assert_eq!(rules.clear(None, None), 1);
        assert!(rules.list().is_empty());
    }

    #[test]
    fn a_disabled_server_applies_nothing() {
        let rules = FaultRules::new(false);
        rules.set(Rule::parse(fault("*", 0, 1.0)).unwrap());
        assert!(
            rules
                .effect("/shopmesh.product.v1.ProductService/GetProduct")
                .is_none()
        );
    }
}
