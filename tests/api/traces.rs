//! OpenTelemetry traces: one request through nginx is one trace — the gateway, every gRPC hop
//! and the events it caused — whose id is the request id nginx gave it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

use crate::helpers::{PASSWORD, TempDir, free_port, start_nginx, wait_ready};
use crate::process::{base_env, shopmesh};

/// One exported span, as the collector received it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: SpanKind,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP collector on a free port that keeps every span it is sent.
async fn collector() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
                let mut kept = kept.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(name) => Some(name.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        kept.push(Received {
                            service: service.clone(),
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            kind: span.kind(),
                            name: span.name,
                        });
                    }
                }
                // An empty ExportTraceServiceResponse.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, spans)
}

#[tokio::test]
async fn a_request_through_nginx_is_one_trace_across_gateway_grpc_hops_and_events() {
    let dir = TempDir::new("shopmesh-traces");
    let (mut env, _, _db) = base_env();
    let (collector_port, spans) = collector().await;
    let gateway_port = free_port();
    let edge_port = free_port();
    env.insert(
        "GATEWAY_ADDR".to_owned(),
        format!("127.0.0.1:{gateway_port}"),
    );
    env.insert(
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        format!("http://127.0.0.1:{collector_port}"),
    );
    env.insert("OTEL_SERVICE_NAME".to_owned(), "shopmesh-traced".to_owned());
    // Export every 100 ms rather than every 5 s.
    env.insert("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned());
    let _mesh = shopmesh(&env, &dir)
        .args(["serve", "--target", "all"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    wait_ready(&http, &format!("http://127.0.0.1:{gateway_port}/readyz")).await;
    let _nginx = start_nginx(&dir.0, edge_port, gateway_port).await;
    let edge = format!("http://127.0.0.1:{edge_port}");
    wait_ready(&http, &format!("{edge}/healthz")).await;

    let registered = http
        .post(format!("{edge}/api/auth/register"))
        .json(&serde_json::json!({
            "email": "traced@example.com", "password": PASSWORD, "name": "Traced Shopper"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    // nginx's request id: 32 hex digits, which the whole trace takes as its id.
    let trace_id = registered.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    // The registration's spans, and those of the two consumers of user.registered.
    let mut trace: Vec<Received> = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trace = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect();
        let consumed = trace
            .iter()
            .filter(|span| span.name == "consume user.registered")
            .count();
        if consumed >= 2 && trace.len() >= 5 {
            break;
        }
    }
    let by_name: HashMap<(&str, SpanKind), &Received> = trace
        .iter()
        .map(|span| ((span.name.as_str(), span.kind), span))
        .collect();
    let edge_span = by_name
        .get(&("POST /api/auth/register", SpanKind::Server))
        .unwrap_or_else(|| panic!("the gateway's span in {trace:#?}"));
    // Its parent stands for nginx, which exports no spans of its own.
    assert_eq!(edge_span.parent_span_id, trace_id[..16], "{edge_span:?}");
    assert!(trace.iter().all(|span| span.service == "shopmesh-traced"));

    let rpc = "shopmesh.user.v1.UserService/Register";
    let client = by_name
        .get(&(rpc, SpanKind::Client))
        .unwrap_or_else(|| panic!("the gateway's call in {trace:#?}"));
    assert_eq!(client.parent_span_id, edge_span.span_id, "{client:?}");
    let server = by_name
        .get(&(rpc, SpanKind::Server))
        .unwrap_or_else(|| panic!("the user service's span in {trace:#?}"));
    assert_eq!(server.parent_span_id, client.span_id, "{server:?}");

    let consumers = trace
        .iter()
        .filter(|span| span.name == "consume user.registered" && span.kind == SpanKind::Consumer)
        .count();
    assert!(
        consumers >= 2,
        "analytics and notification consumed the event in this trace: {trace:#?}"
    );
}
