//! Tracing set up in one place: JSON lines in production, readable lines for humans, and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OpenTelemetry traces exported over OTLP/HTTP.
//!
//! One trace follows a request across the mesh: the gateway's span continues the caller's
//! `traceparent` or, without one, takes its trace id from the request id (nginx's `$request_id`
//! is 32 hex digits; a UUID request id without its dashes is too), so the id a client or the
//! nginx log shows is the trace id to look up. Every mesh client call is a client span whose
//! context travels as W3C `traceparent` metadata; every gRPC server span continues it. Events
//! carry the request id as their `correlation_id`, and a consumer's span joins the trace of
//! that id, so the work an event causes lands in the trace of the request that caused it.
//!
//! With the endpoint unset (the default) nothing of this runs: no layer, no propagation.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::{LogFormat, TracingSettings};

static EXPORTING: AtomicBool = AtomicBool::new(false);
static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();

/// Whether traces are being exported (and so whether spans need parents and propagation).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Flushes and stops the trace exporter when dropped; keep it until the process ends.
#[must_use = "dropping the guard stops the trace exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(err) = provider.shutdown() {
                eprintln!("flushing traces failed: {err}");
            }
        }
    }
}

/// Installs the global subscriber: logs filtered by `filter` (RUST_LOG) and, with an OTLP
/// endpoint, the spans of shopmesh's own crates at INFO and above, whatever RUST_LOG says.
/// Safe to call more than once (later calls install nothing), which lets tests start several
/// applications in one process. Call it outside a Tokio runtime.
pub fn init(format: LogFormat, filter: &str, tracing: &TracingSettings) -> Telemetry {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let provider = tracing.otlp_endpoint.as_deref().and_then(|endpoint| {
        match exporter(endpoint, &tracing.service_name) {
            Ok(provider) => Some(provider),
            Err(err) => {
                eprintln!("traces will not be exported: {err}");
                None
            }
        }
    });
    let traces = provider.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("shopmesh"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("shopmesh", tracing::Level::INFO),
            )
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(service = %tracing.service_name, "exporting traces over OTLP");
    }
    Telemetry {
        provider: provider.filter(|_| installed),
    }
}

fn exporter(endpoint: &str, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .with_attribute(KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION").to_owned(),
                ))
                .build(),
        )
        .build())
}

fn propagator() -> &'static TraceContextPropagator {
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes `span`'s trace context into `headers` as `traceparent` (no-op unless exporting).
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if exporting() {
        propagator().inject_context(&span.context(), &mut HeaderInjector(headers));
    }
}

/// Continues the trace of the incoming `traceparent` in `span`, if there is a valid one.
/// Returns whether it did (no-op, `false`, unless exporting).
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) -> bool {
    if !exporting() {
        return false;
    }
    let parent = propagator().extract(&HeaderExtractor(headers));
    if !parent.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(parent).is_ok()
}

/// The trace id a request id stands for: 32 hex digits as they are, or a UUID without its
/// dashes; anything else stands for none.
pub fn trace_id_of(request_id: &str) -> Option<TraceId> {
    let hex: String = request_id.chars().filter(|c| *c != '-').collect();
    let dashes = request_id.len() - hex.len();
    if hex.len() != 32 || !(dashes == 0 || dashes == 4) {
        return None;
    }
    TraceId::from_hex(&hex.to_ascii_lowercase())
        .ok()
        .filter(|id| *id != TraceId::INVALID)
}

/// Puts `span` in the trace `request_id` stands for ([`trace_id_of`]), under a parent that
/// stands for the request's edge (nginx, which exports no spans of its own). No-op unless
/// exporting; `false` when the id stands for no trace.
pub fn continue_from_request_id(span: &tracing::Span, request_id: &str) -> bool {
    if !exporting() {
        return false;
    }
    let Some(trace_id) = trace_id_of(request_id) else {
        return false;
    };
    // The parent span id is the trace id's first half: stable per request, never zero for a
    // valid random id.
    let bytes = trace_id.to_bytes();
    let mut parent = [0u8; 8];
    parent.copy_from_slice(&bytes[..8]);
    if parent == [0u8; 8] {
        parent[7] = 1;
    }
    let context = SpanContext::new(
        trace_id,
        SpanId::from_bytes(parent),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    span.set_parent(Context::new().with_remote_span_context(context))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_that_stand_for_a_trace() {
        let nginx = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id_of(nginx).unwrap().to_string(), nginx);
        let uuid = "0193a1c2-7f00-7000-8000-000000000001";
        assert_eq!(
            trace_id_of(uuid).unwrap().to_string(),
            "0193a1c27f0070008000000000000001"
        );
        assert_eq!(
            trace_id_of("4BF92F3577B34DA6A3CE929D0E0E4736")
                .unwrap()
                .to_string(),
            nginx
        );
        for other in [
            "",
            "req-1",
            "00000000000000000000000000000000",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "4bf92f35-77b34da6a3ce929d0e0e4736",
            "4bf92f3577b34da6a3ce929d0e0e47361",
        ] {
            assert!(trace_id_of(other).is_none(), "{other}");
        }
    }
}
