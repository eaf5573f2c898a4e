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
mod calendar;
mod charts;
pub(crate) mod chrome;
pub(crate) mod demo;
mod envelope;
pub(crate) mod error;
mod home;
mod incidents;
mod mailbox;
mod me;
mod orphans;
mod people;
mod reports;
pub use reports::ROWS_PER_GROUP;
mod requests;
pub(crate) mod session;
mod tokens;
mod view;

use std::sync::Arc;

use axum::http::HeaderValue;
use axum::http::header::{CONTENT_SECURITY_POLICY, X_FRAME_OPTIONS};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower_http::set_header::SetResponseHeaderLayer;

use super::WebState;

pub use error::PageError;

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
    routes_with(PagesConfig::default(), false)
}

/// A page or form route: its path and methods, as [`routes_with`] registers it.
#[derive(Debug, Clone, Copy)]
pub struct PageRoute {
    pub path: &'static str,
    /// Lower case: `get`, `post`.
    pub methods: &'static [&'static str],
}

/// Declares a list of routes once: the list ([`PageRoute`]s, for tests and documents) and a
/// function adding them to a router.
macro_rules! page_routes {
    ($list:ident, $add:ident: $( $path:literal => $m:ident($h:path) $(, $ms:ident($hs:path))* ;)*) => {
        pub const $list: &[PageRoute] = &[
            $( PageRoute { path: $path, methods: &[stringify!($m) $(, stringify!($ms))*] } ),*
        ];

        fn $add(router: Router<WebState>) -> Router<WebState> {
            router $( .route($path, $m($h) $(.$ms($hs))*) )*
        }
    };
}

page_routes! { DEMO_ROUTES, add_demo_routes:
    "/demo/login" => get(demo::page), post(demo::login);
    "/demo/logout" => post(demo::logout);
}

page_routes! { ROUTES, add_routes:
    "/" => get(home::show);
    "/requests/new" => get(requests::new_form), post(requests::submit);
    "/requests/{id}" => get(requests::show);
    "/requests/{id}/approve" => post(requests::approve);
    "/requests/{id}/deny" => post(requests::deny);
    "/requests/{id}/cancel" => post(requests::cancel);
    "/requests/{id}/retry" => post(requests::retry);
    "/requests/{id}/resend-link" => post(requests::resend_link);
    "/tokens/{id}" => get(tokens::show);
    "/tokens/{id}/revoke" => post(requests::revoke);
    "/tokens/{id}/renew" => post(tokens::renew);
    "/tokens/{id}/check-activation" => post(tokens::check_activation);
    "/me" => get(me::show);
    "/me/sessions/{id}/end" => post(me::end_session);
    "/auth/login" => get(crate::web::oidc::login);
    "/auth/callback" => get(crate::web::oidc::callback);
    "/auth/logout" => post(crate::web::oidc::logout);
    "/auth/signed-out" => get(crate::web::oidc::signed_out);
    "/me/calendar" => post(calendar::create);
    "/me/calendar/stop" => post(calendar::stop);
    "/calendar/{file}" => get(calendar::feed);
    "/orphans" => get(orphans::show);
    "/orphans/{id}/delete" => post(orphans::delete);
    "/queue" => get(requests::queue);
    "/people" => get(people::search);
    "/people/{login}" => get(people::show);
    "/people/{login}/sessions/end" => post(people::end_sessions);
    "/people/{login}/revoke-all" => post(incidents::revoke_all);
    "/report" => get(incidents::report_form), post(incidents::report);
    "/revocations" => get(incidents::revocations), post(incidents::start);
    "/revocations/{id}" => get(incidents::show);
    "/audit" => get(audit::show);
    "/audit/export.jsonl" => get(audit::export_jsonl);
    "/audit/export.csv" => get(audit::export_csv);
    "/reports" => get(reports::show);
    "/reports/{file}" => get(reports::file);
    "/mailbox" => get(mailbox::show);
    "/e/{id}" => get(envelope::show);
    "/e/{id}/burn" => post(envelope::burn);
    "/static/{file}" => get(assets::serve);
}

/// Every page and form route ([`ROUTES`]); with `demo`, the demo's sign-in page too
/// ([`DEMO_ROUTES`]).
pub fn routes_with(config: PagesConfig, demo: bool) -> Router<WebState> {
    let mut router = Router::new();
    if demo {
        router = add_demo_routes(router);
    }
    add_routes(router)
        .layer(SetResponseHeaderLayer::overriding(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(Extension(Arc::new(config)))
}
