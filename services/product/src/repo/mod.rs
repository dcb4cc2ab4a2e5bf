//! Storage ports of the product service and their PostgreSQL adapters.
//!
//! The ports return outcomes in domain terms ("short of stock", "version moved on"); the service
//! decides what each means for the caller. Invariants that must hold under concurrency live in
//! the database: check constraints on stock levels, conditional updates, unique keys.

mod catalog;
mod coalesce;
mod inventory;
mod sql;

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub use catalog::PgCatalogRepo;
pub use coalesce::Coalescing;
pub use inventory::PgInventoryRepo;

use crate::domain::{
    Actor, Adjustment, Category, NewProduct, Product, ProductFields, Reservation, ReservationLine,
    SearchCursor, SearchFilter, Sku, Slug, StockLevel, StockMovement,
};

/// A storage failure the service may want to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A unique constraint (named) refused the write.
    #[error("unique constraint {0} violated")]
    Unique(String),
    /// A foreign key (named) refused the write.
    #[error("foreign key {0} violated")]
    ForeignKey(String),
    /// A check constraint (named) refused the write.
    #[error("check constraint {0} violated")]
    Check(String),
    /// A number left its column's range.
    #[error("numeric value out of range")]
    OutOfRange,
    #[error(transparent)]
    Backend(#[from] anyhow::Error),
}

impl From<sqlx::Error> for RepoError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            let constraint = db.constraint().unwrap_or_default().to_owned();
            match db.code().as_deref() {
                Some("23505") => return Self::Unique(constraint),
                Some("23503") => return Self::ForeignKey(constraint),
                Some("23514") => return Self::Check(constraint),
                Some("22003") => return Self::OutOfRange,
                _ => {}
            }
        }
        Self::Backend(error.into())
    }
}

/// One row of an import batch, validated.
#[derive(Clone, Debug)]
pub struct ImportRow {
    pub sku: Sku,
    pub fields: ProductFields,
    /// Units on hand when the row creates a product; ignored on update.
    pub initial_stock: i32,
    /// Threshold of a created product's stock record.
    pub low_stock_threshold: i32,
}

/// What an import batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub created: usize,
    pub updated: usize,
    /// Rows that matched a product whose fields were already equal: nothing was written.
    pub unchanged: usize,
}

/// Products and categories.
#[async_trait]
pub trait CatalogRepo: Send + Sync {
    async fn ping(&self) -> Result<(), RepoError>;
    async fn product(&self, id: Uuid) -> Result<Option<Product>, RepoError>;
    async fn product_by_sku(&self, sku: &Sku) -> Result<Option<Product>, RepoError>;
    /// The products with these ids, in no particular order.
    async fn products(&self, ids: &[Uuid]) -> Result<Vec<Product>, RepoError>;
    /// Up to `limit` products after `after` in the filter's order, with each one's sort key.
    async fn search(
        &self,
        filter: &SearchFilter,
        after: Option<&SearchCursor>,
        limit: usize,
    ) -> Result<Vec<(Product, SearchCursor)>, RepoError>;
    /// Inserts the product, its stock record and (for initial stock) a RECEIVING movement.
    /// `Unique("products_sku_key")` when the SKU is taken.
    async fn create_product(
        &self,
        product: &NewProduct,
        actor: &Actor,
    ) -> Result<Product, RepoError>;
    /// Writes `fields` if the product is live and still at `expected_version`; `None` otherwise.
    async fn update_product(
        &self,
        id: Uuid,
        expected_version: i64,
        fields: &ProductFields,
        changed: &[&str],
        actor: &Actor,
    ) -> Result<Option<Product>, RepoError>;
    /// Soft-deletes a live product (at `expected_version` when given); `None` otherwise.
    async fn delete_product(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        actor: &Actor,
    ) -> Result<Option<Product>, RepoError>;
    /// Upserts every row by SKU in one transaction: all rows or none.
    async fn import(&self, rows: &[ImportRow], actor: &Actor) -> Result<ImportCounts, RepoError>;
    async fn categories(&self) -> Result<Vec<Category>, RepoError>;
    /// The ids among `ids` that name a category.
    async fn existing_categories(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, RepoError>;
    /// `Unique("categories_slug_key")` for a taken slug, `ForeignKey(..)` for an unknown parent.
    async fn create_category(
        &self,
        name: &str,
        slug: &Slug,
        parent_id: Option<Uuid>,
    ) -> Result<Category, RepoError>;
    /// The category with this slug, creating it when absent (for seeding).
    async fn ensure_category(
        &self,
        name: &str,
        slug: &Slug,
        parent_id: Option<Uuid>,
    ) -> Result<Category, RepoError>;
}

/// What Reserve did.
#[derive(Clone, Debug)]
pub enum ReserveOutcome {
    Reserved(Reservation),
    /// The order already had a reservation (returned as stored); nothing changed.
    Existing(Reservation),
    /// These SKUs lack available stock; nothing was reserved.
    Short(Vec<Sku>),
    /// These SKUs have no stock record; nothing was reserved.
    Unknown(Vec<Sku>),
}

/// What Commit did.
#[derive(Clone, Debug)]
pub enum CommitOutcome {
    Committed(Reservation),
    AlreadyCommitted(Reservation),
    /// Released or expired (possibly just now, found past its TTL); nothing was sold.
    Closed(Reservation),
    NotFound,
}

/// What Release did.
#[derive(Clone, Debug)]
pub enum ReleaseOutcome {
    Released(Reservation),
    /// Already released or expired: nothing changed.
    AlreadyClosed(Reservation),
    /// Sold: releasing is refused.
    Committed(Reservation),
    NotFound,
}

/// What Adjust did.
#[derive(Clone, Debug)]
pub enum AdjustOutcome {
    Adjusted(StockLevel, StockMovement),
    /// The idempotency key was used before: the first movement and today's level.
    Repeated(StockLevel, StockMovement),
    /// on_hand would have dropped below reserved (or zero).
    BelowReserved(StockLevel),
    UnknownSku,
}

/// Stock levels, reservations and the audit trail.
#[async_trait]
pub trait InventoryRepo: Send + Sync {
    async fn stock(&self, sku: &Sku) -> Result<Option<StockLevel>, RepoError>;
    /// Stock levels in SKU order after `after`.
    async fn list_stock(
        &self,
        after: Option<&Sku>,
        low_only: bool,
        limit: usize,
    ) -> Result<Vec<StockLevel>, RepoError>;
    /// A SKU's movements, newest first, older than `before_seq`.
    async fn movements(
        &self,
        sku: &Sku,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StockMovement>, RepoError>;
    async fn reservation(&self, order_id: Uuid) -> Result<Option<Reservation>, RepoError>;
    /// Holds every line or none, one conditional update per line, in one transaction.
    async fn reserve(
        &self,
        order_id: Uuid,
        lines: &[ReservationLine],
        ttl: Duration,
        actor: &Actor,
    ) -> Result<ReserveOutcome, RepoError>;
    async fn commit(&self, order_id: Uuid, actor: &Actor) -> Result<CommitOutcome, RepoError>;
    async fn release(&self, order_id: Uuid, actor: &Actor) -> Result<ReleaseOutcome, RepoError>;
    async fn adjust(
        &self,
        adjustment: &Adjustment,
        actor: &Actor,
    ) -> Result<AdjustOutcome, RepoError>;
    async fn set_threshold(
        &self,
        sku: &Sku,
        threshold: i32,
        actor: &Actor,
    ) -> Result<Option<StockLevel>, RepoError>;
    /// Expires up to `limit` active reservations past their TTL, giving their stock back; each in
    /// its own transaction, skipping any another worker holds. Returns how many it expired.
    async fn expire_due(&self, limit: usize) -> Result<usize, RepoError>;
}
