//! Storage port of the delivery service and its PostgreSQL adapter.
//!
//! Invariants that must hold under concurrency live in the database: one shipment per order
//! (unique key), transitions conditional on the status and event sequence they start from, the
//! courier's rows claimed with `for update skip locked`, and order updates and outbox events
//! written in the same transaction as the change that causes them. Fulfilment writes through
//! the event consumer's transaction (the one that records the event in the inbox), so its
//! functions take that connection rather than the pool.

mod pg;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use pg::{PgShipmentRepo, lock_for_fulfilment, record_fulfilment};

use crate::domain::{
    NewShipment, OrderUpdate, Shipment, ShipmentStatus, Step, Tier, TrackingEvent,
};

/// A storage failure the service may want to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A unique constraint (named) refused the write.
    #[error("unique constraint {0} violated")]
    Unique(String),
    #[error(transparent)]
    Backend(#[from] anyhow::Error),
}

impl From<sqlx::Error> for RepoError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error
            && db.code().as_deref() == Some("23505")
        {
            return Self::Unique(db.constraint().unwrap_or_default().to_owned());
        }
        Self::Backend(error.into())
    }
}

/// A new shipment with what the label gave it.
#[derive(Clone, Debug)]
pub struct Label {
    pub id: Uuid,
    pub carrier: String,
    pub tracking_number: String,
    pub event_id: Uuid,
}

/// The shipment of a paid order as the packing station finds it (locked in its transaction).
#[derive(Clone, Debug)]
pub struct FulfilmentTarget {
    pub id: Uuid,
    pub tier: Tier,
    pub status: ShipmentStatus,
    pub last_event_seq: i32,
    /// When it was fulfilled; `None` until then.
    pub fulfilled_at: Option<DateTime<Utc>>,
}

/// What CreateShipment found.
#[derive(Clone, Debug)]
pub enum Created {
    New(Shipment),
    /// The order already had this shipment.
    Existing(Shipment),
}

/// An order status change owed to the order service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderSync {
    pub id: i64,
    pub shipment_id: Uuid,
    pub order_id: Uuid,
    pub status: OrderUpdate,
    pub note: String,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// How an attempt to deliver an order update ended.
#[derive(Clone, Debug)]
pub enum SyncOutcome {
    /// The order service applied it (or already had it).
    Done,
    /// The order service refused it for good (the order was cancelled or refunded).
    Rejected(String),
    /// Try again at `retry_at`.
    Retry {
        retry_at: DateTime<Utc>,
        error: String,
    },
}

/// One step the courier took.
#[derive(Clone, Debug)]
pub struct CourierMove {
    pub shipment_id: Uuid,
    pub to: ShipmentStatus,
}

/// Shipments, tracking events and the order updates they owe.
#[async_trait]
pub trait ShipmentRepo: Send + Sync {
    async fn ping(&self) -> Result<(), RepoError>;
    /// Inserts the shipment, its lines, its LABEL_CREATED event (with the label's ids) and its
    /// shipment.created outbox event (with `correlation_id`) in one transaction, or returns the
    /// order's existing shipment (writing nothing): never two per order. The new shipment is
    /// not due for the courier until it is fulfilled.
    async fn create(
        &self,
        shipment: &NewShipment,
        label: &Label,
        correlation_id: &str,
    ) -> Result<Created, RepoError>;
    async fn shipment(&self, id: Uuid) -> Result<Option<Shipment>, RepoError>;
    async fn shipment_by_order(&self, order_id: Uuid) -> Result<Option<Shipment>, RepoError>;
    /// Applies `step` if the shipment is still in `from` at event `from_seq`: the new status,
    /// its tracking event, its shipment.status_changed outbox event (with `correlation_id`),
    /// the order update it implies and the courier's next due time, in one transaction. `None`
    /// (and nothing written) when the shipment moved on meanwhile.
    async fn advance(
        &self,
        id: Uuid,
        from: ShipmentStatus,
        from_seq: i32,
        step: &Step,
        courier_step: Duration,
        correlation_id: &str,
    ) -> Result<Option<Shipment>, RepoError>;
    /// The shipment's events after sequence number `after_seq`, oldest first.
    async fn events_after(&self, id: Uuid, after_seq: i32)
    -> Result<Vec<TrackingEvent>, RepoError>;
    /// The sequence number of one of the shipment's events.
    async fn event_seq(&self, shipment_id: Uuid, event_id: Uuid) -> Result<Option<i32>, RepoError>;
    /// One courier pass: claims up to `limit` shipments whose next step is due (VIP first, then
    /// the longest waiting) with `for update skip locked`, so that instances never take the
    /// same step twice, and applies each one's step (with its outbox event, no correlation id)
    /// in the same transaction.
    async fn courier_pass(
        &self,
        limit: i64,
        courier_step: Duration,
    ) -> Result<Vec<CourierMove>, RepoError>;
    /// Claims up to `limit` due order updates, at most the oldest pending one per shipment (so
    /// each shipment's updates are delivered in order), leasing them for `lease`.
    async fn claim_syncs(&self, limit: i64, lease: Duration) -> Result<Vec<OrderSync>, RepoError>;
    /// Records how an attempt ended.
    async fn finish_sync(&self, id: i64, outcome: &SyncOutcome) -> Result<(), RepoError>;
}
