//! The scenarios, as a shopper would call the REST edge, and the iteration context that
//! measures and records each request.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use crate::config::Scenario;
use crate::runner::Shared;
use crate::setup::{Product, User, login_body, token_of};
use crate::stats::IO_ERROR;

/// Endpoint names of the report: method and path template.
pub const SEARCH: &str = "GET /api/products?q=";
pub const PRODUCT: &str = "GET /api/products/{id}";
pub const ADD_ITEM: &str = "POST /api/cart/items";
pub const UPDATE_ITEM: &str = "PATCH /api/cart/items/{sku}";
pub const VIEW_CART: &str = "GET /api/cart";
pub const EMPTY_CART: &str = "DELETE /api/cart";
pub const CHECKOUT: &str = "POST /api/cart/checkout";
pub const LOGIN: &str = "POST /api/auth/login";

/// The test card that pays, and the one that is declined (see the payment service's provider).
pub const CARD_OK: &str = "4242424242424242";
pub const CARD_DECLINED: &str = "4000000000000002";

/// Product pages a browsing iteration opens after its search.
const PAGES_PER_BROWSE: usize = 2;

/// Items the add-to-cart scenario puts in one shopper's cart before emptying it, below the
/// cart's caps (50 lines, 99 units a line) whatever the products drawn.
pub const ADDS_PER_CART: u32 = 40;

/// One iteration of a scenario: measures each request and records it (unless in the warm-up).
pub struct Iteration<'a> {
    shared: &'a Shared,
    scenario: Scenario,
    /// What the next request's latency is measured from. For the first request it is the
    /// iteration's scheduled start, so that a late start (a stalled generator, a full
    /// in-flight limit, a wait for a free shopper) counts as latency instead of vanishing.
    pending_since: Option<Instant>,
    record: bool,
}

/// Why an iteration failed: the endpoint and the label of the request that failed.
pub type Failure = String;

fn expect_success(status: u16, _: &Value) -> Result<(), String> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

fn pick<T: Clone>(items: &[T]) -> Option<T> {
    items.choose(&mut rand::thread_rng()).cloned()
}

/// One or two different products with stock.
fn pick_lines(in_stock: &[Product], most: usize) -> Vec<Product> {
    let mut rng = rand::thread_rng();
    let count = rng.gen_range(1..=most.max(1));
    in_stock.choose_multiple(&mut rng, count).cloned().collect()
}

impl<'a> Iteration<'a> {
    pub fn new(shared: &'a Shared, scenario: Scenario, scheduled: Instant, record: bool) -> Self {
        Self {
            shared,
            scenario,
            pending_since: Some(scheduled),
            record,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.shared.plan.target)
    }

    /// Sends one request and records it under `endpoint`; `judge` decides, from the status and
    /// the JSON body, whether it succeeded (`Err` gives the failure's label).
    async fn call(
        &mut self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
        judge: impl FnOnce(u16, &Value) -> Result<(), String>,
    ) -> Result<Value, Failure> {
        self.send(endpoint, request, true, judge).await
    }

    /// As [`Self::call`]; `parse` false leaves the body unparsed (the judge sees null), which
    /// keeps the generator's own work per request small in the single-request scenarios.
    async fn send(
        &mut self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
        parse: bool,
        judge: impl FnOnce(u16, &Value) -> Result<(), String>,
    ) -> Result<Value, Failure> {
        let start = self.pending_since.take().unwrap_or_else(Instant::now);
        let response = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let latency = start.elapsed();
        let outcome = match response {
            Err(_) => Err(IO_ERROR.to_owned()),
            Ok((status, body)) => {
                let body = if parse {
                    serde_json::from_slice(&body).unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                judge(status, &body).map(|()| body)
            }
        };
        if self.record {
            let label = outcome.as_ref().map(|_| ()).map_err(String::as_str);
            self.shared
                .stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .request(self.scenario, endpoint, latency, label);
        }
        outcome.map_err(|label| format!("{endpoint} {label}"))
    }

    /// A request expected to answer 2xx.
    async fn expect(
        &mut self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, Failure> {
        self.call(endpoint, request, expect_success).await
    }

    /// A request expected to answer 2xx, whose body is read but not parsed.
    async fn expect_status(
        &mut self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(), Failure> {
        self.send(endpoint, request, false, expect_success)
            .await
            .map(drop)
    }

    /// Logs the shopper in again once the access token is about to expire.
    async fn renew(&mut self, user: &mut User) -> Result<(), Failure> {
        if Instant::now() < user.renew_at {
            return Ok(());
        }
        let request = self
            .shared
            .client
            .post(self.url("/api/auth/login"))
            .json(&login_body(&user.email));
        let body = self.expect(LOGIN, request).await?;
        let (token, renew_at) =
            token_of(&body).ok_or_else(|| format!("{LOGIN} no access_token"))?;
        user.token = token;
        user.renew_at = renew_at;
        Ok(())
    }

    async fn add_item(&mut self, user: &User, sku: &str, quantity: u32) -> Result<(), Failure> {
        let request = self
            .shared
            .client
            .post(self.url("/api/cart/items"))
            .bearer_auth(&user.token)
            .json(&json!({"sku": sku, "quantity": quantity}));
        self.expect(ADD_ITEM, request).await.map(drop)
    }

    async fn empty_cart(&mut self, user: &User) -> Result<(), Failure> {
        let request = self
            .shared
            .client
            .delete(self.url("/api/cart"))
            .bearer_auth(&user.token);
        self.expect(EMPTY_CART, request).await.map(drop)
    }

    /// A search, then a few product pages (from the results when there are any).
    pub async fn browse(&mut self) -> Result<(), Failure> {
        let catalog = &self.shared.catalog;
        let term = pick(&catalog.terms).unwrap_or_default();
        let request = self.shared.client.get(self.url("/api/products")).query(&[
            ("q", term.as_str()),
            ("sort", "relevance"),
            ("limit", "20"),
        ]);
        let results = self.expect(SEARCH, request).await?;
        let found: Vec<String> = results["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for _ in 0..PAGES_PER_BROWSE {
            let Some(id) = pick(&found).or_else(|| pick(&catalog.products).map(|p| p.id)) else {
                break;
            };
            let request = self
                .shared
                .client
                .get(self.url(&format!("/api/products/{id}")));
            self.expect(PRODUCT, request).await?;
        }
        Ok(())
    }

    /// One product page: the products read, in rotation (`--products 1` keeps to one).
    pub async fn product_page(&mut self) -> Result<(), Failure> {
        let shared = self.shared;
        let products = &shared.catalog.products;
        let Some(product) = products.get(shared.next_index(false, products.len())) else {
            return Err(format!("{PRODUCT} no product"));
        };
        let request = shared
            .client
            .get(self.url(&format!("/api/products/{}", product.id)));
        self.expect_status(PRODUCT, request).await
    }

    /// One search, as the browse scenario makes it, the terms in rotation.
    pub async fn search(&mut self) -> Result<(), Failure> {
        let shared = self.shared;
        let terms = &shared.catalog.terms;
        let term = terms
            .get(shared.next_index(true, terms.len()))
            .map_or("", String::as_str);
        let request = shared.client.get(self.url("/api/products")).query(&[
            ("q", term),
            ("sort", "relevance"),
            ("limit", "20"),
        ]);
        self.expect_status(SEARCH, request).await
    }

    /// One unit of a product with stock (in rotation) into the shopper's cart; every
    /// [`ADDS_PER_CART`] adds the cart is emptied (reported as its own endpoint), so that it
    /// never reaches the cart's caps.
    pub async fn add_to_cart(&mut self, user: &mut User) -> Result<(), Failure> {
        self.renew(user).await?;
        let shared = self.shared;
        let in_stock = &shared.catalog.in_stock;
        let Some(product) = in_stock.get(shared.next_index(false, in_stock.len())) else {
            return Err(format!("{ADD_ITEM} no product in stock"));
        };
        let added = self.add_item(user, &product.sku, 1).await;
        user.cart_adds += 1;
        if user.cart_adds >= ADDS_PER_CART {
            user.cart_adds = 0;
            return added.and(self.empty_cart(user).await);
        }
        added
    }

    /// One GET of --path, with the shopper's access token when there is a shopper (--auth).
    pub async fn get(&mut self, user: Option<&mut User>) -> Result<(), Failure> {
        let shared = self.shared;
        let endpoint = shared.plan.get_endpoint.as_str();
        let Some(url) = shared.get_url.clone() else {
            return Err(format!("{endpoint} no --path"));
        };
        let mut request = shared.client.get(url);
        if let Some(user) = user {
            self.renew(user).await?;
            request = request.bearer_auth(&user.token);
        }
        self.expect_status(endpoint, request).await
    }

    /// Adds two products, changes the quantity of the first, looks at the cart and empties it
    /// (an abandoned cart), so the shopper's cart stays small run after run.
    pub async fn cart(&mut self, user: &mut User) -> Result<(), Failure> {
        self.renew(user).await?;
        let lines = pick_lines(&self.shared.catalog.in_stock, 2);
        let steps = async {
            let (first_quantity, new_quantity) = {
                let mut rng = rand::thread_rng();
                (rng.gen_range(1..=3), rng.gen_range(1..=5))
            };
            let mut quantity = first_quantity;
            for line in &lines {
                self.add_item(user, &line.sku, quantity).await?;
                quantity = 1;
            }
            if let Some(first) = lines.first() {
                let request = self
                    .shared
                    .client
                    .patch(self.url(&format!("/api/cart/items/{}", first.sku)))
                    .bearer_auth(&user.token)
                    .json(&json!({"quantity": new_quantity}));
                self.expect(UPDATE_ITEM, request).await?;
            }
            let request = self
                .shared
                .client
                .get(self.url("/api/cart"))
                .bearer_auth(&user.token);
            self.expect(VIEW_CART, request).await?;
            Ok::<(), Failure>(())
        }
        .await;
        // Empty the cart either way: the next iteration of this shopper starts afresh.
        let emptied = self.empty_cart(user).await;
        steps.and(emptied)
    }

    /// Puts one or two products in the cart and checks out with a fresh Idempotency-Key and a
    /// test card; the order must come back PAID (or, with the declining card used on purpose,
    /// CANCELLED for PAYMENT_FAILED).
    pub async fn checkout(&mut self, user: &mut User, decline: bool) -> Result<(), Failure> {
        self.renew(user).await?;
        let lines = pick_lines(&self.shared.catalog.in_stock, 2);
        let placed = async {
            for line in &lines {
                self.add_item(user, &line.sku, 1).await?;
            }
            let card = if decline { CARD_DECLINED } else { CARD_OK };
            let request = self
                .shared
                .client
                .post(self.url("/api/cart/checkout"))
                .bearer_auth(&user.token)
                .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                .json(&json!({
                    "shipping_address": {
                        "recipient": "Loadgen Shopper", "line1": "1 Load Street",
                        "city": "Springfield", "postal_code": "12345", "country": "US"
                    },
                    "payment": {"card_number": card, "exp_month": 12, "exp_year": 2035, "cvc": "123"}
                }));
            self.call(CHECKOUT, request, |status, order| {
                expect_success(status, order)?;
                let outcome = (
                    order["status"].as_str().unwrap_or(""),
                    order["cancellation_reason"].as_str().unwrap_or(""),
                );
                match (decline, outcome) {
                    (false, ("PAID", _)) | (true, ("CANCELLED", "PAYMENT_FAILED")) => Ok(()),
                    (_, (status_name, reason)) => {
                        Err(format!("{status} {status_name} {reason}").trim_end().to_owned())
                    }
                }
            })
            .await
            .map(drop)
        }
        .await;
        if placed.is_ok() && self.record {
            let stats = &mut *self
                .shared
                .stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if decline {
                stats.declined += 1;
            } else {
                stats.paid += 1;
            }
        }
        if placed.is_ok() && !decline {
            // A paid order empties the cart itself.
            return Ok(());
        }
        // A declined or failed checkout keeps the cart (so another card could be tried):
        // empty it so that the shopper's next iteration starts afresh.
        let emptied = self.empty_cart(user).await;
        placed.and(emptied)
    }
}

/// Runs one iteration of `scenario` scheduled for `scheduled`, and records it when `record`.
pub async fn run_iteration(shared: &Shared, scenario: Scenario, scheduled: Instant, record: bool) {
    let lag = scheduled.elapsed();
    if record {
        let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        shared
            .max_start_lag_micros
            .fetch_max(micros, Ordering::Relaxed);
    }
    let mut iteration = Iteration::new(shared, scenario, scheduled, record);
    let mut lease = None;
    if shared.plan.needs_user(scenario)
        && let Some((leased, waited)) = shared.users.lease().await
    {
        if waited && record {
            shared.user_waits.fetch_add(1, Ordering::Relaxed);
        }
        lease = Some(leased);
    }
    let user = lease.as_mut().and_then(|lease| lease.user.as_mut());
    let no_shopper = || Err("no shopper available".to_owned());
    let outcome = match (scenario, user) {
        (Scenario::Browse, _) => iteration.browse().await,
        (Scenario::Product, _) => iteration.product_page().await,
        (Scenario::Search, _) => iteration.search().await,
        (Scenario::Get, None) if shared.plan.auth => no_shopper(),
        (Scenario::Get, user) => iteration.get(user).await,
        (Scenario::Cart, Some(user)) => iteration.cart(user).await,
        (Scenario::Checkout, Some(user)) => {
            let decline = shared.next_checkout_declines();
            iteration.checkout(user, decline).await
        }
        (Scenario::AddToCart, Some(user)) => iteration.add_to_cart(user).await,
        (Scenario::Cart | Scenario::Checkout | Scenario::AddToCart, None) => no_shopper(),
    };
    // The shopper is free for the next iteration as soon as its requests are done.
    drop(lease);
    if record {
        let ended = Instant::now();
        shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iteration(
                scenario,
                ended.saturating_duration_since(scheduled),
                ended,
                outcome.err(),
            );
    }
}
