//! The HTTP side: sign-in, the JSON API under `/api/v1` (described at `/api/openapi.json`),
//! health checks, and the headers every response carries. Handlers are thin: extract, call the
//! [`App`] operation, map the result or the error.
//!
//! Serve [`router`] with `into_make_service_with_connect_info::<SocketAddr>()`: the peer address
//! decides whether the sign-in header is believed and is recorded in the audit trail.

mod audit;
pub mod auth;
mod calendar;
pub mod cookies;
mod envelopes;
pub mod error;
pub mod extract;
mod health;
mod incidents;
mod mailbox;
pub mod metrics;
pub mod middleware;
pub mod oidc;
mod openapi;
mod orphans;
pub mod pages;
mod requests;
mod sessions;
mod tokens;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::get;
use time::{OffsetDateTime, UtcOffset};

pub use auth::{WebAuth, WebAuthError, demo_allowed_on};
pub use error::ApiError;
pub use incidents::OFFBOARDING_REASON;

use crate::app::App;
use crate::config::{AuthMode, DEFAULT_MAX_BODY_BYTES};

/// The prefix of the JSON API.
pub const API_PREFIX: &str = "/api/v1";

/// What every handler gets.
#[derive(Clone)]
pub struct WebState {
    pub app: App,
    pub auth: WebAuth,
    pub max_body_bytes: usize,
    pub cookies: cookies::Cookies,
    /// `[limits]`, and the buckets they are counted in.
    pub limits: crate::config::LimitsConfig,
    pub limiter: std::sync::Arc<crate::limits::RateLimiter>,
    /// `metrics.bearer_key`: with it, `/metrics` answers on this address to that key.
    pub metrics_key: metrics::MetricsKey,
}

impl WebState {
    /// Counts one `limit`ed action by `who` (a login or an address); 429 when over the limit.
    pub fn limit(&self, limit: crate::limits::Limit, who: &str) -> Result<(), ApiError> {
        use crate::limits::{Limit, Rate};
        let l = &self.limits;
        let (rate, what) = match limit {
            Limit::Submit => (Rate::per_hour(l.submissions_per_hour), "requests"),
            Limit::Reveal => (Rate::per_hour(l.reveals_per_hour), "reveals"),
            Limit::EnvelopeLookup => (
                Rate::per_minute(l.envelope_lookups_per_minute),
                "delivery link look-ups",
            ),
            Limit::SignIn => (Rate::per_minute(l.sign_ins_per_minute), "sign-ins"),
            Limit::Report => (Rate::per_hour(l.reports_per_hour), "reports"),
            Limit::RefusalRecord => (crate::app::REFUSAL_RECORDS, "refusals"),
        };
        self.limiter
            .check(limit, who, rate)
            .map_err(|wait| ApiError::too_many(what, wait))
    }

    /// Envelope look-ups are counted per person and per address.
    pub fn limit_envelope_lookup(
        &self,
        actor: &crate::domain::Actor,
        ctx: &crate::app::Ctx,
    ) -> Result<(), ApiError> {
        use crate::limits::Limit;
        self.limit(Limit::EnvelopeLookup, &format!("login:{}", actor.login))?;
        if let Some(addr) = &ctx.client_addr {
            self.limit(Limit::EnvelopeLookup, &format!("addr:{addr}"))?;
        }
        Ok(())
    }
}

/// The whole web service, with the default body limit.
pub fn router(app: App, auth: WebAuth) -> Router {
    router_with_limit(app, auth, DEFAULT_MAX_BODY_BYTES)
}

/// The whole web service; request bodies over `max_body_bytes` are refused with 413.
pub fn router_with_limit(app: App, auth: WebAuth, max_body_bytes: usize) -> Router {
    router_with(
        app,
        auth,
        WebOptions {
            max_body_bytes,
            ..WebOptions::default()
        },
    )
}

/// What the configuration decides about the web side.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Request bodies over this are refused with 413.
    pub max_body_bytes: usize,
    pub pages: pages::PagesConfig,
    pub limits: crate::config::LimitsConfig,
    pub metrics_key: metrics::MetricsKey,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            pages: pages::PagesConfig::default(),
            limits: crate::config::LimitsConfig::default(),
            metrics_key: None,
        }
    }
}

impl WebOptions {
    pub fn from_config(config: &crate::config::Config) -> WebOptions {
        let mut pages = pages::PagesConfig::default();
        if let Some(terms) = &config.terms_text {
            pages.terms = terms.clone();
        }
        WebOptions {
            max_body_bytes: config.max_body_bytes,
            pages,
            limits: config.limits,
            metrics_key: config.metrics.bearer_key.value().cloned(),
        }
    }
}

/// The whole web service with the given options.
pub fn router_with(app: App, auth: WebAuth, options: WebOptions) -> Router {
    let WebOptions {
        max_body_bytes,
        pages: pages_config,
        limits,
        metrics_key,
    } = options;
    let demo = auth.mode() == AuthMode::Demo;
    let https = app.public_url().scheme() == "https";
    let state = WebState {
        app,
        auth,
        max_body_bytes,
        cookies: cookies::Cookies::new(https),
        limits,
        limiter: Default::default(),
        metrics_key,
    };
    let (api_router, doc) = api();
    let doc = openapi::document(doc, state.auth.header_name(), &state.app.policy());
    let json = std::sync::Arc::new(doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned()));
    let api_routes = api_router
        .route("/api/openapi.json", get(openapi::serve))
        .layer(axum::Extension(json))
        .layer(middleware::api_headers());
    let router = api_routes
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(metrics::PATH, get(metrics::scrape))
        .merge(pages::routes_with(pages_config, demo));
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(limits.body_timeout_secs),
        ))
        .with_state(state.clone());
    middleware::common_layers(router).layer(axum::middleware::from_fn_with_state(
        state,
        middleware::trust_request_id,
    ))
}

/// The JSON API: its router (paths under [`API_PREFIX`]) and its OpenAPI document, from the
/// same registrations.
fn api() -> (Router<WebState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    let api = utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(utoipa_axum::routes!(auth::me))
        .merge(requests::routes())
        .merge(tokens::routes())
        .merge(envelopes::routes())
        .merge(mailbox::routes())
        .merge(audit::routes())
        .merge(orphans::routes())
        .merge(calendar::routes())
        .merge(sessions::routes())
        .merge(incidents::routes());
    let (router, doc) = api.split_for_parts();
    (Router::new().nest(API_PREFIX, router), doc)
}

/// Every route of the JSON API as `(METHOD, /api/v1/path)`, from its OpenAPI registration.
pub fn api_routes() -> Vec<(Method, String)> {
    let (_, doc) = api();
    let mut routes = Vec::new();
    for (path, item) in &doc.paths.paths {
        let methods = [
            (Method::GET, item.get.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::PUT, item.put.is_some()),
            (Method::DELETE, item.delete.is_some()),
            (Method::PATCH, item.patch.is_some()),
        ];
        for (method, present) in methods {
            if present {
                routes.push((method, format!("{API_PREFIX}{path}")));
            }
        }
    }
    routes
}

/// The OpenAPI document this configuration serves at `/api/openapi.json`.
pub fn openapi_document(header: &str, policy: &crate::domain::Policy) -> utoipa::openapi::OpenApi {
    openapi::document(api().1, header, policy)
}

/// An unknown address: a page for a browser, the JSON error for everyone else (and the API).
async fn not_found(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let wants_html = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html && !uri.path().starts_with("/api/") {
        pages::error::PageError::plain(ApiError::not_found()).into_response()
    } else {
        ApiError::not_found().into_response()
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Times in answers are UTC.
pub(crate) fn utc(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(UtcOffset::UTC)
}
