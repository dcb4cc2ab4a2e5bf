//! Use cases of the delivery service, written against the storage port: one method per RPC,
//! plus the courier simulator's pass and the tracking stream. Every transition this process
//! applies wakes the tracking streams and the order-sync worker at once; other instances'
//! transitions are found by polling the database.

mod sync;

use std::sync::Arc;

use rand::Rng;
use shopmesh_platform::problem::field_error;
use shopmesh_platform::shutdown::Shutdown;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

pub use self::sync::{OrderSyncWorker, OrderUpdateError, OrderUpdates};
use crate::config::DeliveryConfig;
use crate::domain::{
    Shipment, ShipmentDraft, ShipmentStatus, StepDraft, TrackingEvent, Viewer, parse_id,
};
use crate::error::Error;
use crate::repo::{Created, Label, ShipmentRepo};

/// Who asks for a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advancer {
    Admin,
    /// The order service, which may only cancel (an order cancelled after payment).
    OrderService,
}

/// A tracking stream: events oldest first, ending after a terminal one.
pub type Tracking = ReceiverStream<Result<TrackingEvent, Error>>;

/// Wakes whoever waits for transitions recorded by this process.
#[derive(Debug)]
pub struct Signals {
    /// The shipments that just got a tracking event, for the streams following them (each
    /// stream looks only for its own, so a busy courier costs no database reads for the others).
    events: broadcast::Sender<Uuid>,
    /// The order-sync worker waiting for new order updates.
    pub syncs: Notify,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            events: broadcast::channel(1024).0,
            syncs: Notify::new(),
        }
    }
}

impl Signals {
    pub(crate) fn transitioned(&self, shipments: impl IntoIterator<Item = Uuid>) {
        for id in shipments {
            // No stream listening is no error.
            let _ = self.events.send(id);
        }
        self.syncs.notify_one();
    }
}

/// Completes when `changes` reports `id` (or may have: a receiver that lagged behind).
async fn changed(changes: &mut broadcast::Receiver<Uuid>, id: Uuid) {
    loop {
        match changes.recv().await {
            Ok(changed) if changed == id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

pub struct DeliveryService {
    repo: Arc<dyn ShipmentRepo>,
    config: DeliveryConfig,
    signals: Arc<Signals>,
    /// Fires when the process shuts down: open tracking streams end (UNAVAILABLE, track again)
    /// so that the server can drain.
    stopping: Shutdown,
}

impl DeliveryService {
    pub fn new(
        repo: Arc<dyn ShipmentRepo>,
        config: DeliveryConfig,
        signals: Arc<Signals>,
        stopping: Shutdown,
    ) -> Self {
        Self {
            repo,
            config,
            signals,
            stopping,
        }
    }

    /// Whether the database answers.
    pub async fn ready(&self) -> Result<(), Error> {
        Ok(self.repo.ping().await?)
    }

    /// Creates the order's shipment in LABEL_CREATED with a carrier and a fresh tracking number,
    /// recording shipment.created with `correlation_id` (the request id of the call); the
    /// courier picks it up once the order's order.paid has been packed (see `fulfilment`).
    /// Returns the one it already has (whatever this request says: the first one wins; nothing is
    /// recorded again).
    #[tracing::instrument(skip(self, draft, correlation_id), fields(order_id = %draft.order_id))]
    pub async fn create(
        &self,
        draft: ShipmentDraft,
        correlation_id: &str,
    ) -> Result<Shipment, Error> {
        let shipment = draft.validate()?;
        let mut attempt = 1;
        let created = loop {
            let label = Label {
                id: Uuid::now_v7(),
                carrier: self.config.carrier.clone(),
                tracking_number: tracking_number(),
                event_id: Uuid::now_v7(),
            };
            match self
                .repo
                .create(&shipment, &label, correlation_id)
                .await
                .map_err(Error::from)
            {
                // A random tracking number another shipment of the carrier has: draw again.
                Err(Error::TrackingTaken) if attempt < 3 => attempt += 1,
                other => break other?,
            }
        };
        match created {
            Created::New(shipment) => {
                tracing::info!(shipment_id = %shipment.id, tier = shipment.tier.as_str(), "shipment created");
                self.signals.transitioned([shipment.id]);
                Ok(shipment)
            }
            Created::Existing(shipment) => Ok(shipment),
        }
    }

    /// One shipment, if the viewer may see it (NOT_FOUND for another customer's).
    pub async fn get(&self, viewer: &Viewer, id: &str) -> Result<Shipment, Error> {
        let id = parse_id("shipment_id", id)?;
        let shipment = self.repo.shipment(id).await?;
        visible(viewer, shipment)
    }

    /// The shipment of an order, if it has one the viewer may see.
    pub async fn get_by_order(&self, viewer: &Viewer, order_id: &str) -> Result<Shipment, Error> {
        let order_id = parse_id("order_id", order_id)?;
        let shipment = self.repo.shipment_by_order(order_id).await?;
        visible(viewer, shipment)
    }

    /// Records the next status. The transition table decides (FAILED_PRECONDITION otherwise);
    /// the write is conditional on the status and event it was decided from, so of two
    /// concurrent transitions from one state only one applies (the other is ABORTED, or
    /// FAILED_PRECONDITION when the state it finds no longer allows it). An applied transition
    /// records shipment.status_changed with `correlation_id` (the request id of the call).
    #[tracing::instrument(skip(self, draft, correlation_id))]
    pub async fn advance(
        &self,
        advancer: Advancer,
        id: &str,
        draft: StepDraft,
        correlation_id: &str,
    ) -> Result<Shipment, Error> {
        let id = parse_id("shipment_id", id);
        let step = draft.validate();
        let (id, step) = match (id, step) {
            (Ok(id), Ok(step)) => (id, step),
            (id, step) => {
                let mut errors: Vec<_> = id.err().into_iter().collect();
                errors.extend(step.err().unwrap_or_default());
                return Err(Error::Invalid(errors));
            }
        };
        if advancer == Advancer::OrderService && step.status != ShipmentStatus::Cancelled {
            return Err(Error::PermissionDenied(
                "the order service may only cancel a shipment",
            ));
        }
        let shipment = self
            .repo
            .shipment(id)
            .await?
            .ok_or(Error::NotFound("shipment"))?;
        // The order service may cancel again after a crash or timeout: a shipment it already
        // cancelled is the answer it wants.
        if advancer == Advancer::OrderService && shipment.status == ShipmentStatus::Cancelled {
            return Ok(shipment);
        }
        if !shipment.status.can_become(step.status) {
            return Err(Error::IllegalTransition {
                from: shipment.status,
                to: step.status,
            });
        }
        let applied = self
            .repo
            .advance(
                id,
                shipment.status,
                shipment.last_event_seq,
                &step,
                self.config.courier_step,
                correlation_id,
            )
            .await?;
        if let Some(shipment) = applied {
            tracing::info!(shipment_id = %id, to = %step.status, "shipment advanced");
            self.signals.transitioned([id]);
            return Ok(shipment);
        }
        let now = self
            .repo
            .shipment(id)
            .await?
            .ok_or(Error::NotFound("shipment"))?;
        if now.status.can_become(step.status) {
            Err(Error::Conflict(now.status))
        } else {
            Err(Error::IllegalTransition {
                from: now.status,
                to: step.status,
            })
        }
    }

    /// Most steps one courier pass takes.
    pub fn courier_batch(&self) -> usize {
        usize::try_from(self.config.courier_batch).unwrap_or(usize::MAX)
    }

    /// One pass of the courier simulator: every due step (VIP first), each exactly once across
    /// instances. Returns how many steps were taken.
    pub async fn courier_pass(&self) -> Result<usize, Error> {
        let moves = self
            .repo
            .courier_pass(self.config.courier_batch, self.config.courier_step)
            .await?;
        for step in &moves {
            tracing::debug!(shipment_id = %step.shipment_id, to = %step.to, "courier step");
            metrics::counter!("delivery_courier_steps_total", "to" => step.to.as_str())
                .increment(1);
        }
        if !moves.is_empty() {
            self.signals
                .transitioned(moves.iter().map(|m| m.shipment_id));
        }
        Ok(moves.len())
    }

    /// The shipment's tracking events, oldest first (after `after_event_id` when set), then each
    /// new one as it is recorded, here or by another instance; the stream ends after DELIVERED,
    /// RETURNED or CANCELLED, when the client goes away, or at shutdown.
    pub async fn track(
        &self,
        viewer: &Viewer,
        id: &str,
        after_event_id: &str,
    ) -> Result<Tracking, Error> {
        let shipment = self.get(viewer, id).await?;
        let after_seq = if after_event_id.trim().is_empty() {
            0
        } else {
            let unknown = || field_error("after_event_id", "names no event of this shipment");
            let event = Uuid::parse_str(after_event_id.trim()).map_err(|_| unknown())?;
            self.repo
                .event_seq(shipment.id, event)
                .await?
                .ok_or_else(unknown)?
        };
        let (tx, rx) = mpsc::channel(16);
        if shipment.status.is_terminal() && after_seq >= shipment.last_event_seq {
            // The client has seen the end already.
            return Ok(ReceiverStream::new(rx));
        }
        tokio::spawn(follow(
            self.repo.clone(),
            self.signals.clone(),
            self.stopping.clone(),
            self.config.track_poll,
            shipment.id,
            after_seq,
            tx,
        ));
        Ok(ReceiverStream::new(rx))
    }
}

/// Sends the shipment's events after `seq` into `tx` until a terminal one, the client's
/// disconnect (the receiver dropped) or shutdown.
async fn follow(
    repo: Arc<dyn ShipmentRepo>,
    signals: Arc<Signals>,
    stopping: Shutdown,
    poll: std::time::Duration,
    id: Uuid,
    mut seq: i32,
    tx: mpsc::Sender<Result<TrackingEvent, Error>>,
) {
    let _open = OpenStream::new();
    // Subscribed before the first read, so a transition recorded between a read and the wait
    // that follows it still wakes this stream.
    let mut changes = signals.events.subscribe();
    loop {
        match repo.events_after(id, seq).await {
            Ok(events) => {
                for event in events {
                    seq = event.seq;
                    let terminal = event.status.is_terminal();
                    if tx.send(Ok(event)).await.is_err() || terminal {
                        return;
                    }
                }
            }
            Err(err) => {
                let _ = tx.send(Err(err.into())).await;
                return;
            }
        }
        tokio::select! {
            () = changed(&mut changes, id) => {}
            () = tokio::time::sleep(poll) => {}
            () = tx.closed() => return,
            () = stopping.clone().wait() => {
                let _ = tx.send(Err(Error::ShuttingDown)).await;
                return;
            }
        }
    }
}

/// Counts a tracking stream in `delivery_tracking_streams` while it is followed.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        metrics::gauge!("delivery_tracking_streams").increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("delivery_tracking_streams").decrement(1.0);
    }
}

fn visible(viewer: &Viewer, shipment: Option<Shipment>) -> Result<Shipment, Error> {
    shipment
        .filter(|s| viewer.may_see(s))
        .ok_or(Error::NotFound("shipment"))
}

/// A carrier tracking number: "SIM" and twelve random digits (unique per carrier by a
/// database constraint).
fn tracking_number() -> String {
    let number: u64 = rand::thread_rng().gen_range(0..1_000_000_000_000);
    format!("SIM{number:012}")
}
