//! The gRPC adapter: decodes requests, finds whose cart it is, calls the use case and encodes
//! the answer. No rules live here.

use std::sync::Arc;

use shopmesh_contracts::pb::shopmesh::cart::v1 as pb;
use shopmesh_contracts::pb::shopmesh::cart::v1::cart_service_server::CartService as CartRpc;
use shopmesh_contracts::pb::shopmesh::common::v1 as common;
use shopmesh_platform::grpc::{CallContext, identity};
use shopmesh_platform::time::timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{self, LineRef, Money, Owner, PricedLine};
use crate::error::Error;
use crate::service::{CartService, CartView, CheckoutInput, ShippingChoice};

/// Metadata naming the anonymous cart of a caller without an access token.
pub const CART_ID: &str = "x-shopmesh-cart-id";

/// The CartService gRPC server.
pub struct CartGrpc {
    service: Arc<CartService>,
}

impl CartGrpc {
    pub fn new(service: Arc<CartService>) -> Self {
        Self { service }
    }
}

/// Whose cart a call acts on: the verified user's, else the anonymous cart named by
/// [`CART_ID`]; UNAUTHENTICATED with neither.
pub fn owner<T>(request: &Request<T>) -> Result<Owner, Error> {
    if let Ok(user) = identity(request) {
        return Ok(Owner::User(user.user_id));
    }
    let Some(value) = request.metadata().get(CART_ID) else {
        return Err(Error::Unauthenticated(
            "an access token or an x-shopmesh-cart-id is required",
        ));
    };
    let raw = value
        .to_str()
        .map_err(|_| Error::field(CART_ID, "must be a UUID"))?;
    Ok(Owner::Anonymous(domain::anonymous_cart_id(CART_ID, raw)?))
}

fn money(m: &Money) -> common::Money {
    common::Money {
        amount_minor: m.amount_minor,
        currency: m.currency.clone(),
    }
}

fn item(line: &PricedLine) -> pb::CartItem {
    pb::CartItem {
        product_id: line.line.product_id.clone(),
        sku: line.line.sku.clone(),
        name: line.line.name.clone(),
        quantity: line.line.quantity,
        unit_price: Some(money(&line.line.unit_price)),
        line_total: Some(money(&line.line_total)),
        available: line.available,
    }
}

/// The wire form of a cart.
pub fn cart_pb(view: &CartView) -> pb::Cart {
    pb::Cart {
        user_id: view.user_id.clone(),
        items: view.lines.iter().map(item).collect(),
        total: Some(money(&view.totals.total)),
        item_count: view.totals.item_count,
        expire_time: view.expires_at.map(timestamp),
        update_time: view.updated_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl CartRpc for CartGrpc {
    async fn get_cart(
        &self,
        request: Request<pb::GetCartRequest>,
    ) -> Result<Response<pb::GetCartResponse>, Status> {
        let owner = owner(&request)?;
        let ctx = CallContext::from_request(&request);
        let view = self.service.get(&owner, &ctx).await?;
        Ok(Response::new(pb::GetCartResponse {
            cart: Some(cart_pb(&view)),
        }))
    }

    async fn add_item(
        &self,
        request: Request<pb::AddItemRequest>,
    ) -> Result<Response<pb::AddItemResponse>, Status> {
        let owner = owner(&request)?;
        let ctx = CallContext::from_request(&request);
        let message = request.into_inner();
        let line = LineRef::parse(&message.product_id, &message.sku).map_err(Error::from)?;
        let (view, created) = self
            .service
            .add(&owner, line, message.quantity, &ctx)
            .await?;
        Ok(Response::new(pb::AddItemResponse {
            cart: Some(cart_pb(&view)),
            created,
        }))
    }

    async fn update_item_quantity(
        &self,
        request: Request<pb::UpdateItemQuantityRequest>,
    ) -> Result<Response<pb::UpdateItemQuantityResponse>, Status> {
        let owner = owner(&request)?;
        let ctx = CallContext::from_request(&request);
        let message = request.into_inner();
        let line = LineRef::parse(&message.product_id, &message.sku).map_err(Error::from)?;
        let view = self
            .service
            .set_quantity(&owner, line, message.quantity, &ctx)
            .await?;
        Ok(Response::new(pb::UpdateItemQuantityResponse {
            cart: Some(cart_pb(&view)),
        }))
    }

    async fn remove_item(
        &self,
        request: Request<pb::RemoveItemRequest>,
    ) -> Result<Response<pb::RemoveItemResponse>, Status> {
        let owner = owner(&request)?;
        let ctx = CallContext::from_request(&request);
        let message = request.into_inner();
        let line = LineRef::parse(&message.product_id, &message.sku).map_err(Error::from)?;
        let view = self.service.remove(&owner, line, &ctx).await?;
        Ok(Response::new(pb::RemoveItemResponse {
            cart: Some(cart_pb(&view)),
        }))
    }

    async fn clear_cart(
        &self,
        request: Request<pb::ClearCartRequest>,
    ) -> Result<Response<pb::ClearCartResponse>, Status> {
        let owner = owner(&request)?;
        let view = self.service.clear(&owner).await?;
        Ok(Response::new(pb::ClearCartResponse {
            cart: Some(cart_pb(&view)),
        }))
    }

    async fn merge_cart(
        &self,
        request: Request<pb::MergeCartRequest>,
    ) -> Result<Response<pb::MergeCartResponse>, Status> {
        let user = identity(&request)?;
        let ctx = CallContext::from_request(&request);
        let anonymous =
            domain::anonymous_cart_id("anonymous_cart_id", &request.get_ref().anonymous_cart_id)
                .map_err(Error::from)?;
        let view = self
            .service
            .merge(&Owner::User(user.user_id), anonymous, &ctx)
            .await?;
        Ok(Response::new(pb::MergeCartResponse {
            cart: Some(cart_pb(&view)),
        }))
    }

    async fn checkout(
        &self,
        request: Request<pb::CheckoutRequest>,
    ) -> Result<Response<pb::CheckoutResponse>, Status> {
        let caller = identity(&request)?;
        let ctx = CallContext::from_request(&request);
        let message = request.into_inner();
        let shipping = match message.shipping_address {
            Some(pb::checkout_request::ShippingAddress::AddressId(id)) => ShippingChoice::Saved(id),
            Some(pb::checkout_request::ShippingAddress::Address(address)) => {
                ShippingChoice::Inline(address)
            }
            None => ShippingChoice::Missing,
        };
        let order = self
            .service
            .checkout(
                &caller,
                CheckoutInput {
                    idempotency_key: message.idempotency_key,
                    shipping,
                    payment_method_token: message.payment_method_token,
                },
                &ctx,
            )
            .await?;
        Ok(Response::new(pb::CheckoutResponse { order: Some(order) }))
    }
}
