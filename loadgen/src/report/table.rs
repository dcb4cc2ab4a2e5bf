//! The final table on stdout: per endpoint, then per scenario's whole iterations.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::report::{Latency, Report};

fn errors(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "-".to_owned();
    }
    errors
        .iter()
        .map(|(label, count)| format!("{label}×{count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn latency(l: &Latency) -> String {
    format!(
        "{:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        l.p50, l.p90, l.p99, l.p99_9
    )
}

/// The report as a plain-text table.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let mode = match (report.rate, report.concurrency) {
        (Some(rate), _) => format!("open loop at {rate} iterations/s"),
        (None, Some(workers)) => format!("closed loop with {workers} workers"),
        (None, None) => report.mode.clone(),
    };
    let scenario = if report.scenario == "mix" {
        let weights: Vec<String> = report
            .mix
            .iter()
            .map(|(name, weight)| format!("{name} {weight}"))
            .collect();
        format!("mix ({})", weights.join(" / "))
    } else if report.auth {
        format!("{} (with shoppers' access tokens)", report.scenario)
    } else {
        report.scenario.clone()
    };
    let _ = writeln!(
        out,
        "shopmesh loadgen: {scenario} against {}, {mode}, {:.1} s measured after {:.1} s of \
         warm-up; {} shoppers, {} products ({} in stock)",
        report.target,
        report.duration_secs,
        report.warmup_secs,
        report.users,
        report.products,
        report.products_in_stock,
    );
    let _ = writeln!(out);
    let header = format!(
        "{:>9} {:>9} {:>9} {:>9}",
        "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"
    );
    let _ = writeln!(
        out,
        "{:<11} {:<28} {:>9} {:>8} {header}  errors",
        "scenario", "endpoint", "requests", "req/s"
    );
    for e in &report.endpoints {
        let _ = writeln!(
            out,
            "{:<11} {:<28} {:>9} {:>8.1} {}  {}",
            e.scenario,
            e.endpoint,
            e.requests,
            e.rps,
            latency(&e.latency_ms),
            errors(&e.errors)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<11} {:<28} {:>9} {:>8} {header}  failed",
        "scenario", "(whole iterations)", "count", "it/s"
    );
    for s in &report.scenarios {
        let _ = writeln!(
            out,
            "{:<11} {:<28} {:>9} {:>8.1} {}  {}",
            s.scenario,
            "",
            s.iterations,
            s.rate,
            latency(&s.latency_ms),
            errors(&s.errors)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} requests, {} failed; checkouts: {} paid, {} declined on purpose",
        report.requests, report.errors, report.checkouts.paid, report.checkouts.declined
    );
    if report.user_waits > 0 {
        let _ = writeln!(
            out,
            "note: {} iterations waited for a free shopper (the wait is in their latency): \
             raise --users",
            report.user_waits
        );
    }
    if report.max_start_lag_ms > 50.0 {
        let _ = writeln!(
            out,
            "note: an iteration started {:.0} ms after its scheduled time (the delay is in its \
             latency): the generator or --max-in-flight could not keep the schedule",
            report.max_start_lag_ms
        );
    }
    out
}
