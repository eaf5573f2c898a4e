//! The HTTP side: sign-in, the JSON API under `/api/v1` (described at `/api/openapi.json`),
//! health checks, and the headers every response carries. Handlers are thin: extract, call the
//! [`App`] operation, map the result or the error.
//!
//! Serve [`router`] with `into_make_service_with_connect_info::<SocketAddr>()`: the peer address
//! decides whether the sign-in header is believed and is recorded in the audit trail.

mod audit;
pub mod auth;
pub mod cookies;
mod envelopes;
pub mod error;
pub mod extract;
mod health;
mod mailbox;
pub mod middleware;
mod openapi;
pub mod pages;
mod requests;
mod tokens;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{get, post};
use time::{OffsetDateTime, UtcOffset};

pub use auth::{WebAuth, WebAuthError, demo_allowed_on};
pub use error::ApiError;

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
            pages: pages::PagesConfig::default(),
        },
    )
}

/// What the configuration decides about the web side.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Request bodies over this are refused with 413.
    pub max_body_bytes: usize,
    pub pages: pages::PagesConfig,
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
        }
    }
}

/// The whole web service with the given options.
pub fn router_with(app: App, auth: WebAuth, options: WebOptions) -> Router {
    let WebOptions {
        max_body_bytes,
        pages: pages_config,
    } = options;
    let demo = auth.mode() == AuthMode::Demo;
    let https = app.public_url().scheme() == "https";
    let state = WebState {
        app,
        auth,
        max_body_bytes,
        cookies: cookies::Cookies::new(https),
    };
    let api_routes = api(Routes::default())
        .router
        .route("/api/openapi.json", get(openapi::document))
        .layer(middleware::api_headers());
    let router = api_routes
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(pages::routes_with(pages_config, demo));
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state.clone());
    middleware::common_layers(router).layer(axum::middleware::from_fn_with_state(
        state,
        middleware::trust_request_id,
    ))
}

/// Every route of the JSON API as `(METHOD, /api/v1/path)`, e.g. to check the OpenAPI document.
pub fn api_routes() -> Vec<(Method, String)> {
    api(Routes::default()).list
}

fn api(routes: Routes) -> Routes {
    let routes = routes.get("/me", auth::me);
    let routes = requests::routes(routes);
    let routes = tokens::routes(routes);
    let routes = envelopes::routes(routes);
    let routes = mailbox::routes(routes);
    audit::routes(routes)
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

/// The API's routes as they are added, with the list of them.
#[derive(Default)]
pub(crate) struct Routes {
    router: Router<WebState>,
    list: Vec<(Method, String)>,
}

impl Routes {
    fn get<H, T>(self, path: &str, handler: H) -> Routes
    where
        H: Handler<T, WebState>,
        T: 'static,
    {
        self.add(Method::GET, path, get(handler))
    }

    fn post<H, T>(self, path: &str, handler: H) -> Routes
    where
        H: Handler<T, WebState>,
        T: 'static,
    {
        self.add(Method::POST, path, post(handler))
    }

    fn add(
        mut self,
        method: Method,
        path: &str,
        route: axum::routing::MethodRouter<WebState>,
    ) -> Routes {
        let full = format!("{API_PREFIX}{path}");
        self.router = self.router.route(&full, route);
        self.list.push((method, full));
        self
    }
}

/// Times in answers are UTC.
pub(crate) fn utc(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(UtcOffset::UTC)
}
