//! Extractors that turn every client mistake into a problem+json answer, and the caller
//! identity established by the auth middleware.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use shopmesh_platform::auth::Identity;
use shopmesh_platform::grpc::{CallContext, Deadline};
use shopmesh_platform::problem::Problem;

/// A JSON body; malformed JSON is 400, a body that does not fit the schema (missing, unknown or
/// mistyped fields) is 422, a wrong content type 415, an oversized body 413.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonSyntaxError(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            "the request body is not valid JSON",
        ),
        JsonRejection::JsonDataError(err) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, err.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected content-type: application/json",
        ),
        JsonRejection::BytesRejection(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )
        }
        other => Problem::new(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body ({})", other.status()),
        ),
    }
}

/// Query parameters; anything that does not parse is 400.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => {
                Err(Problem::new(StatusCode::BAD_REQUEST, err.body_text()))
            }
            Err(other) => Err(Problem::new(StatusCode::BAD_REQUEST, other.body_text())),
        }
    }
}

/// The request id given to (or minted for) this request.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// What the auth middleware found in the `authorization` header.
#[derive(Clone, Debug)]
pub enum Authentication {
    Verified { identity: Identity, token: String },
    Refused,
    KeysUnavailable,
}

/// A verified caller (401 without a valid access token).
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: Identity,
    pub ctx: CallContext,
}

/// A verified admin (401 without a token, 403 for anyone else).
#[derive(Clone, Debug)]
pub struct AdminCaller(pub Caller);

/// Context for anonymous calls: the request id only.
#[derive(Clone, Debug)]
pub struct Anonymous(pub CallContext);

fn request_id(parts: &Parts) -> Option<String> {
    parts.extensions.get::<RequestId>().map(|id| id.0.clone())
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Authentication>() {
            Some(Authentication::Verified { identity, token }) => Ok(Self {
                identity: identity.clone(),
                ctx: CallContext {
                    request_id: request_id(parts),
                    bearer: Some(token.clone()),
                    deadline: parts.extensions.get::<Deadline>().copied(),
                },
            }),
            Some(Authentication::Refused) => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "the access token is invalid or expired",
            )),
            Some(Authentication::KeysUnavailable) => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "token verification is not ready, try again",
            )
            .with_retry_after(1)),
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "an access token is required",
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AdminCaller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.identity.is_admin() {
            Ok(Self(caller))
        } else {
            Err(Problem::new(StatusCode::FORBIDDEN, "admin role required"))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Anonymous {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(CallContext {
            request_id: request_id(parts),
            bearer: None,
            deadline: parts.extensions.get::<Deadline>().copied(),
        }))
    }
}
