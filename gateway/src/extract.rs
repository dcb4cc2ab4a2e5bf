//! Extractors that turn every client mistake into a problem+json answer, and the caller
//! identity established by the auth middleware.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use shopmesh_platform::auth::Identity;
use shopmesh_platform::grpc::{CallContext, Deadline};
use shopmesh_platform::problem::{Problem, field_error};

/// A JSON body; malformed JSON is 400, a body that does not fit the schema (missing, unknown or
/// mistyped fields, or nested deeper than [`MAX_JSON_DEPTH`]) is 422, a wrong content type 415,
/// an oversized body 413. Every detail is in the API's own words (field names as the API spells
/// them), never a library's message.
pub struct ApiJson<T>(pub T);

/// Deepest nesting of any JSON body (the body itself is level 1). Far above what any endpoint
/// needs (product attributes have their own, lower cap in the product service), and low enough
/// that every body converts to protobuf within its decoders' recursion limit.
pub const MAX_JSON_DEPTH: usize = 16;

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(json_problem(&JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection) => return Err(json_problem(&JsonRejection::BytesRejection(rejection))),
        };
        if let Some(field) = too_deep(&bytes, MAX_JSON_DEPTH) {
            let message = format!("must be nested at most {MAX_JSON_DEPTH} levels deep");
            return Err(match field {
                Some(field) => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("field `{field}` {message}"),
                )
                .with_errors(vec![field_error(&field, message)]),
                None => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the body {message}"),
                ),
            });
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

/// Whether the content type is JSON: `application/json` or `application/<anything>+json`,
/// parameters (charset) allowed.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Whether the JSON text nests arrays and objects deeper than `max` (the body is level 1): if so,
/// `Some` with the top-level member the deep part is under (`None` when it is not under one,
/// e.g. a deep top-level array). Strings are skipped, so brackets inside them do not count;
/// malformed text is left for the parser to report.
pub(crate) fn too_deep(json: &[u8], max: usize) -> Option<Option<String>> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_start = 0usize;
    let mut last_top_key: Option<String> = None;
    let mut last_string: Option<(usize, usize)> = None;
    for (i, &b) in json.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                last_string = Some((string_start, i));
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i + 1;
            }
            b':' if depth == 1 => {
                if let Some((from, to)) = last_string.take() {
                    last_top_key = serde_json::from_slice::<String>(&json[from - 1..=to]).ok();
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Some(last_top_key.filter(|_| json.first() != Some(&b'[')));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonSyntaxError(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            "the request body is not valid JSON",
        ),
        JsonRejection::JsonDataError(err) => {
            // The source reads "<path>: <serde message> at line L column C".
            let text = std::error::Error::source(err)
                .map(ToString::to_string)
                .unwrap_or_default();
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, data_error_detail(&text))
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

/// Serde's phrases that open a message without a path in front.
const SERDE_PHRASES: &[&str] = &[
    "missing field",
    "unknown field",
    "duplicate field",
    "invalid type",
    "invalid value",
    "invalid length",
    "unknown variant",
];

/// Splits "<path>: <message>" (path as serde_path_to_error prints it) into its parts; a message
/// with no path in front gives an empty path.
fn split_path(text: &str) -> (String, &str) {
    let text = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => text,
    };
    if SERDE_PHRASES.iter().any(|p| text.starts_with(p)) {
        return (String::new(), text);
    }
    match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => {
            let path = if path == "." || path == "?" { "" } else { path };
            (path.to_owned(), rest)
        }
        _ => (String::new(), text),
    }
}

/// The first `quoted` name in a serde message.
fn quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn join_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else if path == name || path.ends_with(&format!(".{name}")) {
        path.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// What a value of serde's expected type is, in the API's words.
fn expected_words(expected: &str) -> &'static str {
    let expected = expected.trim();
    let integer = [
        "i8", "i16", "i32", "i64", "i128", "u8", "u16", "u32", "u64", "u128", "isize", "usize",
    ];
    if integer.contains(&expected) || expected.contains("integer") {
        "must be a whole number"
    } else if expected == "f32" || expected == "f64" || expected.contains("number") {
        "must be a number"
    } else if expected.contains("string") || expected == "a character" || expected == "char" {
        "must be a string"
    } else if expected.contains("bool") {
        "must be true or false"
    } else if expected.contains("sequence") || expected.contains("array") {
        "must be an array"
    } else if expected.contains("struct") || expected.contains("map") {
        "must be an object"
    } else {
        "has a value of the wrong type"
    }
}

/// "unknown variant `x`, expected one of `a`, `b`" as "must be one of a, b".
fn variants_words(message: &str) -> String {
    match message.split_once("expected ") {
        Some((_, expected)) => {
            let names = expected.trim_start_matches("one of ").replace('`', "");
            format!("must be one of {names}")
        }
        None => "has an unknown value".to_owned(),
    }
}

/// A body's data error (a serde message with its path) in the API's words.
fn data_error_detail(text: &str) -> String {
    let (path, message) = split_path(text);
    let field = |words: &str| -> String {
        if path.is_empty() {
            format!("the body {words}")
        } else {
            format!("field `{path}` {words}")
        }
    };
    if message.starts_with("missing field") {
        let name = quoted(message).unwrap_or_default();
        return format!("field `{}` is required", join_path(&path, name));
    }
    if message.starts_with("unknown field") {
        let name = quoted(message).unwrap_or_default();
        return format!("field `{}` is not allowed here", join_path(&path, name));
    }
    if message.starts_with("duplicate field") {
        let name = quoted(message).unwrap_or_default();
        return format!("field `{}` appears more than once", join_path(&path, name));
    }
    if message.starts_with("unknown variant") {
        return field(&variants_words(message));
    }
    if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        let expected = rest.rsplit_once(", expected ").map_or("", |(_, e)| e);
        if path.is_empty() {
            return "the body must be a JSON object".to_owned();
        }
        let words = expected_words(expected);
        if message.starts_with("invalid value") && words == "must be a whole number" {
            return field("is out of range");
        }
        return field(words);
    }
    if message.starts_with("invalid length") {
        return field("has the wrong number of items");
    }
    if message.contains("out of range") {
        return field("is out of range");
    }
    field("has an invalid value")
}

/// Query parameters; anything that does not parse is 400, with a detail naming the parameter.
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
                let message = std::error::Error::source(&err)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let detail =
                    query_error_detail::<T>(parts.uri.query().unwrap_or_default(), &message);
                Err(Problem::new(StatusCode::BAD_REQUEST, detail))
            }
            Err(_) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "the query string is malformed",
            )),
        }
    }
}

/// The parameter a query string's error is about: the first one whose removal changes the error
/// (serde_urlencoded's messages about a value do not name the parameter).
fn culprit<T: DeserializeOwned>(query: &str, message: &str) -> Option<String> {
    let pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let key = |pair: &str| pair.split('=').next().unwrap_or_default().to_owned();
    let mut keys: Vec<String> = pairs.iter().map(|p| key(p)).collect();
    keys.dedup();
    keys.into_iter().find(|candidate| {
        let rest: Vec<&str> = pairs
            .iter()
            .copied()
            .filter(|p| key(p) != *candidate)
            .collect();
        let uri = format!("/?{}", rest.join("&"));
        let Ok(uri) = uri.parse::<axum::http::Uri>() else {
            return false;
        };
        match axum::extract::Query::<T>::try_from_uri(&uri) {
            Ok(_) => true,
            Err(err) => std::error::Error::source(&err)
                .map(ToString::to_string)
                .is_some_and(|other| other != message),
        }
    })
}

/// A query string's error in the API's words.
fn query_error_detail<T: DeserializeOwned>(query: &str, message: &str) -> String {
    if message.starts_with("missing field") {
        let name = quoted(message).unwrap_or_default();
        return format!("query parameter `{name}` is required");
    }
    if message.starts_with("unknown field") {
        let name = quoted(message).unwrap_or_default();
        return format!("query parameter `{name}` is not supported");
    }
    let Some(name) = culprit::<T>(query, message) else {
        return "the query string has an invalid value".to_owned();
    };
    let words = if message.starts_with("unknown variant") {
        variants_words(message)
    } else if message.contains("too large") || message.contains("too small") {
        "is out of range".to_owned()
    } else if message.contains("digit") || message.contains("integer") {
        "must be a whole number".to_owned()
    } else if message.contains("float") {
        "must be a number".to_owned()
    } else if message.contains("true") || message.contains("bool") {
        "must be true or false".to_owned()
    } else {
        "has an invalid value".to_owned()
    };
    format!("query parameter `{name}` {words}")
}

/// The request id given to (or minted for) this request.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// What the auth middleware found in the `authorization` header.
#[derive(Clone, Debug)]
pub enum Authentication {
    /// Signature and claims are valid and the session is active.
    Verified {
        identity: Identity,
        token: String,
    },
    Refused,
    KeysUnavailable,
    /// A valid token of a session that was ended (logout), or signed before the account's role
    /// or tier changed: log in again.
    SessionEnded,
    /// Whether the session is active could not be checked (fail closed).
    SessionCheckUnavailable,
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
            Some(Authentication::SessionEnded) => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "the session has ended, log in again",
            )),
            Some(Authentication::SessionCheckUnavailable) => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the session cannot be checked right now, try again",
            )
            .with_retry_after(1)),
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
