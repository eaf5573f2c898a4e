//! Who is asking: the trusted header set by a sign-in proxy, a session in the database (OIDC,
//! or the demo's sign-in page), or a service key on the JSON API (`Authorization: Bearer`).
//! Also the client address recorded in the audit trail.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use secrecy::ExposeSecret as _;
use serde::Serialize;

use super::WebState;
use super::cookies::{Cookies, Kind};
use super::error::ApiError;
use super::oidc::Oidc;
use crate::app::{Ctx, KeyRefusal, LiveSession};
use crate::config::{AuthConfig, AuthMode};
use crate::domain::{Actor, FieldError, Login};

/// How people sign in, as the web layer applies it. Cheap to clone.
#[derive(Clone)]
pub struct WebAuth(Arc<Inner>);

struct Inner {
    config: AuthConfig,
    header: HeaderName,
    /// The server's own listen address (the demo sign-in is refused unless it is loopback).
    listen: SocketAddr,
    demo: Option<Demo>,
    oidc: Option<Oidc>,
}

pub(crate) struct Demo {
    pub(crate) people: Vec<(Login, String)>,
}

/// Why the sign-in settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebAuthError {
    #[error("auth.header {0:?} is not a valid HTTP header name")]
    BadHeader(String),
    #[error("auth.oidc: {0}")]
    Oidc(String),
}

/// Who a request comes from, before roles are looked up.
enum Identity {
    /// Vouched for by the sign-in proxy.
    Header(Login),
    /// A live session (OIDC or demo).
    Session(LiveSession),
    /// A service key.
    Key(Actor),
}

impl WebAuth {
    /// From the `[auth]` settings, the server's listen address, and (demo mode) the people one
    /// may sign in as, with their display names.
    pub fn new(
        config: &AuthConfig,
        listen: SocketAddr,
        demo_people: Vec<(Login, String)>,
    ) -> Result<WebAuth, WebAuthError> {
        WebAuth::with_oidc(config, listen, demo_people, None)
    }

    /// As [`WebAuth::new`], with the OpenID provider of `auth.mode = "oidc"`.
    pub fn with_oidc(
        config: &AuthConfig,
        listen: SocketAddr,
        demo_people: Vec<(Login, String)>,
        oidc: Option<Oidc>,
    ) -> Result<WebAuth, WebAuthError> {
        let header = HeaderName::from_bytes(config.header.trim().as_bytes())
            .map_err(|_| WebAuthError::BadHeader(config.header.clone()))?;
        let demo = (config.mode == AuthMode::Demo).then_some(Demo {
            people: demo_people,
        });
        if config.mode == AuthMode::Oidc && oidc.is_none() {
            return Err(WebAuthError::Oidc(
                "auth.mode is oidc but no provider is configured".into(),
            ));
        }
        Ok(WebAuth(Arc::new(Inner {
            config: config.clone(),
            header,
            listen,
            demo,
            oidc: oidc.filter(|_| config.mode == AuthMode::Oidc),
        })))
    }

    /// The header that carries the login in trusted-header mode.
    pub fn header_name(&self) -> &str {
        self.0.config.header.trim()
    }

    /// Whether a request comes from a proxy tokendesk believes: a peer among
    /// `auth.trusted_proxies` that sends `auth.proxy_secret` when one is set (compared in
    /// constant time). Only then are its login header, `X-Forwarded-For` and `X-Request-Id`
    /// believed.
    pub fn vouched(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
        let Some(peer) = peer else {
            return false;
        };
        if !self.0.config.is_trusted_proxy(peer) {
            return false;
        }
        match self.0.config.proxy_secret.value() {
            None => true,
            Some(secret) => headers
                .get(self.0.config.proxy_secret_header.as_str())
                .is_some_and(|sent| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(
                        sent.as_bytes(),
                        secret.expose_secret().as_bytes(),
                    ))
                }),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.0.config.mode
    }

    /// Whether the demo sign-in may be used here.
    pub fn demo_allowed(&self) -> bool {
        self.0.demo.is_some() && demo_allowed_on(self.0.listen)
    }

    /// The OpenID provider (`auth.mode = "oidc"`).
    pub fn oidc(&self) -> Option<&Oidc> {
        self.0.oidc.as_ref()
    }

    /// Whether people sign in to tokendesk itself (a session cookie) here.
    fn sessions_here(&self) -> bool {
        match self.0.config.mode {
            AuthMode::Oidc => true,
            AuthMode::Demo => self.demo_allowed(),
            AuthMode::TrustedHeader => false,
        }
    }

    /// The address to record for a request from `peer`: the peer itself, unless it is a
    /// trusted proxy; then the right-most `X-Forwarded-For` hop that is not itself a trusted
    /// proxy. (A proxy appends the address it saw, so everything left of the last hop a trusted
    /// proxy added is the client's own say, and can be forged.) A hop that is not an address
    /// stops the walk at the last trusted one.
    pub fn client_addr(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<String> {
        let mut client = peer?.to_canonical();
        if self.vouched(Some(client), headers) {
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

    /// What a browser's CSRF token is bound to: its session (a new one at every sign-in), or
    /// the login the sign-in proxy vouches for.
    pub(crate) fn session_binding(
        &self,
        cookies: &Cookies,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Option<String> {
        if self.sessions_here() {
            let session = cookies.get(headers, Kind::Session)?;
            return Some(format!("session:{}", crate::app::secret_hash(&session)));
        }
        let login = self.header_login(peer, headers).ok()??;
        Some(format!("login:{login}"))
    }

    /// The demo sign-in, when it may be used here.
    pub(crate) fn demo(&self) -> Option<&Demo> {
        self.0.demo.as_ref().filter(|_| self.demo_allowed())
    }

    /// Trusted-header mode: the login the proxy vouches for, if any. A login tokendesk cannot
    /// use (see [`Login::parse`]) is an error naming why, not a silent "signed out".
    fn header_login(
        &self,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<Option<Login>, FieldError> {
        if self.0.config.mode != AuthMode::TrustedHeader {
            return Ok(None);
        }
        // The header is believed only from a trusted proxy (with the proxy secret, when one is
        // set); from anyone else it is ignored.
        if !self.vouched(peer, headers) {
            return Ok(None);
        }
        let Some(raw) = headers.get(&self.0.header) else {
            return Ok(None);
        };
        let raw = String::from_utf8_lossy(raw.as_bytes());
        if raw.trim().is_empty() {
            return Ok(None);
        }
        Login::parse_scoped(&raw, self.0.config.strip_domain.as_deref()).map(Some)
    }

    /// Who a request comes from: a service key (JSON API only), the proxy's header, or a
    /// session.
    async fn identify(
        &self,
        state: &WebState,
        parts: &Parts,
        peer: Option<IpAddr>,
    ) -> Result<Option<Identity>, ApiError> {
        if let Some(value) = bearer(&parts.headers) {
            // Nested routers see their own part of the path: the original one decides.
            let path = parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or(parts.uri.path(), |u| u.0.path());
            if !path.starts_with("/api/") {
                return Ok(None);
            }
            return match state.app.key_actor(value).await.map_err(ApiError::from)? {
                Ok(actor) => Ok(Some(Identity::Key(actor))),
                Err(refusal) => Err(ApiError::key_refused(&refusal)),
            };
        }
        if let Some(login) = self
            .header_login(peer, &parts.headers)
            .map_err(|e| ApiError::invalid_login(e.message))?
        {
            return Ok(Some(Identity::Header(login)));
        }
        if !self.sessions_here() {
            return Ok(None);
        }
        let Some(cookie) = state.cookies.get(&parts.headers, Kind::Session) else {
            return Ok(None);
        };
        let session = state.app.session(&cookie).await.map_err(ApiError::from)?;
        Ok(session.map(Identity::Session))
    }
}

/// The value of `Authorization: Bearer …`, if one was sent.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The demo sign-in works only when the server listens on loopback (nobody else can reach it).
pub fn demo_allowed_on(listen: SocketAddr) -> bool {
    listen.ip().to_canonical().is_loopback()
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
        let identity = state
            .auth
            .identify(state, parts, peer)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        let actor = match identity {
            Identity::Header(login) => state.app.actor(login),
            Identity::Key(actor) => actor,
            Identity::Session(session) => {
                let mut actor = state.app.actor(session.login.clone());
                actor.roles = actor.roles.union(session.roles);
                parts.extensions.insert(session);
                actor
            }
        };
        tracing::Span::current().record("login", actor.login.as_str());
        let ctx = Ctx {
            client_addr: state.auth.client_addr(peer, &parts.headers),
        };
        Ok(SignedIn { actor, ctx })
    }
}

/// The session a request was signed in with, when it was (set by [`SignedIn`]).
pub fn current_session(parts: &Parts) -> Option<&LiveSession> {
    parts.extensions.get::<LiveSession>()
}

impl ApiError {
    /// A service key that is not (or no longer) accepted: 401, saying which.
    pub fn key_refused(refusal: &KeyRefusal) -> ApiError {
        let day = |t: time::OffsetDateTime| t.date().to_string();
        let (code, message) = match refusal {
            KeyRefusal::Unknown => (
                "unauthenticated",
                "this service key is not known here; check it was copied whole".to_owned(),
            ),
            KeyRefusal::Expired { name, at } => (
                "key_expired",
                format!(
                    "the service key `{name}` expired on {}; make a new one with `tokendesk admin keys create`",
                    day(*at)
                ),
            ),
            KeyRefusal::Revoked { name, at } => (
                "key_revoked",
                format!("the service key `{name}` was revoked on {}", day(*at)),
            ),
        };
        ApiError::new(axum::http::StatusCode::UNAUTHORIZED, code, message)
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
        roles: actor.role_names(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use axum::http::HeaderValue;

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
