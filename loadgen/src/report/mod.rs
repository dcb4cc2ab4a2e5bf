//! The result of a run, as the JSON report (`--json`), the table on stdout and the SVG chart
//! (`--svg`) show it.

mod svg;
mod table;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::config::{Mode, Plan, ScenarioChoice};
use crate::stats::{Point, Stats};

pub use svg::render as svg;
pub use table::render as table;

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean().round() / 1000.0,
        }
    }
}

/// The requests of one endpoint within one scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    pub scenario: String,
    /// Method and path template, e.g. `POST /api/cart/checkout`.
    pub endpoint: String,
    pub requests: u64,
    /// Requests that succeeded (2xx, and for a checkout the expected order status).
    pub ok: u64,
    /// Failed requests by status (`"503"`), `"io"` for network errors and timeouts, or for a
    /// checkout answered 201 with another order status, that status and reason
    /// (`"201 CANCELLED OUT_OF_STOCK"`).
    pub errors: BTreeMap<String, u64>,
    /// Requests per second of the measured time.
    pub rps: f64,
    pub latency_ms: Latency,
}

/// One second of a scenario's timeline: the iterations that ended in it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since measuring started.
    pub second: u64,
    pub iterations: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl From<&Point> for TimelinePoint {
    fn from(point: &Point) -> Self {
        let ms = |d: Duration| ms(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Self {
            second: point.second,
            iterations: point.iterations,
            errors: point.errors,
            p50_ms: ms(point.p50),
            p99_ms: ms(point.p99),
        }
    }
}

/// The whole iterations of one scenario, latency measured from each one's scheduled start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub iterations: u64,
    pub ok: u64,
    /// Failed iterations by the request that failed them (`"POST /api/cart/items 409"`).
    pub errors: BTreeMap<String, u64>,
    /// Iterations per second of the measured time.
    pub rate: f64,
    pub latency_ms: Latency,
    pub timeline: Vec<TimelinePoint>,
}

/// Orders placed by the checkout scenario.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkouts {
    /// Checkouts that came back PAID.
    pub paid: u64,
    /// Checkouts with the declining card (`--decline-percent`) that came back CANCELLED.
    pub declined: u64,
}

/// A run's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    /// `browse`, `cart`, `checkout`, `mix`, `product`, `search`, `add-to-cart` or `get`.
    pub scenario: String,
    /// The weights in use (one scenario at 1 unless `mix`).
    pub mix: BTreeMap<String, u32>,
    /// The path of the `get` scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether the `get` scenario sent a shopper's access token.
    #[serde(default)]
    pub auth: bool,
    /// `rate` (open loop) or `concurrency` (closed loop).
    pub mode: String,
    /// Scheduled iterations per second (open loop).
    pub rate: Option<f64>,
    /// Workers (closed loop).
    pub concurrency: Option<usize>,
    pub warmup_secs: f64,
    /// The measured time (shorter than asked when the run was interrupted).
    pub duration_secs: f64,
    pub users: usize,
    pub products: usize,
    pub products_in_stock: usize,
    pub requests: u64,
    pub errors: u64,
    pub endpoints: Vec<EndpointReport>,
    pub scenarios: Vec<ScenarioReport>,
    pub checkouts: Checkouts,
    /// Iterations that found every shopper busy and waited for one (more `--users` needed);
    /// the wait is part of their latency.
    pub user_waits: u64,
    /// The latest an iteration started after its scheduled time: more than a few
    /// milliseconds means the generator (or `--max-in-flight`) could not keep the schedule;
    /// the delay is part of the latency.
    pub max_start_lag_ms: f64,
}

/// What a run adds to its plan and statistics.
pub struct RunFacts {
    pub measured: Duration,
    pub products: usize,
    pub products_in_stock: usize,
    pub user_waits: u64,
    pub max_start_lag: Duration,
}

fn per_second(count: u64, measured: Duration) -> f64 {
    let secs = measured.as_secs_f64();
    if secs > 0.0 {
        (count as f64 / secs * 100.0).round() / 100.0
    } else {
        0.0
    }
}

impl Report {
    pub fn build(plan: &Plan, stats: &Stats, facts: &RunFacts) -> Self {
        let endpoints = stats
            .endpoints()
            .map(|(scenario, endpoint, e)| {
                let requests = e.ok + e.errors.values().sum::<u64>();
                EndpointReport {
                    scenario: scenario.name().to_owned(),
                    endpoint: endpoint.to_owned(),
                    requests,
                    ok: e.ok,
                    errors: e.errors.clone(),
                    rps: per_second(requests, facts.measured),
                    latency_ms: Latency::of(&e.latency),
                }
            })
            .collect();
        let scenarios = plan
            .mix
            .scenarios()
            .map(|s| {
                let stats = stats.scenario(s);
                ScenarioReport {
                    scenario: s.name().to_owned(),
                    iterations: stats.iterations(),
                    ok: stats.ok,
                    errors: stats.errors.clone(),
                    rate: per_second(stats.iterations(), facts.measured),
                    latency_ms: Latency::of(&stats.latency),
                    timeline: stats.timeline.iter().map(TimelinePoint::from).collect(),
                }
            })
            .collect();
        let (mode, rate, concurrency) = match plan.mode {
            Mode::Rate(rate) => ("rate", Some(rate), None),
            Mode::Concurrency(workers) => ("concurrency", None, Some(workers)),
        };
        Self {
            target: plan.target.clone(),
            scenario: match plan.scenario {
                ScenarioChoice::Browse => "browse",
                ScenarioChoice::Cart => "cart",
                ScenarioChoice::Checkout => "checkout",
                ScenarioChoice::Mix => "mix",
                ScenarioChoice::Product => "product",
                ScenarioChoice::Search => "search",
                ScenarioChoice::AddToCart => "add-to-cart",
                ScenarioChoice::Get => "get",
            }
            .to_owned(),
            mix: plan
                .mix
                .scenarios()
                .map(|s| (s.name().to_owned(), plan.mix.weight(s)))
                .collect(),
            path: plan.path.clone(),
            auth: plan.auth,
            mode: mode.to_owned(),
            rate,
            concurrency,
            warmup_secs: plan.warmup.as_secs_f64(),
            duration_secs: facts.measured.as_secs_f64(),
            users: plan.users,
            products: facts.products,
            products_in_stock: facts.products_in_stock,
            requests: stats.requests(),
            errors: stats.request_errors(),
            endpoints,
            scenarios,
            checkouts: Checkouts {
                paid: stats.paid,
                declined: stats.declined,
            },
            user_waits: facts.user_waits,
            max_start_lag_ms: facts.max_start_lag.as_secs_f64() * 1000.0,
        }
    }

    /// The entry of one endpoint in one scenario.
    pub fn endpoint(&self, scenario: &str, endpoint: &str) -> Option<&EndpointReport> {
        self.endpoints
            .iter()
            .find(|e| e.scenario == scenario && e.endpoint == endpoint)
    }

    pub fn scenario(&self, scenario: &str) -> Option<&ScenarioReport> {
        self.scenarios.iter().find(|s| s.scenario == scenario)
    }

    pub fn write_json(&self, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_string_pretty(self).map_err(|err| Error::Write {
            path: path.to_owned(),
            source: std::io::Error::other(err),
        })?;
        write(path, &(json + "\n"))
    }

    pub fn write_svg(&self, path: &Path) -> Result<(), Error> {
        write(path, &svg(self))
    }
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}
