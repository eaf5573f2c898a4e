//! Extractors whose refusals are API errors (axum's plain-text rejections never reach a client).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::WebState;
use super::error::ApiError;

/// A JSON body of a state-changing call.
///
/// It must come with `Content-Type: application/json`: an HTML form of another site cannot send
/// that without a CORS preflight, so this is the API's CSRF defence. An empty body counts as `{}`
/// (a body of only white space is not JSON, and is refused as such).
/// Bodies use `deny_unknown_fields`, so a misspelt field is a 400 naming it.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Whether the request says its body is JSON.
pub fn is_json(parts_headers: &axum::http::HeaderMap) -> bool {
    parts_headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

impl<T: DeserializeOwned> FromRequest<WebState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_error(&e, state.max_body_bytes))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Why a body could not be read: too large (413), too slow (408, `limits.body_timeout_secs`),
/// or broken (400).
pub fn body_error(e: &axum::extract::rejection::BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::too_large(limit);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            );
        }
        source = err.source();
    }
    ApiError::bad_request("unreadable_body", "the request body could not be read")
}

/// Parses a JSON body; the error names the field when there is one.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    // Every body is an object: serde would take `[]` for a struct without fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object, such as {} or {\"reason\": \"…\"}",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })?;
    de.end().map_err(|e| json_error(".", &e))?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = e.to_string();
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {text}"),
        ),
        Category::Data => {
            if let Some(name) = text
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name)
            {
                // The path already ends with the unknown field's name.
                let field = if path == "." || !path.ends_with(name) {
                    name.to_owned()
                } else {
                    path.to_owned()
                };
                return ApiError::bad_request(
                    "unknown_field",
                    format!("unknown field {field:?}: {text}"),
                )
                .with_field(field);
            }
            let error = ApiError::bad_request(
                "invalid_json",
                format!("the body has the wrong shape: {text}"),
            );
            if path == "." {
                error
            } else {
                ApiError {
                    message: format!("{path} has the wrong type: {text}"),
                    ..error.with_field(path)
                }
            }
        }
    }
}

/// Query parameters of the API; a malformed query string, or a parameter given empty
/// (`?state=`: leave it out instead), is a 400. (Pages take empty fields, as forms send them:
/// see [`parse_query`].)
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if let Some((name, _)) =
            url::form_urlencoded::parse(query.as_bytes()).find(|(_, value)| value.trim().is_empty())
        {
            let name: String = name.chars().take(40).collect();
            return Err(ApiError::bad_request(
                "bad_query",
                format!("the query parameter {name:?} is empty: leave it out, or give it a value"),
            )
            .with_field(name));
        }
        parse_query(parts).map(QueryParams)
    }
}

/// The query string as `T`; a malformed one is a 400.
pub fn parse_query<T: DeserializeOwned>(parts: &Parts) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("bad_query", e.body_text()))
}

/// A numeric id in the path; anything else is simply not found.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| IdPath(id))
            .map_err(|_| ApiError::not_found())
    }
}

/// A textual id in the path (envelopes).
#[derive(Debug, Clone)]
pub struct StrPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for StrPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| StrPath(id))
            .map_err(|_| ApiError::not_found())
    }
}

/// Parses an optional integer query parameter (422 naming it when it is not a number).
pub fn int_param(field: &'static str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
            ApiError::invalid(vec![crate::domain::FieldError::new(
                field,
                "invalid",
                format!("{field} must be a whole number"),
            )])
        }),
    }
}

/// An optional date field of the API: absent, or a date (`YYYY-MM-DD`). The pages' forms send
/// an empty field for "none", the API's schema says `format: date`: an empty string is no date.
pub fn date_param(field: &'static str, raw: Option<&str>) -> Result<(), ApiError> {
    match raw {
        None => Ok(()),
        Some(raw) => crate::domain::request::parse_date(field, raw)
            .map(|_| ())
            .map_err(|e| ApiError::invalid(vec![e])),
    }
}

/// Parses an optional boolean query parameter (`true`/`false`/`1`/`0`).
pub fn bool_param(field: &'static str, raw: Option<&str>) -> Result<bool, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(_) => Err(ApiError::invalid(vec![crate::domain::FieldError::new(
            field,
            "invalid",
            format!("{field} must be true or false"),
        )])),
    }
}

/// The body of a call that needs no input: `{}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Empty)]
pub struct NoFields {}

/// A page of a list: its items as the JSON array, and, when the page is full (there may be
/// more), a `Link: <PATH?…&after=LAST>; rel="next"` header, as Canvas pages its own lists
/// (keyset paging: `after` is the last item's id or sequence number).
pub struct Paged<T> {
    items: Vec<T>,
    next: Option<String>,
}

impl<T: serde::Serialize> Paged<T> {
    /// `items` answered to `uri` (the original one, with the API prefix) with this `limit`
    /// (as asked, or the list's default); the next page is asked with parameter `after` set
    /// to `key` of the last item.
    pub fn new(
        uri: &axum::http::Uri,
        items: Vec<T>,
        limit: i64,
        after: &str,
        key: impl Fn(&T) -> i64,
    ) -> Paged<T> {
        let next = match items.last() {
            Some(last) if items.len() as i64 >= limit => Some(next_page(uri, after, key(last))),
            _ => None,
        };
        Paged { items, next }
    }
}

/// `uri` with its parameter `name` (if any) replaced by `name=value`.
pub fn next_page(uri: &axum::http::Uri, name: &str, value: i64) -> String {
    let kept = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(k, _)| k != name)
        .collect::<Vec<_>>();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &kept {
        query.append_pair(k, v);
    }
    query.append_pair(name, &value.to_string());
    format!("{}?{}", uri.path(), query.finish())
}

impl<T: serde::Serialize> axum::response::IntoResponse for Paged<T> {
    fn into_response(self) -> axum::response::Response {
        let mut response = axum::Json(self.items).into_response();
        if let Some(next) = self.next
            && let Ok(value) = axum::http::HeaderValue::try_from(format!("<{next}>; rel=\"next\""))
        {
            response
                .headers_mut()
                .insert(axum::http::header::LINK, value);
        }
        response
    }
}
