//! Before the run: the catalog the scenarios pick from (read through `GET /api/products`), stock
//! topped up when asked, and the shoppers, registered and logged in.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::Error;
use crate::config::Plan;

/// The password of every load-test shopper (it passes the user service's strength rules).
pub const PASSWORD: &str = "Loadgen-Shopper-Pass-1";

/// Requests of the set-up that run side by side (registration hashes passwords: keep it low).
const SETUP_CONCURRENCY: usize = 4;

/// Search terms when the catalog's names give none.
const FALLBACK_TERMS: [&str; 4] = ["shoes", "shirt", "lamp", "mug"];

#[derive(Clone, Debug)]
pub struct Product {
    pub id: String,
    pub sku: String,
}

/// What the scenarios pick from.
#[derive(Debug)]
pub struct Catalog {
    /// Every product read (product pages).
    pub products: Vec<Product>,
    /// Products with stock (cart and checkout).
    pub in_stock: Vec<Product>,
    /// Words of the product names (searches).
    pub terms: Vec<String>,
}

fn setup_error(step: &'static str, detail: impl Into<String>) -> Error {
    Error::Setup {
        step,
        detail: detail.into(),
    }
}

/// A set-up response: its status, its JSON body (or null) and, for error messages, the text.
struct Reply {
    status: u16,
    body: Value,
    text: String,
}

impl Reply {
    /// A short description of a failed response: its status and problem detail.
    fn describe(&self) -> String {
        let detail = self.body["detail"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| self.text.chars().take(200).collect());
        format!("status {}: {detail}", self.status)
    }
}

/// An error with its causes (reqwest's own message leaves out why, e.g. connection refused).
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn send(step: &'static str, request: reqwest::RequestBuilder) -> Result<Reply, Error> {
    let response = request
        .send()
        .await
        .map_err(|err| setup_error(step, format!("request failed: {}", with_causes(&err))))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|err| setup_error(step, format!("reading the response: {}", with_causes(&err))))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply { status, body, text })
}

impl Catalog {
    /// No catalog: the `get` scenario picks nothing from it.
    pub fn empty() -> Self {
        Self {
            products: Vec::new(),
            in_stock: Vec::new(),
            terms: Vec::new(),
        }
    }

    /// Reads up to `plan.products` active products, page by page.
    pub async fn discover(client: &reqwest::Client, plan: &Plan) -> Result<Self, Error> {
        const STEP: &str = "reading the catalog (GET /api/products)";
        let mut products = Vec::new();
        let mut in_stock = Vec::new();
        let mut terms = BTreeSet::new();
        let mut cursor: Option<String> = None;
        while products.len() < plan.products {
            let limit = (plan.products - products.len()).min(100).to_string();
            let mut query = vec![("limit", limit)];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let request = client
                .get(format!("{}/api/products", plan.target))
                .query(&query);
            let reply = send(STEP, request).await?;
            if reply.status != 200 {
                return Err(setup_error(STEP, reply.describe()));
            }
            let page = reply.body;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            for item in &items {
                let (Some(id), Some(sku)) = (item["id"].as_str(), item["sku"].as_str()) else {
                    continue;
                };
                if item["active"] == false || !item["deleted_at"].is_null() {
                    continue;
                }
                let product = Product {
                    id: id.to_owned(),
                    sku: sku.to_owned(),
                };
                if item["in_stock"] == true {
                    in_stock.push(product.clone());
                }
                products.push(product);
                if let Some(name) = item["name"].as_str() {
                    terms.extend(
                        name.split(|c: char| !c.is_alphabetic())
                            .filter(|word| word.chars().count() >= 4)
                            .map(str::to_lowercase),
                    );
                }
            }
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() || items.is_empty() {
                break;
            }
        }
        if products.is_empty() {
            return Err(setup_error(
                STEP,
                "the catalog has no products: load the demo catalog with `shopmesh seed`",
            ));
        }
        let mut terms: Vec<String> = terms.into_iter().collect();
        if terms.is_empty() {
            terms = FALLBACK_TERMS.iter().map(|t| (*t).to_owned()).collect();
        }
        Ok(Self {
            products,
            in_stock,
            terms,
        })
    }

    /// Tops the available stock of every product up to `units` (as an admin: receiving), and
    /// counts every product as in stock afterwards. Returns the units added.
    pub async fn restock(
        &mut self,
        client: &reqwest::Client,
        plan: &Plan,
        units: i32,
        admin_token: &str,
    ) -> Result<i64, Error> {
        const STEP: &str = "restocking (POST /api/admin/inventory/{sku}/adjust)";
        let semaphore = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for product in self.products.clone() {
            let client = client.clone();
            let target = plan.target.clone();
            let token = admin_token.to_owned();
            let semaphore = semaphore.clone();
            tasks.spawn(async move {
                let _permit = semaphore
                    .acquire_owned()
                    .await
                    .map_err(|_| setup_error(STEP, "stopped"))?;
                let url = format!("{target}/api/admin/inventory/{}", product.sku);
                let reply = send(STEP, client.get(&url).bearer_auth(&token)).await?;
                if reply.status != 200 {
                    return Err(setup_error(
                        STEP,
                        format!("{}: {}", product.sku, reply.describe()),
                    ));
                }
                let available = reply.body["stock"]["available"].as_i64().unwrap_or(0);
                let delta = i64::from(units) - available;
                if delta <= 0 {
                    return Ok(0);
                }
                let request = client
                    .post(format!("{url}/adjust"))
                    .bearer_auth(&token)
                    .json(&json!({
                        "delta": delta, "reason": "receiving", "note": "shopmesh loadgen --restock"
                    }));
                let reply = send(STEP, request).await?;
                if reply.status != 200 {
                    return Err(setup_error(
                        STEP,
                        format!("{}: {}", product.sku, reply.describe()),
                    ));
                }
                Ok(delta)
            });
        }
        let mut added = 0;
        while let Some(joined) = tasks.join_next().await {
            added += joined.map_err(|err| setup_error(STEP, err.to_string()))??;
        }
        self.in_stock = self.products.clone();
        Ok(added)
    }
}

/// A logged-in shopper.
#[derive(Debug)]
pub struct User {
    pub email: String,
    pub token: String,
    /// When the token must be replaced (a minute before it expires).
    pub renew_at: Instant,
    /// Items the add-to-cart scenario put in the cart since it last emptied it.
    pub cart_adds: u32,
}

/// The token and its renewal time from a login response.
pub fn token_of(body: &Value) -> Option<(String, Instant)> {
    let token = body["access_token"].as_str()?.to_owned();
    let lifetime = body["expires_in"].as_u64().unwrap_or(900);
    let renew_after = Duration::from_secs(lifetime.saturating_sub(60).max(lifetime / 2));
    Some((token, Instant::now() + renew_after))
}

pub fn login_body(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD})
}

/// Registers and logs in `plan.users` shoppers with addresses unique to this run.
pub async fn register_users(client: &reqwest::Client, plan: &Plan) -> Result<Vec<User>, Error> {
    const STEP: &str = "registering shoppers (POST /api/auth/register, /api/auth/login)";
    let run = uuid::Uuid::new_v4().simple().to_string();
    let run = run.get(..12).unwrap_or(&run).to_owned();
    let semaphore = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..plan.users {
        let client = client.clone();
        let target = plan.target.clone();
        let semaphore = semaphore.clone();
        let email = format!("loadgen-{run}-{i}@example.com");
        tasks.spawn(async move {
            let _permit = semaphore
                .acquire_owned()
                .await
                .map_err(|_| setup_error(STEP, "stopped"))?;
            let register = client
                .post(format!("{target}/api/auth/register"))
                .json(&json!({"email": email, "password": PASSWORD, "name": format!("Loadgen Shopper {i}")}));
            let reply = send(STEP, register).await?;
            if reply.status != 201 {
                return Err(setup_error(STEP, format!("{email}: {}", reply.describe())));
            }
            let login = client
                .post(format!("{target}/api/auth/login"))
                .json(&login_body(&email));
            let reply = send(STEP, login).await?;
            let Some((token, renew_at)) = token_of(&reply.body).filter(|_| reply.status == 200)
            else {
                return Err(setup_error(STEP, format!("{email}: {}", reply.describe())));
            };
            Ok(User {
                email,
                token,
                renew_at,
                cart_adds: 0,
            })
        });
    }
    let mut users = Vec::with_capacity(plan.users);
    while let Some(joined) = tasks.join_next().await {
        users.push(joined.map_err(|err| setup_error(STEP, err.to_string()))??);
    }
    Ok(users)
}

/// Shoppers lent out one iteration at a time: two iterations never share a cart.
#[derive(Debug)]
pub struct UserPool {
    free: Mutex<VecDeque<User>>,
    available: Semaphore,
}

/// A shopper lent to one iteration, returned to the pool when dropped.
pub struct Lease<'a> {
    pool: &'a UserPool,
    pub user: Option<User>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(user) = self.user.take() {
            self.pool
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(user);
            self.pool.available.add_permits(1);
        }
    }
}

impl UserPool {
    pub fn new(users: Vec<User>) -> Self {
        let available = Semaphore::new(users.len());
        Self {
            free: Mutex::new(users.into()),
            available,
        }
    }

    /// A free shopper, waiting for one if all are busy; the flag tells whether it waited.
    pub async fn lease(&self) -> Option<(Lease<'_>, bool)> {
        let (permit, waited) = match self.available.try_acquire() {
            Ok(permit) => (permit, false),
            Err(_) => (self.available.acquire().await.ok()?, true),
        };
        // The permit is given back with the user, when the lease is dropped.
        permit.forget();
        let user = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        Some((Lease { pool: self, user }, waited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str) -> User {
        User {
            email: email.into(),
            token: "t".into(),
            renew_at: Instant::now(),
            cart_adds: 0,
        }
    }

    #[tokio::test]
    async fn a_leased_shopper_is_nobody_else_s_until_returned() {
        let pool = UserPool::new(vec![user("a"), user("b")]);
        let (a, waited) = pool.lease().await.unwrap();
        assert!(!waited);
        let (b, _) = pool.lease().await.unwrap();
        assert_ne!(
            a.user.as_ref().unwrap().email,
            b.user.as_ref().unwrap().email
        );
        let third = tokio::time::timeout(Duration::from_millis(50), pool.lease()).await;
        assert!(third.is_err(), "both shoppers are busy");
        drop(a);
        let (again, waited) = pool.lease().await.unwrap();
        assert!(!waited);
        assert_eq!(again.user.as_ref().unwrap().email, "a");
    }

    #[test]
    fn tokens_are_renewed_a_minute_before_they_expire() {
        let (token, renew_at) =
            token_of(&json!({"access_token": "abc", "expires_in": 900})).unwrap();
        assert_eq!(token, "abc");
        let left = renew_at.saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_secs(840) && left > Duration::from_secs(830));
        assert!(token_of(&json!({"expires_in": 900})).is_none());
    }
}
