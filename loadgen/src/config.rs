//! The command line of `shopmesh loadgen`, and the checked plan it turns into.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::Error;

/// The default edge: nginx in front of the gateway, as `scripts/up` starts it.
pub const DEFAULT_TARGET: &str = "http://127.0.0.1:8080";

/// Options of `shopmesh loadgen`. Derives `Parser` so that tests (and other programs) can parse
/// exactly what a user would type; the binary flattens it into its `loadgen` subcommand.
#[derive(Parser, Clone, Debug)]
#[command(name = "loadgen")]
pub struct LoadgenArgs {
    /// Base URL of the REST edge (nginx, or the gateway itself).
    #[arg(long, default_value = DEFAULT_TARGET)]
    pub target: String,

    /// What each iteration does: search and product pages, cart changes, a whole checkout, or a
    /// weighted mix (see --mix). Single-request scenarios, for measuring one endpoint: `product`
    /// (one product page, the products read in rotation), `search` (one search, the terms in
    /// rotation), `add-to-cart` (one item added to the shopper's cart) and `get` (one GET of
    /// --path).
    #[arg(long, value_enum, default_value_t = ScenarioChoice::Mix)]
    pub scenario: ScenarioChoice,

    /// Weights of the mix, e.g. browse=70,cart=20,checkout=10 (a missing scenario weighs 0).
    #[arg(long, default_value = "browse=70,cart=20,checkout=10")]
    pub mix: Mix,

    /// The path (and query) the `get` scenario requests, e.g. /healthz or /api/users/me; any
    /// 2xx answer counts as a success. Nothing else is read first, so it works against any
    /// HTTP server.
    #[arg(long)]
    pub path: Option<String>,

    /// The `get` scenario sends a logged-in shopper's access token (`Authorization: Bearer`),
    /// e.g. for /api/users/me: --users shoppers are registered, each serving one request at a
    /// time.
    #[arg(long)]
    pub auth: bool,

    /// Open loop: scenario iterations started per second, each at its scheduled time whatever
    /// the server does, with latency measured from that time (the default mode, at 10/s).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,

    /// Closed loop instead: this many workers, each starting its next iteration when its last
    /// one ends.
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// How long to measure, e.g. 60s, 5m, 1500ms (a bare number is seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load applied before measuring starts; nothing of it is recorded.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Shoppers registered and logged in before the run (the cart and checkout scenarios use
    /// one each at a time).
    #[arg(long, default_value_t = 20)]
    pub users: usize,

    /// At most this many products are read from the catalog (GET /api/products, paged).
    #[arg(long, default_value_t = 1000)]
    pub products: usize,

    /// Percentage of checkouts that pay with the declined test card (4000000000000002) on
    /// purpose; they count as successful when the order comes back CANCELLED with
    /// PAYMENT_FAILED.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub decline_percent: u8,

    /// Before the run, top every product's available stock up to this many units (needs
    /// --admin-token), so that checkouts do not sell the catalog out during the run.
    #[arg(long, requires = "admin_token")]
    pub restock: Option<i32>,

    /// An admin's access token, for --restock.
    #[arg(long, env = "SHOPMESH_LOADGEN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Iterations allowed in flight at once in open-loop mode; beyond it the schedule waits (and
    /// the wait shows in the latency, which is measured from the scheduled start).
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,

    /// Timeout of one HTTP request.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write a chart of iteration latency over time (p50 and p99 per second per scenario) as an
    /// SVG document to this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,

    /// No progress line and no set-up messages on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The scenario choice of the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioChoice {
    Browse,
    Cart,
    Checkout,
    Mix,
    Product,
    Search,
    AddToCart,
    Get,
}

/// Number of scenarios, the length of the arrays indexed by [`Scenario::index`].
pub const SCENARIOS: usize = 7;

/// One of the scenarios an iteration runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    Browse,
    Cart,
    Checkout,
    Product,
    Search,
    AddToCart,
    Get,
}

impl Scenario {
    pub const ALL: [Scenario; SCENARIOS] = [
        Scenario::Browse,
        Scenario::Cart,
        Scenario::Checkout,
        Scenario::Product,
        Scenario::Search,
        Scenario::AddToCart,
        Scenario::Get,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Browse => "browse",
            Scenario::Cart => "cart",
            Scenario::Checkout => "checkout",
            Scenario::Product => "product",
            Scenario::Search => "search",
            Scenario::AddToCart => "add-to-cart",
            Scenario::Get => "get",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Scenario::Browse => 0,
            Scenario::Cart => 1,
            Scenario::Checkout => 2,
            Scenario::Product => 3,
            Scenario::Search => 4,
            Scenario::AddToCart => 5,
            Scenario::Get => 6,
        }
    }

    /// Whether the scenario always needs a logged-in shopper of its own for the whole iteration
    /// (`get` needs one only with --auth: see [`Plan::needs_user`]).
    pub fn needs_user(self) -> bool {
        matches!(
            self,
            Scenario::Cart | Scenario::Checkout | Scenario::AddToCart
        )
    }

    /// Whether the scenario picks from the catalog (everything but `get`).
    pub fn needs_catalog(self) -> bool {
        self != Scenario::Get
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.into_iter().map(Scenario::name).collect();
                format!("unknown scenario {s:?} ({})", names.join(", "))
            })
    }
}

/// Weights of the scenarios in a mix, indexed by [`Scenario::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub weights: [u32; SCENARIOS],
}

impl Mix {
    pub fn weight(&self, scenario: Scenario) -> u32 {
        self.weights[scenario.index()]
    }

    /// Only this scenario.
    pub fn only(scenario: Scenario) -> Self {
        let mut weights = [0; SCENARIOS];
        weights[scenario.index()] = 1;
        Self { weights }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = [0u32; SCENARIOS];
        let mut seen = [false; SCENARIOS];
        for part in s.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not scenario=weight"))?;
            let scenario: Scenario = name.parse()?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("the weight of {scenario} is not a whole number"))?;
            if std::mem::replace(&mut seen[scenario.index()], true) {
                return Err(format!("{scenario} is given twice"));
            }
            weights[scenario.index()] = weight;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err("at least one scenario needs a weight above 0".into());
        }
        Ok(Self { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Scenario::ALL
            .into_iter()
            .filter(|s| self.weight(*s) > 0)
            .map(|s| format!("{s}={}", self.weight(s)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    /// The scenarios with a weight above 0.
    pub fn scenarios(&self) -> impl Iterator<Item = Scenario> + '_ {
        Scenario::ALL
            .into_iter()
            .filter(|scenario| self.weight(*scenario) > 0)
    }
}

/// Parses `1500ms`, `30s`, `5m`, `1h` or a bare number of seconds (fractions allowed).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 1500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} (ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{s:?} is out of range"))
}

/// How iterations are started.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Open loop: this many iterations per second on a fixed schedule.
    Rate(f64),
    /// Closed loop: this many workers, back to back.
    Concurrency(usize),
}

/// The checked options a run works from.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The target without a trailing slash.
    pub target: String,
    pub scenario: ScenarioChoice,
    pub mix: Mix,
    /// The path (and query) of the `get` scenario, starting with `/`.
    pub path: Option<String>,
    /// The endpoint name the `get` scenario's requests are reported under: `GET <path>`.
    pub get_endpoint: String,
    /// The `get` scenario sends a shopper's access token.
    pub auth: bool,
    /// Whether the catalog is read before the run (every scenario but `get` picks from it).
    pub needs_catalog: bool,
    pub mode: Mode,
    pub duration: Duration,
    pub warmup: Duration,
    pub users: usize,
    pub products: usize,
    pub decline_percent: u8,
    pub restock: Option<(i32, String)>,
    pub max_in_flight: usize,
    pub timeout: Duration,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub quiet: bool,
}

/// Open-loop rate when neither --rate nor --concurrency is given.
pub const DEFAULT_RATE: f64 = 10.0;

impl LoadgenArgs {
    /// Checks the options and fills in what follows from them.
    pub fn plan(&self) -> Result<Plan, Error> {
        let invalid = |option: &'static str, reason: &str| Error::Invalid {
            option,
            reason: reason.to_owned(),
        };
        let target = self.target.trim().trim_end_matches('/').to_owned();
        if !target.starts_with("http://") {
            return Err(invalid(
                "--target",
                "must be an http:// URL (the load generator speaks plain HTTP to the edge)",
            ));
        }
        let mode = match (self.rate, self.concurrency) {
            (Some(rate), _) if !(rate.is_finite() && rate > 0.0) => {
                return Err(invalid("--rate", "must be above 0"));
            }
            (Some(rate), _) => Mode::Rate(rate),
            (None, Some(0)) => return Err(invalid("--concurrency", "must be at least 1")),
            (None, Some(workers)) => Mode::Concurrency(workers),
            (None, None) => Mode::Rate(DEFAULT_RATE),
        };
        if self.duration.is_zero() {
            return Err(invalid("--duration", "must be above 0"));
        }
        let mix = match self.scenario {
            ScenarioChoice::Browse => Mix::only(Scenario::Browse),
            ScenarioChoice::Cart => Mix::only(Scenario::Cart),
            ScenarioChoice::Checkout => Mix::only(Scenario::Checkout),
            ScenarioChoice::Product => Mix::only(Scenario::Product),
            ScenarioChoice::Search => Mix::only(Scenario::Search),
            ScenarioChoice::AddToCart => Mix::only(Scenario::AddToCart),
            ScenarioChoice::Get => Mix::only(Scenario::Get),
            ScenarioChoice::Mix => self.mix,
        };
        let gets = mix.weight(Scenario::Get) > 0;
        let path = match (&self.path, gets) {
            (None, true) => return Err(invalid("--path", "the get scenario needs a path")),
            (Some(_), false) => {
                return Err(invalid("--path", "is only used by the get scenario"));
            }
            (Some(path), true)
                if !path.starts_with('/') || path.chars().any(char::is_whitespace) =>
            {
                return Err(invalid(
                    "--path",
                    "must start with / and hold no spaces (it is pasted after --target)",
                ));
            }
            (path, _) => path.clone(),
        };
        if self.auth && !gets {
            return Err(invalid("--auth", "is only used by the get scenario"));
        }
        let needs_users = mix.scenarios().any(Scenario::needs_user) || (gets && self.auth);
        if needs_users && self.users == 0 {
            return Err(invalid(
                "--users",
                "the cart, checkout and add-to-cart scenarios (and get with --auth) need at least \
                 one user",
            ));
        }
        let needs_catalog = mix.scenarios().any(Scenario::needs_catalog);
        if self.restock.is_some() && !needs_catalog {
            return Err(invalid(
                "--restock",
                "the get scenario reads no catalog to restock",
            ));
        }
        if self.products == 0 {
            return Err(invalid("--products", "must be at least 1"));
        }
        if self.max_in_flight == 0 || self.max_in_flight > u32::MAX as usize {
            return Err(invalid("--max-in-flight", "must be at least 1"));
        }
        let restock = match (self.restock, &self.admin_token) {
            (None, _) => None,
            (Some(units), _) if units < 1 => {
                return Err(invalid("--restock", "must be at least 1 unit"));
            }
            (Some(units), Some(token)) => Some((units, token.clone())),
            (Some(_), None) => return Err(invalid("--restock", "needs --admin-token")),
        };
        Ok(Plan {
            target,
            scenario: self.scenario,
            mix,
            get_endpoint: format!("GET {}", path.as_deref().unwrap_or("")),
            path,
            auth: self.auth,
            needs_catalog,
            mode,
            duration: self.duration,
            warmup: self.warmup,
            users: if needs_users { self.users } else { 0 },
            products: self.products,
            decline_percent: self.decline_percent,
            restock,
            max_in_flight: self.max_in_flight,
            timeout: self.timeout,
            json: self.json.clone(),
            svg: self.svg.clone(),
            quiet: self.quiet,
        })
    }
}

impl Plan {
    /// Whether an iteration of `scenario` needs a logged-in shopper of its own.
    pub fn needs_user(&self, scenario: Scenario) -> bool {
        scenario.needs_user() || (scenario == Scenario::Get && self.auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn a_mix_names_each_scenario_once_with_a_weight() {
        let mix: Mix = "browse=70, cart=20,checkout=10".parse().unwrap();
        assert_eq!(mix.weights[..3], [70, 20, 10]);
        assert_eq!(mix.to_string(), "browse=70,cart=20,checkout=10");
        let only: Mix = "checkout=1".parse().unwrap();
        assert_eq!(only, Mix::only(Scenario::Checkout));
        let single: Mix = "product=3,add-to-cart=1".parse().unwrap();
        assert_eq!(
            single.scenarios().collect::<Vec<_>>(),
            [Scenario::Product, Scenario::AddToCart]
        );
        assert_eq!(single.to_string(), "product=3,add-to-cart=1");
        assert!("browse=1,browse=2".parse::<Mix>().is_err());
        assert!("browse=0".parse::<Mix>().is_err());
        assert!("shop=1".parse::<Mix>().is_err());
        assert!("browse".parse::<Mix>().is_err());
    }

    #[test]
    fn the_plan_defaults_to_ten_iterations_a_second_against_the_local_edge() {
        let plan = LoadgenArgs::parse_from(["loadgen"]).plan().unwrap();
        assert_eq!(plan.target, DEFAULT_TARGET);
        assert_eq!(plan.mode, Mode::Rate(DEFAULT_RATE));
        assert_eq!(plan.mix.weights[..3], [70, 20, 10]);
        assert!(plan.needs_catalog);
        assert_eq!(plan.users, 20);

        let plan =
            LoadgenArgs::parse_from(["loadgen", "--scenario", "browse", "--concurrency", "4"])
                .plan()
                .unwrap();
        assert_eq!(plan.mode, Mode::Concurrency(4));
        assert_eq!(plan.mix, Mix::only(Scenario::Browse));
        // Browsing is anonymous: nobody is registered.
        assert_eq!(plan.users, 0);
    }

    #[test]
    fn the_get_scenario_reads_no_catalog_and_registers_only_with_auth() {
        let plan = LoadgenArgs::parse_from(["loadgen", "--scenario", "get", "--path", "/healthz"])
            .plan()
            .unwrap();
        assert_eq!(plan.mix, Mix::only(Scenario::Get));
        assert_eq!(plan.get_endpoint, "GET /healthz");
        assert!(!plan.needs_catalog);
        assert!(!plan.needs_user(Scenario::Get));
        assert_eq!(plan.users, 0);

        let plan = LoadgenArgs::parse_from([
            "loadgen",
            "--scenario",
            "get",
            "--path",
            "/api/users/me",
            "--auth",
            "--users",
            "3",
        ])
        .plan()
        .unwrap();
        assert!(plan.needs_user(Scenario::Get));
        assert_eq!(plan.users, 3);

        let plan = LoadgenArgs::parse_from(["loadgen", "--scenario", "add-to-cart"])
            .plan()
            .unwrap();
        assert!(plan.needs_catalog && plan.needs_user(Scenario::AddToCart));
        let plan = LoadgenArgs::parse_from(["loadgen", "--scenario", "product"])
            .plan()
            .unwrap();
        assert_eq!(plan.users, 0);
    }

    #[test]
    fn contradictory_or_empty_options_are_refused() {
        assert!(
            LoadgenArgs::try_parse_from(["loadgen", "--rate", "5", "--concurrency", "2"]).is_err()
        );
        assert!(LoadgenArgs::try_parse_from(["loadgen", "--restock", "5"]).is_err());
        for args in [
            &["loadgen", "--rate", "0"][..],
            &["loadgen", "--concurrency", "0"],
            &["loadgen", "--duration", "0s"],
            &["loadgen", "--target", "https://shop.example"],
            &["loadgen", "--users", "0"],
            &["loadgen", "--scenario", "get"],
            &["loadgen", "--scenario", "get", "--path", "healthz"],
            &["loadgen", "--scenario", "get", "--path", "/a b"],
            &["loadgen", "--scenario", "browse", "--path", "/healthz"],
            &["loadgen", "--scenario", "product", "--auth"],
            &[
                "loadgen",
                "--scenario",
                "get",
                "--path",
                "/me",
                "--auth",
                "--users",
                "0",
            ],
            &[
                "loadgen",
                "--scenario",
                "get",
                "--path",
                "/healthz",
                "--restock",
                "5",
                "--admin-token",
                "t",
            ],
        ] {
            assert!(LoadgenArgs::parse_from(args).plan().is_err(), "{args:?}");
        }
    }
}
