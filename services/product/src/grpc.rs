//! The gRPC face of the product service: converts protobuf messages to domain calls and back,
//! and decides who may call what.
//!
//! Access is decided before a call reaches these handlers, by the platform's method guard from
//! each RPC's policy in product.proto: catalog reads and GetStock are public; catalog writes,
//! ListStock, ListStockMovements and SetLowStockThreshold need an admin token; Reserve, Commit
//! and Release admit only the order service's identity, and Adjust an admin or the order
//! service (restocking a cancelled order). The handlers still check roles where they act on
//! them, as a second line.

use std::sync::Arc;

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};
use shopmesh_contracts::pb::shopmesh::common::v1::Money as PbMoney;
use shopmesh_contracts::pb::shopmesh::product::v1::{
    self as pb, inventory_service_server::InventoryService as InventoryApi,
    product_service_server::ProductService as ProductApi,
};
use shopmesh_platform::auth::Identity;
use shopmesh_platform::grpc::{REQUEST_ID, admin, calling_service};
use shopmesh_platform::problem::FieldError;
use shopmesh_platform::time::timestamp;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::{
    Actor, Category, MAX_ATTRIBUTES_DEPTH, MovementReason, Product, ProductDraft, ProductSort,
    Reservation, ReservationStatus, StockLevel, StockMovement, field_error,
};
use crate::error::Error;
use crate::events::reason_pb;
use crate::service::{
    AdjustRequest, BatchOutcome, CatalogService, ImportRowDraft, InventoryService, SearchRequest,
};

/// Who is calling and which request this is, for the audit trail and the outbox.
fn actor<T>(request: &Request<T>, caller: Option<&Identity>) -> Actor {
    Actor {
        user_id: caller.map(|c| c.user_id.clone()),
        correlation_id: request
            .metadata()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The actor of an internal inventory call (Reserve, Commit, Release), which the method guard
/// admits from the order service only: the user behind the order when one is forwarded.
fn internal_actor<T>(request: &Request<T>) -> Actor {
    actor(request, request.extensions().get::<Identity>())
}

fn is_admin<T>(request: &Request<T>) -> bool {
    request
        .extensions()
        .get::<Identity>()
        .is_some_and(Identity::is_admin)
}

/// Converts a protobuf value nested at `depth` (the attributes document is level 1) to JSON,
/// refusing to go deeper than the product service accepts: a document that is too deep is not
/// converted past the first level too many (its content is checked in full by the domain).
fn json_value(value: prost_types::Value, depth: usize) -> Result<Value, FieldError> {
    let too_deep = || {
        field_error(
            "attributes",
            format!("must be nested at most {MAX_ATTRIBUTES_DEPTH} levels deep"),
        )
    };
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => Value::Number(
            Number::from_f64(n)
                .ok_or_else(|| field_error("attributes", "numbers must be finite"))?,
        ),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StructValue(_) | Kind::ListValue(_)) if depth >= MAX_ATTRIBUTES_DEPTH => {
            return Err(too_deep());
        }
        Some(Kind::StructValue(s)) => Value::Object(json_object(s, depth + 1)?),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .map(|v| json_value(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Converts a protobuf struct at `depth` (see [`json_value`]).
fn json_object(value: prost_types::Struct, depth: usize) -> Result<Map<String, Value>, FieldError> {
    value
        .fields
        .into_iter()
        .map(|(k, v)| json_value(v, depth).map(|v| (k, v)))
        .collect()
}

/// The attributes document of a product input.
fn attributes(value: prost_types::Struct) -> Result<Map<String, Value>, FieldError> {
    json_object(value, 1)
}

fn pb_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(pb_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(pb_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn pb_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), pb_value(v))).collect(),
    }
}

fn product_pb(product: &Product) -> pb::Product {
    let f = &product.fields;
    pb::Product {
        id: product.id.to_string(),
        sku: product.sku.as_str().to_owned(),
        name: f.name.clone(),
        description: f.description.clone(),
        category_id: f.category_id.map(|id| id.to_string()).unwrap_or_default(),
        price: Some(PbMoney {
            amount_minor: f.price.amount_minor,
            currency: f.price.currency.as_str().to_owned(),
        }),
        image_urls: f.image_urls.clone(),
        attributes: Some(pb_struct(&f.attributes)),
        active: f.active,
        in_stock: product.in_stock(),
        etag: product.etag(),
        create_time: Some(timestamp(product.created_at)),
        update_time: Some(timestamp(product.updated_at)),
        delete_time: product.deleted_at.map(timestamp),
    }
}

fn category_pb(category: &Category) -> pb::Category {
    pb::Category {
        id: category.id.to_string(),
        name: category.name.clone(),
        slug: category.slug.clone(),
        parent_id: category
            .parent_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        create_time: Some(timestamp(category.created_at)),
    }
}

fn stock_pb(level: &StockLevel) -> pb::Stock {
    pb::Stock {
        sku: level.sku.as_str().to_owned(),
        product_id: level.product_id.to_string(),
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.available(),
        low_stock_threshold: level.low_stock_threshold,
        update_time: Some(timestamp(level.updated_at)),
    }
}

fn movement_pb(movement: &StockMovement) -> pb::StockMovement {
    pb::StockMovement {
        id: movement.id.to_string(),
        sku: movement.sku.as_str().to_owned(),
        delta: movement.on_hand_delta,
        reason: reason_pb(movement.reason).into(),
        on_hand_after: movement.on_hand_after,
        actor_id: movement.actor_id.clone().unwrap_or_default(),
        order_id: movement
            .order_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        note: movement.note.clone(),
        create_time: Some(timestamp(movement.created_at)),
        reserved_delta: movement.reserved_delta,
        reserved_after: movement.reserved_after,
    }
}

fn status_pb(status: ReservationStatus) -> pb::ReservationStatus {
    match status {
        ReservationStatus::Active => pb::ReservationStatus::Active,
        ReservationStatus::Committed => pb::ReservationStatus::Committed,
        ReservationStatus::Released => pb::ReservationStatus::Released,
        ReservationStatus::Expired => pb::ReservationStatus::Expired,
    }
}

fn reservation_pb(reservation: &Reservation) -> pb::Reservation {
    pb::Reservation {
        order_id: reservation.order_id.to_string(),
        status: status_pb(reservation.status).into(),
        lines: reservation
            .lines
            .iter()
            .map(|line| pb::ReservationLine {
                sku: line.sku.as_str().to_owned(),
                quantity: line.quantity,
            })
            .collect(),
        expire_time: Some(timestamp(reservation.expires_at)),
        create_time: Some(timestamp(reservation.created_at)),
    }
}

fn draft(input: Option<pb::ProductInput>) -> Result<ProductDraft, Error> {
    let input = input.unwrap_or_default();
    let price = input.price.unwrap_or_default();
    Ok(ProductDraft {
        sku: input.sku,
        name: input.name,
        description: input.description,
        category_id: input.category_id,
        price_amount_minor: price.amount_minor,
        price_currency: price.currency,
        image_urls: input.image_urls,
        attributes: input
            .attributes
            .map(attributes)
            .transpose()?
            .unwrap_or_default(),
        active: input.active,
    })
}

fn sort(raw: i32) -> Result<Option<ProductSort>, Error> {
    match pb::ProductSort::try_from(raw) {
        Ok(pb::ProductSort::Unspecified) => Ok(None),
        Ok(pb::ProductSort::Relevance) => Ok(Some(ProductSort::Relevance)),
        Ok(pb::ProductSort::PriceAsc) => Ok(Some(ProductSort::PriceAsc)),
        Ok(pb::ProductSort::PriceDesc) => Ok(Some(ProductSort::PriceDesc)),
        Ok(pb::ProductSort::Newest) => Ok(Some(ProductSort::Newest)),
        Err(_) => Err(Error::BadArgument("unknown sort".into())),
    }
}

fn reason(raw: i32) -> Option<MovementReason> {
    match pb::StockMovementReason::try_from(raw).ok()? {
        pb::StockMovementReason::Unspecified => None,
        pb::StockMovementReason::Receiving => Some(MovementReason::Receiving),
        pb::StockMovementReason::Damage => Some(MovementReason::Damage),
        pb::StockMovementReason::Correction => Some(MovementReason::Correction),
        pb::StockMovementReason::Return => Some(MovementReason::Return),
        pb::StockMovementReason::Sale => Some(MovementReason::Sale),
        pb::StockMovementReason::Reserve => Some(MovementReason::Reserve),
        pb::StockMovementReason::Release => Some(MovementReason::Release),
        pb::StockMovementReason::Expire => Some(MovementReason::Expire),
    }
}

/// A protobuf duration in signed milliseconds, saturating.
fn millis(duration: &prost_types::Duration) -> i64 {
    duration
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(duration.nanos / 1_000_000))
}

fn money_bound(money: Option<PbMoney>) -> Option<(i64, String)> {
    money.map(|m| (m.amount_minor, m.currency))
}

/// Implements `shopmesh.product.v1.ProductService`.
#[derive(Clone)]
pub struct ProductGrpc {
    catalog: Arc<CatalogService>,
}

impl ProductGrpc {
    pub fn new(catalog: Arc<CatalogService>) -> Self {
        Self { catalog }
    }
}

#[tonic::async_trait]
impl ProductApi for ProductGrpc {
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let product = self.catalog.get(&request.into_inner().product_id).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product_pb(&product)),
        }))
    }

    async fn get_product_by_sku(
        &self,
        request: Request<pb::GetProductBySkuRequest>,
    ) -> Result<Response<pb::GetProductBySkuResponse>, Status> {
        let product = self.catalog.get_by_sku(&request.into_inner().sku).await?;
        Ok(Response::new(pb::GetProductBySkuResponse {
            product: Some(product_pb(&product)),
        }))
    }

    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        let (products, not_found_ids) = self
            .catalog
            .batch_get(&request.into_inner().product_ids)
            .await?;
        Ok(Response::new(pb::BatchGetProductsResponse {
            products: products.iter().map(product_pb).collect(),
            not_found_ids,
        }))
    }

    async fn search_products(
        &self,
        request: Request<pb::SearchProductsRequest>,
    ) -> Result<Response<pb::SearchProductsResponse>, Status> {
        let caller_is_admin = is_admin(&request);
        let req = request.into_inner();
        let search = SearchRequest {
            q: req.q,
            category_id: req.category_id,
            min_price: money_bound(req.min_price),
            max_price: money_bound(req.max_price),
            in_stock_only: req.in_stock_only,
            sort: sort(req.sort)?,
            page_size: req.page_size,
            page_token: req.page_token,
            include_inactive: req.include_inactive,
        };
        let page = self.catalog.search(&search, caller_is_admin).await?;
        Ok(Response::new(pb::SearchProductsResponse {
            products: page.products.iter().map(product_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let caller = admin(&request)?;
        let actor = actor(&request, Some(&caller));
        let req = request.into_inner();
        let product = self
            .catalog
            .create(
                &draft(req.product)?,
                req.initial_stock,
                req.low_stock_threshold,
                &actor,
            )
            .await?;
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(product_pb(&product)),
        }))
    }

    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        let caller = admin(&request)?;
        let actor = actor(&request, Some(&caller));
        let req = request.into_inner();
        let mask = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let product = self
            .catalog
            .update(
                &req.product_id,
                &draft(req.product)?,
                &mask,
                &req.etag,
                &actor,
            )
            .await?;
        Ok(Response::new(pb::UpdateProductResponse {
            product: Some(product_pb(&product)),
        }))
    }

    async fn delete_product(
        &self,
        request: Request<pb::DeleteProductRequest>,
    ) -> Result<Response<pb::DeleteProductResponse>, Status> {
        let caller = admin(&request)?;
        let actor = actor(&request, Some(&caller));
        let req = request.into_inner();
        let product = self
            .catalog
            .delete(&req.product_id, &req.etag, &actor)
            .await?;
        Ok(Response::new(pb::DeleteProductResponse {
            product: Some(product_pb(&product)),
        }))
    }

    async fn import_products(
        &self,
        request: Request<Streaming<pb::ImportProductsRequest>>,
    ) -> Result<Response<pb::ImportProductsResponse>, Status> {
        let caller = admin(&request)?;
        let actor = actor(&request, Some(&caller));
        let mut stream = request.into_inner();
        let mut response = pb::ImportProductsResponse::default();
        let mut batch_index: i32 = 0;
        loop {
            let batch = match stream.message().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                // The caller went away or ran out of time mid-stream: the batches committed
                // so far stay committed, and the answer says which (if the caller still
                // listens).
                Err(status) => {
                    tracing::warn!(code = ?status.code(), batches = batch_index, "import stream broke off");
                    response.incomplete = true;
                    response.stopped_reason = match status.code() {
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                            "the import ran past its deadline".to_owned()
                        }
                        _ => "the import stream broke off".to_owned(),
                    };
                    break;
                }
            };
            let mut rows = Vec::with_capacity(batch.rows.len());
            for row in batch.rows {
                // A row whose attributes cannot be converted is still validated in full, so the
                // caller learns every problem of the row at once.
                let (draft, edge_errors) = match draft(row.product.clone()) {
                    Ok(draft) => (draft, Vec::new()),
                    Err(Error::Invalid(errors)) => {
                        let without_attributes = row.product.map(|p| pb::ProductInput {
                            attributes: None,
                            ..p
                        });
                        (draft(without_attributes)?, errors)
                    }
                    Err(err) => return Err(err.into()),
                };
                rows.push(ImportRowDraft {
                    row_number: row.row_number,
                    draft,
                    initial_stock: row.initial_stock,
                    edge_errors,
                });
            }
            let outcome = self.catalog.import_batch(&rows, &actor).await?;
            match outcome {
                BatchOutcome::Committed(counts) => {
                    response.batches_committed = response.batches_committed.saturating_add(1);
                    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
                    response.products_created = response
                        .products_created
                        .saturating_add(count(counts.created));
                    response.products_updated = response
                        .products_updated
                        .saturating_add(count(counts.updated.saturating_add(counts.unchanged)));
                }
                BatchOutcome::Rejected(errors) => {
                    response.batches_rejected = response.batches_rejected.saturating_add(1);
                    response
                        .errors
                        .extend(errors.into_iter().map(|e| pb::ImportRowError {
                            batch_index,
                            row_number: e.row_number,
                            sku: e.sku,
                            field: e.field,
                            message: e.message,
                        }));
                }
            }
            batch_index = batch_index.saturating_add(1);
        }
        Ok(Response::new(response))
    }

    async fn list_categories(
        &self,
        _request: Request<pb::ListCategoriesRequest>,
    ) -> Result<Response<pb::ListCategoriesResponse>, Status> {
        let categories = self.catalog.categories().await?;
        Ok(Response::new(pb::ListCategoriesResponse {
            categories: categories.iter().map(category_pb).collect(),
        }))
    }

    async fn create_category(
        &self,
        request: Request<pb::CreateCategoryRequest>,
    ) -> Result<Response<pb::CreateCategoryResponse>, Status> {
        admin(&request)?;
        let req = request.into_inner();
        let category = self
            .catalog
            .create_category(&req.name, &req.slug, &req.parent_id)
            .await?;
        Ok(Response::new(pb::CreateCategoryResponse {
            category: Some(category_pb(&category)),
        }))
    }
}

/// Implements `shopmesh.product.v1.InventoryService`.
#[derive(Clone)]
pub struct InventoryGrpc {
    inventory: Arc<InventoryService>,
}

impl InventoryGrpc {
    pub fn new(inventory: Arc<InventoryService>) -> Self {
        Self { inventory }
    }
}

#[tonic::async_trait]
impl InventoryApi for InventoryGrpc {
    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let level = self.inventory.stock(&request.into_inner().sku).await?;
        Ok(Response::new(pb::GetStockResponse {
            stock: Some(stock_pb(&level)),
        }))
    }

    async fn list_stock(
        &self,
        request: Request<pb::ListStockRequest>,
    ) -> Result<Response<pb::ListStockResponse>, Status> {
        admin(&request)?;
        let req = request.into_inner();
        let (levels, next) = self
            .inventory
            .list_stock(req.page_size, &req.page_token, req.low_stock_only)
            .await?;
        Ok(Response::new(pb::ListStockResponse {
            stocks: levels.iter().map(stock_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn list_stock_movements(
        &self,
        request: Request<pb::ListStockMovementsRequest>,
    ) -> Result<Response<pb::ListStockMovementsResponse>, Status> {
        admin(&request)?;
        let req = request.into_inner();
        let (movements, next) = self
            .inventory
            .movements(&req.sku, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListStockMovementsResponse {
            movements: movements.iter().map(movement_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let actor = internal_actor(&request);
        let req = request.into_inner();
        let lines: Vec<(String, i32)> = req
            .lines
            .into_iter()
            .map(|line| (line.sku, line.quantity))
            .collect();
        let reservation = self
            .inventory
            .reserve(&req.order_id, &lines, req.ttl.as_ref().map(millis), &actor)
            .await?;
        Ok(Response::new(pb::ReserveResponse {
            reservation: Some(reservation_pb(&reservation)),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let actor = internal_actor(&request);
        let reservation = self
            .inventory
            .commit(&request.into_inner().order_id, &actor)
            .await?;
        Ok(Response::new(pb::CommitResponse {
            reservation: Some(reservation_pb(&reservation)),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let actor = internal_actor(&request);
        let reservation = self
            .inventory
            .release(&request.into_inner().order_id, &actor)
            .await?;
        Ok(Response::new(pb::ReleaseResponse {
            reservation: reservation.as_ref().map(reservation_pb),
        }))
    }

    async fn adjust(
        &self,
        request: Request<pb::AdjustRequest>,
    ) -> Result<Response<pb::AdjustResponse>, Status> {
        // An admin, or the order service restocking a cancelled order.
        let actor = match calling_service(&request) {
            Some(service) if service.name == "order" => internal_actor(&request),
            _ => {
                let caller = admin(&request)?;
                actor(&request, Some(&caller))
            }
        };
        let req = request.into_inner();
        let adjustment = AdjustRequest {
            sku: req.sku,
            delta: req.delta,
            reason: reason(req.reason),
            note: req.note,
            order_id: req.order_id,
            idempotency_key: req.idempotency_key,
        };
        let (level, movement) = self.inventory.adjust(&adjustment, &actor).await?;
        Ok(Response::new(pb::AdjustResponse {
            stock: Some(stock_pb(&level)),
            movement: Some(movement_pb(&movement)),
        }))
    }

    async fn set_low_stock_threshold(
        &self,
        request: Request<pb::SetLowStockThresholdRequest>,
    ) -> Result<Response<pb::SetLowStockThresholdResponse>, Status> {
        let caller = admin(&request)?;
        let actor = actor(&request, Some(&caller));
        let req = request.into_inner();
        let level = self
            .inventory
            .set_threshold(&req.sku, req.low_stock_threshold, &actor)
            .await?;
        Ok(Response::new(pb::SetLowStockThresholdResponse {
            stock: Some(stock_pb(&level)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_through_struct() {
        let json = serde_json::json!({
            "colour": "red",
            "sizes": [38.0, 39.5],
            "waterproof": true,
            "care": {"wash": null}
        });
        let Value::Object(map) = json else {
            unreachable!()
        };
        assert_eq!(attributes(pb_struct(&map)).unwrap(), map);
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        let value = prost_types::Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert!(json_value(value, 1).is_err());
    }

    fn nested(levels: usize) -> Map<String, Value> {
        let mut value = Value::String("leaf".into());
        for _ in 1..levels {
            let mut map = Map::new();
            map.insert("n".into(), value);
            value = Value::Object(map);
        }
        let mut map = Map::new();
        map.insert("n".into(), value);
        map
    }

    #[test]
    fn attributes_deeper_than_the_cap_are_not_converted() {
        let ok = nested(MAX_ATTRIBUTES_DEPTH);
        assert_eq!(attributes(pb_struct(&ok)).unwrap(), ok);
        let error = attributes(pb_struct(&nested(MAX_ATTRIBUTES_DEPTH + 1))).unwrap_err();
        assert_eq!(error.field, "attributes");
        assert!(error.message.contains("levels deep"), "{}", error.message);
    }

    #[test]
    fn durations_become_signed_millis() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(millis(&d(2, 500_000_000)), 2500);
        assert_eq!(millis(&d(-1, 0)), -1000);
        assert_eq!(millis(&d(i64::MAX, 0)), i64::MAX);
    }
}
