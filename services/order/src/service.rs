//! The order use cases behind the gRPC adapter: placing an order (and waiting for its saga),
//! reading and listing with ownership, cancelling, fulfilment status changes, admin refunds and
//! watching. Customers only ever see their own orders: another user's order is NOT_FOUND.

use std::sync::Arc;
use std::time::Duration;

use shopmesh_contracts::pb::shopmesh::common::v1::{Money, PostalAddress};
use shopmesh_contracts::pb::shopmesh::order::v1 as pb;
use shopmesh_contracts::pb::shopmesh::order::v1::{CancellationReason, OrderStatus, SagaStep};
use shopmesh_contracts::pb::shopmesh::payment::v1 as payment_pb;
use shopmesh_contracts::pb::shopmesh::payment::v1::payment_service_client::PaymentServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1 as product_pb;
use shopmesh_contracts::pb::shopmesh::product::v1::product_service_client::ProductServiceClient;
use shopmesh_platform::auth::Identity;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::grpc::CallContext;
use shopmesh_platform::problem::field_error;
use shopmesh_platform::status::{internal, invalid_input};
use shopmesh_platform::time::timestamp;
use shopmesh_platform::{cursor, page};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::domain::{self, RequestedLine, can_transition, idempotency_key, status_name};
use crate::repo::{FullOrder, Inserted, LineRow, NewOrder, StatusChange, StoredAddress};
use crate::saga::Saga;

const SERVICE: &str = "order";

fn db(err: anyhow::Error) -> Status {
    internal(SERVICE, &err)
}

fn status_of(full: &FullOrder) -> OrderStatus {
    OrderStatus::try_from(i32::from(full.order.status)).unwrap_or(OrderStatus::Unspecified)
}

/// The x-request-id of the call, the correlation id of the events it causes; empty without one.
fn correlation_id(ctx: &CallContext) -> String {
    ctx.request_id.clone().unwrap_or_default()
}

fn i16_of(status: OrderStatus) -> i16 {
    i16::try_from(status as i32).unwrap_or(0)
}

/// The order as the contract shows it.
pub fn to_pb(full: FullOrder) -> pb::Order {
    let o = full.order;
    let money = |amount_minor: i64| Money {
        amount_minor,
        currency: o.currency.clone(),
    };
    pb::Order {
        id: o.id.to_string(),
        user_id: o.user_id.clone(),
        tier: i32::from(o.tier),
        status: i32::from(o.status),
        lines: full
            .lines
            .into_iter()
            .map(|l| pb::OrderLine {
                line_total: Some(money(
                    l.unit_price_minor.saturating_mul(i64::from(l.quantity)),
                )),
                unit_price: Some(money(l.unit_price_minor)),
                product_id: l.product_id,
                sku: l.sku,
                product_name: l.product_name,
                quantity: l.quantity,
            })
            .collect(),
        total: Some(money(o.total_minor)),
        refunded_total: Some(money(o.refunded_minor)),
        shipping_address: Some(o.shipping_address.0.clone().into()),
        payment_id: o.payment_id.clone(),
        shipment_id: o.shipment_id.clone(),
        cancellation_reason: if o.status == i16_of(OrderStatus::Cancelled) {
            i32::from(o.cancellation_reason)
        } else {
            0
        },
        cancellation_note: if o.status == i16_of(OrderStatus::Cancelled) {
            o.cancellation_note.clone()
        } else {
            String::new()
        },
        saga_step: i32::from(o.saga_step),
        status_history: full
            .history
            .into_iter()
            .map(|h| pb::OrderStatusChange {
                from_status: i32::from(h.from_status),
                to_status: i32::from(h.to_status),
                change_time: Some(timestamp(h.changed_at)),
                actor_id: h.actor_id,
                note: h.note,
            })
            .collect(),
        create_time: Some(timestamp(o.created_at)),
        update_time: Some(timestamp(o.updated_at)),
    }
}

fn check_address(address: Option<PostalAddress>) -> Result<PostalAddress, Status> {
    let Some(address) = address else {
        return Err(invalid_input(&[field_error(
            "shipping_address",
            "is required",
        )]));
    };
    let mut errors = Vec::new();
    for (field, value, max) in [
        ("shipping_address.recipient", &address.recipient, 200),
        ("shipping_address.line1", &address.line1, 200),
        ("shipping_address.city", &address.city, 100),
        ("shipping_address.postal_code", &address.postal_code, 20),
    ] {
        if let Err(err) = shopmesh_platform::text::required_text(field, value, max) {
            errors.push(err);
        }
    }
    for (field, value, max) in [
        ("shipping_address.line2", &address.line2, 200),
        ("shipping_address.region", &address.region, 100),
        ("shipping_address.phone", &address.phone, 40),
    ] {
        if let Err(err) = shopmesh_platform::text::optional_text(field, value, max) {
            errors.push(err);
        }
    }
    if address.country.len() != 2 || !address.country.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.push(field_error(
            "shipping_address.country",
            "must be an ISO 3166-1 alpha-2 code",
        ));
    }
    if errors.is_empty() {
        Ok(address)
    } else {
        Err(invalid_input(&errors))
    }
}

pub struct OrderService {
    saga: Arc<Saga>,
    catalog: ProductServiceClient<MeshChannel>,
    payment: PaymentServiceClient<MeshChannel>,
}

impl OrderService {
    pub fn new(
        saga: Arc<Saga>,
        catalog: ProductServiceClient<MeshChannel>,
        payment: PaymentServiceClient<MeshChannel>,
    ) -> Self {
        Self {
            saga,
            catalog,
            payment,
        }
    }

    pub async fn ready(&self) -> anyhow::Result<()> {
        self.saga.repo().ping().await
    }

    async fn load(&self, id: Uuid) -> Result<Option<FullOrder>, Status> {
        self.saga.repo().load(id).await.map_err(db)
    }

    /// The order `raw_id` if the caller may see it.
    async fn visible(&self, caller: &Identity, raw_id: &str) -> Result<FullOrder, Status> {
        let not_found = || Status::not_found("no such order");
        let id = Uuid::parse_str(raw_id).map_err(|_| not_found())?;
        let full = self.load(id).await?.ok_or_else(not_found)?;
        if caller.is_admin() || full.order.user_id == caller.user_id {
            Ok(full)
        } else {
            Err(not_found())
        }
    }

    /// Waits until the order leaves CREATED (or its saga finishes), at most `budget`.
    async fn settle(&self, id: Uuid, budget: Duration) -> Result<FullOrder, Status> {
        let until = tokio::time::Instant::now() + budget;
        loop {
            let full = self
                .load(id)
                .await?
                .ok_or_else(|| Status::not_found("no such order"))?;
            let step = SagaStep::try_from(i32::from(full.order.saga_step))
                .unwrap_or(SagaStep::Unspecified);
            let settled = domain::saga_finished(step)
                || (status_of(&full) != OrderStatus::Created && step != SagaStep::CancelShipment);
            if settled || tokio::time::Instant::now() >= until {
                return Ok(full);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What is left of the caller's deadline for waiting, keeping a margin to answer in.
    fn wait_budget(&self, ctx: &CallContext) -> Duration {
        let mut budget = self.saga.config().wait;
        if let Some(deadline) = ctx.deadline {
            budget = budget.min(
                deadline
                    .remaining()
                    .saturating_sub(Duration::from_millis(300)),
            );
        }
        budget
    }

    /// Runs the saga of `id` (this caller holds its lease) and waits for it within the budget;
    /// the saga goes on in the background when the budget runs out.
    async fn run_and_wait(&self, id: Uuid, lease_held: bool, budget: Duration) {
        let run = tokio::spawn(self.saga.clone().run(id, lease_held));
        let _ = tokio::time::timeout(budget, run).await;
    }

    pub async fn place(
        &self,
        ctx: CallContext,
        req: pb::PlaceOrderRequest,
    ) -> Result<pb::Order, Status> {
        let key = idempotency_key("idempotency_key", &req.idempotency_key)
            .map_err(|err| invalid_input(&[err]))?;
        if req.user_id.is_empty() {
            return Err(invalid_input(&[field_error("user_id", "is required")]));
        }
        let budget = self.wait_budget(&ctx);
        // The key first: a known key is its order whatever the rest of the request says.
        if let Some(id) = self
            .saga
            .repo()
            .find_by_key(&req.user_id, &key)
            .await
            .map_err(db)?
        {
            return Ok(to_pb(self.settle(id, budget).await?));
        }
        let requested: Vec<RequestedLine> = req
            .lines
            .iter()
            .map(|l| {
                let price = l.expected_unit_price.clone().unwrap_or_default();
                RequestedLine {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    expected_minor: price.amount_minor,
                    expected_currency: price.currency,
                }
            })
            .collect();
        domain::check_lines(&requested).map_err(|errors| invalid_input(&errors))?;
        let address = check_address(req.shipping_address)?;
        if req.payment_method_token.is_empty() || req.payment_method_token.len() > 256 {
            return Err(invalid_input(&[field_error(
                "payment_method_token",
                "is required (at most 256 characters)",
            )]));
        }
        let lines = self.priced_lines(&ctx, &requested).await?;
        let currency = requested
            .first()
            .map(|l| l.expected_currency.clone())
            .unwrap_or_default();
        let total = domain::total(lines.iter().map(|l| (l.unit_price_minor, l.quantity)))
            .filter(|t| *t <= 1_000_000_000_000)
            .ok_or_else(|| Status::failed_precondition("the order total is too large"))?;
        let tier = i16::try_from(req.tier).unwrap_or(0);
        let inserted = self
            .saga
            .repo()
            .insert(
                NewOrder {
                    user_id: req.user_id.clone(),
                    tier,
                    idempotency_key: key,
                    currency,
                    total_minor: total,
                    address: StoredAddress::from(address),
                    payment_method_token: req.payment_method_token,
                    lines,
                    first_step: i16::try_from(SagaStep::ReserveStock as i32).unwrap_or(1),
                    lease: self.saga.config().lease,
                    correlation_id: correlation_id(&ctx),
                },
                self.saga.config().max_held_units,
            )
            .await
            .map_err(db)?;
        match inserted {
            Inserted::Existing(id) => Ok(to_pb(self.settle(id, budget).await?)),
            Inserted::OverHeldLimit(held) => Err(Status::failed_precondition(format!(
                "{held} units are held in checkouts still being placed; at most {} may be",
                self.saga.config().max_held_units
            ))),
            Inserted::Created(id) => {
                let started = tokio::time::Instant::now();
                self.run_and_wait(id, true, budget).await;
                // Another driver may have taken the saga over (a lease that ran out): wait for
                // the order to settle within what is left of the budget either way.
                let full = self
                    .settle(id, budget.saturating_sub(started.elapsed()))
                    .await?;
                let unavailable = status_of(&full) == OrderStatus::Cancelled
                    && full.order.cancellation_reason
                        == i16::try_from(CancellationReason::ServiceUnavailable as i32)
                            .unwrap_or(6);
                if unavailable {
                    let mut status = Status::unavailable(format!(
                        "checkout could not be completed: {}; order {} was cancelled and \
                         its stock released, and any charge is refunded",
                        full.order.cancellation_note, full.order.id
                    ));
                    status
                        .metadata_mut()
                        .insert("retry-after", tonic::metadata::MetadataValue::from(2u32));
                    return Err(status);
                }
                Ok(to_pb(full))
            }
        }
    }

    /// The requested lines with the catalog's names and current prices; FAILED_PRECONDITION when
    /// a product is unknown, inactive or its price changed.
    async fn priced_lines(
        &self,
        ctx: &CallContext,
        requested: &[RequestedLine],
    ) -> Result<Vec<LineRow>, Status> {
        let mut catalog = self.catalog.clone();
        let mut request = ctx.request(product_pb::BatchGetProductsRequest {
            product_ids: requested.iter().map(|l| l.product_id.clone()).collect(),
        });
        request.set_timeout(self.saga.config().call_timeout);
        let found = catalog
            .batch_get_products(request)
            .await
            .map_err(|status| match status.code() {
                Code::InvalidArgument | Code::NotFound => Status::failed_precondition(format!(
                    "the order names an unknown product: {}",
                    status.message()
                )),
                _ => status,
            })?
            .into_inner();
        let mut lines = Vec::with_capacity(requested.len());
        for line in requested {
            let Some(product) = found.products.iter().find(|p| p.id == line.product_id) else {
                return Err(Status::failed_precondition(format!(
                    "product {} does not exist",
                    line.product_id
                )));
            };
            if !product.active {
                return Err(Status::failed_precondition(format!(
                    "product {} ({}) is no longer sold",
                    product.sku, product.name
                )));
            }
            let price = product.price.clone().unwrap_or_default();
            if price.amount_minor != line.expected_minor || price.currency != line.expected_currency
            {
                return Err(Status::failed_precondition(format!(
                    "the price of {} changed to {} {} minor units; review the cart",
                    product.sku, price.amount_minor, price.currency
                )));
            }
            lines.push(LineRow {
                product_id: product.id.clone(),
                sku: product.sku.clone(),
                product_name: product.name.clone(),
                unit_price_minor: price.amount_minor,
                quantity: line.quantity,
            });
        }
        Ok(lines)
    }

    pub async fn get(&self, caller: &Identity, order_id: &str) -> Result<pb::Order, Status> {
        Ok(to_pb(self.visible(caller, order_id).await?))
    }

    pub async fn list(
        &self,
        caller: &Identity,
        req: pb::ListOrdersRequest,
    ) -> Result<pb::ListOrdersResponse, Status> {
        let user = if caller.is_admin() {
            (!req.user_id.is_empty()).then_some(req.user_id.clone())
        } else if req.user_id.is_empty() || req.user_id == caller.user_id {
            Some(caller.user_id.clone())
        } else {
            return Err(Status::permission_denied(
                "a customer may only list their own orders",
            ));
        };
        let size = page::page_size(req.page_size).ok_or_else(|| {
            invalid_input(&[field_error("page_size", "must be between 0 and 100")])
        })?;
        let status = match OrderStatus::try_from(req.status) {
            Ok(OrderStatus::Unspecified) => None,
            Ok(s) => Some(i16_of(s)),
            Err(_) => return Err(invalid_input(&[field_error("status", "is not a status")])),
        };
        let filter = format!("{}|{}", user.as_deref().unwrap_or("*"), req.status);
        let after = if req.page_token.is_empty() {
            None
        } else {
            // A malformed cursor is a bad request (400 at the edge), not a field error.
            let bad = || Status::invalid_argument("the page token is not a token of this list");
            let parts = cursor::decode(&req.page_token, 3).ok_or_else(bad)?;
            if parts[0] != filter {
                return Err(bad());
            }
            let time = chrono::DateTime::parse_from_rfc3339(&parts[1])
                .map_err(|_| bad())?
                .with_timezone(&chrono::Utc);
            let id = Uuid::parse_str(&parts[2]).map_err(|_| bad())?;
            Some((time, id))
        };
        let limit = i64::try_from(size).unwrap_or(20);
        let ids = self
            .saga
            .repo()
            .list(user.as_deref(), status, after, limit + 1)
            .await
            .map_err(db)?;
        let more = ids.len() > size;
        let mut orders = Vec::with_capacity(size);
        for id in ids.into_iter().take(size) {
            if let Some(full) = self.load(id).await? {
                orders.push(full);
            }
        }
        let next_page_token = match orders.last() {
            Some(last) if more => cursor::encode(&[
                &filter,
                &last
                    .order
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                &last.order.id.to_string(),
            ]),
            _ => String::new(),
        };
        Ok(pb::ListOrdersResponse {
            orders: orders.into_iter().map(to_pb).collect(),
            next_page_token,
        })
    }

    pub async fn cancel(
        &self,
        ctx: CallContext,
        caller: &Identity,
        req: pb::CancelOrderRequest,
    ) -> Result<pb::Order, Status> {
        let note = shopmesh_platform::text::optional_text("reason", &req.reason, 500)
            .map_err(|err| invalid_input(&[err]))?;
        let full = self.visible(caller, &req.order_id).await?;
        let id = full.order.id;
        let reason = if caller.is_admin() {
            CancellationReason::AdminRequested
        } else {
            CancellationReason::CustomerRequested
        };
        let reason = i16::try_from(reason as i32).unwrap_or(0);
        let budget = self.wait_budget(&ctx);
        let mut full = full;
        if status_of(&full) == OrderStatus::Created {
            self.saga
                .repo()
                .request_cancel(id, &caller.user_id, &note, reason, &correlation_id(&ctx))
                .await
                .map_err(db)?;
            self.run_and_wait(id, false, budget).await;
            full = self.settle(id, budget).await?;
        }
        match status_of(&full) {
            OrderStatus::Cancelled => Ok(to_pb(full)),
            OrderStatus::Paid => {
                let step = SagaStep::try_from(i32::from(full.order.saga_step))
                    .unwrap_or(SagaStep::Unspecified);
                if step != SagaStep::Completed && step != SagaStep::CancelShipment {
                    // The shipment is still being created; the saga finishes it in moments.
                    full = self.settle_saga(id, budget).await?;
                }
                let started = self
                    .saga
                    .repo()
                    .begin_paid_cancel(
                        id,
                        &caller.user_id,
                        &note,
                        reason,
                        i16::try_from(SagaStep::CancelShipment as i32).unwrap_or(9),
                        &correlation_id(&ctx),
                    )
                    .await
                    .map_err(db)?;
                if !started && status_of(&full) == OrderStatus::Paid {
                    let current = self
                        .load(id)
                        .await?
                        .ok_or_else(|| Status::not_found("no such order"))?;
                    if current.order.saga_step
                        != i16::try_from(SagaStep::CancelShipment as i32).unwrap_or(9)
                    {
                        return Err(Status::unavailable(
                            "the order is still being prepared; try again in a moment",
                        ));
                    }
                }
                self.run_and_wait(id, false, budget).await;
                let after = self.settle(id, budget).await?;
                match status_of(&after) {
                    OrderStatus::Cancelled => Ok(to_pb(after)),
                    OrderStatus::Paid
                        if after.order.saga_step
                            == i16::try_from(SagaStep::CancelShipment as i32).unwrap_or(9) =>
                    {
                        // Still stopping the shipment (delivery slow): it goes on.
                        Ok(to_pb(after))
                    }
                    s => Err(Status::failed_precondition(format!(
                        "the order is {} and can no longer be cancelled: its shipment has left",
                        status_name(s)
                    ))),
                }
            }
            s => Err(Status::failed_precondition(format!(
                "an order that is {} can no longer be cancelled",
                status_name(s)
            ))),
        }
    }

    /// Waits until the saga itself has finished, at most `budget`.
    async fn settle_saga(&self, id: Uuid, budget: Duration) -> Result<FullOrder, Status> {
        let until = tokio::time::Instant::now() + budget;
        loop {
            let full = self
                .load(id)
                .await?
                .ok_or_else(|| Status::not_found("no such order"))?;
            let step = SagaStep::try_from(i32::from(full.order.saga_step))
                .unwrap_or(SagaStep::Unspecified);
            if domain::saga_finished(step) || tokio::time::Instant::now() >= until {
                return Ok(full);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// PAID -> SHIPPED -> COMPLETED by an admin or the delivery service. Setting the status the
    /// order already has (or has passed along fulfilment) changes nothing and succeeds.
    /// `correlation_id` is the request's x-request-id, for the event of the change.
    pub async fn update_status(
        &self,
        actor: &str,
        correlation_id: &str,
        req: pb::UpdateOrderStatusRequest,
    ) -> Result<pb::Order, Status> {
        let to = OrderStatus::try_from(req.status).unwrap_or(OrderStatus::Unspecified);
        if !matches!(to, OrderStatus::Shipped | OrderStatus::Completed) {
            return Err(Status::failed_precondition(
                "only SHIPPED and COMPLETED can be set by hand; PAID comes from checkout, \
                 CANCELLED from CancelOrder and REFUNDED from a full refund",
            ));
        }
        let note = shopmesh_platform::text::optional_text("note", &req.note, 500)
            .map_err(|err| invalid_input(&[err]))?;
        let id = Uuid::parse_str(&req.order_id).map_err(|_| Status::not_found("no such order"))?;
        let full = self
            .load(id)
            .await?
            .ok_or_else(|| Status::not_found("no such order"))?;
        let current = status_of(&full);
        let rank = |s: OrderStatus| match s {
            OrderStatus::Paid => 1,
            OrderStatus::Shipped => 2,
            OrderStatus::Completed => 3,
            _ => 0,
        };
        if rank(current) >= rank(to) && rank(current) > 0 {
            return Ok(to_pb(full));
        }
        if !can_transition(current, to) {
            return Err(Status::failed_precondition(format!(
                "an order that is {} cannot become {}",
                status_name(current),
                status_name(to)
            )));
        }
        let applied = self
            .saga
            .repo()
            .set_status(
                id,
                &StatusChange {
                    from: if to == OrderStatus::Shipped {
                        &[2]
                    } else {
                        &[3]
                    },
                    to: i16_of(to),
                    actor_id: actor.to_owned(),
                    note,
                    reason: None,
                    correlation_id: correlation_id.to_owned(),
                },
            )
            .await
            .map_err(db)?;
        let after = self
            .load(id)
            .await?
            .ok_or_else(|| Status::not_found("no such order"))?;
        if !applied && rank(status_of(&after)) < rank(to) {
            return Err(Status::failed_precondition(format!(
                "the order became {} meanwhile",
                status_name(status_of(&after))
            )));
        }
        Ok(to_pb(after))
    }

    pub async fn refund(
        &self,
        ctx: CallContext,
        caller: &Identity,
        req: pb::RefundOrderRequest,
    ) -> Result<pb::Order, Status> {
        let key = idempotency_key("idempotency_key", &req.idempotency_key)
            .map_err(|err| invalid_input(&[err]))?;
        let note = shopmesh_platform::text::optional_text("note", &req.note, 500)
            .map_err(|err| invalid_input(&[err]))?;
        let full = self.visible(caller, &req.order_id).await?;
        if full.order.payment_id.is_empty()
            || !matches!(
                status_of(&full),
                OrderStatus::Paid
                    | OrderStatus::Shipped
                    | OrderStatus::Completed
                    | OrderStatus::Refunded
            )
        {
            return Err(Status::failed_precondition(format!(
                "an order that is {} has no payment to refund",
                status_name(status_of(&full))
            )));
        }
        if let Some(amount) = &req.amount {
            if amount.currency != full.order.currency {
                return Err(invalid_input(&[field_error(
                    "amount.currency",
                    format!("must be the order's currency {}", full.order.currency),
                )]));
            }
            if amount.amount_minor <= 0 {
                return Err(invalid_input(&[field_error(
                    "amount.amount_minor",
                    "must be positive",
                )]));
            }
        }
        let mut payment = self.payment.clone();
        let mut request = ctx.request(payment_pb::RefundRequest {
            payment_id: full.order.payment_id.clone(),
            amount: req.amount,
            reason: payment_pb::RefundReason::CustomerRequest as i32,
            note: note.clone(),
            idempotency_key: format!("admin:{}:{key}", full.order.id),
        });
        request.set_timeout(self.saga.config().call_timeout);
        let response = payment.refund(request).await?.into_inner();
        if let Some(refund) = &response.refund
            && refund.status == payment_pb::RefundStatus::Failed as i32
        {
            return Err(Status::failed_precondition(format!(
                "the refund failed: {}",
                refund.failure_message
            )));
        }
        let refunded = response
            .payment
            .and_then(|p| p.refunded_amount)
            .map_or(0, |m| m.amount_minor);
        self.saga
            .repo()
            .record_refund(
                full.order.id,
                refunded,
                &caller.user_id,
                &note,
                &correlation_id(&ctx),
            )
            .await
            .map_err(db)?;
        let after = self
            .load(full.order.id)
            .await?
            .ok_or_else(|| Status::not_found("no such order"))?;
        Ok(to_pb(after))
    }

    /// The order and then every change of it, until it reaches CANCELLED, COMPLETED or
    /// REFUNDED (polling the database, so a change made by any instance is seen).
    pub async fn watch(
        self: Arc<Self>,
        caller: &Identity,
        order_id: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<pb::WatchOrderResponse, Status>>, Status> {
        let first = self.visible(caller, order_id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let id = first.order.id;
            let mut seen_update = first.order.updated_at;
            let mut seen_history = first.history.len();
            let terminal = |s: OrderStatus| {
                matches!(
                    s,
                    OrderStatus::Cancelled | OrderStatus::Completed | OrderStatus::Refunded
                )
            };
            let mut done = terminal(status_of(&first));
            if tx
                .send(Ok(pb::WatchOrderResponse {
                    order: Some(to_pb(first)),
                    change: None,
                }))
                .await
                .is_err()
            {
                return;
            }
            while !done {
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                let updated = match self.saga.repo().updated_at(id).await {
                    Ok(Some(updated)) => updated,
                    Ok(None) => return,
                    Err(err) => {
                        let _ = tx.send(Err(db(err))).await;
                        return;
                    }
                };
                if updated == seen_update {
                    continue;
                }
                let full = match self.saga.repo().load(id).await {
                    Ok(Some(full)) => full,
                    Ok(None) => return,
                    Err(err) => {
                        let _ = tx.send(Err(db(err))).await;
                        return;
                    }
                };
                seen_update = full.order.updated_at;
                done = terminal(status_of(&full));
                let changes: Vec<_> = full.history.iter().skip(seen_history).cloned().collect();
                seen_history = full.history.len();
                let order = to_pb(full);
                let messages: Vec<_> = if changes.is_empty() {
                    vec![None]
                } else {
                    changes.into_iter().map(Some).collect()
                };
                for change in messages {
                    let message = pb::WatchOrderResponse {
                        order: Some(order.clone()),
                        change: change.map(|h| pb::OrderStatusChange {
                            from_status: i32::from(h.from_status),
                            to_status: i32::from(h.to_status),
                            change_time: Some(timestamp(h.changed_at)),
                            actor_id: h.actor_id,
                            note: h.note,
                        }),
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}
