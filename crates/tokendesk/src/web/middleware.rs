//! What every response gets: a request id (header, tracing span, error messages), one log line,
//! and the security headers.

use std::time::Instant;

use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use tracing::Instrument as _;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The policy of API responses (and of anything that does not set its own).
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

fn new_request_id() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Gives the request an id, runs it inside a span carrying that id, logs its outcome (method,
/// path, status, duration — never headers or bodies) and sets the common response headers.
pub async fn request_context(request: Request, next: Next) -> Response {
    let id = new_request_id();
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!(
        "http",
        request.id = %id,
        method = %method,
        path = %path,
        login = tracing::field::Empty,
    );
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status();
    span.in_scope(|| {
        let ms = started.elapsed().as_millis();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), ms, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), ms, "request done");
        }
    });
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID, value);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(CONTENT_SECURITY_POLICY) {
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(API_CSP));
    }
    if path.starts_with("/api/") || !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Marks every cookie `Secure` when tokendesk is reached over HTTPS (its public URL says so):
/// the session, CSRF and flash cookies are then never sent over plain HTTP.
pub async fn secure_cookies(
    axum::extract::State(state): axum::extract::State<super::WebState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if state.app.public_url().scheme() == "https" {
        let cookies: Vec<axum::http::HeaderValue> = response
            .headers_mut()
            .get_all(axum::http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| {
                let text = v.to_str().ok()?;
                if text.to_ascii_lowercase().contains("; secure") {
                    Some(v.clone())
                } else {
                    axum::http::HeaderValue::from_str(&format!("{text}; Secure")).ok()
                }
            })
            .collect();
        if !cookies.is_empty() {
            response
                .headers_mut()
                .remove(axum::http::header::SET_COOKIE);
            for cookie in cookies {
                response
                    .headers_mut()
                    .append(axum::http::header::SET_COOKIE, cookie);
            }
        }
    }
    response
}
