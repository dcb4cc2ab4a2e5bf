//! A self-contained SVG chart of iteration latency over time: p50 (solid) and p99 (dashed) per
//! second, one colour per scenario, with axes, ticks and a legend. No script, no fonts to load.

use std::fmt::Write;

use crate::report::{Report, ScenarioReport};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 56.0;

fn colour(scenario: &str) -> &'static str {
    match scenario {
        "browse" => "#1f77b4",
        "cart" => "#2ca02c",
        "checkout" => "#d62728",
        "product" => "#ff7f0e",
        "search" => "#9467bd",
        "add-to-cart" => "#8c564b",
        "get" => "#17becf",
        _ => "#7f7f7f",
    }
}

/// Text for an SVG element or attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round tick step (1, 2 or 5 times a power of ten) giving about `ticks` ticks up to `max`.
fn tick_step(max: f64, ticks: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / ticks;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude);
    step.max(f64::MIN_POSITIVE)
}

fn label(value: f64) -> String {
    if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, seconds: f64) -> f64 {
        LEFT + seconds / self.x_max * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, ms: f64) -> f64 {
        HEIGHT - BOTTOM - ms.min(self.y_max) / self.y_max * (HEIGHT - TOP - BOTTOM)
    }
}

fn series(out: &mut String, frame: &Frame, scenario: &ScenarioReport, p99: bool) {
    let points: Vec<(f64, f64)> = scenario
        .timeline
        .iter()
        .map(|p| {
            let ms = if p99 { p.p99_ms } else { p.p50_ms };
            (frame.x(p.second as f64 + 0.5), frame.y(ms))
        })
        .collect();
    if points.is_empty() {
        return;
    }
    let colour = colour(&scenario.scenario);
    let dash = if p99 {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let path: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        out,
        r#"  <polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"><title>{} p{}</title></polyline>"#,
        path.join(" "),
        escape(&scenario.scenario),
        if p99 { "99" } else { "50" }
    );
    for (x, y) in points {
        let _ = writeln!(
            out,
            r#"  <circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"/>"#
        );
    }
}

/// The chart of a report.
pub fn render(report: &Report) -> String {
    let last_second = report
        .scenarios
        .iter()
        .flat_map(|s| s.timeline.iter().map(|p| p.second + 1))
        .max()
        .unwrap_or(0);
    let x_max = report.duration_secs.ceil().max(last_second as f64).max(1.0);
    let top_ms = report
        .scenarios
        .iter()
        .flat_map(|s| s.timeline.iter().map(|p| p.p99_ms.max(p.p50_ms)))
        .fold(0.0, f64::max);
    let y_step = tick_step(top_ms.max(1.0), 5.0);
    let y_max = ((top_ms / y_step).floor() + 1.0) * y_step;
    let x_step = tick_step(x_max, 10.0).max(1.0);
    let frame = Frame { x_max, y_max };

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let title = format!(
        "shopmesh loadgen: iteration latency per second, {} against {}",
        report.scenario, report.target
    );
    let _ = writeln!(out, "  <title>{}</title>", escape(&title));
    let _ = writeln!(
        out,
        r#"  <rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"  <text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        escape(&title)
    );
    let subtitle = match (report.rate, report.concurrency) {
        (Some(rate), _) => format!(
            "open loop at {rate} iterations/s; latency from each iteration's scheduled start"
        ),
        (None, Some(workers)) => format!("closed loop with {workers} workers"),
        (None, None) => String::new(),
    };
    let _ = writeln!(
        out,
        r##"  <text x="{LEFT}" y="40" fill="#555">{} — p50 solid, p99 dashed</text>"##,
        escape(&subtitle)
    );

    // Grid and ticks.
    let (left, right) = (LEFT, WIDTH - RIGHT);
    let (top, bottom) = (TOP, HEIGHT - BOTTOM);
    let mut y = 0.0;
    while y <= y_max + y_step / 2.0 {
        let py = frame.y(y);
        let _ = writeln!(
            out,
            r##"  <line x1="{left}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="#e5e5e5"/>"##
        );
        let _ = writeln!(
            out,
            r#"  <text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            py + 4.0,
            label(y)
        );
        y += y_step;
    }
    let mut x = 0.0;
    while x <= x_max + x_step / 2.0 {
        let px = frame.x(x);
        let _ = writeln!(
            out,
            r##"  <line x1="{px:.1}" y1="{bottom}" x2="{px:.1}" y2="{:.1}" stroke="#333"/>"##,
            bottom + 5.0
        );
        let _ = writeln!(
            out,
            r#"  <text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 19.0,
            label(x)
        );
        x += x_step;
    }
    // Axes and their titles.
    let _ = writeln!(
        out,
        r##"  <line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r##"  <line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r#"  <text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since measuring started</text>"#,
        (left + right) / 2.0,
        HEIGHT - 14.0
    );
    let _ = writeln!(
        out,
        r#"  <text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (ms)</text>"#,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0
    );

    // The series, then the legend.
    for scenario in &report.scenarios {
        series(&mut out, &frame, scenario, false);
        series(&mut out, &frame, scenario, true);
    }
    let mut ly = TOP + 10.0;
    for scenario in &report.scenarios {
        let colour = colour(&scenario.scenario);
        for (p99, name) in [(false, "p50"), (true, "p99")] {
            let dash = if p99 {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"  <line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{dash}/>"#,
                right + 16.0,
                right + 46.0
            );
            let _ = writeln!(
                out,
                r#"  <text x="{:.1}" y="{:.1}">{} {name}</text>"#,
                right + 52.0,
                ly + 4.0,
                escape(&scenario.scenario)
            );
            ly += 20.0;
        }
    }
    if report.scenarios.iter().all(|s| s.timeline.is_empty()) {
        let _ = writeln!(
            out,
            r##"  <text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">no iteration completed while measuring</text>"##,
            (left + right) / 2.0,
            (top + bottom) / 2.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Checkouts, Latency, TimelinePoint};

    fn report(timeline: Vec<TimelinePoint>) -> Report {
        Report {
            target: "http://127.0.0.1:8080/?a=1&b=<2>".into(),
            scenario: "mix".into(),
            mix: [("browse".to_owned(), 1)].into(),
            path: None,
            auth: false,
            mode: "rate".into(),
            rate: Some(20.0),
            concurrency: None,
            warmup_secs: 0.0,
            duration_secs: 3.0,
            users: 1,
            products: 1,
            products_in_stock: 1,
            requests: 0,
            errors: 0,
            endpoints: Vec::new(),
            scenarios: vec![ScenarioReport {
                scenario: "browse".into(),
                iterations: 0,
                ok: 0,
                errors: Default::default(),
                rate: 0.0,
                latency_ms: Latency::default(),
                timeline,
            }],
            checkouts: Checkouts::default(),
            user_waits: 0,
            max_start_lag_ms: 0.0,
        }
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(100.0, 5.0), 20.0);
        assert_eq!(tick_step(7.0, 5.0), 2.0);
        assert_eq!(tick_step(0.3, 5.0), 0.1);
        assert_eq!(tick_step(0.0, 5.0), 1.0);
        assert_eq!(label(0.1 + 0.2), "0.3");
        assert_eq!(label(40.0), "40");
    }

    #[test]
    fn the_chart_is_one_escaped_svg_document_with_both_percentiles() {
        let point = |second, p50_ms, p99_ms| TimelinePoint {
            second,
            iterations: 10,
            errors: 0,
            p50_ms,
            p99_ms,
        };
        let svg = render(&report(vec![point(0, 3.0, 9.0), point(1, 4.0, 12.5)]));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains("latency (ms)"));
        assert!(svg.contains("browse p99"));
        assert!(svg.contains("&amp;b=&lt;2&gt;"));
        assert!(!svg.contains("<script"));

        let empty = render(&report(Vec::new()));
        assert!(empty.contains("no iteration completed"));
    }
}
