//! Plain domain types of the product service, validated by parsing. Generated protobuf types are
//! converted into these at the gRPC edge and never travel further in.
//!
//! One module per concept; everything is re-exported here, so callers name `crate::domain::Sku`
//! and never the file a type lives in.

mod actor;
mod category;
mod currency;
mod money;
mod page;
mod product;
mod reservation;
mod search;
mod sku;
mod stock;
mod text;

pub use self::actor::Actor;
pub use self::category::{Category, Slug};
pub use self::currency::Currency;
pub use self::money::{MAX_PRICE_MINOR, Money, parse_price};
pub use self::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_size};
pub use self::product::{
    MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTES_DEPTH, MAX_BATCH_GET, MAX_IMAGE_URLS, MAX_IMPORT_ROWS,
    NewProduct, Product, ProductDraft, ProductFields, UPDATABLE_FIELDS, apply_mask, etag,
    parse_etag,
};
pub use self::reservation::{
    MAX_RESERVATION_LINES, Reservation, ReservationLine, ReservationStatus, reservation_lines,
};
pub use self::search::{MAX_QUERY_CHARS, ProductSort, SearchCursor, SearchFilter, SortKey};
pub use self::sku::Sku;
pub use self::stock::{
    Adjustment, LowStockChange, MovementReason, StockLevel, StockMovement, low_stock_change,
};
pub use self::text::{field_error, has_control, multiline_text, optional_id, required_text};
