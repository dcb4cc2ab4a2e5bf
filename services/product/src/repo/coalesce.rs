//! Reservations of many orders in one transaction.
//!
//! On a hot SKU every Reserve wants the same stock row: one transaction per order queues them
//! on its lock, each paying its own statements and commit while holding it. [`Coalescing`]
//! hands the reservations that arrive while a batch is in flight to the next batch, and
//! [`PgInventoryRepo::reserve_batch`] applies a batch in one transaction: the stock rows locked
//! once (in the lock order), every order decided in arrival order against the locked levels
//! (all lines or none, per order), then one update per SKU and one insert per table. The
//! guarantees are the single-order path's: no unit handed out twice (the rows are locked; the
//! check constraint still guards), all-or-nothing per order, idempotent per order id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::{
    Actor, Adjustment, Reservation, ReservationLine, Sku, StockLevel, StockMovement,
};
use crate::repo::inventory::PgInventoryRepo;
use crate::repo::{
    AdjustOutcome, CommitOutcome, InventoryRepo, ReleaseOutcome, RepoError, ReserveOutcome,
};

/// Orders per batch at most.
pub const MAX_BATCH: usize = 256;

/// One order's Reserve, waiting for its batch.
pub struct ReserveRequest {
    pub order_id: Uuid,
    pub lines: Vec<ReservationLine>,
    pub ttl: Duration,
    pub actor: Actor,
}

struct Pending {
    request: ReserveRequest,
    reply: oneshot::Sender<Result<ReserveOutcome, RepoError>>,
}

/// [`PgInventoryRepo`] with Reserve coalesced into batches; everything else goes straight
/// through.
pub struct Coalescing {
    repo: Arc<PgInventoryRepo>,
    queue: mpsc::Sender<Pending>,
}

impl Coalescing {
    /// Starts the batching task (it ends when this value is dropped).
    pub fn new(repo: PgInventoryRepo) -> Self {
        let repo = Arc::new(repo);
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(batches(repo.clone(), receiver));
        Self { repo, queue }
    }
}

async fn batches(repo: Arc<PgInventoryRepo>, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Whatever queued while the last batch ran is the next batch.
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let pending = std::mem::take(&mut batch);
        let (requests, replies): (Vec<_>, Vec<_>) =
            pending.into_iter().map(|p| (p.request, p.reply)).unzip();
        match repo.reserve_batch(&requests).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that gave up has dropped its receiver: nothing to tell.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                // The batch failed as a whole: each order on its own, so one order's
                // failure is its own and the others are unaffected.
                tracing::warn!(error = %err, orders = requests.len(),
                    "a reservation batch failed; reserving its orders one by one");
                for (request, reply) in requests.into_iter().zip(replies) {
                    let outcome = repo
                        .reserve(
                            request.order_id,
                            &request.lines,
                            request.ttl,
                            &request.actor,
                        )
                        .await;
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

#[async_trait]
impl InventoryRepo for Coalescing {
    async fn stock(&self, sku: &Sku) -> Result<Option<StockLevel>, RepoError> {
        self.repo.stock(sku).await
    }

    async fn list_stock(
        &self,
        after: Option<&Sku>,
        low_only: bool,
        limit: usize,
    ) -> Result<Vec<StockLevel>, RepoError> {
        self.repo.list_stock(after, low_only, limit).await
    }

    async fn movements(
        &self,
        sku: &Sku,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StockMovement>, RepoError> {
        self.repo.movements(sku, before_seq, limit).await
    }

    async fn reservation(&self, order_id: Uuid) -> Result<Option<Reservation>, RepoError> {
        self.repo.reservation(order_id).await
    }

    async fn reserve(
        &self,
        order_id: Uuid,
        lines: &[ReservationLine],
        ttl: Duration,
        actor: &Actor,
    ) -> Result<ReserveOutcome, RepoError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request: ReserveRequest {
                order_id,
                lines: lines.to_vec(),
                ttl,
                actor: actor.clone(),
            },
            reply,
        };
        if self.queue.send(pending).await.is_err() {
            return Err(RepoError::Backend(anyhow::anyhow!(
                "the reservation batcher has stopped"
            )));
        }
        answer.await.map_err(|_| {
            RepoError::Backend(anyhow::anyhow!("the reservation batcher dropped an order"))
        })?
    }

    async fn commit(&self, order_id: Uuid, actor: &Actor) -> Result<CommitOutcome, RepoError> {
        self.repo.commit(order_id, actor).await
    }

    async fn release(&self, order_id: Uuid, actor: &Actor) -> Result<ReleaseOutcome, RepoError> {
        self.repo.release(order_id, actor).await
    }

    async fn adjust(
        &self,
        adjustment: &Adjustment,
        actor: &Actor,
    ) -> Result<AdjustOutcome, RepoError> {
        self.repo.adjust(adjustment, actor).await
    }

    async fn set_threshold(
        &self,
        sku: &Sku,
        threshold: i32,
        actor: &Actor,
    ) -> Result<Option<StockLevel>, RepoError> {
        self.repo.set_threshold(sku, threshold, actor).await
    }

    async fn expire_due(&self, limit: usize) -> Result<usize, RepoError> {
        self.repo.expire_due(limit).await
    }
}

/// What the batch decided for one order, before anything is written.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Reserve,
    Short(Vec<Sku>),
    Unknown(Vec<Sku>),
}

/// Decides each order in turn against `available` (per SKU, as locked), taking what a reserved
/// order holds out of it: all of an order's lines or none.
pub(super) fn decide(
    orders: &[&[ReservationLine]],
    available: &mut BTreeMap<String, i32>,
) -> Vec<Decision> {
    orders
        .iter()
        .map(|lines| {
            let unknown: Vec<Sku> = lines
                .iter()
                .filter(|l| !available.contains_key(l.sku.as_str()))
                .map(|l| l.sku.clone())
                .collect();
            if !unknown.is_empty() {
                return Decision::Unknown(unknown);
            }
            let short: Vec<Sku> = lines
                .iter()
                .filter(|l| {
                    available
                        .get(l.sku.as_str())
                        .is_none_or(|a| *a < l.quantity)
                })
                .map(|l| l.sku.clone())
                .collect();
            if !short.is_empty() {
                return Decision::Short(short);
            }
            for line in lines.iter() {
                if let Some(left) = available.get_mut(line.sku.as_str()) {
                    *left -= line.quantity;
                }
            }
            Decision::Reserve
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(raw: &[(&str, i32)]) -> Vec<ReservationLine> {
        raw.iter()
            .map(|(sku, quantity)| ReservationLine {
                sku: Sku::parse(sku).unwrap(),
                quantity: *quantity,
            })
            .collect()
    }

    #[test]
    fn orders_are_decided_in_turn_all_lines_or_none() {
        let mut available = BTreeMap::from([("HOT".to_owned(), 3), ("COLD".to_owned(), 1)]);
        let a = lines(&[("HOT", 2)]);
        let b = lines(&[("COLD", 1), ("HOT", 2)]);
        let c = lines(&[("COLD", 1)]);
        let d = lines(&[("HOT", 1), ("NONE", 1)]);
        let e = lines(&[("HOT", 1)]);
        let decided = decide(&[&a, &b, &c, &d, &e], &mut available);
        assert_eq!(decided[0], Decision::Reserve);
        // Only 1 HOT left: b takes nothing, so its COLD stays for c.
        assert_eq!(
            decided[1],
            Decision::Short(vec![Sku::parse("HOT").unwrap()])
        );
        assert_eq!(decided[2], Decision::Reserve);
        assert_eq!(
            decided[3],
            Decision::Unknown(vec![Sku::parse("NONE").unwrap()])
        );
        assert_eq!(decided[4], Decision::Reserve);
        assert_eq!(available["HOT"], 0);
        assert_eq!(available["COLD"], 0);
    }
}
