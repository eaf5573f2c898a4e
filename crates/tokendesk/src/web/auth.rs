//! Who is asking: the trusted header set by a sign-in proxy, or (demo only) a signed cookie
//! chosen on the demo sign-in page. Also the client address recorded in the audit trail.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use serde::Serialize;

use super::WebState;
use super::error::ApiError;
use crate::app::Ctx;
use crate::config::{AuthConfig, AuthMode};
use crate::domain::{Actor, FieldError, Login};

/// The demo session cookie.
pub const DEMO_COOKIE: &str = "tokendesk_demo";
/// How long a demo session lasts.
pub(crate) const DEMO_SESSION_SECS: i64 = 12 * 60 * 60;

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

pub(crate) struct Demo {
    pub(crate) people: Vec<(Login, String)>,
    /// Signs session cookies; random per process, so a restart signs everyone out.
    key: cookie::Key,
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
        let demo = (config.mode == AuthMode::Demo).then(|| Demo {
            people: demo_people,
            key: cookie::Key::generate(),
        });
        Ok(WebAuth(Arc::new(Inner {
            config: config.clone(),
            header,
            listen,
            demo,
        })))
    }

    /// The header that carries the login in trusted-header mode.
    pub fn header_name(&self) -> &str {
        self.0.config.header.trim()
    }

    /// Whether a peer is one of `auth.trusted_proxies`.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.0.config.is_trusted_proxy(peer)
    }

    pub fn mode(&self) -> AuthMode {
        self.0.config.mode
    }

    /// Whether the demo sign-in may be used here.
    pub fn demo_allowed(&self) -> bool {
        self.0.demo.is_some() && demo_allowed_on(self.0.listen)
    }

    /// The address to record for a request from `peer`: the peer itself, unless it is a
    /// trusted proxy; then the right-most `X-Forwarded-For` hop that is not itself a trusted
    /// proxy. (A proxy appends the address it saw, so everything left of the last hop a trusted
    /// proxy added is the client's own say, and can be forged.) A hop that is not an address
    /// stops the walk at the last trusted one.
    pub fn client_addr(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<String> {
        let mut client = peer?.to_canonical();
        if self.0.config.is_trusted_proxy(client) {
            let hops: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect();
            for hop in hops.iter().rev() {
                let Ok(ip) = hop.parse::<IpAddr>() else {
                    break;
                };
                client = ip.to_canonical();
                if !self.0.config.is_trusted_proxy(client) {
                    break;
                }
            }
        }
        Some(client.to_string())
    }

    /// What a browser's CSRF token is bound to: its session (the demo's signed session, which
    /// changes at every sign-in), or the login the sign-in proxy vouches for.
    pub(crate) fn session_binding(
        &self,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        now: i64,
    ) -> Option<String> {
        let login = self.login(peer, headers, now).ok()??;
        match self.0.config.mode {
            AuthMode::Demo => {
                let jar = axum_extra::extract::cookie::CookieJar::from_headers(headers);
                let session = jar.get(DEMO_COOKIE)?.value().to_owned();
                Some(format!("demo:{session}"))
            }
            AuthMode::TrustedHeader => Some(format!("login:{login}")),
        }
    }

    /// The demo sign-in, when it may be used here.
    pub(crate) fn demo(&self) -> Option<&Demo> {
        self.0.demo.as_ref().filter(|_| self.demo_allowed())
    }

    /// The signed-in login of a request, if any. A login the sign-in proxy vouches for that
    /// tokendesk cannot use (see [`Login::parse`]) is an error naming why, not a silent
    /// "signed out".
    fn login(
        &self,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<Option<Login>, FieldError> {
        match self.0.config.mode {
            AuthMode::TrustedHeader => {
                // The header is believed only from a trusted proxy; from anyone else it is ignored.
                if !peer.is_some_and(|p| self.0.config.is_trusted_proxy(p)) {
                    return Ok(None);
                }
                let Some(raw) = headers.get(&self.0.header) else {
                    return Ok(None);
                };
                let raw = String::from_utf8_lossy(raw.as_bytes());
                if raw.trim().is_empty() {
                    return Ok(None);
                }
                Login::parse(&raw).map(Some)
            }
            AuthMode::Demo => {
                let Some(demo) = self.0.demo.as_ref().filter(|_| self.demo_allowed()) else {
                    return Ok(None);
                };
                let jar = axum_extra::extract::cookie::CookieJar::from_headers(headers);
                Ok(jar
                    .get(DEMO_COOKIE)
                    .and_then(|c| demo.verify(c.value(), now)))
            }
        }
    }
}

/// The demo sign-in works only when the server listens on loopback (nobody else can reach it).
pub fn demo_allowed_on(listen: SocketAddr) -> bool {
    listen.ip().to_canonical().is_loopback()
}

impl Demo {
    /// The signed cookie value of a sign-in at `issued`: `login.issued`, signed with this
    /// process's key (the cookie crate's signed jar).
    pub(crate) fn sign(&self, login: &Login, issued: i64) -> Option<String> {
        let mut jar = cookie::CookieJar::new();
        jar.signed_mut(&self.key).add(cookie::Cookie::new(
            DEMO_COOKIE,
            format!("{login}.{issued}"),
        ));
        jar.get(DEMO_COOKIE).map(|c| c.value().to_owned())
    }

    pub(crate) fn verify(&self, value: &str, now: i64) -> Option<Login> {
        let mut jar = cookie::CookieJar::new();
        jar.add_original(cookie::Cookie::new(DEMO_COOKIE, value.to_owned()));
        let verified = jar.signed(&self.key).get(DEMO_COOKIE)?;
        let (login, issued) = verified.value().rsplit_once('.')?;
        let issued: i64 = issued.parse().ok()?;
        if issued > now + 60 || now - issued >= DEMO_SESSION_SECS {
            return None;
        }
        let login = Login::parse(login).ok()?;
        // Only the people of the demo.
        self.people
            .iter()
            .any(|(l, _)| *l == login)
            .then_some(login)
    }
}

/// The address of the connection a request came in on, when the server recorded one.
pub fn peer_of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

fn peer(parts: &Parts) -> Option<IpAddr> {
    peer_of(&parts.extensions)
}

/// Where a request came from ([`WebAuth::client_addr`]), whether or not anybody is signed in.
pub struct ClientAddr(pub Option<String>);

impl FromRequestParts<WebState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(ClientAddr(
            state.auth.client_addr(peer(parts), &parts.headers),
        ))
    }
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
            .map_err(|e| ApiError::invalid_login(e.message))?
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

/// Who is signed in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Me)]
pub struct MeJson {
    pub login: String,
    /// `requester`, then any of `approver`, `helpdesk`, `auditor`, `admin`.
    pub roles: Vec<&'static str>,
}

/// Who is signed in, with their roles.
#[utoipa::path(
    get,
    path = "/me",
    tag = "people",
    operation_id = "me",
    responses(
        (status = 200, description = "The signed-in person", body = MeJson),
        super::openapi::Always,
    ),
)]
pub async fn me(SignedIn { actor, .. }: SignedIn) -> Json<MeJson> {
    Json(MeJson {
        login: actor.login.to_string(),
        roles: actor.roles.names(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use axum::http::HeaderValue;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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
        // Two proxies in front: one on loopback, the other in 10.0.0.0/8.
        let mut config = AuthConfig::default();
        config.trusted_proxies.push("10.0.0.0/8".parse().unwrap());
        let auth = WebAuth::new(&config, "127.0.0.1:0".parse().unwrap(), vec![]).unwrap();
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
        // The left-most entries are the client's own say: a forged one changes nothing.
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.0.0.1"),
        );
        let from_proxy = Some("127.0.0.1".parse().unwrap());
        assert_eq!(
            auth.client_addr(from_proxy, &headers).as_deref(),
            Some("203.0.113.7")
        );
        // Only proxies we trust: the left-most of them is as far as we can tell.
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        assert_eq!(
            auth.client_addr(from_proxy, &headers).as_deref(),
            Some("10.0.0.9")
        );
        // Garbage stops the walk at the last address a trusted proxy vouched for.
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, not-an-ip, 10.0.0.1"),
        );
        assert_eq!(
            auth.client_addr(from_proxy, &headers).as_deref(),
            Some("10.0.0.1")
        );
        // Without a trusted proxy in front, the header is the client's and is ignored.
        let direct = WebAuth::new(
            &AuthConfig::default(),
            "127.0.0.1:0".parse().unwrap(),
            vec![],
        )
        .unwrap();
        assert_eq!(
            direct
                .client_addr(Some("198.51.100.2".parse().unwrap()), &headers)
                .as_deref(),
            Some("198.51.100.2")
        );
    }
}
