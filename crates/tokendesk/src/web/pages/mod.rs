//! The web pages: server-rendered, escaping askama templates (one struct per page), a shared
//! layout, one stylesheet and the small reveal script (both embedded, served under `/static/`
//! with a content hash in their names). Handlers are thin: they read the signed-in person, call
//! the same [`App`](crate::app::App) operations as the JSON API, and render the answer or the
//! error (the API's [`ApiError`](super::ApiError) mapping, shown as HTML).
//!
//! State changes are form POSTs carrying a CSRF token (double submit: a random cookie and a
//! hidden field that must match; a POST from another origin is refused), answered with a 303
//! redirect and a one-time flash message.

mod assets;
mod audit;
mod envelope;
pub(crate) mod error;
mod home;
mod mailbox;
mod me;
mod people;
mod requests;
mod session;
mod view;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};

use super::WebState;

pub use error::PageError;
pub use session::{CSRF_COOKIE, FLASH_COOKIE, NEXT_COOKIE};

/// The policy of every page: scripts and styles from our own files only, nothing inline.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; connect-src 'self'";

/// The acknowledgement a requester ticks, unless configured otherwise.
pub const DEFAULT_TERMS: &str = "I will treat the token like a password: I will keep it secret, use it only for what I asked it for, and ask the help desk to revoke it as soon as I no longer need it or think it may have leaked.";

/// Settings of the pages.
#[derive(Debug, Clone)]
pub struct PagesConfig {
    /// The text of the acknowledgement on the request form.
    pub terms: String,
}

impl Default for PagesConfig {
    fn default() -> Self {
        PagesConfig {
            terms: DEFAULT_TERMS.to_owned(),
        }
    }
}

/// The pages with the default settings.
pub fn routes() -> Router<WebState> {
    routes_with(PagesConfig::default())
}

/// Every page and form route.
pub fn routes_with(config: PagesConfig) -> Router<WebState> {
    Router::new()
        .route("/", get(home::show))
        .route(
            "/requests/new",
            get(requests::new_form).post(requests::submit),
        )
        .route("/requests/{id}", get(requests::show))
        .route("/requests/{id}/approve", post(requests::approve))
        .route("/requests/{id}/deny", post(requests::deny))
        .route("/requests/{id}/cancel", post(requests::cancel))
        .route("/requests/{id}/retry", post(requests::retry))
        .route("/tokens/{id}/revoke", post(requests::revoke))
        .route("/me", get(me::show))
        .route("/queue", get(requests::queue))
        .route("/people", get(people::search))
        .route("/people/{login}", get(people::show))
        .route("/audit", get(audit::show))
        .route("/audit/export.jsonl", get(audit::export_jsonl))
        .route("/audit/export.csv", get(audit::export_csv))
        .route("/mailbox", get(mailbox::show))
        .route("/e/{id}", get(envelope::show))
        .route("/e/{id}/burn", post(envelope::burn))
        .route("/static/{file}", get(assets::serve))
        .layer(axum::middleware::from_fn(page_headers))
        .layer(Extension(Arc::new(config)))
}

/// The security headers of pages (set before the common middleware, which keeps them).
async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
