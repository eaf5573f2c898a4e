//! The person looking at a page: the signed-in actor (through the API's sign-in extractor),
//! the CSRF token of their browser, the flash message left by the last form, and what the
//! shared layout shows. Also the form extractor that checks the CSRF token and the origin.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, HOST, LOCATION, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use super::assets;
pub use super::chrome::{Chrome, Flash, NavItem};
use super::error::PageError;
use crate::app::Ctx;
use crate::config::AuthMode;
use crate::domain::Actor;
use crate::web::WebState;
use crate::web::auth::SignedIn;
use crate::web::cookies::{Cookies, Kind};

/// The hidden field carrying the CSRF token.
const CSRF_FIELD: &str = "csrf";

/// A signed-in person looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub actor: Actor,
    pub ctx: Ctx,
    pub csrf: String,
    new_csrf: bool,
    flash: Option<Flash>,
    path: String,
    sign_out: Option<&'static str>,
    mailbox: bool,
    cookies: Cookies,
    /// The public id of the session this browser is signed in with (OIDC, demo).
    session: Option<String>,
}

/// What the CSRF token of a request's session is bound to (see [`Cookies::mint_csrf`]).
fn binding_of(
    state: &WebState,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> Option<String> {
    let peer = crate::web::auth::peer_of(extensions);
    state.auth.session_binding(&state.cookies, peer, headers)
}

fn read_flash(cookies: &Cookies, headers: &HeaderMap) -> Option<Flash> {
    let raw = cookies.get(headers, Kind::Flash)?;
    let (kind, text) = raw.split_once('.')?;
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
    let message: String = text.chars().take(300).collect();
    Some(Flash {
        ok: kind != "e",
        message,
    })
}

/// A clean absolute path of this site (`/…`), safe to redirect to: only the characters of a
/// URL's path and query (RFC 3986), never a second `/` after the first, and no fragment.
/// (Browsers drop tabs and line breaks from an address, so `/\t/evil.example/` would become
/// `//evil.example/`: anything outside the set is refused, not cleaned.)
pub fn local_path(raw: &str) -> Option<&str> {
    let clean = raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b));
    let ok = clean
        && raw.starts_with('/')
        && !raw.starts_with("//")
        && !raw.starts_with("/?")
        && raw.len() <= 512;
    ok.then_some(raw)
}

impl Viewer {
    /// The viewer, `None` when nobody is signed in; `Err` for a login tokendesk cannot use.
    async fn from_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Option<Viewer>, crate::web::ApiError> {
        let SignedIn { actor, ctx } = match SignedIn::from_request_parts(parts, state).await {
            Ok(signed_in) => signed_in,
            Err(e) if e.is_invalid_login() => return Err(e),
            Err(_) => return Ok(None),
        };
        let cookies = state.cookies.clone();
        let session = crate::web::auth::current_session(parts).map(|s| s.public_id.clone());
        let binding = binding_of(state, &parts.headers, &parts.extensions).unwrap_or_default();
        let (csrf, new_csrf) = match cookies
            .get(&parts.headers, Kind::Csrf)
            .filter(|v| cookies.csrf_is_bound(&binding, v))
        {
            Some(value) => (value, false),
            None => (cookies.mint_csrf(&binding), true),
        };
        Ok(Some(Viewer {
            actor,
            ctx,
            csrf,
            new_csrf,
            flash: read_flash(&cookies, &parts.headers),
            path: parts.uri.path().to_owned(),
            sign_out: match state.auth.mode() {
                AuthMode::Demo => Some("/demo/logout"),
                AuthMode::Oidc => Some("/auth/logout"),
                AuthMode::TrustedHeader => None,
            },
            mailbox: state.app.uses_mailbox(),
            cookies,
            session,
        }))
    }

    /// The public id of this browser's session, when it signed in to tokendesk itself.
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Whether people sign in to tokendesk itself here (and so have sessions to list).
    pub fn has_sessions(&self) -> bool {
        self.sign_out.is_some()
    }

    /// Whether email goes to the mailbox page.
    pub fn mailbox(&self) -> bool {
        self.mailbox
    }

    /// The layout of a page titled `title`.
    pub fn chrome(&self, title: &str) -> Chrome {
        let roles = self.actor.roles;
        let mut nav = vec![
            ("/", "Home"),
            ("/requests/new", "Request a token"),
            ("/me", "My requests and tokens"),
        ];
        if roles.can_review() {
            nav.push(("/queue", "Queue"));
        }
        if roles.can_look_up_people() {
            nav.push(("/people", "People"));
        }
        if roles.can_audit() {
            nav.push(("/audit", "Audit"));
            nav.push(("/reports", "Reports"));
        }
        if roles.can_support() {
            nav.push(("/revocations", "Revocations"));
        }
        if roles.admin {
            nav.push(("/orphans", "Orphans"));
        }
        nav.push(("/report", "Report a leak"));
        if self.mailbox {
            nav.push(("/mailbox", "Mailbox"));
        }
        let nav = nav
            .into_iter()
            .map(|(href, label)| NavItem {
                href,
                label,
                current: self.path == href,
            })
            .collect();
        Chrome {
            title: title.to_owned(),
            login: self.actor.login.to_string(),
            roles: roles.names().join(", "),
            nav,
            flash: self.flash.clone(),
            csrf: self.csrf.clone(),
            css: assets::css_url(),
            sign_out: self.sign_out,
        }
    }

    /// Renders a page with its status; sets the CSRF cookie when it is new and spends the flash.
    pub fn page<T: Template>(&self, status: StatusCode, page: &T) -> Response {
        let html = match page.render() {
            Ok(html) => html,
            Err(e) => {
                return self
                    .fail(crate::web::ApiError::internal(&e))
                    .into_response();
            }
        };
        let mut response = (
            status,
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html,
        )
            .into_response();
        self.finish(response.headers_mut());
        response
    }

    /// The cookies every answer to this viewer carries.
    pub fn finish(&self, headers: &mut HeaderMap) {
        if self.new_csrf {
            self.cookies.add_set(headers, Kind::Csrf, &self.csrf);
        }
        if self.flash.is_some() {
            self.cookies.add_clear(headers, Kind::Flash);
        }
    }

    /// An error page for this viewer (with the layout).
    pub fn fail(&self, e: impl Into<crate::web::ApiError>) -> PageError {
        let mut headers = HeaderMap::new();
        self.finish(&mut headers);
        PageError::new(e.into(), Some(self.chrome("")), headers)
    }

    /// 303 to `to` with a flash message.
    pub fn redirect(&self, to: &str, ok: bool, message: &str) -> Response {
        let mut response = see_other(to);
        let value = format!(
            "{}.{}",
            if ok { "o" } else { "e" },
            URL_SAFE_NO_PAD.encode(message.as_bytes())
        );
        self.cookies
            .add_set(response.headers_mut(), Kind::Flash, &value);
        response
    }
}

/// A plain 303.
pub fn see_other(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

/// The signed-in viewer, or (not signed in) the way to sign in.
impl FromRequestParts<WebState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        match Viewer::from_parts(parts, state).await {
            Ok(Some(viewer)) => Ok(viewer),
            Ok(None) => Err(sign_in(
                state,
                parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            )),
            Err(e) => Err(PageError::plain(e).into_response()),
        }
    }
}

/// The viewer if someone is signed in.
pub struct MaybeViewer(pub Option<Viewer>);

impl FromRequestParts<WebState> for MaybeViewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Self, Self::Rejection> {
        Viewer::from_parts(parts, state)
            .await
            .map(MaybeViewer)
            .map_err(|e| PageError::plain(e).into_response())
    }
}

/// Where a signed-out visitor signs in (the demo's page, or the OpenID provider by way of
/// `/auth/login`); `None` behind a sign-in proxy.
pub fn sign_in_url(state: &WebState, back_to: &str) -> Option<String> {
    let next: String = url::form_urlencoded::byte_serialize(back_to.as_bytes()).collect();
    if state.auth.oidc().is_some() {
        return Some(format!("/auth/login?next={next}"));
    }
    if !state.auth.demo_allowed() {
        return None;
    }
    Some(format!("/demo/login?next={next}"))
}

/// The cookie remembering where to come back to after signing in.
pub fn next_cookie(cookies: &Cookies, back_to: &str) -> Option<HeaderValue> {
    let path = local_path(back_to).filter(|p| *p != "/")?;
    cookies.set(Kind::Next, &URL_SAFE_NO_PAD.encode(path.as_bytes()))
}

/// The page to go back to after signing in, if one was remembered.
pub fn take_next(cookies: &Cookies, headers: &HeaderMap) -> Option<String> {
    let raw = cookies.get(headers, Kind::Next)?;
    let path = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    local_path(&path).filter(|p| *p != "/").map(str::to_owned)
}

/// Demo: off to the sign-in page (and back afterwards). Behind a proxy: a 401 page explaining
/// that the proxy signs people in.
pub fn sign_in(state: &WebState, back_to: &str) -> Response {
    match sign_in_url(state, back_to) {
        Some(url) => {
            let mut response = see_other(&url);
            if let Some(cookie) = next_cookie(&state.cookies, back_to) {
                response
                    .headers_mut()
                    .append(axum::http::header::SET_COOKIE, cookie);
            }
            response
        }
        None => super::error::sign_in_needed(None, None),
    }
}

/// A path parameter of a page. One that cannot be read (not UTF-8, say) names nothing: the
/// "not found" page, never the framework's text.
pub struct PagePath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<WebState> for PagePath<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, PageError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PagePath(v))
            .map_err(|_| PageError::plain(crate::web::ApiError::not_found()))
    }
}

/// A page's query string. One that cannot be read (a key given twice, a value of the wrong
/// kind) is a 400 page saying so.
pub struct PageQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<WebState> for PageQuery<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _state: &WebState) -> Result<Self, PageError> {
        crate::web::extract::parse_query(parts)
            .map(PageQuery)
            .map_err(PageError::plain)
    }
}

/// A form POST: the CSRF field must match the cookie, and a browser's `Origin`, when it names
/// one, must be this site. The other fields become `T` (all text).
pub struct PageForm<T>(pub T);

fn own_origin(state: &WebState, headers: &HeaderMap, origin: &str) -> bool {
    if origin == state.app.public_url().origin().ascii_serialization() {
        return true;
    }
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// Constant-time: how long a comparison takes says nothing about where the two differ.
fn same_secret(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl<T: DeserializeOwned> FromRequest<WebState> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, PageError> {
        let headers = req.headers().clone();
        let binding = binding_of(state, &headers, req.extensions());
        // With `Referrer-Policy: no-referrer` browsers send `Origin: null` on form posts: that
        // says nothing, so the CSRF token decides; a real other origin is refused outright.
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            if origin != "null" && !own_origin(state, &headers, origin) {
                return Err(PageError::plain(crate::web::ApiError::forbidden(
                    "this form was sent from another site, so it was refused",
                )));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            PageError::plain(crate::web::extract::body_error(&e, state.max_body_bytes))
        })?;
        let mut fields: HashMap<String, String> = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(&bytes) {
            fields.insert(k.into_owned(), v.into_owned());
        }
        let sent = fields.remove(CSRF_FIELD).unwrap_or_default();
        let expected = state.cookies.get(&headers, Kind::Csrf).unwrap_or_default();
        // Double submit, and the token must be this session's: a cookie planted in the
        // browser (by a sibling site, a network attacker) or another person's token is refused.
        let bound = binding
            .as_deref()
            .is_some_and(|b| state.cookies.csrf_is_bound(b, &expected));
        if expected.is_empty() || !same_secret(&sent, &expected) || !bound {
            return Err(PageError::plain(crate::web::ApiError::forbidden(
                "this form has expired or did not come from this site: go back, reload the page and try again",
            )));
        }
        let value = serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        );
        let form = serde_json::from_value(value).map_err(|e| {
            PageError::plain(crate::web::ApiError::bad_request(
                "bad_form",
                format!("the form could not be read: {e}"),
            ))
        })?;
        Ok(PageForm(form))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path("/e/abc"), Some("/e/abc"));
        assert_eq!(local_path("//evil.example/"), None);
        assert_eq!(local_path("https://evil.example/"), None);
        assert_eq!(local_path("/\\evil"), None);
        assert_eq!(local_path("/e/abc#key"), None);
        // Browsers drop tabs and line breaks, which would leave `//evil.example/`.
        for bad in [
            "/\t/evil.example/",
            "/\n/evil.example",
            "/\r/x",
            "/ /x",
            "/\u{0}/x",
            "/é",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
        assert_eq!(
            local_path("/requests/12?x=1&y=%20"),
            Some("/requests/12?x=1&y=%20")
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        let cookies = crate::web::cookies::Cookies::new(false);
        let token = cookies.mint_csrf("login:sam");
        assert!(cookies.csrf_is_bound("login:sam", &token));
        assert!(!cookies.csrf_is_bound("login:stella", &token));
        assert!(!cookies.csrf_is_bound("login:sam", &"A".repeat(43)));
        assert!(!crate::web::cookies::Cookies::new(false).csrf_is_bound("login:sam", &token));
    }
}
