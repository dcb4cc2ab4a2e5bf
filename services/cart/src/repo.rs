//! Cart storage in Redis. A cart is one string key (`<prefix>user:<id>` or
//! `<prefix>anon:<uuid>`) holding JSON: the lines in first-add order and the update time. Every
//! change is one Lua script that reads, checks the caps and writes in one step, so concurrent
//! requests can never push a cart past 50 lines or a line past 99 units, and every script sets the
//! sliding TTL again. An empty cart is no key at all.
//!
//! Amounts are stored as strings: Lua's cjson writes numbers as doubles with 14 significant
//! digits, which would round large minor-unit amounts.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{Line, LineRef, MAX_LINES, MAX_QUANTITY, Money, Owner, StoredCart};

/// What AddItem did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    /// The product got a new line (`true`) or its units were added to its line (`false`).
    Added { cart: StoredCart, created: bool },
    /// The line would exceed [`MAX_QUANTITY`]; it holds this many units now.
    QuantityCap { current: i32 },
    /// The cart already holds [`MAX_LINES`] products.
    LineCap,
}

/// What UpdateItemQuantity and RemoveItem did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetOutcome {
    Changed(StoredCart),
    /// The product is not in the cart.
    Missing,
}

/// The cart store.
#[async_trait]
pub trait CartStore: Send + Sync {
    async fn ping(&self) -> anyhow::Result<()>;
    /// The cart, its TTL pushed back.
    async fn get(&self, owner: &Owner) -> anyhow::Result<StoredCart>;
    /// Adds `line.quantity` units (the snapshot replaces the line's), within the caps.
    async fn add(&self, owner: &Owner, line: &Line, now_ms: i64) -> anyhow::Result<AddOutcome>;
    /// Sets a line's quantity (0 removes it). `absent_ok` makes a missing line a no-op.
    async fn set_quantity(
        &self,
        owner: &Owner,
        line: &LineRef,
        quantity: i32,
        absent_ok: bool,
        now_ms: i64,
    ) -> anyhow::Result<SetOutcome>;
    /// Replaces the name, SKU and price snapshots of the lines of these products (quantities
    /// untouched, so a concurrent change is never lost).
    async fn reprice(&self, owner: &Owner, products: &[Line]) -> anyhow::Result<StoredCart>;
    async fn clear(&self, owner: &Owner) -> anyhow::Result<()>;
    /// Moves `from` into `into`: quantities add up (capped), lines beyond the cap are dropped,
    /// `from` is deleted.
    async fn merge(&self, into: &Owner, from: &Owner, now_ms: i64) -> anyhow::Result<StoredCart>;
    /// Takes ordered units out of the cart: each product's quantity drops by the units ordered,
    /// lines that reach 0 go.
    async fn remove_ordered(
        &self,
        owner: &Owner,
        ordered: &[(String, i32)],
        now_ms: i64,
    ) -> anyhow::Result<StoredCart>;
    /// Seconds the cart's key has left, `None` when it has none (tests, operators).
    async fn ttl(&self, owner: &Owner) -> anyhow::Result<Option<i64>>;
}

#[derive(Serialize, Deserialize)]
struct JsonLine {
    p: String,
    s: String,
    n: String,
    q: i32,
    a: String,
    c: String,
}

#[derive(Serialize, Deserialize)]
struct JsonCart {
    l: Vec<JsonLine>,
    u: String,
}

fn decode(raw: Option<String>) -> anyhow::Result<StoredCart> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(StoredCart::default());
    };
    let cart: JsonCart = serde_json::from_str(&raw)?;
    let lines = cart
        .l
        .into_iter()
        .map(|l| {
            Ok(Line {
                product_id: l.p,
                sku: l.s,
                name: l.n,
                quantity: l.q,
                unit_price: Money {
                    amount_minor: l.a.parse()?,
                    currency: l.c,
                },
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(StoredCart {
        lines,
        updated_at_ms: cart.u.parse()?,
    })
}

fn json_line(line: &Line) -> JsonLine {
    JsonLine {
        p: line.product_id.clone(),
        s: line.sku.clone(),
        n: line.name.clone(),
        q: line.quantity,
        a: line.unit_price.amount_minor.to_string(),
        c: line.unit_price.currency.clone(),
    }
}

/// Adds units to a product's line or appends a line, refusing what would pass a cap.
/// KEYS[1] cart; ARGV ttl, line JSON, now, max lines, max quantity.
const ADD: &str = r"
local raw = redis.call('GET', KEYS[1])
local cart = raw and cjson.decode(raw) or {l = {}}
local new = cjson.decode(ARGV[2])
local found = nil
for _, line in ipairs(cart.l) do
  if line.p == new.p then found = line break end
end
local created = '0'
if found then
  if found.q + new.q > tonumber(ARGV[5]) then return {'quantity', tostring(found.q)} end
  found.q = found.q + new.q
  found.s = new.s
  found.n = new.n
  found.a = new.a
  found.c = new.c
else
  if #cart.l >= tonumber(ARGV[4]) then return {'lines'} end
  table.insert(cart.l, new)
  created = '1'
end
cart.u = ARGV[3]
local encoded = cjson.encode(cart)
redis.call('SET', KEYS[1], encoded, 'EX', ARGV[1])
return {'ok', encoded, created}
";

/// Sets (0 removes) the quantity of the line named by product id or SKU.
/// KEYS[1] cart; ARGV ttl, 'p' or 's', the id or SKU, quantity, now, absent ok ('1').
const SET_QUANTITY: &str = r"
local raw = redis.call('GET', KEYS[1])
if not raw then
  if ARGV[6] == '1' then return {'ok', ''} end
  return {'missing'}
end
local cart = cjson.decode(raw)
local index = nil
for i, line in ipairs(cart.l) do
  if (ARGV[2] == 'p' and line.p == ARGV[3]) or (ARGV[2] == 's' and line.s == ARGV[3]) then
    index = i
    break
  end
end
if not index then
  if ARGV[6] == '1' then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    return {'ok', raw}
  end
  return {'missing'}
end
local quantity = tonumber(ARGV[4])
if quantity == 0 then
  table.remove(cart.l, index)
else
  cart.l[index].q = quantity
end
if #cart.l == 0 then
  redis.call('DEL', KEYS[1])
  return {'ok', ''}
end
cart.u = ARGV[5]
local encoded = cjson.encode(cart)
redis.call('SET', KEYS[1], encoded, 'EX', ARGV[1])
return {'ok', encoded}
";

/// Replaces snapshots of the listed products' lines; quantities and the update time stay.
/// KEYS[1] cart; ARGV ttl, JSON array of lines.
const REPRICE: &str = r"
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
local cart = cjson.decode(raw)
local fresh = {}
for _, line in ipairs(cjson.decode(ARGV[2])) do fresh[line.p] = line end
for _, line in ipairs(cart.l) do
  local f = fresh[line.p]
  if f then
    line.s = f.s
    line.n = f.n
    line.a = f.a
    line.c = f.c
  end
end
local encoded = cjson.encode(cart)
redis.call('SET', KEYS[1], encoded, 'EX', ARGV[1])
return encoded
";

/// Moves the anonymous cart KEYS[2] into the user's cart KEYS[1] and deletes it.
/// ARGV ttl, now, max lines, max quantity.
const MERGE: &str = r"
local anon = redis.call('GET', KEYS[2])
local raw = redis.call('GET', KEYS[1])
if not anon then
  if raw then redis.call('EXPIRE', KEYS[1], ARGV[1]) return raw end
  return ''
end
redis.call('DEL', KEYS[2])
local cart = raw and cjson.decode(raw) or {l = {}}
local index = {}
for _, line in ipairs(cart.l) do index[line.p] = line end
local max_lines = tonumber(ARGV[3])
local max_quantity = tonumber(ARGV[4])
for _, line in ipairs(cjson.decode(anon).l) do
  local existing = index[line.p]
  if existing then
    existing.q = math.min(existing.q + line.q, max_quantity)
  elseif #cart.l < max_lines then
    table.insert(cart.l, line)
    index[line.p] = line
  end
end
if #cart.l == 0 then
  redis.call('DEL', KEYS[1])
  return ''
end
cart.u = ARGV[2]
local encoded = cjson.encode(cart)
redis.call('SET', KEYS[1], encoded, 'EX', ARGV[1])
return encoded
";

/// Takes ordered units out of the cart. KEYS[1] cart; ARGV ttl, now, JSON [[product, units]].
const REMOVE_ORDERED: &str = r"
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
local cart = cjson.decode(raw)
local ordered = {}
for _, pair in ipairs(cjson.decode(ARGV[3])) do ordered[pair[1]] = pair[2] end
local kept = {}
for _, line in ipairs(cart.l) do
  local units = ordered[line.p]
  if units then line.q = line.q - units end
  if line.q > 0 then table.insert(kept, line) end
end
if #kept == 0 then
  redis.call('DEL', KEYS[1])
  return ''
end
cart.l = kept
cart.u = ARGV[2]
local encoded = cjson.encode(cart)
redis.call('SET', KEYS[1], encoded, 'EX', ARGV[1])
return encoded
";

/// [`CartStore`] in Redis.
#[derive(Clone)]
pub struct RedisCartStore {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    ttl: Duration,
}

impl RedisCartStore {
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2);
        let redis = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            redis,
            prefix: prefix.to_owned(),
            ttl,
        })
    }

    fn key(&self, owner: &Owner) -> String {
        format!("{}{}", self.prefix, owner.key_suffix())
    }

    fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }
}

#[async_trait]
impl CartStore for RedisCartStore {
    async fn ping(&self) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let _: String = redis::cmd("PING").query_async(&mut redis).await?;
        Ok(())
    }

    async fn get(&self, owner: &Owner) -> anyhow::Result<StoredCart> {
        let mut redis = self.redis.clone();
        let raw: Option<String> = redis::cmd("GETEX")
            .arg(self.key(owner))
            .arg("EX")
            .arg(self.ttl_secs())
            .query_async(&mut redis)
            .await?;
        decode(raw)
    }

    async fn add(&self, owner: &Owner, line: &Line, now_ms: i64) -> anyhow::Result<AddOutcome> {
        let mut redis = self.redis.clone();
        let reply: Vec<String> = redis::Script::new(ADD)
            .key(self.key(owner))
            .arg(self.ttl_secs())
            .arg(serde_json::to_string(&json_line(line))?)
            .arg(now_ms)
            .arg(MAX_LINES)
            .arg(MAX_QUANTITY)
            .invoke_async(&mut redis)
            .await?;
        match reply.as_slice() {
            [ok, cart, created] if ok == "ok" => Ok(AddOutcome::Added {
                cart: decode(Some(cart.clone()))?,
                created: created == "1",
            }),
            [cap, current] if cap == "quantity" => Ok(AddOutcome::QuantityCap {
                current: current.parse()?,
            }),
            [cap] if cap == "lines" => Ok(AddOutcome::LineCap),
            other => anyhow::bail!("unexpected reply of the add script: {other:?}"),
        }
    }

    async fn set_quantity(
        &self,
        owner: &Owner,
        line: &LineRef,
        quantity: i32,
        absent_ok: bool,
        now_ms: i64,
    ) -> anyhow::Result<SetOutcome> {
        let (kind, name) = match line {
            LineRef::ProductId(id) => ("p", id),
            LineRef::Sku(sku) => ("s", sku),
        };
        let mut redis = self.redis.clone();
        let reply: Vec<String> = redis::Script::new(SET_QUANTITY)
            .key(self.key(owner))
            .arg(self.ttl_secs())
            .arg(kind)
            .arg(name)
            .arg(quantity)
            .arg(now_ms)
            .arg(if absent_ok { "1" } else { "0" })
            .invoke_async(&mut redis)
            .await?;
        match reply.as_slice() {
            [ok, cart] if ok == "ok" => Ok(SetOutcome::Changed(decode(Some(cart.clone()))?)),
            [missing] if missing == "missing" => Ok(SetOutcome::Missing),
            other => anyhow::bail!("unexpected reply of the set-quantity script: {other:?}"),
        }
    }

    async fn reprice(&self, owner: &Owner, products: &[Line]) -> anyhow::Result<StoredCart> {
        let fresh: Vec<JsonLine> = products.iter().map(json_line).collect();
        let mut redis = self.redis.clone();
        let raw: String = redis::Script::new(REPRICE)
            .key(self.key(owner))
            .arg(self.ttl_secs())
            .arg(serde_json::to_string(&fresh)?)
            .invoke_async(&mut redis)
            .await?;
        decode(Some(raw))
    }

    async fn clear(&self, owner: &Owner) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(owner))
            .query_async(&mut redis)
            .await?;
        Ok(())
    }

    async fn merge(&self, into: &Owner, from: &Owner, now_ms: i64) -> anyhow::Result<StoredCart> {
        let mut redis = self.redis.clone();
        let raw: String = redis::Script::new(MERGE)
            .key(self.key(into))
            .key(self.key(from))
            .arg(self.ttl_secs())
            .arg(now_ms)
            .arg(MAX_LINES)
            .arg(MAX_QUANTITY)
            .invoke_async(&mut redis)
            .await?;
        decode(Some(raw))
    }

    async fn remove_ordered(
        &self,
        owner: &Owner,
        ordered: &[(String, i32)],
        now_ms: i64,
    ) -> anyhow::Result<StoredCart> {
        let mut redis = self.redis.clone();
        let raw: String = redis::Script::new(REMOVE_ORDERED)
            .key(self.key(owner))
            .arg(self.ttl_secs())
            .arg(now_ms)
            .arg(serde_json::to_string(ordered)?)
            .invoke_async(&mut redis)
            .await?;
        decode(Some(raw))
    }

    async fn ttl(&self, owner: &Owner) -> anyhow::Result<Option<i64>> {
        let mut redis = self.redis.clone();
        let ttl: i64 = redis::cmd("TTL")
            .arg(self.key(owner))
            .query_async(&mut redis)
            .await?;
        Ok((ttl >= 0).then_some(ttl))
    }
}
