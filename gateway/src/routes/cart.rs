//! `/api/cart`: the shopping cart and checkout.
//!
//! A signed-in caller's cart is theirs (bearer token); a caller without a token keeps an
//! anonymous cart under an `X-Cart-Id` UUID of its own choosing, forwarded to the cart service
//! as the `x-shopmesh-cart-id` metadata. Logging in with the same `X-Cart-Id` merges it into the
//! user's cart (see `routes::auth::login`). Checkout tokenizes the card at the payment service
//! first and hands only the token on; card data never reaches the cart or order services, and no
//! request body is ever logged by the gateway.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shopmesh_contracts::pb::shopmesh::cart::v1 as pb;
use shopmesh_contracts::pb::shopmesh::cart::v1::cart_service_client::CartServiceClient;
use shopmesh_contracts::pb::shopmesh::payment::v1 as payment_pb;
use shopmesh_contracts::pb::shopmesh::payment::v1::payment_service_client::PaymentServiceClient;
use shopmesh_platform::client::MeshChannel;
use shopmesh_platform::grpc::CallContext;
use shopmesh_platform::problem::{Problem, field_error};
use tonic::Request;
use tonic::metadata::MetadataValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::dto::ProblemDoc;
use crate::dto::cart::{AddItemBody, CartResponse, CheckoutBody, UpdateItemBody};
use crate::dto::order::OrderResponse;
use crate::extract::{Anonymous, ApiJson, Authentication, Caller};
use crate::routes::{PROBLEM, upstream};
use crate::state::AppState;

/// The header naming an anonymous cart at the edge.
pub const CART_ID_HEADER: &str = "x-cart-id";

/// The metadata the cart service reads an anonymous cart id from.
pub const CART_ID_METADATA: &str = "x-shopmesh-cart-id";

/// The header carrying a checkout's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The routes of this module, with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart, clear_cart))
        .routes(routes!(add_item))
        .routes(routes!(update_item, remove_item))
        .routes(routes!(checkout))
}

/// The cart service's client, or 503 when this gateway knows no address for it.
pub fn cart_client(state: &AppState) -> Result<CartServiceClient<MeshChannel>, Problem> {
    state
        .channel("cart")
        .map(CartServiceClient::new)
        .ok_or_else(|| unavailable("cart"))
}

fn payment_client(state: &AppState) -> Result<PaymentServiceClient<MeshChannel>, Problem> {
    state
        .channel("payment")
        .map(PaymentServiceClient::new)
        .ok_or_else(|| unavailable("payment"))
}

fn unavailable(service: &str) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the {service} service is not available"),
    )
    .with_retry_after(1)
}

/// Whose cart a request acts on: the verified user's (a bearer token, which must then be
/// valid), else the anonymous cart of the `X-Cart-Id` header; 401 with neither, 400 when the
/// header is not a UUID.
pub enum CartOwner {
    User(Caller),
    Anonymous { ctx: CallContext, cart_id: Uuid },
}

impl CartOwner {
    /// A cart-service request carrying this owner: the user's token, or the anonymous id.
    fn request<T>(&self, message: T) -> Request<T> {
        match self {
            CartOwner::User(caller) => caller.ctx.request(message),
            CartOwner::Anonymous { ctx, cart_id } => {
                let mut request = ctx.request(message);
                if let Ok(value) = MetadataValue::try_from(cart_id.hyphenated().to_string()) {
                    request.metadata_mut().insert(CART_ID_METADATA, value);
                }
                request
            }
        }
    }
}

/// The anonymous cart id of a request: `None` without the header, 400 when it is not a UUID.
pub fn cart_id(headers: &HeaderMap) -> Result<Option<Uuid>, Problem> {
    let Some(value) = headers.get(CART_ID_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .map(Some)
        .ok_or_else(|| Problem::new(StatusCode::BAD_REQUEST, "X-Cart-Id must be a UUID"))
}

impl<S: Send + Sync> FromRequestParts<S> for CartOwner {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A request that sent a token is judged by it: a bad token is 401, never an anonymous
        // cart.
        if parts.extensions.get::<Authentication>().is_some() {
            return Caller::from_request_parts(parts, state)
                .await
                .map(CartOwner::User);
        }
        let Some(cart_id) = cart_id(&parts.headers)? else {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "an access token or an X-Cart-Id header is required",
            ));
        };
        let Anonymous(ctx) = Anonymous::from_request_parts(parts, state).await?;
        Ok(CartOwner::Anonymous { ctx, cart_id })
    }
}

fn cart_json(cart: Option<pb::Cart>) -> Result<axum::Json<CartResponse>, Problem> {
    cart.map(|c| axum::Json(c.into())).ok_or_else(|| {
        tracing::error!("cart service answered without a cart");
        Problem::internal()
    })
}

/// The caller's cart, re-priced from the catalog.
#[utoipa::path(
    get, path = "/api/cart", tag = "cart",
    security((), ("bearer" = [])),
    params(("X-Cart-Id" = Option<uuid::Uuid>, Header, description = "An anonymous cart (a UUID the client chose); read only when there is no bearer token")),
    responses(
        (status = 200, description = "The cart; empty when the caller has none", body = CartResponse),
        (status = 400, description = "X-Cart-Id is not a UUID", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Neither a valid access token nor an X-Cart-Id", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The cart or catalog service is unavailable", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_cart(
    State(state): State<AppState>,
    owner: CartOwner,
) -> Result<axum::Json<CartResponse>, Problem> {
    let response = cart_client(&state)?
        .get_cart(owner.request(pb::GetCartRequest {}))
        .await
        .map_err(upstream)?;
    cart_json(response.into_inner().cart)
}

/// Put units of a product in the cart: 201 when the product gets a new line, 200 when the
/// units join its existing line.
#[utoipa::path(
    post, path = "/api/cart/items", tag = "cart",
    security((), ("bearer" = [])),
    params(("X-Cart-Id" = Option<uuid::Uuid>, Header, description = "An anonymous cart (a UUID the client chose); read only when there is no bearer token")),
    request_body(content = AddItemBody, example = json!({"sku": "TSHIRT-RED-M", "quantity": 2})),
    responses(
        (status = 201, description = "A new line; the cart", body = CartResponse),
        (status = 200, description = "Units added to the product's line; the cart", body = CartResponse),
        (status = 400, description = "Malformed JSON or X-Cart-Id", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Neither a valid access token nor an X-Cart-Id", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No product has this SKU", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "The product is inactive, the line would pass 99 units or the cart 50 products", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Quantity outside 1..99, a malformed SKU, missing or unknown fields", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The cart or catalog service is unavailable", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn add_item(
    State(state): State<AppState>,
    owner: CartOwner,
    ApiJson(body): ApiJson<AddItemBody>,
) -> Result<Response, Problem> {
    // The cart service reads 0 as 1; at the edge a quantity means what it says.
    if !(1..=99).contains(&body.quantity) {
        return Err(
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid input")
                .with_errors(vec![field_error("quantity", "must be between 1 and 99")]),
        );
    }
    let response = cart_client(&state)?
        .add_item(owner.request(pb::AddItemRequest {
            product_id: String::new(),
            quantity: body.quantity,
            sku: body.sku,
        }))
        .await
        .map_err(upstream)?
        .into_inner();
    let status = if response.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, cart_json(response.cart)?).into_response())
}

/// Set the quantity of a product's line; 0 removes it.
#[utoipa::path(
    patch, path = "/api/cart/items/{sku}", tag = "cart",
    security((), ("bearer" = [])),
    params(
        ("sku" = String, Path, description = "Stock-keeping unit: 2 to 40 letters, digits or dashes, starting and ending with a letter or digit (case-insensitive)", pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}[A-Za-z0-9]$", min_length = 2, max_length = 40),
        ("X-Cart-Id" = Option<uuid::Uuid>, Header, description = "An anonymous cart (a UUID the client chose); read only when there is no bearer token"),
    ),
    request_body(content = UpdateItemBody, example = json!({"quantity": 3})),
    responses(
        (status = 200, description = "The cart", body = CartResponse),
        (status = 400, description = "Malformed JSON or X-Cart-Id", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Neither a valid access token nor an X-Cart-Id", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "The product is not in the cart", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Quantity outside 0..99, missing or unknown fields", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The cart or catalog service is unavailable", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn update_item(
    State(state): State<AppState>,
    owner: CartOwner,
    Path(sku): Path<String>,
    ApiJson(body): ApiJson<UpdateItemBody>,
) -> Result<axum::Json<CartResponse>, Problem> {
    let response = cart_client(&state)?
        .update_item_quantity(owner.request(pb::UpdateItemQuantityRequest {
            product_id: String::new(),
            quantity: body.quantity,
            sku,
        }))
        .await
        .map_err(upstream)?;
    cart_json(response.into_inner().cart)
}

/// Remove a product's line; removing a product that is not in the cart succeeds.
#[utoipa::path(
    delete, path = "/api/cart/items/{sku}", tag = "cart",
    security((), ("bearer" = [])),
    params(
        ("sku" = String, Path, description = "Stock-keeping unit: 2 to 40 letters, digits or dashes, starting and ending with a letter or digit (case-insensitive)", pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}[A-Za-z0-9]$", min_length = 2, max_length = 40),
        ("X-Cart-Id" = Option<uuid::Uuid>, Header, description = "An anonymous cart (a UUID the client chose); read only when there is no bearer token"),
    ),
    responses(
        (status = 200, description = "The cart", body = CartResponse),
        (status = 400, description = "X-Cart-Id is not a UUID", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Neither a valid access token nor an X-Cart-Id", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The cart or catalog service is unavailable", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn remove_item(
    State(state): State<AppState>,
    owner: CartOwner,
    Path(sku): Path<String>,
) -> Result<axum::Json<CartResponse>, Problem> {
    let response = cart_client(&state)?
        .remove_item(owner.request(pb::RemoveItemRequest {
            product_id: String::new(),
            sku,
        }))
        .await
        .map_err(upstream)?;
    cart_json(response.into_inner().cart)
}

/// Empty the cart.
#[utoipa::path(
    delete, path = "/api/cart", tag = "cart",
    security((), ("bearer" = [])),
    params(("X-Cart-Id" = Option<uuid::Uuid>, Header, description = "An anonymous cart (a UUID the client chose); read only when there is no bearer token")),
    responses(
        (status = 200, description = "The (now empty) cart", body = CartResponse),
        (status = 400, description = "X-Cart-Id is not a UUID", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "Neither a valid access token nor an X-Cart-Id", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "The cart service is unavailable", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn clear_cart(
    State(state): State<AppState>,
    owner: CartOwner,
) -> Result<axum::Json<CartResponse>, Problem> {
    let response = cart_client(&state)?
        .clear_cart(owner.request(pb::ClearCartRequest {}))
        .await
        .map_err(upstream)?;
    cart_json(response.into_inner().cart)
}

/// The `Idempotency-Key` header: 1 to 128 printable ASCII characters, else 400.
fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let invalid = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the Idempotency-Key header is required: 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            ),
        )
    };
    let value = headers.get(IDEMPOTENCY_KEY).ok_or_else(invalid)?;
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_IDEMPOTENCY_KEY
        || !bytes.iter().all(|b| (0x20..=0x7e).contains(b))
    {
        return Err(invalid());
    }
    value.to_str().map(str::to_owned).map_err(|_| invalid())
}

/// Field errors of the tokenizer name the card's fields; the body nests them under `payment`.
fn payment_problem(status: tonic::Status) -> Problem {
    let mut problem = upstream(status);
    for error in &mut problem.errors {
        if !error.field.starts_with("payment.") {
            error.field = format!("payment.{}", error.field);
        }
    }
    problem
}

/// Turn the cart into an order: the card is tokenized, then the order is placed with the cart's
/// lines at the prices the cart shows, and charged.
///
/// The answer is 201 with the order whatever the card said: read `status`. `PAID` means charged
/// (the cart is emptied); `CANCELLED` with `cancellation_reason` `PAYMENT_FAILED` (the decline
/// code in `cancellation_note`) or `OUT_OF_STOCK` means nothing was charged and the cart is kept,
/// so the customer can fix it and retry with a new `Idempotency-Key`; `CREATED` means the
/// payment is still running (follow the order). Repeating a request with the same
/// `Idempotency-Key` returns the same order and never charges twice.
#[utoipa::path(
    post, path = "/api/cart/checkout", tag = "cart",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "1 to 128 printable ASCII characters, unique per checkout attempt; a repeat returns the first attempt's order", min_length = 1, max_length = 128, pattern = "^[\\x20-\\x7E]{1,128}$")),
    request_body(content = CheckoutBody, example = json!({
        "address_id": "01936b8e-1c4a-7cc2-9d3e-2f0b6a4d5e61",
        "payment": {"card_number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    })),
    responses(
        (status = 201, description = "The order: PAID, CANCELLED (read cancellation_reason, e.g. PAYMENT_FAILED) or still CREATED", body = OrderResponse,
            headers(("Location" = String, description = "The order's URL"))),
        (status = 400, description = "Idempotency-Key missing or malformed, or malformed JSON", body = ProblemDoc, content_type = PROBLEM),
        (status = 401, description = "No valid access token (anonymous carts log in first)", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "address_id is not in the caller's address book", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "The cart is empty, holds an unavailable product, or a price changed (GET the cart to see it)", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Not exactly one of address_id and shipping_address, an invalid address or card, missing or unknown fields", body = ProblemDoc, content_type = PROBLEM),
        (status = 503, description = "A service the checkout needs is unavailable; retry with the same Idempotency-Key", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn checkout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> Result<Response, Problem> {
    let idempotency_key = idempotency_key(&headers)?;
    let shipping_address = match (body.address_id, body.shipping_address) {
        (Some(id), None) if !id.trim().is_empty() => {
            pb::checkout_request::ShippingAddress::AddressId(id.trim().to_owned())
        }
        (None, Some(address)) => pb::checkout_request::ShippingAddress::Address(address.into()),
        _ => {
            let message = "give exactly one of address_id and shipping_address";
            return Err(
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, message).with_errors(vec![
                    field_error("address_id", message),
                    field_error("shipping_address", message),
                ]),
            );
        }
    };
    let payment = body.payment;
    let token = payment_client(&state)?
        .tokenize_card(caller.ctx.request(payment_pb::TokenizeCardRequest {
            card_number: payment.card_number,
            exp_month: payment.exp_month,
            exp_year: payment.exp_year,
            cvc: payment.cvc,
        }))
        .await
        .map_err(payment_problem)?
        .into_inner()
        .payment_method_token;
    let order = cart_client(&state)?
        .checkout(caller.ctx.request(pb::CheckoutRequest {
            idempotency_key,
            shipping_address: Some(shipping_address),
            payment_method_token: token,
        }))
        .await
        .map_err(upstream)?
        .into_inner()
        .order
        .ok_or_else(|| {
            tracing::error!("cart service answered a checkout without an order");
            Problem::internal()
        })?;
    let order = OrderResponse::from(order);
    let mut response = (StatusCode::CREATED, axum::Json(&order)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn idempotency_keys_are_1_to_128_printable_ascii() {
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap_err().status, 400);
        assert!(idempotency_key(&headers(IDEMPOTENCY_KEY, "")).is_err());
        assert!(idempotency_key(&headers(IDEMPOTENCY_KEY, &"k".repeat(129))).is_err());
        assert!(idempotency_key(&headers(IDEMPOTENCY_KEY, "a\tb")).is_err());
        assert_eq!(
            idempotency_key(&headers(IDEMPOTENCY_KEY, "order 1 ~")).unwrap(),
            "order 1 ~"
        );
    }

    #[test]
    fn cart_ids_must_be_uuids() {
        assert!(cart_id(&HeaderMap::new()).unwrap().is_none());
        assert_eq!(
            cart_id(&headers(CART_ID_HEADER, "nope"))
                .unwrap_err()
                .status,
            400
        );
        let id = Uuid::new_v4();
        assert_eq!(
            cart_id(&headers(CART_ID_HEADER, &id.to_string())).unwrap(),
            Some(id)
        );
    }

    #[test]
    fn the_cart_routes_are_documented_with_their_statuses() {
        let doc: serde_json::Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let paths = &doc["paths"];
        let statuses = |path: &str, method: &str| -> Vec<String> {
            paths[path][method]["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} is documented"))
                .keys()
                .cloned()
                .collect()
        };
        for (path, method, expected) in [
            ("/api/cart", "get", &["200", "401"][..]),
            ("/api/cart", "delete", &["200"][..]),
            (
                "/api/cart/items",
                "post",
                &["200", "201", "404", "409", "422"][..],
            ),
            ("/api/cart/items/{sku}", "patch", &["200", "404", "422"][..]),
            ("/api/cart/items/{sku}", "delete", &["200"][..]),
            (
                "/api/cart/checkout",
                "post",
                &["201", "400", "401", "404", "409", "422", "503"][..],
            ),
        ] {
            let documented = statuses(path, method);
            for status in expected {
                assert!(
                    documented.iter().any(|s| s == status),
                    "{method} {path} documents {status}"
                );
            }
        }
        let checkout = &paths["/api/cart/checkout"]["post"];
        assert_eq!(checkout["tags"][0], "cart");
        let params: Vec<&str> = checkout["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(params.contains(&"Idempotency-Key"));
        let login = &paths["/api/auth/login"]["post"]["parameters"];
        assert_eq!(login[0]["name"], "X-Cart-Id");
    }

    #[test]
    fn tokenizer_field_errors_are_named_under_payment() {
        let status = shopmesh_platform::status::invalid_input(&[field_error(
            "card_number",
            "fails the Luhn check",
        )]);
        let problem = payment_problem(status);
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "payment.card_number");
    }
}
