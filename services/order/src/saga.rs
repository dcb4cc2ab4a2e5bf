//! The checkout saga. Every step is recorded before it is taken (`orders.saga_step`, plus a row
//! in `saga_log`), and every call it makes is idempotent on the order id, so whichever driver
//! holds the order's lease — the PlaceOrder call that created it, or the recovery worker after a
//! crash — can take the recorded step again and move on:
//!
//! RESERVE_STOCK → CHARGE_PAYMENT → COMMIT_STOCK (order PAID) → CREATE_SHIPMENT → COMPLETED, or
//! on failure RELEASE_STOCK → [REFUND_PAYMENT if a charge may have gone through] → COMPENSATED
//! (order CANCELLED). Cancelling a paid order runs CANCEL_SHIPMENT → REFUND_PAYMENT → RESTOCK →
//! COMPENSATED.
//!
//! Reserving and charging give up after the checkout budget (a dependency down or slow) and
//! compensate; the steps after a successful charge, and every compensation, are retried until they
//! succeed, because stopping half-way would leave money or stock in the wrong place. The stock
//! reservation's TTL is the last backstop.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::delivery::v1 as delivery_pb;
use shopmesh_contracts::pb::shopmesh::delivery::v1::delivery_service_client::DeliveryServiceClient;
use shopmesh_contracts::pb::shopmesh::order::v1::{CancellationReason, OrderStatus, SagaStep};
use shopmesh_contracts::pb::shopmesh::payment::v1 as payment_pb;
use shopmesh_contracts::pb::shopmesh::payment::v1::payment_service_client::PaymentServiceClient;
use shopmesh_contracts::pb::shopmesh::product::v1 as product_pb;
use shopmesh_contracts::pb::shopmesh::product::v1::inventory_service_client::InventoryServiceClient;
use shopmesh_platform::client::MeshChannel;
use tonic::{Code, Request, Status};
use uuid::Uuid;

use crate::config::{CrashPoint, OrderConfig};
use crate::domain::saga_finished;
use crate::repo::{FullOrder, OrderRepo, StatusChange, StepChanges};

/// How a step ended for the driver.
enum Next {
    /// Recorded the next step.
    Advanced,
    /// Another driver moved the order on: stop.
    Lost,
    /// Try the same step again later.
    Retry(String),
}

/// The dependencies the saga calls, each signed with the order service's identity.
#[derive(Clone)]
pub struct Peers {
    pub inventory: InventoryServiceClient<MeshChannel>,
    pub payment: PaymentServiceClient<MeshChannel>,
    pub delivery: DeliveryServiceClient<MeshChannel>,
}

pub struct Saga {
    repo: OrderRepo,
    peers: Peers,
    config: OrderConfig,
}

/// Codes after which the callee certainly did not apply the call's change.
fn definitive(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists
    )
}

fn backoff(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 6)).unwrap_or(6);
    Duration::from_millis(200u64.saturating_mul(1u64 << exp)).min(Duration::from_secs(10))
}

fn step_i16(step: SagaStep) -> i16 {
    i16::try_from(step as i32).unwrap_or(0)
}

fn status_i16(status: OrderStatus) -> i16 {
    i16::try_from(status as i32).unwrap_or(0)
}

fn reason_i16(reason: CancellationReason) -> i16 {
    i16::try_from(reason as i32).unwrap_or(0)
}

/// CREATED -> CANCELLED for `reason`; the event carries `correlation_id`.
fn cancel(reason: i16, note: &str, actor: &str, correlation_id: &str) -> StatusChange {
    StatusChange {
        from: &[1],
        to: status_i16(OrderStatus::Cancelled),
        actor_id: actor.to_owned(),
        note: note.to_owned(),
        reason: Some((reason, note.to_owned())),
        correlation_id: correlation_id.to_owned(),
    }
}

impl Saga {
    pub fn new(repo: OrderRepo, peers: Peers, config: OrderConfig) -> Arc<Self> {
        Arc::new(Self {
            repo,
            peers,
            config,
        })
    }

    pub fn repo(&self) -> &OrderRepo {
        &self.repo
    }

    pub fn config(&self) -> &OrderConfig {
        &self.config
    }

    /// Drives the saga of `id` until it finishes, must wait for a retry, or another driver takes
    /// it. `lease_held`: the caller already holds the lease (it just created the order).
    pub async fn run(self: Arc<Self>, id: Uuid, lease_held: bool) {
        if let Err(err) = self.clone().drive(id, lease_held).await {
            // The lease expires and recovery resumes the recorded step.
            tracing::warn!(order_id = %id, error = %format!("{err:#}"), "saga interrupted");
        }
    }

    async fn drive(self: Arc<Self>, id: Uuid, lease_held: bool) -> anyhow::Result<()> {
        if !lease_held && !self.repo.take_lease(id, self.config.lease).await? {
            return Ok(());
        }
        let mut inline_attempts = 0;
        loop {
            let Some(full) = self.repo.load(id).await? else {
                return Ok(());
            };
            let step = SagaStep::try_from(i32::from(full.order.saga_step))
                .unwrap_or(SagaStep::Unspecified);
            if saga_finished(step) || step == SagaStep::Unspecified {
                return Ok(());
            }
            // Keep the lease while the step's call is in flight, however long it takes, so
            // that recovery does not take over a saga whose driver is alive.
            let heartbeat = {
                let repo = self.repo.clone();
                let lease = self.config.lease;
                let at = full.order.saga_step;
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(lease / 3).await;
                        if !repo.renew_lease(id, at, lease).await.unwrap_or(false) {
                            break;
                        }
                    }
                })
            };
            let next = self.step(&full, step).await;
            heartbeat.abort();
            match next? {
                Next::Advanced => inline_attempts = 0,
                Next::Lost => return Ok(()),
                Next::Retry(detail) => {
                    inline_attempts += 1;
                    let delay = backoff(full.order.saga_attempts + inline_attempts);
                    tracing::info!(order_id = %id, step = step.as_str_name(), %detail, "saga step will be retried");
                    if inline_attempts <= 3 {
                        tokio::time::sleep(delay).await;
                        if !self
                            .repo
                            .renew_lease(id, full.order.saga_step, self.config.lease)
                            .await?
                        {
                            return Ok(());
                        }
                    } else {
                        self.repo
                            .retry_later(id, full.order.saga_step, delay, &detail)
                            .await?;
                        return Ok(());
                    }
                }
            }
        }
    }

    fn crash_if(&self, point: CrashPoint) {
        if self.config.crash_at == Some(point) {
            tracing::error!(?point, "ORDER_FAULT_CRASH_AT reached: aborting the process");
            std::process::abort();
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.config.call_timeout);
        request
    }

    async fn advance(
        &self,
        full: &FullOrder,
        to: SagaStep,
        detail: &str,
        changes: StepChanges,
    ) -> anyhow::Result<Next> {
        let moved = self
            .repo
            .advance(
                full.order.id,
                full.order.saga_step,
                step_i16(to),
                detail,
                changes,
                self.config.lease,
            )
            .await?;
        Ok(if moved { Next::Advanced } else { Next::Lost })
    }

    /// Whether the checkout has been failing for longer than its budget.
    fn over_budget(&self, full: &FullOrder) -> bool {
        let elapsed = Utc::now() - full.order.created_at;
        elapsed.to_std().unwrap_or_default() > self.config.checkout_budget
    }

    /// Takes one step and counts how it ended: `saga_steps_total{step, outcome}` (outcome
    /// `advanced`, `lost` to another driver, `retry` or `error`) and
    /// `saga_step_duration_seconds{step}`.
    async fn step(&self, full: &FullOrder, step: SagaStep) -> anyhow::Result<Next> {
        let started = std::time::Instant::now();
        let next = self.take_step(full, step).await;
        let outcome = match &next {
            Ok(Next::Advanced) => "advanced",
            Ok(Next::Lost) => "lost",
            Ok(Next::Retry(_)) => "retry",
            Err(_) => "error",
        };
        let name = step.as_str_name();
        metrics::counter!("saga_steps_total", "step" => name, "outcome" => outcome).increment(1);
        metrics::histogram!("saga_step_duration_seconds", "step" => name)
            .record(started.elapsed().as_secs_f64());
        next
    }

    async fn take_step(&self, full: &FullOrder, step: SagaStep) -> anyhow::Result<Next> {
        let code = step as i32;
        self.crash_if(CrashPoint::Before(code));
        let next = match step {
            SagaStep::ReserveStock => self.reserve(full).await?,
            SagaStep::ChargePayment => self.charge(full).await?,
            SagaStep::CommitStock => self.commit(full).await?,
            SagaStep::CreateShipment => self.ship(full).await?,
            SagaStep::ReleaseStock => self.release(full).await?,
            SagaStep::RefundPayment => self.refund(full).await?,
            SagaStep::CancelShipment => self.cancel_shipment(full).await?,
            SagaStep::Restock => self.restock(full).await?,
            SagaStep::Unspecified | SagaStep::Completed | SagaStep::Compensated => Next::Lost,
        };
        Ok(next)
    }

    /// The saga was asked to stop before charging: compensate with the requested reason (the
    /// event carries the CancelOrder request's id).
    async fn stop_requested(&self, full: &FullOrder) -> anyhow::Result<Next> {
        let o = &full.order;
        let changes = StepChanges {
            status: Some(cancel(
                o.cancel_reason,
                &o.cancellation_note,
                &o.cancel_actor,
                &o.cancel_correlation_id,
            )),
            ..StepChanges::default()
        };
        self.advance(
            full,
            SagaStep::ReleaseStock,
            "cancellation requested",
            changes,
        )
        .await
    }

    /// Records that the checkout is cancelled (`reason`, `note`, by `actor`) and compensation
    /// starts by releasing the stock, with the other `changes` of the step. The checkout failed
    /// on its own: the event carries the PlaceOrder request's id.
    async fn compensate(
        &self,
        full: &FullOrder,
        reason: i16,
        note: &str,
        actor: &str,
        detail: &str,
        changes: StepChanges,
    ) -> anyhow::Result<Next> {
        let changes = StepChanges {
            status: Some(cancel(reason, note, actor, &full.order.correlation_id)),
            ..changes
        };
        self.advance(full, SagaStep::ReleaseStock, detail, changes)
            .await
    }

    async fn give_up(&self, full: &FullOrder, what: &str) -> anyhow::Result<Next> {
        let note = format!("{what} did not answer in time");
        self.compensate(
            full,
            reason_i16(CancellationReason::ServiceUnavailable),
            &note,
            "",
            &note,
            StepChanges::default(),
        )
        .await
    }

    async fn reserve(&self, full: &FullOrder) -> anyhow::Result<Next> {
        if full.order.cancel_requested {
            return self.stop_requested(full).await;
        }
        let ttl = prost_types::Duration {
            seconds: i64::try_from(self.config.reservation_ttl.as_secs()).unwrap_or(900),
            nanos: 0,
        };
        let request = product_pb::ReserveRequest {
            order_id: full.order.id.to_string(),
            lines: full
                .lines
                .iter()
                .map(|l| product_pb::ReservationLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                })
                .collect(),
            ttl: Some(ttl),
        };
        let result = self
            .peers
            .inventory
            .clone()
            .reserve(self.request(request))
            .await;
        self.crash_if(CrashPoint::After(SagaStep::ReserveStock as i32));
        match result {
            Ok(_) => {
                self.advance(
                    full,
                    SagaStep::ChargePayment,
                    "reserved",
                    StepChanges::default(),
                )
                .await
            }
            Err(status) if definitive(status.code()) => {
                let note = status.message().to_owned();
                self.compensate(
                    full,
                    reason_i16(CancellationReason::OutOfStock),
                    &note,
                    "",
                    &note,
                    StepChanges::default(),
                )
                .await
            }
            Err(status) if self.over_budget(full) => {
                tracing::warn!(order_id = %full.order.id, code = ?status.code(), "reserving stock failed for the whole checkout budget");
                self.give_up(full, "the product service").await
            }
            Err(status) => Ok(Next::Retry(describe(&status))),
        }
    }

    async fn charge(&self, full: &FullOrder) -> anyhow::Result<Next> {
        let o = &full.order;
        if o.cancel_requested {
            return self.stop_requested(full).await;
        }
        if !o.charge_attempted {
            self.repo.mark_charge_attempted(o.id).await?;
        }
        let request = payment_pb::ChargeRequest {
            order_id: o.id.to_string(),
            user_id: o.user_id.clone(),
            amount: Some(Money {
                amount_minor: o.total_minor,
                currency: o.currency.clone(),
            }),
            payment_method_token: o.payment_method_token.clone(),
        };
        let result = self
            .peers
            .payment
            .clone()
            .charge(self.request(request))
            .await;
        self.crash_if(CrashPoint::After(SagaStep::ChargePayment as i32));
        let payment = match result {
            Ok(response) => response.into_inner().payment,
            Err(status) if definitive(status.code()) => {
                let note = format!("payment refused: {}", status.message());
                return self
                    .compensate(
                        full,
                        reason_i16(CancellationReason::PaymentFailed),
                        "payment_refused",
                        "",
                        &note,
                        StepChanges {
                            charge_attempted: Some(false),
                            ..StepChanges::default()
                        },
                    )
                    .await;
            }
            Err(status) if self.over_budget(full) => {
                tracing::warn!(order_id = %o.id, code = ?status.code(), "charging failed for the whole checkout budget");
                return self.give_up(full, "the payment service").await;
            }
            Err(status) => return Ok(Next::Retry(describe(&status))),
        };
        let Some(payment) = payment else {
            return Ok(Next::Retry(
                "the payment service answered without a payment".into(),
            ));
        };
        use payment_pb::PaymentStatus as P;
        match P::try_from(payment.status).unwrap_or(P::Unspecified) {
            P::Succeeded => {
                self.advance(
                    full,
                    SagaStep::CommitStock,
                    "charged",
                    StepChanges {
                        payment_id: Some(payment.id),
                        ..StepChanges::default()
                    },
                )
                .await
            }
            P::Failed => {
                let code = if payment.decline_code.is_empty() {
                    payment_pb::PaymentFailureReason::try_from(payment.failure_reason)
                        .map(|r| {
                            r.as_str_name()
                                .trim_start_matches("PAYMENT_FAILURE_REASON_")
                                .to_ascii_lowercase()
                        })
                        .unwrap_or_else(|_| "failed".to_owned())
                } else {
                    payment.decline_code.clone()
                };
                self.compensate(
                    full,
                    reason_i16(CancellationReason::PaymentFailed),
                    &code,
                    "",
                    &format!("charge failed: {code}"),
                    StepChanges {
                        payment_id: Some(payment.id),
                        charge_attempted: Some(false),
                        ..StepChanges::default()
                    },
                )
                .await
            }
            P::Pending | P::Unspecified if !self.over_budget(full) => {
                Ok(Next::Retry("the charge is pending".into()))
            }
            P::Pending | P::Unspecified => self.give_up(full, "the payment provider").await,
            // Refunded already (by hand?): compensate and give back whatever is left.
            P::PartiallyRefunded | P::Refunded => {
                self.compensate(
                    full,
                    reason_i16(CancellationReason::PaymentFailed),
                    "refunded",
                    "",
                    "the payment was refunded before the order completed",
                    StepChanges {
                        payment_id: Some(payment.id),
                        ..StepChanges::default()
                    },
                )
                .await
            }
        }
    }

    async fn commit(&self, full: &FullOrder) -> anyhow::Result<Next> {
        let request = product_pb::CommitRequest {
            order_id: full.order.id.to_string(),
        };
        let result = self
            .peers
            .inventory
            .clone()
            .commit(self.request(request))
            .await;
        self.crash_if(CrashPoint::After(SagaStep::CommitStock as i32));
        match result {
            Ok(_) => {
                self.advance(
                    full,
                    SagaStep::CreateShipment,
                    "stock committed",
                    StepChanges {
                        status: Some(StatusChange {
                            from: &[1],
                            to: status_i16(OrderStatus::Paid),
                            actor_id: String::new(),
                            note: String::new(),
                            reason: None,
                            correlation_id: full.order.correlation_id.clone(),
                        }),
                        ..StepChanges::default()
                    },
                )
                .await
            }
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                let note = status.message().to_owned();
                self.compensate(
                    full,
                    reason_i16(CancellationReason::ReservationExpired),
                    &note,
                    "",
                    &note,
                    StepChanges::default(),
                )
                .await
            }
            Err(status) => Ok(Next::Retry(describe(&status))),
        }
    }

    async fn ship(&self, full: &FullOrder) -> anyhow::Result<Next> {
        let o = &full.order;
        let request = delivery_pb::CreateShipmentRequest {
            order_id: o.id.to_string(),
            user_id: o.user_id.clone(),
            tier: i32::from(o.tier),
            address: Some(o.shipping_address.0.clone().into()),
            lines: full
                .lines
                .iter()
                .map(|l| delivery_pb::ShipmentLine {
                    product_id: l.product_id.clone(),
                    sku: l.sku.clone(),
                    product_name: l.product_name.clone(),
                    quantity: l.quantity,
                })
                .collect(),
        };
        let result = self
            .peers
            .delivery
            .clone()
            .create_shipment(self.request(request))
            .await;
        self.crash_if(CrashPoint::After(SagaStep::CreateShipment as i32));
        match result {
            Ok(response) => {
                let shipment_id = response
                    .into_inner()
                    .shipment
                    .map(|s| s.id)
                    .unwrap_or_default();
                self.advance(
                    full,
                    SagaStep::Completed,
                    "shipment created",
                    StepChanges {
                        shipment_id: Some(shipment_id),
                        ..StepChanges::default()
                    },
                )
                .await
            }
            Err(status) => Ok(Next::Retry(describe(&status))),
        }
    }

    async fn release(&self, full: &FullOrder) -> anyhow::Result<Next> {
        let request = product_pb::ReleaseRequest {
            order_id: full.order.id.to_string(),
        };
        let result = self
            .peers
            .inventory
            .clone()
            .release(self.request(request))
            .await;
        self.crash_if(CrashPoint::After(SagaStep::ReleaseStock as i32));
        let after = |restock: bool| {
            if full.order.charge_attempted || restock {
                SagaStep::RefundPayment
            } else {
                SagaStep::Compensated
            }
        };
        match result {
            Ok(_) => {
                self.advance(full, after(false), "stock released", StepChanges::default())
                    .await
            }
            // Committed after all: the stock is put back after the refund.
            Err(status) if status.code() == Code::FailedPrecondition => {
                self.advance(
                    full,
                    after(true),
                    "the reservation was committed; restocking after the refund",
                    StepChanges {
                        restock: Some(true),
                        ..StepChanges::default()
                    },
                )
                .await
            }
            Err(status) => Ok(Next::Retry(describe(&status))),
        }
    }

    async fn refund(&self, full: &FullOrder) -> anyhow::Result<Next> {
        let o = &full.order;
        let mut payment = self.peers.payment.clone();
        let payments = match payment
            .list_payments_by_order(self.request(payment_pb::ListPaymentsByOrderRequest {
                order_id: o.id.to_string(),
            }))
            .await
        {
            Ok(response) => response.into_inner().payments,
            Err(status) if status.code() == Code::NotFound => Vec::new(),
            Err(status) => return Ok(Next::Retry(describe(&status))),
        };
        let mut refunded = 0i64;
        for p in payments {
            use payment_pb::PaymentStatus as P;
            let status = P::try_from(p.status).unwrap_or(P::Unspecified);
            let amount = p.amount.as_ref().map_or(0, |m| m.amount_minor);
            let already = p.refunded_amount.as_ref().map_or(0, |m| m.amount_minor);
            match status {
                P::Succeeded | P::PartiallyRefunded if amount > already => {
                    let result = payment
                        .refund(self.request(payment_pb::RefundRequest {
                            payment_id: p.id.clone(),
                            amount: None,
                            reason: payment_pb::RefundReason::OrderCancelled as i32,
                            note: "order cancelled".to_owned(),
                            idempotency_key: format!("cancel:{}", o.id),
                        }))
                        .await;
                    match result {
                        Ok(response) => {
                            refunded += response
                                .into_inner()
                                .payment
                                .and_then(|p| p.refunded_amount)
                                .map_or(amount, |m| m.amount_minor);
                        }
                        Err(status) => return Ok(Next::Retry(describe(&status))),
                    }
                }
                // A charge the provider has not finished (its caller gave up): drive it to its
                // outcome (Charge repeats are idempotent), then look again.
                P::Pending => {
                    let mut request = Request::new(payment_pb::ChargeRequest {
                        order_id: o.id.to_string(),
                        user_id: o.user_id.clone(),
                        amount: p.amount.clone(),
                        payment_method_token: o.payment_method_token.clone(),
                    });
                    request.set_timeout(self.config.call_timeout.max(Duration::from_secs(30)));
                    let detail = match payment.charge(request).await {
                        Ok(_) => "a pending charge finished".to_owned(),
                        Err(status) => describe(&status),
                    };
                    return Ok(Next::Retry(detail));
                }
                _ => refunded += already,
            }
        }
        self.crash_if(CrashPoint::After(SagaStep::RefundPayment as i32));
        let next = if o.restock {
            SagaStep::Restock
        } else {
            SagaStep::Compensated
        };
        self.advance(
            full,
            next,
            "refunded",
            StepChanges {
                refunded_minor: Some(refunded),
                ..StepChanges::default()
            },
        )
        .await
    }

    async fn cancel_shipment(&self, full: &FullOrder) -> anyhow::Result<Next> {
        let o = &full.order;
        let cancelled = || StepChanges {
            restock: Some(true),
            charge_attempted: Some(true),
            status: Some(StatusChange {
                from: &[2],
                to: status_i16(OrderStatus::Cancelled),
                actor_id: o.cancel_actor.clone(),
                note: o.cancellation_note.clone(),
                reason: Some((o.cancel_reason, o.cancellation_note.clone())),
                correlation_id: o.cancel_correlation_id.clone(),
            }),
            ..StepChanges::default()
        };
        if o.shipment_id.is_empty() {
            return self
                .advance(full, SagaStep::RefundPayment, "no shipment", cancelled())
                .await;
        }
        let mut delivery = self.peers.delivery.clone();
        let result = delivery
            .advance_shipment(self.request(delivery_pb::AdvanceShipmentRequest {
                shipment_id: o.shipment_id.clone(),
                status: delivery_pb::ShipmentStatus::Cancelled as i32,
                location: String::new(),
                note: "order cancelled".to_owned(),
                carrier: String::new(),
                tracking_number: String::new(),
            }))
            .await;
        let stopped = match result {
            Ok(_) => true,
            Err(status) if status.code() == Code::FailedPrecondition => {
                // Cancelled by an earlier attempt, or already on its way.
                match delivery
                    .get_shipment(self.request(delivery_pb::GetShipmentRequest {
                        shipment_id: o.shipment_id.clone(),
                    }))
                    .await
                {
                    Ok(response) => response
                        .into_inner()
                        .shipment
                        .is_some_and(|s| s.status == delivery_pb::ShipmentStatus::Cancelled as i32),
                    Err(status) => return Ok(Next::Retry(describe(&status))),
                }
            }
            Err(status) => return Ok(Next::Retry(describe(&status))),
        };
        if stopped {
            self.advance(
                full,
                SagaStep::RefundPayment,
                "shipment cancelled",
                cancelled(),
            )
            .await
        } else {
            self.repo
                .abandon_paid_cancel(o.id, o.saga_step, "the shipment has left the warehouse")
                .await?;
            Ok(Next::Lost)
        }
    }

    async fn restock(&self, full: &FullOrder) -> anyhow::Result<Next> {
        let o = &full.order;
        let mut inventory = self.peers.inventory.clone();
        for line in &full.lines {
            let result = inventory
                .adjust(self.request(product_pb::AdjustRequest {
                    sku: line.sku.clone(),
                    delta: line.quantity,
                    reason: product_pb::StockMovementReason::Return as i32,
                    note: "order cancelled".to_owned(),
                    order_id: o.id.to_string(),
                    idempotency_key: format!("cancel:{}:{}", o.id, line.sku),
                }))
                .await;
            if let Err(status) = result {
                return Ok(Next::Retry(describe(&status)));
            }
        }
        self.advance(
            full,
            SagaStep::Compensated,
            "restocked",
            StepChanges::default(),
        )
        .await
    }
}

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Resumes unfinished sagas whose driver went away (a crash, a restart) on start-up and every
/// `interval`, a few at a time.
pub async fn recover_until_stopped(
    saga: Arc<Saga>,
    interval: Duration,
    shutdown: shopmesh_platform::Shutdown,
) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        match saga.repo.due(16).await {
            Ok(ids) => {
                let runs = ids.into_iter().map(|id| saga.clone().run(id, false));
                futures::future::join_all(runs).await;
            }
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "saga recovery scan failed"),
        }
    }
}
