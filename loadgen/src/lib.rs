//! `shopmesh loadgen`: load on the REST edge as shoppers make it. Scenarios `browse` (search and
//! product pages), `cart` (add, change, look, empty) and `checkout` (add, then check out with a
//! test card), or a weighted `mix` of them; and, to measure one endpoint at a time (scripts/bench),
//! the single-request scenarios `product` (a product page), `search`, `add-to-cart` and `get`
//! (one fixed path, optionally with a shopper's token).
//!
//! Two ways to start iterations. Open loop (`--rate`): each iteration is scheduled at a fixed
//! time and its latency is measured from that time, not from when it actually got going, so a
//! stall of the server (or of this generator) shows up in the percentiles instead of quietly
//! lowering the load: no coordinated omission. Closed loop (`--concurrency`): a fixed number of
//! workers, each starting the next iteration when its last one ended.
//!
//! Before the run it reads the catalog through `GET /api/products` (load one with `shopmesh
//! seed`), optionally tops stock up as an admin (`--restock`), and registers and logs in its
//! shoppers. Latency is kept in HDR histograms per scenario and endpoint; the result is a table
//! on stdout, and optionally a JSON report and an SVG chart of latency over time.

pub mod config;
pub mod report;
mod runner;
mod scenarios;
mod setup;
mod stats;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use config::{LoadgenArgs, Scenario};
pub use report::Report;
pub use runner::{MEASURING_ENDED, MEASURING_STARTED};
pub use scenarios::{
    ADD_ITEM, ADDS_PER_CART, CARD_DECLINED, CARD_OK, CHECKOUT, EMPTY_CART, LOGIN, PRODUCT, SEARCH,
    UPDATE_ITEM, VIEW_CART,
};

use crate::runner::{Shared, Timing};
use crate::setup::{Catalog, UserPool};
use crate::stats::Stats;

/// Why a run could not be made or reported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {option}: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
    #[error("{step}: {detail}")]
    Setup { step: &'static str, detail: String },
    #[error("building the http client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("creating a histogram: {0}")]
    Histogram(String),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn note(quiet: bool, message: &str) {
    if !quiet {
        eprintln!("loadgen: {message}");
    }
}

/// Runs the load described by `args` and writes the `--json` and `--svg` files it names.
pub async fn run(args: &LoadgenArgs) -> Result<Report, Error> {
    run_until(args, std::future::pending()).await
}

/// As [`run`], but stops scheduling early when `stop` completes (the iterations in flight
/// still finish and are reported).
pub async fn run_until(
    args: &LoadgenArgs,
    stop: impl Future<Output = ()> + Send,
) -> Result<Report, Error> {
    let plan = args.plan()?;
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .connect_timeout(plan.timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .map_err(Error::Client)?;

    let get_url = match &plan.path {
        None => None,
        Some(path) => Some(
            reqwest::Url::parse(&format!("{}{path}", plan.target)).map_err(|err| {
                Error::Invalid {
                    option: "--path",
                    reason: format!("does not make a URL with --target: {err}"),
                }
            })?,
        ),
    };
    let mut catalog = if plan.needs_catalog {
        Catalog::discover(&client, &plan).await?
    } else {
        Catalog::empty()
    };
    if let Some((units, token)) = &plan.restock {
        let added = catalog.restock(&client, &plan, *units, token).await?;
        note(
            plan.quiet,
            &format!(
                "restocked {} products to {units} available units ({added} units received)",
                catalog.products.len()
            ),
        );
    }
    if plan.needs_catalog {
        note(
            plan.quiet,
            &format!(
                "catalog: {} products, {} in stock",
                catalog.products.len(),
                catalog.in_stock.len()
            ),
        );
    }
    if plan.mix.scenarios().any(Scenario::needs_user) && catalog.in_stock.is_empty() {
        return Err(Error::Setup {
            step: "reading the catalog (GET /api/products)",
            detail: "no product has stock, which the cart, checkout and add-to-cart scenarios \
                     need: load the demo catalog (`shopmesh seed`) or pass --restock with \
                     --admin-token"
                .into(),
        });
    }
    if plan.users > 0 {
        note(
            plan.quiet,
            &format!("registering and logging in {} shoppers", plan.users),
        );
    }
    let users = setup::register_users(&client, &plan).await?;

    let timing = Timing::new(&plan);
    let stats = Stats::new(timing.measure_from)?;
    let mut shared = Shared::new(client, plan.clone(), catalog, UserPool::new(users), stats);
    shared.get_url = get_url;
    let shared = Arc::new(shared);
    let stopped_at = runner::run(shared.clone(), timing, stop).await;

    let measured = stopped_at
        .min(timing.end)
        .saturating_duration_since(timing.measure_from);
    let report = {
        let mut stats = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.finish();
        report::Report::build(
            &plan,
            &stats,
            &report::RunFacts {
                measured,
                products: shared.catalog.products.len(),
                products_in_stock: shared.catalog.in_stock.len(),
                user_waits: shared.user_waits.load(Ordering::Relaxed),
                max_start_lag: Duration::from_micros(
                    shared.max_start_lag_micros.load(Ordering::Relaxed),
                ),
            },
        )
    };
    if let Some(path) = &plan.json {
        report.write_json(path)?;
    }
    if let Some(path) = &plan.svg {
        report.write_svg(path)?;
    }
    Ok(report)
}

/// The `shopmesh loadgen` command: runs until the plan ends or Ctrl-C, prints the table on
/// stdout and writes the files asked for.
pub async fn main(args: &LoadgenArgs) -> Result<(), Error> {
    let started = Instant::now();
    let interrupted = async {
        // Without a signal handler the run simply goes on to its planned end.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let report = run_until(args, interrupted).await?;
    print!("{}", report::table(&report));
    if !args.quiet {
        for (flag, path) in [("JSON report", &args.json), ("SVG chart", &args.svg)] {
            if let Some(path) = path {
                note(false, &format!("{flag} written to {}", path.display()));
            }
        }
        note(
            false,
            &format!("done in {:.1} s", started.elapsed().as_secs_f64()),
        );
    }
    Ok(())
}
