//! Prometheus metrics: one recorder per process, rendered at `/metrics`.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); rendering still works.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The Prometheus text exposition of every metric of this process.
pub fn render() -> String {
    handle().render()
}

/// Serves `/metrics` on its own listener, for processes that run no gateway.
pub async fn serve(addr: SocketAddr, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let app = Router::new().route("/metrics", get(|| async { render() }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait())
        .await?;
    Ok(())
}

/// One sample of a metric: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, empty when absent.
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }
}

/// Every sample of the counter or gauge `name` in this process's registry, as `/metrics` shows
/// them.
pub fn samples(name: &str) -> Vec<Sample> {
    parse_samples(&render(), name)
}

/// The samples of `name` in a Prometheus text exposition.
pub fn parse_samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
                let (labels, tail) = parse_labels(inner)?;
                (labels, tail)
            } else if rest.starts_with(' ') {
                (Vec::new(), rest)
            } else {
                // Another metric whose name starts with `name`.
                return None;
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect()
}

/// Parses `key="value",…}` (values escaped with `\\`, `\"`, `\n`), returning the labels and what
/// follows the closing brace.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (index, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break index,
                other => value.push(other),
            }
        };
        labels.push((key.to_owned(), value));
        text = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_their_labels() {
        let text = "# TYPE http_requests_total counter\n\
            http_requests_total{method=\"GET\",route=\"/api/products/{id}\",status=\"200\"} 12\n\
            http_requests_total{method=\"GET\",route=\"/a\\\"b,c}\",status=\"404\"} 3\n\
            http_requests_total_other{x=\"1\"} 9\n\
            uptime 4.5\n";
        let samples = parse_samples(text, "http_requests_total");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].label("route"), "/api/products/{id}");
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[1].label("route"), "/a\"b,c}");
        assert_eq!(samples[1].label("status"), "404");
        assert_eq!(samples[1].label("missing"), "");
        assert_eq!(parse_samples(text, "uptime")[0].value, 4.5);
    }
}
