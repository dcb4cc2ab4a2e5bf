//! Starting iterations: open loop on a fixed schedule (`--rate`), or closed loop with a fixed
//! number of workers (`--concurrency`); and the progress line.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::{Mix, Mode, Plan, SCENARIOS, Scenario};
use crate::scenarios::run_iteration;
use crate::setup::{Catalog, UserPool};
use crate::stats::Stats;

/// What every iteration shares.
pub struct Shared {
    pub client: reqwest::Client,
    pub plan: Plan,
    pub catalog: Catalog,
    pub users: UserPool,
    pub stats: Mutex<Stats>,
    /// Recorded iterations that found every shopper busy and waited for one.
    pub user_waits: AtomicU64,
    /// The latest start of a recorded iteration after its scheduled time.
    pub max_start_lag_micros: AtomicU64,
    /// Iterations started, and still running (for the progress line).
    pub started: AtomicU64,
    pub in_flight: AtomicU64,
    checkouts: AtomicU64,
    /// Turns of the single-request scenarios' rotations over products and search terms.
    next_product: AtomicU64,
    next_term: AtomicU64,
    /// The URL of the `get` scenario, parsed once.
    pub get_url: Option<reqwest::Url>,
}

impl Shared {
    pub fn new(
        client: reqwest::Client,
        plan: Plan,
        catalog: Catalog,
        users: UserPool,
        stats: Stats,
    ) -> Self {
        Self {
            client,
            plan,
            catalog,
            users,
            stats: Mutex::new(stats),
            user_waits: AtomicU64::new(0),
            max_start_lag_micros: AtomicU64::new(0),
            started: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            checkouts: AtomicU64::new(0),
            next_product: AtomicU64::new(0),
            next_term: AtomicU64::new(0),
            get_url: None,
        }
    }

    /// The next of `len` items in rotation, for the product pages (`terms` false) or the search
    /// terms (`terms` true) of the single-request scenarios.
    pub fn next_index(&self, terms: bool, len: usize) -> usize {
        let counter = if terms {
            &self.next_term
        } else {
            &self.next_product
        };
        let turn = counter.fetch_add(1, Ordering::Relaxed);
        usize::try_from(turn % len.max(1) as u64).unwrap_or(0)
    }

    /// Whether the next checkout pays with the declining card.
    pub fn next_checkout_declines(&self) -> bool {
        let n = self.checkouts.fetch_add(1, Ordering::Relaxed);
        declines(n, self.plan.decline_percent)
    }
}

/// Whether checkout `n` (from 0) of a run declines on purpose: spread evenly, so that any
/// stretch of checkouts holds the asked share (it declines when the running total of
/// `percent / 100` passes a whole number).
pub fn declines(n: u64, percent: u8) -> bool {
    let percent = u64::from(percent);
    (n + 1) * percent / 100 > n * percent / 100
}

/// Smooth weighted round robin: the scenarios in the mix's proportions, evenly interleaved
/// (browse=70,cart=20,checkout=10 gives exactly 7, 2 and 1 of every 10 iterations).
#[derive(Clone, Debug)]
pub struct Rotation {
    weights: [i64; SCENARIOS],
    current: [i64; SCENARIOS],
}

impl Rotation {
    pub fn new(mix: Mix) -> Self {
        Self {
            weights: mix.weights.map(i64::from),
            current: [0; SCENARIOS],
        }
    }

    pub fn next_scenario(&mut self) -> Scenario {
        let total: i64 = self.weights.iter().sum();
        let mut best = 0;
        for i in 0..SCENARIOS {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        Scenario::ALL[best]
    }
}

/// When a run's phases begin and end.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub start: Instant,
    /// End of the warm-up: iterations scheduled from here on are recorded.
    pub measure_from: Instant,
    /// No iteration is scheduled from here on.
    pub end: Instant,
}

impl Timing {
    pub fn new(plan: &Plan) -> Self {
        let start = Instant::now();
        let measure_from = start + plan.warmup;
        Self {
            start,
            measure_from,
            end: measure_from + plan.duration,
        }
    }
}

async fn iteration(shared: Arc<Shared>, scenario: Scenario, scheduled: Instant, timing: Timing) {
    shared.started.fetch_add(1, Ordering::Relaxed);
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    run_iteration(
        &shared,
        scenario,
        scheduled,
        scheduled >= timing.measure_from,
    )
    .await;
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// Runs the load until the end of the plan or until `stop` completes, waits for the iterations
/// in flight, and returns when scheduling stopped.
pub async fn run(
    shared: Arc<Shared>,
    timing: Timing,
    stop: impl Future<Output = ()> + Send,
) -> Instant {
    let progress = (!shared.plan.quiet).then(|| tokio::spawn(progress(shared.clone(), timing)));
    let marker = (!shared.plan.quiet).then(|| tokio::spawn(measuring_marker(timing)));
    let stopped_at = match shared.plan.mode {
        Mode::Rate(rate) => open_loop(&shared, timing, rate, stop).await,
        Mode::Concurrency(workers) => closed_loop(&shared, timing, workers, stop).await,
    };
    for task in [progress, marker].into_iter().flatten() {
        task.abort();
        let _ = task.await;
    }
    if !shared.plan.quiet {
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        // The last recorded iteration has ended: a harness that samples the CPU time of the
        // processes under load stops here (see `measuring_marker`).
        eprintln!("{MEASURING_ENDED}");
    }
    stopped_at
}

/// The stderr line printed when the warm-up is over and recording starts.
pub const MEASURING_STARTED: &str = "loadgen: measuring started";
/// The stderr line printed when the last recorded iteration has ended.
pub const MEASURING_ENDED: &str = "loadgen: measuring ended";

/// Prints [`MEASURING_STARTED`] (with the planned time) on its own line when the warm-up ends,
/// so that a harness reading stderr (scripts/bench) can sample CPU time over exactly the
/// measured part of the run.
async fn measuring_marker(timing: Timing) {
    tokio::time::sleep_until(timing.measure_from.into()).await;
    let mut stderr = std::io::stderr().lock();
    let newline = if stderr.is_terminal() { "\n" } else { "" };
    let _ = writeln!(
        stderr,
        "{newline}{MEASURING_STARTED} ({:.1} s)",
        (timing.end - timing.measure_from).as_secs_f64()
    );
    let _ = stderr.flush();
}

/// Starts each iteration at its scheduled time, `1 / rate` apart, whatever happened to the
/// ones before it. An iteration's latency runs from its scheduled time, so when the server (or
/// this generator) stalls, the stall is in the numbers instead of silently lowering the rate.
async fn open_loop(
    shared: &Arc<Shared>,
    timing: Timing,
    rate: f64,
    stop: impl Future<Output = ()> + Send,
) -> Instant {
    let max_in_flight = shared.plan.max_in_flight;
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut rotation = Rotation::new(shared.plan.mix);
    tokio::pin!(stop);
    let mut n: u64 = 0;
    let stopped_at = loop {
        // Computed from the start each time, so rounding never accumulates into drift.
        let scheduled = timing.start + Duration::from_secs_f64(n as f64 / rate);
        if scheduled >= timing.end {
            break timing.end;
        }
        tokio::select! {
            () = tokio::time::sleep_until(scheduled.into()) => {}
            () = &mut stop => break Instant::now(),
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut stop => break Instant::now(),
        };
        let Ok(slot) = slot else {
            break Instant::now();
        };
        let scenario = rotation.next_scenario();
        let shared = shared.clone();
        tokio::spawn(async move {
            iteration(shared, scenario, scheduled, timing).await;
            drop(slot);
        });
        n += 1;
    };
    // Every slot back means every iteration has finished.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    stopped_at
}

/// `workers` loops, each starting its next iteration as soon as its last one ended.
async fn closed_loop(
    shared: &Arc<Shared>,
    timing: Timing,
    workers: usize,
    stop: impl Future<Output = ()> + Send,
) -> Instant {
    let rotation = Arc::new(Mutex::new(Rotation::new(shared.plan.mix)));
    let stopping = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let shared = shared.clone();
        let rotation = rotation.clone();
        let stopping = stopping.clone();
        tasks.spawn(async move {
            loop {
                let now = Instant::now();
                if now >= timing.end || stopping.load(Ordering::Relaxed) {
                    break;
                }
                let scenario = rotation
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .next_scenario();
                iteration(shared.clone(), scenario, now, timing).await;
            }
        });
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    tokio::pin!(drain);
    tokio::pin!(stop);
    tokio::select! {
        () = &mut drain => timing.end.min(Instant::now()),
        () = &mut stop => {
            let stopped_at = Instant::now();
            stopping.store(true, Ordering::Relaxed);
            drain.await;
            stopped_at
        }
    }
}

/// Prints a progress line on stderr: rewritten in place every second on a terminal, a plain
/// line every ten seconds otherwise (logs, CI).
async fn progress(shared: Arc<Shared>, timing: Timing) {
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if terminal { 1 } else { 10 });
    let mut ticks = tokio::time::interval_at((timing.start + every).into(), every);
    let mut last_requests = 0;
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let line = {
            let mut stats = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
            stats.roll(now);
            let requests = stats.requests();
            let rate = (requests - last_requests.min(requests)) as f64 / every.as_secs_f64();
            last_requests = requests;
            let p99: Vec<String> = Scenario::ALL
                .into_iter()
                .filter_map(|s| {
                    stats
                        .scenario(s)
                        .last_point()
                        .map(|p| format!("{s} {:.0}", p.p99.as_secs_f64() * 1000.0))
                })
                .collect();
            let phase = if now < timing.measure_from {
                format!(
                    "warm-up {:.0}/{:.0}s",
                    (now - timing.start).as_secs_f64(),
                    (timing.measure_from - timing.start).as_secs_f64()
                )
            } else {
                format!(
                    "{:.0}/{:.0}s",
                    (now - timing.measure_from).as_secs_f64(),
                    (timing.end - timing.measure_from).as_secs_f64()
                )
            };
            format!(
                "{phase}  iterations {} (in flight {})  requests {requests} ({rate:.1}/s)  errors {}  p99 ms {}",
                shared.started.load(Ordering::Relaxed),
                shared.in_flight.load(Ordering::Relaxed),
                stats.request_errors(),
                if p99.is_empty() {
                    "-".to_owned()
                } else {
                    p99.join(", ")
                },
            )
        };
        let mut stderr = std::io::stderr().lock();
        let _ = if terminal {
            write!(stderr, "\r\x1b[2K{line}")
        } else {
            writeln!(stderr, "loadgen: {line}")
        };
        let _ = stderr.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rotation_keeps_the_mix_exactly_and_interleaved() {
        let mut rotation = Rotation::new("browse=70,cart=20,checkout=10".parse().unwrap());
        let picks: Vec<Scenario> = (0..10).map(|_| rotation.next_scenario()).collect();
        let count = |s| picks.iter().filter(|p| **p == s).count();
        assert_eq!(
            (
                count(Scenario::Browse),
                count(Scenario::Cart),
                count(Scenario::Checkout)
            ),
            (7, 2, 1)
        );
        // Interleaved: never more than three browses in a row over a cycle of 10.
        assert!(
            picks
                .windows(4)
                .all(|w| w.iter().any(|s| *s != Scenario::Browse))
        );
        let mut only = Rotation::new(Mix::only(Scenario::Cart));
        assert!((0..5).all(|_| only.next_scenario() == Scenario::Cart));
    }

    #[test]
    fn deliberate_declines_hold_their_share_in_any_stretch() {
        let count =
            |percent, range: std::ops::Range<u64>| range.filter(|n| declines(*n, percent)).count();
        assert_eq!(count(0, 0..1000), 0);
        assert_eq!(count(100, 0..10), 10);
        assert_eq!(count(10, 0..100), 10);
        assert_eq!(count(10, 0..10), 1);
        assert_eq!(count(25, 0..8), 2);
    }
}
