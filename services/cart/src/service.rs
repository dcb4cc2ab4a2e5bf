//! The cart use cases, one method per RPC. Prices always come from the catalog
//! (ProductService) when a cart is read or changed, never from the client; the lines' snapshots
//! are what Checkout sends to the order service as the prices the customer saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shopmesh_contracts::pb::shopmesh::common::v1 as common;
use shopmesh_contracts::pb::shopmesh::order::v1 as order_pb;
use shopmesh_contracts::pb::shopmesh::order::v1::order_service_client::OrderServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1 as product_pb;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_contracts::user as user_pb;
use shopmesh_contracts::user::user_service_client::UserServiceClient;
use shopmesh_platform::address::validate_postal_address;
use shopmesh_platform::auth::{Identity, Tier};
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::grpc::CallContext;
use shopmesh_platform::problem::{FieldError, field_error};
use tonic::Code;
use uuid::Uuid;

use crate::domain::{
    self, CatalogProduct, Line, LineRef, MAX_LINES, MAX_QUANTITY, Money, Owner, PricedLine,
    StoredCart, Totals,
};
use crate::error::Error;
use crate::repo::{AddOutcome, CartStore, SetOutcome};

/// A cart as the caller sees it: priced lines, totals and its times.
#[derive(Clone, Debug)]
pub struct CartView {
    pub user_id: String,
    pub lines: Vec<PricedLine>,
    pub totals: Totals,
    /// Unset for an empty cart (it has no key to expire).
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Where a checkout ships to.
#[derive(Clone, Debug)]
pub enum ShippingChoice {
    /// An address of the caller's address book.
    Saved(String),
    /// An address for this order only, not validated yet.
    Inline(common::PostalAddress),
    Missing,
}

/// A validated shipping choice.
enum Destination {
    Saved(String),
    Inline(common::PostalAddress),
}

/// A checkout as the caller asked for it.
#[derive(Clone, Debug)]
pub struct CheckoutInput {
    pub idempotency_key: String,
    pub shipping: ShippingChoice,
    pub payment_method_token: String,
}

/// The peers the cart calls, each over the mesh's resilient channel signed as `cart`.
#[derive(Clone)]
pub struct Peers {
    pub products: ProductServiceClient<MeshChannel>,
    pub users: UserServiceClient<MeshChannel>,
    pub orders: OrderServiceClient<MeshChannel>,
}

/// The cart use cases over a store and the peers.
pub struct CartService {
    store: Arc<dyn CartStore>,
    peers: Peers,
    ttl: Duration,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn money(m: Option<common::Money>) -> Money {
    let m = m.unwrap_or_default();
    Money {
        amount_minor: m.amount_minor,
        currency: m.currency,
    }
}

fn catalog_product(p: product_pb::Product) -> CatalogProduct {
    CatalogProduct {
        id: p.id,
        sku: p.sku,
        name: p.name,
        price: money(p.price),
        // A soft-deleted product is inactive too; both cannot be bought.
        active: p.active && p.delete_time.is_none(),
    }
}

impl CartService {
    pub fn new(store: Arc<dyn CartStore>, peers: Peers, ttl: Duration) -> Self {
        Self { store, peers, ttl }
    }

    pub async fn ready(&self) -> anyhow::Result<()> {
        self.store.ping().await
    }

    /// Seconds the owner's cart key has left (for tests and operators).
    pub async fn ttl_of(&self, owner: &Owner) -> anyhow::Result<Option<i64>> {
        self.store.ttl(owner).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn get(&self, owner: &Owner, ctx: &CallContext) -> Result<CartView, Error> {
        let stored = self.store.get(owner).await?;
        self.priced(owner, stored, ctx).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn add(
        &self,
        owner: &Owner,
        line: LineRef,
        quantity: i32,
        ctx: &CallContext,
    ) -> Result<(CartView, bool), Error> {
        let quantity = domain::add_quantity(quantity)?;
        let product = self.resolve(&line, ctx).await?;
        if !product.active {
            return Err(Error::FailedPrecondition(format!(
                "product {} is not available",
                product.sku
            )));
        }
        let line = Line {
            product_id: product.id.clone(),
            sku: product.sku.clone(),
            name: product.name.clone(),
            quantity,
            unit_price: product.price.clone(),
        };
        match self.store.add(owner, &line, now_ms()).await? {
            // The product was read from the catalog a moment ago, for this request: only the
            // cart's other lines need reading (none, for a cart of one product).
            AddOutcome::Added { cart, created } => Ok((
                self.priced_knowing(owner, cart, ctx, Some(product)).await?,
                created,
            )),
            AddOutcome::QuantityCap { current } => Err(Error::FailedPrecondition(format!(
                "a line holds at most {MAX_QUANTITY} units; this one holds {current}"
            ))),
            AddOutcome::LineCap => Err(Error::FailedPrecondition(format!(
                "a cart holds at most {MAX_LINES} products"
            ))),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn set_quantity(
        &self,
        owner: &Owner,
        line: LineRef,
        quantity: i32,
        ctx: &CallContext,
    ) -> Result<CartView, Error> {
        let quantity = domain::set_quantity(quantity)?;
        match self
            .store
            .set_quantity(owner, &line, quantity, false, now_ms())
            .await?
        {
            SetOutcome::Changed(cart) => self.priced(owner, cart, ctx).await,
            SetOutcome::Missing => Err(Error::NotFound("the product is not in the cart".into())),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn remove(
        &self,
        owner: &Owner,
        line: LineRef,
        ctx: &CallContext,
    ) -> Result<CartView, Error> {
        match self
            .store
            .set_quantity(owner, &line, 0, true, now_ms())
            .await?
        {
            SetOutcome::Changed(cart) => self.priced(owner, cart, ctx).await,
            SetOutcome::Missing => self.get(owner, ctx).await,
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn clear(&self, owner: &Owner) -> Result<CartView, Error> {
        self.store.clear(owner).await?;
        self.view(owner, Vec::new(), None)
    }

    #[tracing::instrument(skip_all)]
    pub async fn merge(
        &self,
        user: &Owner,
        anonymous: Uuid,
        ctx: &CallContext,
    ) -> Result<CartView, Error> {
        let cart = self
            .store
            .merge(user, &Owner::Anonymous(anonymous), now_ms())
            .await?;
        self.priced(user, cart, ctx).await
    }

    /// Validates the request, resolves the address, and asks the order service to place the
    /// order with the cart's lines at their snapshot prices. An empty cart still goes to the
    /// order service: a known idempotency key returns its order there even after the cart was
    /// cleared.
    #[tracing::instrument(skip_all)]
    pub async fn checkout(
        &self,
        caller: &Identity,
        input: CheckoutInput,
        ctx: &CallContext,
    ) -> Result<order_pb::Order, Error> {
        let mut errors: Vec<FieldError> = Vec::new();
        let key = match domain::idempotency_key(&input.idempotency_key) {
            Ok(key) => Some(key),
            Err(err) => {
                errors.push(err);
                None
            }
        };
        let destination = match input.shipping {
            ShippingChoice::Inline(address) => match validate_postal_address(&address) {
                Ok(valid) => Some(Destination::Inline(valid)),
                Err(more) => {
                    errors.extend(more);
                    None
                }
            },
            ShippingChoice::Saved(id) if id.trim().is_empty() => {
                errors.push(field_error("address_id", "must not be empty"));
                None
            }
            ShippingChoice::Saved(id) => Some(Destination::Saved(id.trim().to_owned())),
            ShippingChoice::Missing => {
                errors.push(field_error(
                    "shipping_address",
                    "is required: name an address_id or give an address",
                ));
                None
            }
        };
        if input.payment_method_token.trim().is_empty() {
            errors.push(field_error("payment_method_token", "is required"));
        }
        let (Some(key), Some(destination), true) = (key, destination, errors.is_empty()) else {
            return Err(Error::Invalid(errors));
        };
        let address = match destination {
            Destination::Inline(address) => address,
            Destination::Saved(id) => self.saved_address(&id, ctx).await?,
        };

        let owner = Owner::User(caller.user_id.clone());
        let cart = self.store.get(&owner).await?;
        self.ensure_available(&cart, ctx).await?;
        let lines: Vec<order_pb::PlaceOrderLine> = cart
            .lines
            .iter()
            .map(|line| order_pb::PlaceOrderLine {
                product_id: line.product_id.clone(),
                quantity: line.quantity,
                expected_unit_price: Some(common::Money {
                    amount_minor: line.unit_price.amount_minor,
                    currency: line.unit_price.currency.clone(),
                }),
            })
            .collect();
        let tier = match caller.tier {
            Tier::Standard => user_pb::Tier::Standard,
            Tier::Vip => user_pb::Tier::Vip,
        };
        let request = ctx.request(order_pb::PlaceOrderRequest {
            idempotency_key: key,
            user_id: caller.user_id.clone(),
            tier: tier.into(),
            lines,
            shipping_address: Some(address),
            payment_method_token: input.payment_method_token,
        });
        let order = match self.peers.orders.clone().place_order(request).await {
            Ok(response) => response
                .into_inner()
                .order
                .ok_or_else(|| anyhow::anyhow!("the order service answered without an order"))?,
            Err(status) if cart.lines.is_empty() && status.code() == Code::InvalidArgument => {
                return Err(Error::FailedPrecondition("the cart is empty".into()));
            }
            Err(status) => return Err(Error::from_peer("order", status)),
        };
        if order.status() != order_pb::OrderStatus::Cancelled {
            // Only what was ordered leaves the cart: units added meanwhile stay, and a replayed
            // key whose order holds other products does not empty a new cart.
            let sent: HashMap<&str, i32> = cart
                .lines
                .iter()
                .map(|l| (l.product_id.as_str(), l.quantity))
                .collect();
            let ordered: Vec<(String, i32)> = order
                .lines
                .iter()
                .filter(|l| sent.contains_key(l.product_id.as_str()))
                .map(|l| (l.product_id.clone(), l.quantity))
                .collect();
            if let Err(err) = self.store.remove_ordered(&owner, &ordered, now_ms()).await {
                // The order exists; a cart left full is an annoyance, not a failed checkout.
                tracing::warn!(error = %err, order_id = %order.id, "could not clear the cart after checkout");
            }
        }
        Ok(order)
    }

    /// FAILED_PRECONDITION naming the SKUs of lines whose product can no longer be bought. The
    /// snapshots are not touched: the prices sent to the order service stay the ones the
    /// customer was shown.
    async fn ensure_available(&self, cart: &StoredCart, ctx: &CallContext) -> Result<(), Error> {
        let ids: Vec<String> = cart.lines.iter().map(|l| l.product_id.clone()).collect();
        let catalog = self.catalog(&ids, ctx).await?;
        let unavailable: Vec<&str> = cart
            .lines
            .iter()
            .filter(|l| !catalog.get(&l.product_id).is_some_and(|p| p.active))
            .map(|l| l.sku.as_str())
            .collect();
        if unavailable.is_empty() {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(format!(
                "the cart holds products that are no longer available ({}); remove them to check out",
                unavailable.join(", ")
            )))
        }
    }

    /// An address of the caller's address book, as the user service lists it for the caller.
    async fn saved_address(
        &self,
        id: &str,
        ctx: &CallContext,
    ) -> Result<common::PostalAddress, Error> {
        let addresses = self
            .peers
            .users
            .clone()
            .list_addresses(ctx.request(user_pb::ListAddressesRequest {}))
            .await
            .map_err(|status| Error::from_peer("user", status))?
            .into_inner()
            .addresses;
        let address = addresses
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| Error::NotFound("address not found".into()))?;
        Ok(common::PostalAddress {
            recipient: address.recipient,
            line1: address.line1,
            line2: address.line2,
            city: address.city,
            region: address.region,
            postal_code: address.postal_code,
            country: address.country,
            phone: address.phone,
        })
    }

    /// The catalog's product for a line reference: NOT_FOUND when there is none.
    async fn resolve(&self, line: &LineRef, ctx: &CallContext) -> Result<CatalogProduct, Error> {
        let mut products = self.peers.products.clone();
        match line {
            LineRef::ProductId(id) => self
                .catalog(std::slice::from_ref(id), ctx)
                .await?
                .remove(id)
                .ok_or_else(|| Error::NotFound(format!("product {id} not found"))),
            LineRef::Sku(sku) => {
                let response = products
                    .get_product_by_sku(
                        ctx.request(product_pb::GetProductBySkuRequest { sku: sku.clone() }),
                    )
                    .await;
                match response {
                    Ok(response) => response
                        .into_inner()
                        .product
                        .map(catalog_product)
                        .ok_or_else(|| Error::NotFound(format!("no product has SKU {sku}"))),
                    Err(status) if status.code() == Code::NotFound => {
                        Err(Error::NotFound(format!("no product has SKU {sku}")))
                    }
                    Err(status) => Err(Error::from_peer("product", status)),
                }
            }
        }
    }

    /// The catalog's current products with these ids; unknown ids are simply absent.
    async fn catalog(
        &self,
        ids: &[String],
        ctx: &CallContext,
    ) -> Result<HashMap<String, CatalogProduct>, Error> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let response = self
            .peers
            .products
            .clone()
            .batch_get_products(ctx.request(product_pb::BatchGetProductsRequest {
                product_ids: ids.to_vec(),
            }))
            .await
            .map_err(|status| Error::from_peer("product", status))?
            .into_inner();
        Ok(response
            .products
            .into_iter()
            .map(|p| (p.id.clone(), catalog_product(p)))
            .collect())
    }

    /// Prices a stored cart from the catalog and keeps the fresh snapshots.
    async fn priced(
        &self,
        owner: &Owner,
        stored: StoredCart,
        ctx: &CallContext,
    ) -> Result<CartView, Error> {
        self.priced_knowing(owner, stored, ctx, None).await
    }

    /// [`Self::priced`], with `known` a product this request has just read from the catalog
    /// (it is not read again).
    async fn priced_knowing(
        &self,
        owner: &Owner,
        stored: StoredCart,
        ctx: &CallContext,
        known: Option<CatalogProduct>,
    ) -> Result<CartView, Error> {
        if stored.lines.is_empty() {
            return self.view(owner, Vec::new(), None);
        }
        let ids: Vec<String> = stored
            .lines
            .iter()
            .map(|l| l.product_id.clone())
            .filter(|id| known.as_ref().is_none_or(|known| known.id != *id))
            .collect();
        let mut catalog = self.catalog(&ids, ctx).await?;
        if let Some(known) = known {
            catalog.insert(known.id.clone(), known);
        }
        let priced = domain::price_lines(&stored.lines, &catalog)
            .map_err(|err| Error::Internal(anyhow::Error::new(err)))?;
        let changed: Vec<Line> = priced
            .iter()
            .zip(&stored.lines)
            .filter(|(p, old)| p.available && p.line != **old)
            .map(|(p, _)| p.line.clone())
            .collect();
        if !changed.is_empty() {
            self.store.reprice(owner, &changed).await?;
        }
        let updated = DateTime::from_timestamp_millis(stored.updated_at_ms);
        self.view(owner, priced, updated)
    }

    fn view(
        &self,
        owner: &Owner,
        lines: Vec<PricedLine>,
        updated_at: Option<DateTime<Utc>>,
    ) -> Result<CartView, Error> {
        let totals =
            domain::totals(&lines).map_err(|err| Error::Internal(anyhow::Error::new(err)))?;
        let expires_at = if lines.is_empty() {
            None
        } else {
            chrono::Duration::from_std(self.ttl)
                .ok()
                .and_then(|ttl| Utc::now().checked_add_signed(ttl))
        };
        Ok(CartView {
            user_id: owner.user_id().to_owned(),
            lines,
            totals,
            expires_at,
            updated_at,
        })
    }
}
