//! Use cases of the product service, written against the storage ports.

mod catalog;
mod inventory;

pub use catalog::{
    BatchOutcome, CatalogService, ImportRowDraft, RowError, SearchPage, SearchRequest,
};
pub use inventory::{AdjustRequest, InventoryService};
