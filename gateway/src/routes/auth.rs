//! `/api/auth/*`: registration, login, refresh and logout.

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use shopmesh_contracts::pb::shopmesh::cart::v1 as cart_pb;
use shopmesh_contracts::user as pb;
use shopmesh_platform::grpc::CallContext;
use shopmesh_platform::problem::Problem;
use tonic::metadata::MetadataValue;

use crate::dto::ProblemDoc;
use crate::dto::user::{LoginBody, RefreshTokenBody, RegisterBody, TokenResponse, UserResponse};
use crate::extract::{Anonymous, ApiJson};
use crate::routes::{PROBLEM, cart, upstream};
use crate::settings::Cidr;
use crate::state::AppState;

fn tokens(pair: Option<pb::TokenPair>) -> Result<axum::Json<TokenResponse>, Problem> {
    pair.map(|t| axum::Json(t.into())).ok_or_else(|| {
        tracing::error!("user service answered without tokens");
        Problem::internal()
    })
}

/// Create a customer account.
#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "The email is taken (in any letter case)", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Invalid email, weak password, missing or unknown fields", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<impl IntoResponse, Problem> {
    let user = state
        .user
        .clone()
        .register(ctx.request(pb::RegisterRequest {
            email: body.email,
            password: body.password,
            name: body.name,
        }))
        .await
        .map_err(upstream)?
        .into_inner()
        .user
        .ok_or_else(Problem::internal)?;
    Ok((StatusCode::CREATED, axum::Json(UserResponse::from(user))))
}

/// Metadata naming the client address for the user service's login throttle.
const CLIENT_IP: &str = "x-client-ip";

/// The client's address as the per-IP rate limit sees it: the TCP peer, or the `X-Real-IP` a
/// trusted proxy (the nginx edge) sets. X-Forwarded-For is never read.
fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.iter().any(|net| net.contains(peer)) {
        return Some(peer);
    }
    let real = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    Some(real.unwrap_or(peer))
}

/// Exchange email and password for an access token and a refresh token. With `X-Cart-Id`, the
/// anonymous cart of that id is merged into the user's cart (quantities add up, at most 99 a
/// line and 50 lines); a merge that fails does not fail the login.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    params(("X-Cart-Id" = Option<uuid::Uuid>, Header, description = "The anonymous cart to merge into the user's cart")),
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Unknown email or wrong password (one answer for both)", body = ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "Missing or unknown fields", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<axum::Json<TokenResponse>, Problem> {
    let mut request = ctx.request(pb::LoginRequest {
        email: body.email,
        password: body.password,
    });
    // The user service throttles failed logins per client as well as per account.
    let peer = connect_info.map(|Extension(ConnectInfo(addr))| addr.ip().to_canonical());
    if let Some(ip) = client_ip(peer, &headers, &state.policy.trusted_proxies)
        .and_then(|ip| MetadataValue::try_from(ip.to_string()).ok())
    {
        request.metadata_mut().insert(CLIENT_IP, ip);
    }
    let response = state.user.clone().login(request).await.map_err(upstream)?;
    let pair = response.into_inner().tokens;
    if let Some(pair) = &pair {
        merge_anonymous_cart(&state, &ctx, &headers, &pair.access_token).await;
    }
    tokens(pair)
}

/// Moves the anonymous cart named by `X-Cart-Id` into the user's cart, as the user who just
/// logged in. Best effort: the login has succeeded whatever happens here, so a failure is only
/// logged (the anonymous cart stays and a later login can merge it).
async fn merge_anonymous_cart(
    state: &AppState,
    ctx: &CallContext,
    headers: &HeaderMap,
    access_token: &str,
) {
    let cart_id = match cart::cart_id(headers) {
        Ok(Some(id)) => id,
        Ok(None) => return,
        Err(_) => {
            tracing::warn!("login with a malformed X-Cart-Id: no cart merged");
            return;
        }
    };
    let Ok(mut client) = cart::cart_client(state) else {
        tracing::warn!("no cart service known: the anonymous cart was not merged");
        return;
    };
    let as_user = CallContext {
        request_id: ctx.request_id.clone(),
        bearer: Some(access_token.to_owned()),
        deadline: ctx.deadline,
    };
    if let Err(status) = client
        .merge_cart(as_user.request(cart_pb::MergeCartRequest {
            anonymous_cart_id: cart_id.hyphenated().to_string(),
        }))
        .await
    {
        tracing::warn!(code = ?status.code(), message = %status.message(), "could not merge the anonymous cart at login");
    }
}

/// Rotate a refresh token: the old one stops working, a new pair is returned. Presenting an
/// already-rotated token revokes every token of that login session.
#[utoipa::path(
    post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshTokenBody,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", body = ProblemDoc, content_type = PROBLEM),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    ApiJson(body): ApiJson<RefreshTokenBody>,
) -> Result<axum::Json<TokenResponse>, Problem> {
    let response = state
        .user
        .clone()
        .refresh(ctx.request(pb::RefreshRequest {
            refresh_token: body.refresh_token,
        }))
        .await
        .map_err(upstream)?;
    tokens(response.into_inner().tokens)
}

/// Revoke the login session of a refresh token. Unknown tokens are accepted silently.
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth",
    request_body = RefreshTokenBody,
    responses((status = 204, description = "Session revoked"))
)]
pub async fn logout(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    ApiJson(body): ApiJson<RefreshTokenBody>,
) -> Result<StatusCode, Problem> {
    state
        .user
        .clone()
        .logout(ctx.request(pb::LogoutRequest {
            refresh_token: body.refresh_token,
        }))
        .await
        .map_err(upstream)?;
    Ok(StatusCode::NO_CONTENT)
}
