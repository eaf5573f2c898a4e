//! What every response gets, from tower-http: a request id (kept from a trusted proxy's
//! `X-Request-Id`, made here otherwise, and returned on every response), one span and one log
//! line per request, and the security headers.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use tower_http::request_id::{MakeRequestId, RequestId};
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::Span;

use super::WebState;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The policy of API responses (and of anything that does not set its own).
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, if any (quoted in error answers).
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Makes the id of a request that came without one: 96 random bits, base64url.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let bytes: [u8; 12] = rand::rng().random();
        HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(bytes))
            .ok()
            .map(RequestId::new)
    }
}

/// A request id is a short token of visible characters.
fn acceptable_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

/// Runs before the id is set: an `X-Request-Id` is kept only from a trusted proxy (a client
/// must not choose what the logs and error pages quote) and only when it is a short token.
pub async fn trust_request_id(
    State(state): State<WebState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let trusted = state.auth.vouched(peer, request.headers());
    let keep = trusted
        && request
            .headers()
            .get(&X_REQUEST_ID)
            .is_some_and(acceptable_id);
    if !keep {
        request.headers_mut().remove(&X_REQUEST_ID);
    }
    next.run(request).await
}

/// Makes the request's id available to the error answers of the handlers inside.
pub async fn scope_request_id(request: Request, next: Next) -> Response {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    REQUEST_ID.scope(id, next.run(request)).await
}

/// The span of a request: its id, method, route (the matched path, `/e/{id}`), path (the
/// address without its query) and, once known, who is signed in. Never headers, queries or
/// bodies.
pub fn request_span<B>(request: &axum::http::Request<B>) -> Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| request.uri().path(), |p| p.as_str());
    tracing::info_span!(
        "http",
        request.id = %id,
        method = %request.method(),
        route = %route,
        path = %request.uri().path(),
        login = tracing::field::Empty,
    )
}

/// The one line each request logs when it is answered.
pub fn log_response<B>(response: &axum::http::Response<B>, latency: Duration, _span: &Span) {
    // One line per request, whatever its status: a failure's cause is logged once where it
    // happened (an internal error with its chain, the database's outage by the store).
    let status = response.status();
    let ms = latency.as_millis();
    tracing::info!(status = status.as_u16(), ms, "request done");
}

/// The headers every answer carries (pages set a stricter policy of their own).
pub fn common_headers() -> [SetResponseHeaderLayer<HeaderValue>; 4] {
    [
        SetResponseHeaderLayer::overriding(
            X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        SetResponseHeaderLayer::overriding(
            REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        SetResponseHeaderLayer::if_not_present(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CSP),
        ),
        SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// The layers every answer goes through, outermost last: the request id (made when the
/// request has none; see [`trust_request_id`] for which are kept), the span and log line, the id
/// echoed in `X-Request-Id`, the common headers, and the id made available to error answers.
pub fn common_layers(router: axum::Router) -> axum::Router {
    use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::trace::TraceLayer;
    let [nosniff, referrer, csp, cache] = common_headers();
    router
        .layer(axum::middleware::from_fn(crate::telemetry::observe_http))
        .layer(axum::middleware::from_fn(scope_request_id))
        .layer(cache)
        .layer(csp)
        .layer(referrer)
        .layer(nosniff)
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, NewRequestId))
}

/// API answers are never cached.
pub fn api_headers() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(CACHE_CONTROL, HeaderValue::from_static("no-store"))
}
