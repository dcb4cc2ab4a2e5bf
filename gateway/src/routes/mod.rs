//! Every REST route, documented with utoipa; the OpenAPI document is generated from these.

pub mod admin;
pub mod admin_metrics;
pub mod analytics;
pub mod auth;
pub mod cart;
pub mod dead_letters;
pub mod faults;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod products;
pub mod queues;
pub mod shipments;
pub mod system;
pub mod users;

use shopmesh_platform::page::{self, MAX_PAGE_SIZE};
use shopmesh_platform::problem::Problem;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::{FieldErrorDoc, ProblemDoc};
use crate::state::AppState;

/// Media type of every error answer.
pub const PROBLEM: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shopmesh API",
        description = "The REST edge of shopmesh. Errors are RFC 9457 problem documents \
            (`application/problem+json`). Authenticate with `Authorization: Bearer <access_token>` \
            from `POST /api/auth/login`. The internal gRPC services behind this edge are documented \
            in the [gRPC reference](/docs/grpc): every service, method and message, and which RPCs \
            are internal to the mesh.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ProblemDoc, FieldErrorDoc)),
    tags(
        (name = "auth", description = "Registration, login, token refresh and logout"),
        (name = "users", description = "The caller's own profile and addresses"),
        (name = "catalog", description = "Products and categories"),
        (name = "cart", description = "The shopping cart and checkout"),
        (name = "orders", description = "The caller's orders, their payments and shipments"),
        (name = "notifications", description = "The caller's inbox and e-mail preferences"),
        (name = "admin", description = "Administration (admin role required)"),
        (name = "system", description = "Health, readiness and public keys"),
    )
)]
struct ApiDoc;

/// Adds the bearer security scheme, and a `default` problem+json answer to every operation so
/// that every status the edge can produce (429, 413, 5xx …) is documented.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let problem = ResponseBuilder::new()
            .description("An error, as an RFC 9457 problem document")
            .content(
                PROBLEM,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("default".to_owned())
                    .or_insert_with(|| problem.clone().into());
            }
        }
    }
}

/// Logs what a failed gRPC call said (server errors only carry a generic detail to clients)
/// and turns it into the problem the client sees.
pub fn upstream(status: tonic::Status) -> Problem {
    let problem = Problem::from_status(&status);
    if problem.status_code().is_server_error() {
        tracing::error!(code = ?status.code(), message = %status.message(), "upstream call failed");
    }
    problem
}

/// The gRPC page size for a `limit` query parameter: 0 (the service default) when absent,
/// 400 when outside 1..=100 (the platform's cap).
pub fn page_size(limit: Option<u32>) -> Result<i32, Problem> {
    let out_of_range = || {
        Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
        )
    };
    match limit {
        None => Ok(0),
        // 0 would ask the service for its default; a client that names a limit means a size.
        Some(0) => Err(out_of_range()),
        Some(limit) => page::page_size(limit)
            .and_then(|size| i32::try_from(size).ok())
            .ok_or_else(out_of_range),
    }
}

/// The API routes and their OpenAPI document, with the common responses added to every
/// operation (a modifier on `ApiDoc` would run before the routes exist).
pub fn api() -> (axum::Router<AppState>, OpenApiDoc) {
    let (router, mut openapi) = documented().split_for_parts();
    CommonResponses.modify(&mut openapi);
    (router, openapi)
}

fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(users::get_me, users::update_me))
        .routes(routes!(users::list_addresses, users::create_address))
        .routes(routes!(users::update_address, users::delete_address))
        .routes(routes!(admin::list_users))
        .routes(routes!(admin::get_user, admin::update_user_access))
        .routes(routes!(products::search))
        .routes(routes!(products::get_product))
        .routes(routes!(products::get_product_by_sku))
        .routes(routes!(products::list_categories))
        .routes(routes!(products::create_category))
        .routes(routes!(products::create_product))
        .routes(routes!(products::replace_product, products::delete_product))
        .routes(routes!(products::import))
        .routes(routes!(inventory::get_inventory))
        .routes(routes!(inventory::adjust))
        .routes(routes!(system::jwks))
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .merge(cart::routes())
        .merge(orders::routes())
        .merge(payments::routes())
        .merge(shipments::routes())
        .merge(notifications::routes())
        .merge(dead_letters::routes())
        .merge(queues::routes())
        .merge(faults::routes())
        .merge(admin_metrics::routes())
        .merge(analytics::routes())
}
