//! Who is asking: the trusted header set by a sign-in proxy, or (demo only) a signed cookie
//! chosen on the demo sign-in page. Also the client address recorded in the audit trail.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, FromRequestParts, State};
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::WebState;
use super::error::{ApiError, ApiResult};
use crate::app::Ctx;
use crate::config::{AuthConfig, AuthMode};
use crate::domain::{Actor, Login};

/// The demo session cookie.
pub const DEMO_COOKIE: &str = "tokendesk_demo";
/// How long a demo session lasts.
const DEMO_SESSION_SECS: i64 = 12 * 60 * 60;

/// How people sign in, as the web layer applies it. Cheap to clone.
#[derive(Clone)]
pub struct WebAuth(Arc<Inner>);

struct Inner {
    config: AuthConfig,
    header: HeaderName,
    /// The server's own listen address (the demo sign-in is refused unless it is loopback).
    listen: SocketAddr,
    demo: Option<Demo>,
}

struct Demo {
    people: Vec<(Login, String)>,
    /// Signs session cookies; random per process, so a restart signs everyone out.
    key: Zeroizing<[u8; 32]>,
}

/// Why the sign-in settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebAuthError {
    #[error("auth.header {0:?} is not a valid HTTP header name")]
    BadHeader(String),
    #[error("cannot sign the demo session")]
    Signing,
}

impl WebAuth {
    /// From the `[auth]` settings, the server's listen address, and (demo mode) the people one
    /// may sign in as, with their display names.
    pub fn new(
        config: &AuthConfig,
        listen: SocketAddr,
        demo_people: Vec<(Login, String)>,
    ) -> Result<WebAuth, WebAuthError> {
        let header = HeaderName::from_bytes(config.header.trim().as_bytes())
            .map_err(|_| WebAuthError::BadHeader(config.header.clone()))?;
        let demo = (config.mode == AuthMode::Demo).then(|| {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(&mut key[..]);
            Demo {
                people: demo_people,
                key,
            }
        });
        Ok(WebAuth(Arc::new(Inner {
            config: config.clone(),
            header,
            listen,
            demo,
        })))
    }

    pub fn mode(&self) -> AuthMode {
        self.0.config.mode
    }

    /// Whether the demo sign-in may be used here.
    pub fn demo_allowed(&self) -> bool {
        self.0.demo.is_some() && demo_allowed_on(self.0.listen)
    }

    /// The address to record for a request from `peer`: the first `X-Forwarded-For` hop when
    /// the peer is a trusted proxy that sent one, else the peer.
    pub fn client_addr(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<String> {
        let peer = peer?;
        if self.0.config.is_trusted_proxy(peer) {
            let forwarded = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|hop| hop.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return Some(ip.to_canonical().to_string());
            }
        }
        Some(peer.to_canonical().to_string())
    }

    /// The signed-in login of a request, if any.
    fn login(&self, peer: Option<IpAddr>, headers: &HeaderMap, now: i64) -> Option<Login> {
        match self.0.config.mode {
            AuthMode::TrustedHeader => {
                // The header is believed only from a trusted proxy; from anyone else it is ignored.
                let peer = peer?;
                if !self.0.config.is_trusted_proxy(peer) {
                    return None;
                }
                let raw = headers.get(&self.0.header)?.to_str().ok()?;
                Login::parse(raw).ok()
            }
            AuthMode::Demo => {
                if !self.demo_allowed() {
                    return None;
                }
                let demo = self.0.demo.as_ref()?;
                let value = cookie(headers, DEMO_COOKIE)?;
                demo.verify(value, now)
            }
        }
    }
}

/// The demo sign-in works only when the server listens on loopback (nobody else can reach it).
pub fn demo_allowed_on(listen: SocketAddr) -> bool {
    listen.ip().to_canonical().is_loopback()
}

impl Demo {
    fn mac(&self, login: &str, issued: i64) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key[..]).ok()?;
        mac.update(b"tokendesk-demo-v1\0");
        mac.update(login.as_bytes());
        mac.update(b"\0");
        mac.update(issued.to_string().as_bytes());
        Some(mac)
    }

    /// `base64url(login).issued.base64url(hmac)`.
    fn sign(&self, login: &Login, issued: i64) -> Option<String> {
        let tag = self.mac(login.as_str(), issued)?.finalize().into_bytes();
        Some(format!(
            "{}.{issued}.{}",
            URL_SAFE_NO_PAD.encode(login.as_str()),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    fn verify(&self, value: &str, now: i64) -> Option<Login> {
        let mut parts = value.split('.');
        let (login, issued, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let login = String::from_utf8(URL_SAFE_NO_PAD.decode(login).ok()?).ok()?;
        let issued: i64 = issued.parse().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(&login, issued)?.verify_slice(&tag).ok()?;
        if issued > now + 60 || now - issued >= DEMO_SESSION_SECS {
            return None;
        }
        let login = Login::parse(&login).ok()?;
        // Only the people of the demo.
        self.people
            .iter()
            .any(|(l, _)| *l == login)
            .then_some(login)
    }
}

/// The value of a cookie.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// A signed-in person and where the request came from. Rejects with 401 when nobody is.
pub struct SignedIn {
    pub actor: Actor,
    pub ctx: Ctx,
}

impl FromRequestParts<WebState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, ApiError> {
        let peer = peer(parts);
        let now = state.app.now().unix_timestamp();
        let login = state
            .auth
            .login(peer, &parts.headers, now)
            .ok_or_else(ApiError::unauthenticated)?;
        tracing::Span::current().record("login", login.as_str());
        let ctx = Ctx {
            client_addr: state.auth.client_addr(peer, &parts.headers),
        };
        Ok(SignedIn {
            actor: state.app.actor(login),
            ctx,
        })
    }
}

/// `GET /api/v1/me`.
#[derive(Debug, Serialize)]
pub struct MeJson {
    pub login: String,
    pub roles: Vec<&'static str>,
}

pub async fn me(SignedIn { actor, .. }: SignedIn) -> Json<MeJson> {
    Json(MeJson {
        login: actor.login.to_string(),
        roles: actor.roles.names(),
    })
}

// ---------------------------------------------------------------------------------------------
// Demo sign-in pages
// ---------------------------------------------------------------------------------------------

const PAGE_CSP: &str =
    "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Sign in — tokendesk demo</title></head>
<body>
<main>
<h1>Sign in to the tokendesk demo</h1>
<p>This is a demo: choose who you are.</p>
<ul>
{% for person in people %}<li><form method="post" action="/demo/login"><input type="hidden" name="login" value="{{ person.0 }}"><button type="submit">{{ person.1 }} ({{ person.0 }})</button></form></li>
{% endfor %}</ul>
<form method="post" action="/demo/logout"><button type="submit">Sign out</button></form>
</main>
</body>
</html>
"#
)]
struct DemoLoginPage<'a> {
    people: &'a [(Login, String)],
}

fn demo_refused() -> ApiError {
    ApiError::forbidden("the demo sign-in works only when tokendesk listens on a loopback address")
}

fn demo_of(state: &WebState) -> ApiResult<&Demo> {
    match state.auth.0.demo.as_ref() {
        Some(demo) if state.auth.demo_allowed() => Ok(demo),
        _ => Err(demo_refused()),
    }
}

/// `GET /demo/login`: the people of the demo, one button each.
pub async fn demo_page(State(state): State<WebState>) -> ApiResult<Response> {
    let demo = demo_of(&state)?;
    let html = DemoLoginPage {
        people: &demo.people,
    }
    .render()
    .map_err(|e| ApiError::internal(&e))?;
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)),
        ],
        html,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct DemoLoginForm {
    login: String,
}

fn redirect_with_cookie(to: &'static str, cookie: String) -> ApiResult<Response> {
    let cookie = HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(&e))?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (LOCATION, HeaderValue::from_static(to)),
            (SET_COOKIE, cookie),
        ],
    )
        .into_response())
}

/// `POST /demo/login` (`login=…`): signs in as one of the demo people, then goes to `/`.
pub async fn demo_login(
    State(state): State<WebState>,
    form: Result<Form<DemoLoginForm>, FormRejection>,
) -> ApiResult<Response> {
    let demo = demo_of(&state)?;
    let Form(form) = form.map_err(|e| ApiError::bad_request("bad_form", e.body_text()))?;
    let login = Login::parse(&form.login)
        .ok()
        .filter(|login| demo.people.iter().any(|(l, _)| l == login))
        .ok_or_else(|| {
            ApiError::invalid(vec![crate::domain::FieldError::new(
                "login",
                "unknown",
                "choose one of the people of the demo",
            )])
        })?;
    let value = demo
        .sign(&login, state.app.now().unix_timestamp())
        .ok_or_else(|| ApiError::internal(&WebAuthError::Signing))?;
    tracing::info!(login = %login, "demo sign-in");
    redirect_with_cookie(
        "/",
        format!(
            "{DEMO_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={DEMO_SESSION_SECS}"
        ),
    )
}

/// `POST /demo/logout`: forgets the session cookie.
pub async fn demo_logout(State(state): State<WebState>) -> ApiResult<Response> {
    demo_of(&state)?;
    redirect_with_cookie(
        "/demo/login",
        format!("{DEMO_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn demo_auth(listen: &str) -> WebAuth {
        let config = AuthConfig {
            mode: AuthMode::Demo,
            ..AuthConfig::default()
        };
        let people = vec![(Login::parse("sam.student").unwrap(), "Sam".to_owned())];
        WebAuth::new(&config, listen.parse().unwrap(), people).unwrap()
    }

    #[test]
    fn demo_sign_in_only_on_loopback() {
        assert!(demo_allowed_on("127.0.0.1:8080".parse().unwrap()));
        assert!(demo_allowed_on("127.0.0.2:0".parse().unwrap()));
        assert!(demo_allowed_on("[::1]:8080".parse().unwrap()));
        assert!(demo_allowed_on("[::ffff:127.0.0.1]:8080".parse().unwrap()));
        assert!(!demo_allowed_on("0.0.0.0:8080".parse().unwrap()));
        assert!(!demo_allowed_on("[::]:8080".parse().unwrap()));
        assert!(!demo_allowed_on("192.168.1.10:8080".parse().unwrap()));
        assert!(demo_auth("127.0.0.1:0").demo_allowed());
        assert!(!demo_auth("0.0.0.0:8080").demo_allowed());
    }

    #[test]
    fn trusted_header_mode_has_no_demo() {
        let auth = WebAuth::new(
            &AuthConfig::default(),
            "127.0.0.1:0".parse().unwrap(),
            vec![],
        )
        .unwrap();
        assert!(!auth.demo_allowed());
    }

    #[test]
    fn session_cookies_are_signed_and_expire() {
        let auth = demo_auth("127.0.0.1:0");
        let demo = auth.0.demo.as_ref().unwrap();
        let sam = Login::parse("sam.student").unwrap();
        let value = demo.sign(&sam, 1000).unwrap();
        assert_eq!(demo.verify(&value, 1000), Some(sam.clone()));
        assert_eq!(demo.verify(&value, 1000 + DEMO_SESSION_SECS), None);
        // Another login with the same signature does not pass.
        let (_, rest) = value.split_once('.').unwrap();
        let forged = format!("{}.{rest}", URL_SAFE_NO_PAD.encode("ada.admin"));
        assert_eq!(demo.verify(&forged, 1000), None);
        // Nor a cookie signed by another process.
        let other = demo_auth("127.0.0.1:0");
        assert_eq!(other.0.demo.as_ref().unwrap().verify(&value, 1000), None);
        // Someone not among the demo people, even correctly signed, is not signed in.
        let ada = Login::parse("ada.admin").unwrap();
        assert_eq!(demo.verify(&demo.sign(&ada, 1000).unwrap(), 1000), None);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let auth = WebAuth::new(
            &AuthConfig::default(),
            "127.0.0.1:0".parse().unwrap(),
            vec![],
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, 10.0.0.1"),
        );
        assert_eq!(
            auth.client_addr(Some("127.0.0.1".parse().unwrap()), &headers)
                .as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            auth.client_addr(Some("198.51.100.2".parse().unwrap()), &headers)
                .as_deref(),
            Some("198.51.100.2")
        );
        assert_eq!(auth.client_addr(None, &headers), None);
    }
}
