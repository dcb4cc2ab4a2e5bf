//! `/api/admin/faults`: fault injection for resilience drills (admin role required). A rule makes
//! one service's RPCs (one method, or `*` for all of them) wait `latency_ms` and/or fail with
//! UNAVAILABLE with probability `error_rate`, wherever they are called from. The rules are set on
//! every instance of the service's own gRPC server through the fault-injection service every
//! server carries; a listing or a clear-all asks every instance of every upstream, each server
//! counted once.
//!
//! Every process must run with `FAULT_INJECTION_ENABLED=true` (off by default: 409 otherwise).
//! Rules are held in memory: restarting a process clears its rules.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shopmesh_contracts::pb::shopmesh::platform::v1 as pb;
use shopmesh_contracts::pb::shopmesh::platform::v1::fault_injection_service_client::FaultInjectionServiceClient;
use shopmesh_contracts::policy;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::faults::{ALL_METHODS, MAX_LATENCY_MS, valid_method};
use shopmesh_platform::grpc::{CallContext, Deadline};
use shopmesh_platform::problem::{FieldError, Problem, field_error};
use tonic::Code;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::ProblemDoc;
use crate::extract::{AdminCaller, ApiJson, ApiQuery};
use crate::routes::{PROBLEM, upstream};
use crate::state::{AppState, Upstream};

/// Longest the gateway waits for one upstream's fault-injection service.
const DRILL_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The routes of this module, with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_faults, set_fault, clear_faults))
}

/// One fault-injection rule.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The service, as `shopmesh services` names it: user, product, cart, order, payment,
    /// delivery, notification, analytics.
    #[schema(example = "product")]
    pub service: String,
    /// A gRPC method of the service (e.g. `GetProduct`), or `*` for all of its methods.
    #[schema(example = "GetProduct")]
    pub method: String,
    /// Delay added to every matching call, 0 to 30000 ms.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 30000, example = 0)]
    pub latency_ms: u32,
    /// Share of matching calls that fail with UNAVAILABLE, 0.0 to 1.0. At least one of
    /// `latency_ms` and `error_rate` must be more than zero.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0, example = 0.5)]
    pub error_rate: f64,
}

impl Fault {
    fn from_pb(fault: pb::Fault) -> Self {
        Self {
            service: fault.target,
            method: fault.method,
            latency_ms: fault.latency_ms,
            error_rate: fault.error_rate,
        }
    }
}

/// The rules in force across the mesh.
#[derive(Serialize, ToSchema)]
pub struct FaultList {
    /// Whether every reachable process runs with `FAULT_INJECTION_ENABLED=true`.
    pub enabled: bool,
    /// The rules, sorted by service and method.
    pub faults: Vec<Fault>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClearQuery {
    /// Only this service's rules; every rule of the mesh when absent.
    #[param(example = "product")]
    pub service: Option<String>,
    /// Only the rule of this method (`*` included) of `service`; all of its rules when absent.
    #[param(example = "GetProduct")]
    pub method: Option<String>,
}

fn invalid(errors: Vec<FieldError>) -> Problem {
    let detail = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail).with_errors(errors)
}

fn disabled() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "fault injection is disabled: start every process of the mesh with \
         FAULT_INJECTION_ENABLED=true to run drills",
    )
}

fn unreachable(service: &str) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the {service} service could not be reached, try again"),
    )
    .with_retry_after(1)
}

/// The upstream of a service name, checked as field `field`.
fn known_service<'a>(
    state: &'a AppState,
    service: &str,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a Upstream> {
    let found = state.upstreams.iter().find(|u| u.name == service);
    if found.is_none() {
        let names: Vec<&str> = state.upstreams.iter().map(|u| u.name).collect();
        errors.push(field_error(
            field,
            format!("must be one of {}", names.join(", ")),
        ));
    }
    found
}

/// Whether `method` is `*` or an RPC of one of the upstream's gRPC services.
fn check_method(
    upstream: Option<&Upstream>,
    method: &str,
    field: &str,
    errors: &mut Vec<FieldError>,
) {
    if !valid_method(method) {
        errors.push(field_error(
            field,
            "must be a gRPC method name such as GetProduct, or *",
        ));
        return;
    }
    let Some(upstream) = upstream else { return };
    if method == ALL_METHODS {
        return;
    }
    let exists = upstream
        .health
        .iter()
        .any(|service| policy::of_service(service).any(|rpc| rpc.method == method));
    if !exists {
        errors.push(field_error(
            field,
            format!("the {} service has no method {method:?}", upstream.name),
        ));
    }
}

/// A fault-injection client for every distinct instance of `service` (of every upstream when
/// `None`), by instance address: several upstream names may reach the same server.
fn instances(
    state: &AppState,
    service: Option<&str>,
) -> Vec<(&'static str, FaultInjectionServiceClient<MeshChannel>)> {
    let mut seen = BTreeSet::new();
    state
        .drill_channels
        .iter()
        .filter(|drill| service.is_none_or(|service| drill.service == service))
        .filter(|drill| seen.insert(drill.url.as_str()))
        .map(|drill| {
            (
                drill.service,
                FaultInjectionServiceClient::new(drill.channel.clone()),
            )
        })
        .collect()
}

/// The caller's context with at most [`DRILL_CALL_TIMEOUT`] left.
fn drill_ctx(ctx: &CallContext) -> CallContext {
    let left = ctx.deadline.map_or(DRILL_CALL_TIMEOUT, |d| {
        d.remaining().min(DRILL_CALL_TIMEOUT)
    });
    CallContext {
        deadline: Some(Deadline::after(left)),
        ..ctx.clone()
    }
}

/// Whether a failed call means the upstream could not be asked at all.
fn is_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// The rules in force on every service, and whether fault injection is enabled. A process the
/// gateway cannot reach is left out (it holds no rules after a restart).
#[utoipa::path(
    get, path = "/api/admin/faults", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rules in force", body = FaultList),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "No service could be reached", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn list_faults(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
) -> Result<axum::Json<FaultList>, Problem> {
    let ctx = drill_ctx(&caller.ctx);
    let calls = instances(&state, None)
        .into_iter()
        .map(|(name, mut client)| {
            let request = ctx.request(pb::ListFaultsRequest {});
            async move { (name, client.list_faults(request).await) }
        });
    let mut reached = 0usize;
    let mut enabled = true;
    let mut instances = BTreeSet::new();
    let mut rules = BTreeMap::new();
    for (name, answer) in futures::future::join_all(calls).await {
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                reached += 1;
                enabled &= response.enabled;
                // The same server reached under two names counts once.
                if !instances.insert(response.instance_id) {
                    continue;
                }
                for fault in response.faults {
                    rules.insert(
                        (fault.target.clone(), fault.method.clone()),
                        Fault::from_pb(fault),
                    );
                }
            }
            Err(status) => {
                tracing::warn!(upstream = name, code = ?status.code(), "listing faults failed");
            }
        }
    }
    if reached == 0 {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no service could be reached, try again",
        )
        .with_retry_after(1));
    }
    Ok(axum::Json(FaultList {
        enabled,
        faults: rules.into_values().collect(),
    }))
}

/// Sets the rule of one service and method, replacing the one there was. It takes effect on the
/// service's next calls, from every caller (the gateway and the other services).
#[utoipa::path(
    put, path = "/api/admin/faults", tag = "admin",
    security(("bearer" = [])),
    request_body = Fault,
    responses(
        (status = 200, description = "The rule as set", body = Fault),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "Fault injection is disabled (FAULT_INJECTION_ENABLED is not true)", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Unknown service or method, latency_ms over 30000, error_rate outside 0..=1, or both zero", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The service could not be reached", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn set_fault(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiJson(body): ApiJson<Fault>,
) -> Result<axum::Json<Fault>, Problem> {
    let mut errors = Vec::new();
    let target = known_service(&state, &body.service, "service", &mut errors);
    check_method(target, &body.method, "method", &mut errors);
    if body.latency_ms > MAX_LATENCY_MS {
        errors.push(field_error(
            "latency_ms",
            format!("must be between 0 and {MAX_LATENCY_MS}"),
        ));
    }
    if !(0.0..=1.0).contains(&body.error_rate) {
        errors.push(field_error("error_rate", "must be between 0.0 and 1.0"));
    }
    if body.latency_ms == 0 && body.error_rate == 0.0 {
        errors.push(field_error(
            "latency_ms",
            "latency_ms or error_rate must be more than zero",
        ));
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    // Every instance of the service holds its own rules: each gets the rule. One that cannot be
    // reached is left out (a process that restarts has no rules anyway); one that refuses
    // decides the answer.
    let ctx = drill_ctx(&caller.ctx);
    let request = pb::SetFaultRequest {
        fault: Some(pb::Fault {
            target: body.service.clone(),
            method: body.method.clone(),
            latency_ms: body.latency_ms,
            error_rate: body.error_rate,
        }),
    };
    let calls = instances(&state, Some(&body.service))
        .into_iter()
        .map(|(_, mut client)| {
            let request = ctx.request(request.clone());
            async move { client.set_fault(request).await }
        });
    let mut stored = None;
    let mut refusal = None;
    for answer in futures::future::join_all(calls).await {
        match answer {
            Ok(response) => stored = stored.or(response.into_inner().fault),
            Err(status) if is_unreachable(&status) => {
                tracing::warn!(service = %body.service, code = ?status.code(), "setting a fault failed");
            }
            Err(status) => refusal = refusal.or(Some(status)),
        }
    }
    match (refusal, stored) {
        (Some(status), _) if status.code() == Code::FailedPrecondition => Err(disabled()),
        (Some(status), _) => Err(upstream(status)),
        (None, None) => Err(unreachable(&body.service)),
        (None, Some(fault)) => {
            let fault = Fault::from_pb(fault);
            tracing::warn!(
                service = %fault.service,
                method = %fault.method,
                latency_ms = fault.latency_ms,
                error_rate = fault.error_rate,
                admin = %caller.identity.user_id,
                "fault injection rule set"
            );
            Ok(axum::Json(fault))
        }
    }
}

/// Clears rules: every rule of the mesh without parameters, every rule of one service with
/// `service`, one rule with `service` and `method`. Clearing a rule that does not exist is not
/// an error (204 all the same), so a clear can be repeated safely.
#[utoipa::path(
    delete, path = "/api/admin/faults", tag = "admin",
    security(("bearer" = [])),
    params(ClearQuery),
    responses(
        (status = 204, description = "The rules are gone"),
        (status = 400, description = "An unknown query parameter", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "Fault injection is disabled (FAULT_INJECTION_ENABLED is not true)", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Unknown service or method, or a method without a service", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "A service could not be reached: the others were cleared; retry", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn clear_faults(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiQuery(query): ApiQuery<ClearQuery>,
) -> Result<StatusCode, Problem> {
    let mut errors = Vec::new();
    let target = match &query.service {
        Some(service) => known_service(&state, service, "service", &mut errors),
        None => None,
    };
    match (&query.service, &query.method) {
        (None, Some(_)) => errors.push(field_error("service", "is required when method is given")),
        (Some(_), Some(method)) => check_method(target, method, "method", &mut errors),
        _ => {}
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let ctx = drill_ctx(&caller.ctx);
    let request = pb::ClearFaultsRequest {
        target: query.service.clone().unwrap_or_default(),
        method: query.method.clone().unwrap_or_default(),
    };
    // A service's rules live on its own servers; clearing every rule asks every server.
    let calls = instances(&state, target.map(|upstream| upstream.name))
        .into_iter()
        .map(|(name, mut client)| {
            let request = ctx.request(request.clone());
            async move { (name, client.clear_faults(request).await) }
        });
    let mut cleared = 0usize;
    let mut disabled_count = 0usize;
    let mut failed = Vec::new();
    for (name, answer) in futures::future::join_all(calls).await {
        match answer {
            Ok(response) => {
                cleared += 1;
                let removed = response.into_inner().removed;
                if removed > 0 {
                    tracing::warn!(upstream = name, removed, admin = %caller.identity.user_id, "fault injection rules cleared");
                }
            }
            // A process without fault injection holds no rules.
            Err(status) if status.code() == Code::FailedPrecondition => disabled_count += 1,
            Err(status) => {
                tracing::warn!(upstream = name, code = ?status.code(), "clearing faults failed");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "could not reach {}; the other services were cleared, try again",
                failed.join(", ")
            ),
        )
        .with_retry_after(1));
    }
    if cleared == 0 && disabled_count > 0 {
        return Err(disabled());
    }
    Ok(StatusCode::NO_CONTENT)
}
