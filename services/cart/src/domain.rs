//! Plain domain types of the cart service, validated by parsing. Generated protobuf types are
//! converted into these at the gRPC edge.

use shopmesh_platform::problem::{FieldError, field_error};
use uuid::Uuid;

/// Products (lines) a cart may hold. Enforced inside the Redis scripts, so concurrent adds
/// cannot exceed it.
pub const MAX_LINES: usize = 50;

/// Units of one product a line may hold.
pub const MAX_QUANTITY: i32 = 99;

/// Longest idempotency key a checkout accepts.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Whose cart: a user's (from the verified access token) or an anonymous one (named by the
/// UUID the client chose and sends as `x-shopmesh-cart-id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    User(String),
    Anonymous(Uuid),
}

impl Owner {
    /// The part of the Redis key after the prefix. User ids and UUIDs never contain `:`, so the
    /// two kinds cannot collide.
    pub fn key_suffix(&self) -> String {
        match self {
            Owner::User(id) => format!("user:{id}"),
            Owner::Anonymous(id) => format!("anon:{}", id.hyphenated()),
        }
    }

    /// The user id a cart reports: empty for an anonymous cart.
    pub fn user_id(&self) -> &str {
        match self {
            Owner::User(id) => id,
            Owner::Anonymous(_) => "",
        }
    }
}

/// An anonymous cart id: a UUID (any version), as the client chose it.
pub fn anonymous_cart_id(field: &str, raw: &str) -> Result<Uuid, FieldError> {
    Uuid::parse_str(raw.trim()).map_err(|_| field_error(field, "must be a UUID"))
}

/// The units an AddItem asks for: 0 means 1, otherwise 1 to 99.
pub fn add_quantity(raw: i32) -> Result<i32, FieldError> {
    match raw {
        0 => Ok(1),
        1..=MAX_QUANTITY => Ok(raw),
        _ => Err(quantity_range()),
    }
}

/// The quantity an UpdateItemQuantity sets: 0 (removes the line) to 99.
pub fn set_quantity(raw: i32) -> Result<i32, FieldError> {
    if (0..=MAX_QUANTITY).contains(&raw) {
        Ok(raw)
    } else {
        Err(quantity_range())
    }
}

fn quantity_range() -> FieldError {
    field_error("quantity", format!("must be between 0 and {MAX_QUANTITY}"))
}

/// A SKU as the catalog stores it: trimmed and upper case (the catalog parses it strictly; the
/// cart only needs the same spelling to match its lines).
pub fn normalize_sku(raw: &str) -> String {
    raw.trim().to_ascii_uppercase()
}

/// How a request names a line: by product id, or by SKU when the product id is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineRef {
    ProductId(String),
    Sku(String),
}

impl LineRef {
    /// The product id if given, else the SKU; INVALID_ARGUMENT on `sku` when neither is.
    pub fn parse(product_id: &str, sku: &str) -> Result<Self, FieldError> {
        let product_id = product_id.trim();
        if !product_id.is_empty() {
            return Ok(Self::ProductId(product_id.to_owned()));
        }
        let sku = normalize_sku(sku);
        if sku.is_empty() {
            return Err(field_error("sku", "is required (or name the product_id)"));
        }
        Ok(Self::Sku(sku))
    }
}

/// A checkout's idempotency key: 1 to 128 printable ASCII characters (space to tilde).
pub fn idempotency_key(raw: &str) -> Result<String, FieldError> {
    let printable = raw.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY || !printable {
        return Err(field_error(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
        ));
    }
    Ok(raw.to_owned())
}

/// An amount of money in minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

/// One stored line: the product, its SKU, the units and the last price/name snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price: Money,
}

/// A stored cart: lines in first-add order and when it last changed (Unix milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredCart {
    pub lines: Vec<Line>,
    pub updated_at_ms: i64,
}

/// The catalog's current view of a product, for pricing a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogProduct {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub active: bool,
}

/// A line as shown: priced from the catalog when available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedLine {
    pub line: Line,
    pub line_total: Money,
    pub available: bool,
}

/// The sum of the available lines and of all quantities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Totals {
    pub total: Money,
    pub item_count: i32,
}

/// Why a cart's totals cannot be computed (neither happens with a single-currency catalog).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TotalsError {
    #[error("the cart total overflows")]
    Overflow,
    #[error("the cart mixes currencies {0} and {1}")]
    MixedCurrencies(String, String),
}

/// Prices `lines` with the catalog's products: available lines take the current name and
/// price; a product that is inactive, deleted or unknown keeps its last snapshot and is
/// marked unavailable.
pub fn price_lines(
    lines: &[Line],
    catalog: &std::collections::HashMap<String, CatalogProduct>,
) -> Result<Vec<PricedLine>, TotalsError> {
    lines
        .iter()
        .map(|line| {
            let mut line = line.clone();
            let available = match catalog.get(&line.product_id) {
                Some(product) if product.active => {
                    line.name = product.name.clone();
                    line.sku = product.sku.clone();
                    line.unit_price = product.price.clone();
                    true
                }
                _ => false,
            };
            let amount = line
                .unit_price
                .amount_minor
                .checked_mul(i64::from(line.quantity))
                .ok_or(TotalsError::Overflow)?;
            Ok(PricedLine {
                line_total: Money {
                    amount_minor: amount,
                    currency: line.unit_price.currency.clone(),
                },
                line,
                available,
            })
        })
        .collect()
}

/// The total of the available lines (in their currency; the first line's when none is
/// available) and the sum of every quantity.
pub fn totals(lines: &[PricedLine]) -> Result<Totals, TotalsError> {
    let currency = lines
        .iter()
        .find(|l| l.available)
        .or_else(|| lines.first())
        .map(|l| l.line.unit_price.currency.clone())
        .unwrap_or_default();
    let mut amount: i64 = 0;
    let mut item_count: i32 = 0;
    for line in lines {
        item_count = item_count
            .checked_add(line.line.quantity)
            .ok_or(TotalsError::Overflow)?;
        if !line.available {
            continue;
        }
        if line.line_total.currency != currency {
            return Err(TotalsError::MixedCurrencies(
                currency,
                line.line_total.currency.clone(),
            ));
        }
        amount = amount
            .checked_add(line.line_total.amount_minor)
            .ok_or(TotalsError::Overflow)?;
    }
    Ok(Totals {
        total: Money {
            amount_minor: amount,
            currency,
        },
        item_count,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn usd(amount_minor: i64) -> Money {
        Money {
            amount_minor,
            currency: "USD".into(),
        }
    }

    fn line(id: &str, quantity: i32, price: i64) -> Line {
        Line {
            product_id: id.into(),
            sku: format!("SKU-{id}"),
            name: format!("old {id}"),
            quantity,
            unit_price: usd(price),
        }
    }

    #[test]
    fn quantities_are_bounded() {
        assert_eq!(add_quantity(0).unwrap(), 1);
        assert_eq!(add_quantity(99).unwrap(), 99);
        assert!(add_quantity(100).is_err());
        assert!(add_quantity(-1).is_err());
        assert_eq!(set_quantity(0).unwrap(), 0);
        assert!(set_quantity(100).is_err());
        assert!(set_quantity(-5).is_err());
    }

    #[test]
    fn idempotency_keys_are_printable_ascii() {
        assert!(idempotency_key("").is_err());
        assert!(idempotency_key(&"k".repeat(129)).is_err());
        assert!(idempotency_key("tab\there").is_err());
        assert!(idempotency_key("clé").is_err());
        assert_eq!(idempotency_key(&"k".repeat(128)).unwrap().len(), 128);
        assert_eq!(idempotency_key("order 42 ~!").unwrap(), "order 42 ~!");
    }

    #[test]
    fn lines_are_named_by_product_id_or_sku() {
        assert_eq!(
            LineRef::parse(" p1 ", "ignored").unwrap(),
            LineRef::ProductId("p1".into())
        );
        assert_eq!(
            LineRef::parse("", " tee-1 ").unwrap(),
            LineRef::Sku("TEE-1".into())
        );
        assert_eq!(LineRef::parse("", " ").unwrap_err().field, "sku");
    }

    #[test]
    fn owners_have_distinct_keys() {
        let id = Uuid::nil();
        assert_eq!(Owner::User("u1".into()).key_suffix(), "user:u1");
        assert_eq!(
            Owner::Anonymous(id).key_suffix(),
            "anon:00000000-0000-0000-0000-000000000000"
        );
        assert!(anonymous_cart_id("x", "not-a-uuid").is_err());
    }

    #[test]
    fn unavailable_lines_keep_their_snapshot_and_are_left_out_of_the_total() {
        let catalog = HashMap::from([
            (
                "a".to_owned(),
                CatalogProduct {
                    id: "a".into(),
                    sku: "SKU-A".into(),
                    name: "new a".into(),
                    price: usd(250),
                    active: true,
                },
            ),
            (
                "b".to_owned(),
                CatalogProduct {
                    id: "b".into(),
                    sku: "SKU-B".into(),
                    name: "new b".into(),
                    price: usd(999),
                    active: false,
                },
            ),
        ]);
        let priced = price_lines(
            &[line("a", 2, 100), line("b", 1, 500), line("gone", 3, 10)],
            &catalog,
        )
        .unwrap();
        assert!(priced[0].available);
        assert_eq!(priced[0].line.name, "new a");
        assert_eq!(priced[0].line_total, usd(500));
        assert!(!priced[1].available);
        assert_eq!(priced[1].line.unit_price, usd(500));
        assert_eq!(priced[1].line.name, "old b");
        assert!(!priced[2].available);
        let totals = totals(&priced).unwrap();
        assert_eq!(totals.total, usd(500));
        assert_eq!(totals.item_count, 6);
    }

    #[test]
    fn totals_use_checked_arithmetic() {
        let priced = price_lines(&[line("a", 99, i64::MAX / 2)], &HashMap::new());
        assert_eq!(priced.unwrap_err(), TotalsError::Overflow);
    }
}
