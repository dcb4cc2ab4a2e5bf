//! `/api/products`, `/api/categories` (public reads) and `/api/admin/products`,
//! `/api/admin/categories` (admin writes), on the product service's ProductService.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::product::v1 as pb;
use shopmesh_platform::problem::Problem;

use crate::dto::ProblemDoc;
use crate::dto::product::{
    CategoryBody, CategoryList, CategoryQuery, CategoryResponse, ImportReport, NewProductBody,
    ProductPage, ProductResponse, ProductSort, ReplaceProductBody, SearchQuery,
};
use crate::extract::{AdminCaller, Anonymous, ApiJson, ApiQuery, Caller};
use crate::import::import_rows;
use crate::routes::{PROBLEM, page_size, upstream};
use crate::state::AppState;

/// Rows sent to the product service per all-or-nothing import batch.
pub const IMPORT_BATCH_ROWS: usize = 200;

/// Time kept back at the end of an import's budget for the product service's answer.
const IMPORT_ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

fn etag_value(etag: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{etag}\"")).ok()
}

fn with_etag(status: StatusCode, product: pb::Product) -> Response {
    let etag = etag_value(&product.etag);
    let mut response = (status, axum::Json(ProductResponse::from(product))).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The etag inside an `If-Match` value (`"abc"` or `W/"abc"`); `*` means any.
/// The entity tag an `If-Match` header names; a blank header names none (so a PUT without a
/// usable one is 428, like one without the header).
fn if_match(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::IF_MATCH)?.to_str().ok()?.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    let value = value.trim_matches('"');
    (!value.is_empty()).then(|| value.to_owned())
}

fn money(amount: Option<i64>, currency: &Option<String>) -> Option<Money> {
    amount.map(|amount_minor| Money {
        amount_minor,
        currency: currency.clone().unwrap_or_default(),
    })
}

/// Search the catalog: full-text `q` (ranked), category (with descendants), price range,
/// in-stock only, sorted, cursor-paged.
#[utoipa::path(
    get, path = "/api/products", tag = "catalog",
    params(SearchQuery),
    responses(
        (status = 200, description = "One page of products", body = ProductPage),
        (status = 400, description = "Malformed cursor or page size over the cap", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid filter values", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<axum::Json<ProductPage>, Problem> {
    let page_size = page_size(query.limit)?;
    let request = pb::SearchProductsRequest {
        q: query.q.unwrap_or_default(),
        category_id: query.category_id.unwrap_or_default(),
        min_price: money(query.min_price, &query.currency),
        max_price: money(query.max_price, &query.currency),
        in_stock_only: query.in_stock.unwrap_or(false),
        sort: pb::ProductSort::from(query.sort.unwrap_or(ProductSort::Default)).into(),
        page_size,
        page_token: query.cursor.unwrap_or_default(),
        include_inactive: false,
    };
    let page = state
        .product
        .clone()
        .search_products(ctx.request(request))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(axum::Json(ProductPage {
        items: page.products.into_iter().map(Into::into).collect(),
        next_cursor: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    }))
}

/// One product by id (soft-deleted products stay readable, with `deleted_at` set).
#[utoipa::path(
    get, path = "/api/products/{id}", tag = "catalog",
    params(("id" = String, Path, format = Uuid, description = "Product id (a UUID)")),
    responses(
        (status = 200, description = "The product; its version is in the ETag header", body = ProductResponse),
        (status = 404, description = "No such product", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_product(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let product = state
        .product
        .clone()
        .get_product(ctx.request(pb::GetProductRequest { product_id: id }))
        .await
        .map_err(upstream)?
        .into_inner()
        .product
        .ok_or_else(Problem::internal)?;
    Ok(with_etag(StatusCode::OK, product))
}

/// One product by SKU.
#[utoipa::path(
    get, path = "/api/products/sku/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "Stock-keeping unit: 2 to 40 letters, digits or dashes, starting and ending with a letter or digit (case-insensitive)", pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}[A-Za-z0-9]$", min_length = 2, max_length = 40)),
    responses(
        (status = 200, description = "The product; its version is in the ETag header", body = ProductResponse),
        (status = 404, description = "No such product", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_product_by_sku(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    Path(sku): Path<String>,
) -> Result<Response, Problem> {
    let product = state
        .product
        .clone()
        .get_product_by_sku(ctx.request(pb::GetProductBySkuRequest { sku }))
        .await
        .map_err(upstream)?
        .into_inner()
        .product
        .ok_or_else(Problem::internal)?;
    Ok(with_etag(StatusCode::OK, product))
}

/// The category tree as a flat list, parents before children; with `parent_id`, only that
/// category's direct children (`parent_id=` empty: the roots).
#[utoipa::path(
    get, path = "/api/categories", tag = "catalog",
    params(CategoryQuery),
    responses((status = 200, description = "The categories", body = CategoryList))
)]
pub async fn list_categories(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    ApiQuery(query): ApiQuery<CategoryQuery>,
) -> Result<axum::Json<CategoryList>, Problem> {
    let categories = state
        .product
        .clone()
        .list_categories(ctx.request(pb::ListCategoriesRequest {}))
        .await
        .map_err(upstream)?
        .into_inner()
        .categories;
    Ok(axum::Json(CategoryList {
        items: categories
            .into_iter()
            .filter(|c| query.parent_id.as_ref().is_none_or(|p| *p == c.parent_id))
            .map(Into::into)
            .collect(),
    }))
}

/// Create a category.
#[utoipa::path(
    post, path = "/api/admin/categories", tag = "admin",
    security(("bearer" = [])),
    request_body(content = CategoryBody, example = json!({
        "name": "Running shoes",
        "slug": "running-shoes"
    })),
    responses(
        (status = 201, description = "Created", body = CategoryResponse),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "The slug is taken", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid fields or unknown parent", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn create_category(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiJson(body): ApiJson<CategoryBody>,
) -> Result<impl IntoResponse, Problem> {
    let category = state
        .product
        .clone()
        .create_category(caller.ctx.request(pb::CreateCategoryRequest {
            name: body.name,
            slug: body.slug,
            parent_id: body.parent_id.unwrap_or_default(),
        }))
        .await
        .map_err(upstream)?
        .into_inner()
        .category
        .ok_or_else(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CategoryResponse::from(category)),
    ))
}

/// Create a product (and its stock record).
#[utoipa::path(
    post, path = "/api/admin/products", tag = "admin",
    security(("bearer" = [])),
    request_body(content = NewProductBody, example = json!({
        "sku": "TSHIRT-RED-M",
        "name": "Red T-shirt, M",
        "description": "100% cotton.",
        "price": {"amount": 1999, "currency": "USD"},
        "image_urls": ["https://images.example.com/tshirt-red.jpg"],
        "attributes": {"color": "red", "size": "M"},
        "active": true,
        "initial_stock": 25,
        "low_stock_threshold": 5
    })),
    responses(
        (status = 201, description = "Created; the version is in the ETag header", body = ProductResponse),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "The SKU is taken", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid fields (negative price, unknown currency …)", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn create_product(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    ApiJson(body): ApiJson<NewProductBody>,
) -> Result<Response, Problem> {
    let request = body.into_request();
    let product = state
        .product
        .clone()
        .create_product(caller.ctx.request(request))
        .await
        .map_err(upstream)?
        .into_inner()
        .product
        .ok_or_else(Problem::internal)?;
    let location = HeaderValue::from_str(&format!("/api/products/{}", product.id)).ok();
    let mut response = with_etag(StatusCode::CREATED, product);
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Replace a product's editable fields. `If-Match` with the ETag you read is required: a stale
/// one is refused with 412, a missing one with 428.
#[utoipa::path(
    put, path = "/api/admin/products/{id}", tag = "admin",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "Product id (a UUID)"),
        ("If-Match" = String, Header, description = "The ETag of the product as read (`\"v<version>\"`, optionally weak `W/`), or `*` for whatever version is current", pattern = r#"^(\*|(W/)?"v[1-9][0-9]{0,17}")$"#),
    ),
    request_body(content = ReplaceProductBody, example = json!({
        "name": "Red T-shirt, M",
        "description": "100% cotton.",
        "price": {"amount": 1999, "currency": "USD"},
        "image_urls": ["https://images.example.com/tshirt-red.jpg"],
        "attributes": {"color": "red", "size": "M"},
        "active": true
    })),
    responses(
        (status = 200, description = "Updated; the new version is in the ETag header", body = ProductResponse),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such product", body = ProblemDoc, content_type = PROBLEM),
        (status = 412, description = "Stale If-Match", body = ProblemDoc, content_type = PROBLEM),
        (status = 428, description = "If-Match missing", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid fields", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn replace_product(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ReplaceProductBody>,
) -> Result<Response, Problem> {
    let etag = if_match(&headers).ok_or_else(|| {
        Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "send If-Match with the product's ETag",
        )
    })?;
    // `If-Match: *` asks for an unconditional write of an existing product.
    let etag = if etag == "*" {
        state
            .product
            .clone()
            .get_product(caller.ctx.request(pb::GetProductRequest {
                product_id: id.clone(),
            }))
            .await
            .map_err(upstream)?
            .into_inner()
            .product
            .map(|p| p.etag)
            .ok_or_else(Problem::internal)?
    } else {
        etag
    };
    let request = body.into_request(id, etag);
    let product = state
        .product
        .clone()
        .update_product(caller.ctx.request(request))
        .await
        .map_err(upstream)?
        .into_inner()
        .product
        .ok_or_else(Problem::internal)?;
    Ok(with_etag(StatusCode::OK, product))
}

/// Soft-delete a product: it leaves search and cannot be ordered, but stays readable.
/// `If-Match`, when sent, must be current (412 otherwise).
#[utoipa::path(
    delete, path = "/api/admin/products/{id}", tag = "admin",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "Product id (a UUID)"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The ETag of the product as read (`\"v<version>\"`, optionally weak `W/`), or `*` for any version", pattern = r#"^(\*|(W/)?"v[1-9][0-9]{0,17}")$"#),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such product", body = ProblemDoc, content_type = PROBLEM),
        (status = 412, description = "Stale If-Match", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn delete_product(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    state
        .product
        .clone()
        .delete_product(caller.ctx.request(pb::DeleteProductRequest {
            product_id: id,
            etag: if_match(&headers).filter(|e| e != "*").unwrap_or_default(),
        }))
        .await
        .map_err(upstream)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Import products from JSON lines (`application/x-ndjson`) or CSV (`text/csv`, header row
/// `sku,name,description,category_id,price_amount,currency,active,initial_stock,image_urls`).
/// The body is streamed in batches of 200 rows; each batch is all-or-nothing and every bad row
/// is reported. The import has its own time budget (`IMPORT_TIMEOUT_MS`); when the upload
/// outlasts it, the import stops between batches and answers with `incomplete: true`: exactly
/// the batches counted were committed, nothing after them.
#[utoipa::path(
    post, path = "/api/admin/products/import", tag = "admin",
    security(("bearer" = [])),
    request_body(content = String, content_type = "application/x-ndjson", description = "One product per line, as in POST /api/admin/products"),
    responses(
        (status = 200, description = "What was imported and every rejected row", body = ImportReport),
        (status = 403, description = "Not an admin", body = ProblemDoc, content_type = PROBLEM),
        (status = 415, description = "Neither JSON lines nor CSV", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<ImportReport>, Problem> {
    if !caller.identity.is_admin() {
        return Err(Problem::new(StatusCode::FORBIDDEN, "admin role required"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let csv = if content_type.starts_with("text/csv") {
        true
    } else if content_type.starts_with("application/x-ndjson")
        || content_type.starts_with("application/jsonl")
        || content_type.starts_with("application/json-lines")
    {
        false
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/x-ndjson or text/csv",
        ));
    };
    let (batches, parse_errors) = import_rows(body.into_data_stream(), csv, IMPORT_BATCH_ROWS);
    // Stop sending shortly before the import's budget runs out, so that the product service
    // can still answer which batches it committed instead of the whole request timing out.
    let cut = Arc::new(AtomicBool::new(false));
    let stop_at = caller.ctx.deadline.map(|deadline| {
        let left = deadline.remaining();
        tokio::time::Instant::now() + left.saturating_sub((left / 5).min(IMPORT_ANSWER_MARGIN))
    });
    let marker = cut.clone();
    let stopped = async move {
        match stop_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending::<()>().await,
        }
        marker.store(true, Ordering::Relaxed);
    };
    let batches = batches
        .map(|rows| pb::ImportProductsRequest { rows })
        .take_until(stopped);
    let report = state
        .product
        .clone()
        .import_products(caller.ctx.request(batches))
        .await
        .map_err(upstream)?
        .into_inner();
    let mut report = ImportReport::from(report);
    if cut.load(Ordering::Relaxed) {
        report.incomplete = true;
        report.stopped_reason = Some("the import ran past its time budget".to_owned());
    }
    let parse = std::mem::take(&mut *parse_errors.lock().map_err(|_| Problem::internal())?);
    report.merge_parse(parse);
    Ok(axum::Json(report))
}
