//! `/api/users/me*`: the caller's own profile and addresses.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use shopmesh_contracts::user as pb;
use shopmesh_platform::problem::Problem;

use crate::dto::ProblemDoc;
use crate::dto::user::{
    AddressList, AddressPatchBody, AddressResponse, NewAddressBody, UpdateMeBody, UserResponse,
};
use crate::extract::{ApiJson, Caller};
use crate::routes::{PROBLEM, upstream};
use crate::state::AppState;

fn mask(paths: &[(&str, bool)]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths
            .iter()
            .filter(|(_, present)| *present)
            .map(|(name, _)| (*name).to_owned())
            .collect(),
    })
}

/// The caller's profile with addresses.
#[utoipa::path(
    get, path = "/api/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = UserResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn get_me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<UserResponse>, Problem> {
    let user = state
        .user
        .clone()
        .get_me(caller.ctx.request(pb::GetMeRequest {}))
        .await
        .map_err(upstream)?
        .into_inner()
        .user
        .ok_or_else(Problem::internal)?;
    Ok(axum::Json(user.into()))
}

/// Change the caller's name and/or phone.
#[utoipa::path(
    patch, path = "/api/users/me", tag = "users",
    security(("bearer" = [])),
    request_body = UpdateMeBody,
    responses(
        (status = 200, description = "The updated profile", body = UserResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid name or phone, or unknown fields", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<UpdateMeBody>,
) -> Result<axum::Json<UserResponse>, Problem> {
    let update_mask = mask(&[
        ("name", body.name.is_some()),
        ("phone", body.phone.is_some()),
    ]);
    let user = state
        .user
        .clone()
        .update_me(caller.ctx.request(pb::UpdateMeRequest {
            name: body.name.unwrap_or_default(),
            phone: body.phone.unwrap_or_default(),
            update_mask,
        }))
        .await
        .map_err(upstream)?
        .into_inner()
        .user
        .ok_or_else(Problem::internal)?;
    Ok(axum::Json(user.into()))
}

/// The caller's addresses, the default first.
#[utoipa::path(
    get, path = "/api/users/me/addresses", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's addresses", body = AddressList),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn list_addresses(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<AddressList>, Problem> {
    let addresses = state
        .user
        .clone()
        .list_addresses(caller.ctx.request(pb::ListAddressesRequest {}))
        .await
        .map_err(upstream)?
        .into_inner()
        .addresses;
    Ok(axum::Json(AddressList {
        items: addresses.into_iter().map(Into::into).collect(),
    }))
}

/// Add an address.
#[utoipa::path(
    post, path = "/api/users/me/addresses", tag = "users",
    security(("bearer" = [])),
    request_body = NewAddressBody,
    responses(
        (status = 201, description = "The new address", body = AddressResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "Too many addresses", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid fields", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn create_address(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewAddressBody>,
) -> Result<impl IntoResponse, Problem> {
    let address = state
        .user
        .clone()
        .create_address(caller.ctx.request(pb::CreateAddressRequest {
            address: Some(pb::AddressInput {
                label: body.label.unwrap_or_default(),
                recipient: body.recipient,
                line1: body.line1,
                line2: body.line2.unwrap_or_default(),
                city: body.city,
                region: body.region.unwrap_or_default(),
                postal_code: body.postal_code,
                country: body.country,
                phone: body.phone.unwrap_or_default(),
                is_default: body.is_default.unwrap_or(false),
            }),
        }))
        .await
        .map_err(upstream)?
        .into_inner()
        .address
        .ok_or_else(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(AddressResponse::from(address)),
    ))
}

/// Change an address.
#[utoipa::path(
    patch, path = "/api/users/me/addresses/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Address id")),
    request_body = AddressPatchBody,
    responses(
        (status = 200, description = "The updated address", body = AddressResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such address", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid fields", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn update_address(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddressPatchBody>,
) -> Result<axum::Json<AddressResponse>, Problem> {
    let update_mask = mask(&[
        ("label", body.label.is_some()),
        ("recipient", body.recipient.is_some()),
        ("line1", body.line1.is_some()),
        ("line2", body.line2.is_some()),
        ("city", body.city.is_some()),
        ("region", body.region.is_some()),
        ("postal_code", body.postal_code.is_some()),
        ("country", body.country.is_some()),
        ("phone", body.phone.is_some()),
        ("is_default", body.is_default.is_some()),
    ]);
    let address = state
        .user
        .clone()
        .update_address(caller.ctx.request(pb::UpdateAddressRequest {
            address_id: id,
            address: Some(pb::AddressInput {
                label: body.label.unwrap_or_default(),
                recipient: body.recipient.unwrap_or_default(),
                line1: body.line1.unwrap_or_default(),
                line2: body.line2.unwrap_or_default(),
                city: body.city.unwrap_or_default(),
                region: body.region.unwrap_or_default(),
                postal_code: body.postal_code.unwrap_or_default(),
                country: body.country.unwrap_or_default(),
                phone: body.phone.unwrap_or_default(),
                is_default: body.is_default.unwrap_or(false),
            }),
            update_mask,
        }))
        .await
        .map_err(upstream)?
        .into_inner()
        .address
        .ok_or_else(Problem::internal)?;
    Ok(axum::Json(address.into()))
}

/// Delete an address. When it was the default, the oldest remaining address becomes the default.
#[utoipa::path(
    delete, path = "/api/users/me/addresses/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Address id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, invalid or expired access token", body = ProblemDoc, content_type = PROBLEM),
        (status = 404, description = "No such address", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn delete_address(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .user
        .clone()
        .delete_address(
            caller
                .ctx
                .request(pb::DeleteAddressRequest { address_id: id }),
        )
        .await
        .map_err(upstream)?;
    Ok(StatusCode::NO_CONTENT)
}
