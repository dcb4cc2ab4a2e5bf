//! What a run records: an HDR histogram of latency per scenario and endpoint, outcomes by
//! status, and per scenario the latency of whole iterations, overall and per second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::Error;
use crate::config::{SCENARIOS, Scenario};

/// Latencies are recorded in microseconds, from 1 µs to an hour, to three significant digits.
const HIGHEST_MICROS: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// The label of a network failure (connection refused or reset, timeout, unreadable body).
pub const IO_ERROR: &str = "io";

pub fn histogram() -> Result<Histogram<u64>, Error> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
        .map_err(|err| Error::Histogram(err.to_string()))
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Requests of one endpoint within one scenario.
#[derive(Clone, Debug)]
pub struct EndpointStats {
    pub latency: Histogram<u64>,
    pub ok: u64,
    /// Failed requests by label: the HTTP status (`"503"`), [`IO_ERROR`], or for a checkout
    /// that came back with an unexpected order status, `"201 CANCELLED OUT_OF_STOCK"`.
    pub errors: BTreeMap<String, u64>,
}

/// p50 and p99 of the iterations of a scenario that ended within one second of the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Seconds since measuring started.
    pub second: u64,
    pub iterations: u64,
    pub errors: u64,
    pub p50: Duration,
    pub p99: Duration,
}

/// The iterations of one scenario.
#[derive(Clone, Debug)]
pub struct ScenarioStats {
    pub latency: Histogram<u64>,
    pub ok: u64,
    /// Failed iterations by the endpoint and label of the request that failed them.
    pub errors: BTreeMap<String, u64>,
    pub timeline: Vec<Point>,
    window: Window,
}

#[derive(Clone, Debug)]
struct Window {
    second: u64,
    latency: Histogram<u64>,
    iterations: u64,
    errors: u64,
}

impl Window {
    fn point(&self) -> Option<Point> {
        (self.iterations > 0).then(|| Point {
            second: self.second,
            iterations: self.iterations,
            errors: self.errors,
            p50: Duration::from_micros(self.latency.value_at_quantile(0.5)),
            p99: Duration::from_micros(self.latency.value_at_quantile(0.99)),
        })
    }
}

impl ScenarioStats {
    fn new() -> Result<Self, Error> {
        Ok(Self {
            latency: histogram()?,
            ok: 0,
            errors: BTreeMap::new(),
            timeline: Vec::new(),
            window: Window {
                second: 0,
                latency: histogram()?,
                iterations: 0,
                errors: 0,
            },
        })
    }

    pub fn iterations(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }

    /// Closes the current one-second window into the timeline once `second` is past it.
    fn roll(&mut self, second: u64) {
        if second > self.window.second {
            if let Some(point) = self.window.point() {
                self.timeline.push(point);
            }
            self.window.latency.reset();
            self.window.iterations = 0;
            self.window.errors = 0;
            self.window.second = second;
        }
    }

    /// The last closed second, for the progress line.
    pub fn last_point(&self) -> Option<&Point> {
        self.timeline.last()
    }
}

/// Everything recorded in the measured part of a run.
#[derive(Debug)]
pub struct Stats {
    /// When measuring started (after the warm-up).
    pub since: Instant,
    /// Per scenario, per endpoint name (method and path template, or `GET <path>` of the `get`
    /// scenario).
    endpoints: BTreeMap<Scenario, BTreeMap<String, EndpointStats>>,
    /// Indexed by [`Scenario::index`].
    pub scenarios: Vec<ScenarioStats>,
    /// Checkouts that came back PAID, and deliberately declined ones that came back CANCELLED.
    pub paid: u64,
    pub declined: u64,
    /// An empty histogram, cloned for each new endpoint.
    empty: Histogram<u64>,
}

impl Stats {
    pub fn new(since: Instant) -> Result<Self, Error> {
        Ok(Self {
            since,
            empty: histogram()?,
            endpoints: BTreeMap::new(),
            scenarios: (0..SCENARIOS)
                .map(|_| ScenarioStats::new())
                .collect::<Result<_, _>>()?,
            paid: 0,
            declined: 0,
        })
    }

    pub fn scenario(&self, scenario: Scenario) -> &ScenarioStats {
        &self.scenarios[scenario.index()]
    }

    /// Every endpoint of every scenario, in scenario and then name order.
    pub fn endpoints(&self) -> impl Iterator<Item = (Scenario, &str, &EndpointStats)> {
        self.endpoints.iter().flat_map(|(scenario, endpoints)| {
            endpoints
                .iter()
                .map(move |(name, stats)| (*scenario, name.as_str(), stats))
        })
    }

    pub fn endpoint(&self, scenario: Scenario, name: &str) -> Option<&EndpointStats> {
        self.endpoints.get(&scenario)?.get(name)
    }

    pub fn requests(&self) -> u64 {
        self.endpoints()
            .map(|(_, _, e)| e.ok + e.errors.values().sum::<u64>())
            .sum()
    }

    pub fn request_errors(&self) -> u64 {
        self.endpoints()
            .map(|(_, _, e)| e.errors.values().sum::<u64>())
            .sum()
    }

    /// One request; `outcome` is `Err(label)` for a failure.
    pub fn request(
        &mut self,
        scenario: Scenario,
        endpoint: &str,
        latency: Duration,
        outcome: Result<(), &str>,
    ) {
        let endpoints = self.endpoints.entry(scenario).or_default();
        // Looked up by reference first: the name is only copied for the first request.
        if !endpoints.contains_key(endpoint) {
            endpoints.insert(
                endpoint.to_owned(),
                EndpointStats {
                    latency: self.empty.clone(),
                    ok: 0,
                    errors: BTreeMap::new(),
                },
            );
        }
        let Some(entry) = endpoints.get_mut(endpoint) else {
            return;
        };
        entry.latency.saturating_record(micros(latency));
        match outcome {
            Ok(()) => entry.ok += 1,
            Err(label) => *entry.errors.entry(label.to_owned()).or_default() += 1,
        }
    }

    /// One whole iteration that ended at `ended`; `failure` names the request that failed it.
    pub fn iteration(
        &mut self,
        scenario: Scenario,
        latency: Duration,
        ended: Instant,
        failure: Option<String>,
    ) {
        let second = ended.saturating_duration_since(self.since).as_secs();
        let stats = &mut self.scenarios[scenario.index()];
        stats.roll(second);
        let micros = micros(latency);
        stats.latency.saturating_record(micros);
        stats.window.latency.saturating_record(micros);
        stats.window.iterations += 1;
        match failure {
            None => stats.ok += 1,
            Some(label) => {
                stats.window.errors += 1;
                *stats.errors.entry(label).or_default() += 1;
            }
        }
    }

    /// Closes every window up to `now` (for the progress line and at the end).
    pub fn roll(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.since).as_secs();
        for stats in &mut self.scenarios {
            stats.roll(second);
        }
    }

    /// Closes the last windows: nothing more is recorded.
    pub fn finish(&mut self) {
        for stats in &mut self.scenarios {
            stats.roll(u64::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_are_summed_per_second_of_the_run() {
        let since = Instant::now();
        let mut stats = Stats::new(since).unwrap();
        let ms = Duration::from_millis;
        for (at, latency) in [(100, 10), (200, 30), (1500, 50), (3100, 70)] {
            stats.iteration(Scenario::Browse, ms(latency), since + ms(at), None);
        }
        stats.iteration(
            Scenario::Browse,
            ms(5),
            since + ms(3200),
            Some("GET /x 503".into()),
        );
        stats.finish();
        let browse = stats.scenario(Scenario::Browse);
        let seconds: Vec<(u64, u64, u64)> = browse
            .timeline
            .iter()
            .map(|p| (p.second, p.iterations, p.errors))
            .collect();
        assert_eq!(seconds, [(0, 2, 0), (1, 1, 0), (3, 2, 1)]);
        assert_eq!(browse.iterations(), 5);
        assert_eq!(browse.errors["GET /x 503"], 1);
        let first = browse.timeline[0];
        assert!(first.p50 <= first.p99);
        assert!((ms(29)..=ms(31)).contains(&first.p99), "{:?}", first.p99);
    }

    #[test]
    fn requests_count_by_outcome() {
        let mut stats = Stats::new(Instant::now()).unwrap();
        let ms = Duration::from_millis;
        stats.request(Scenario::Cart, "GET /api/cart", ms(3), Ok(()));
        stats.request(Scenario::Cart, "GET /api/cart", ms(4), Err("503"));
        stats.request(Scenario::Cart, "GET /api/cart", ms(4), Err(IO_ERROR));
        assert_eq!(stats.requests(), 3);
        assert_eq!(stats.request_errors(), 2);
        let cart = stats.endpoint(Scenario::Cart, "GET /api/cart").unwrap();
        assert_eq!(cart.ok, 1);
        assert_eq!(cart.latency.len(), 3);
    }
}
