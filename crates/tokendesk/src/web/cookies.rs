//! Every cookie tokendesk sets, declared once ([`Kind`]: name and attributes) and made and read
//! through axum-extra's cookie jar. Cookies that carry something a visitor must not choose (the
//! flash message, the page to return to) are signed with a key drawn at start. The session
//! cookie holds a random id the database knows by its hash only. When the public URL is `https`, every cookie is
//! `Secure` and named with the `__Host-` prefix, so no other site or subdomain can set it.

use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use axum_extra::extract::cookie::{Cookie, CookieJar, Key, SameSite, SignedCookieJar};

/// A cookie of tokendesk's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A sign-in session (OIDC or demo): a random id whose hash names the session in the
    /// database.
    Session,
    /// The `state` of an OIDC sign-in under way, binding the provider's answer to this browser.
    OidcState,
    /// The CSRF token of a browser, bound to its session ([`Cookies::mint_csrf`]).
    Csrf,
    /// The one-time message shown on the page after a form (signed).
    Flash,
    /// Where to go back to after signing in (signed).
    Next,
}

impl Kind {
    /// The name, without the `__Host-` prefix.
    pub const fn base_name(self) -> &'static str {
        match self {
            Kind::Session => "tokendesk_session",
            Kind::OidcState => "tokendesk_oidc",
            Kind::Csrf => "tokendesk_csrf",
            Kind::Flash => "tokendesk_flash",
            Kind::Next => "tokendesk_next",
        }
    }

    fn same_site(self) -> SameSite {
        match self {
            // Followed from an emailed link, or the provider's redirect back (top-level
            // navigations from another site).
            Kind::Session | Kind::OidcState | Kind::Next => SameSite::Lax,
            Kind::Csrf | Kind::Flash => SameSite::Strict,
        }
    }

    /// How long it lasts; `None` for the browser session.
    fn max_age_secs(self) -> Option<i64> {
        match self {
            // A browser-session cookie; the session itself ends by its own rules.
            Kind::Session => None,
            Kind::OidcState => Some(crate::app::OIDC_FLOW_SECS),
            Kind::Csrf => None,
            Kind::Flash => Some(120),
            Kind::Next => Some(900),
        }
    }

    fn signed(self) -> bool {
        matches!(self, Kind::Flash | Kind::Next)
    }
}

/// How this server makes and reads its cookies. Cheap to clone.
#[derive(Clone)]
pub struct Cookies {
    key: Key,
    secure: bool,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies")
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl Cookies {
    /// Cookies for a site reached over https (`secure`) or plain http (local demo, tests).
    pub fn new(secure: bool) -> Cookies {
        Cookies {
            key: Key::generate(),
            secure,
        }
    }

    /// A CSRF token bound to a session (see `pages::session`): `nonce.tag`, the tag an
    /// HMAC-SHA256 under this process's key of the session's binding and the nonce. A token
    /// planted in a browser, or taken from another session, does not verify.
    pub fn mint_csrf(&self, binding: &str) -> String {
        use base64::Engine as _;
        use rand::RngExt as _;
        let nonce: [u8; 16] = rand::rng().random();
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce);
        let tag = self.csrf_tag(binding, &nonce);
        format!("{nonce}.{tag}")
    }

    /// Whether `token` was minted here for `binding`.
    pub fn csrf_is_bound(&self, binding: &str, token: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let Some((nonce, tag)) = token.split_once('.') else {
            return false;
        };
        let ok_form = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !ok_form(nonce) || !ok_form(tag) {
            return false;
        }
        let expected = self.csrf_tag(binding, nonce);
        bool::from(expected.as_bytes().ct_eq(tag.as_bytes()))
    }

    fn csrf_tag(&self, binding: &str, nonce: &str) -> String {
        use base64::Engine as _;
        use hmac::Mac as _;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.key.signing()) else {
            return String::new();
        };
        mac.update(b"tokendesk-csrf-v2\0");
        mac.update(binding.as_bytes());
        mac.update(b"\0");
        mac.update(nonce.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The name a cookie has here.
    pub fn name(&self, kind: Kind) -> String {
        if self.secure {
            format!("__Host-{}", kind.base_name())
        } else {
            kind.base_name().to_owned()
        }
    }

    /// The value the browser sent, verified when the cookie is signed.
    pub fn get(&self, headers: &HeaderMap, kind: Kind) -> Option<String> {
        let name = self.name(kind);
        let cookie = if kind.signed() {
            SignedCookieJar::from_headers(headers, self.key.clone()).get(&name)?
        } else {
            CookieJar::from_headers(headers).get(&name)?.clone()
        };
        Some(cookie.value().to_owned())
    }

    fn cookie(&self, kind: Kind, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::new(self.name(kind), value);
        cookie.set_path("/");
        cookie.set_http_only(true);
        cookie.set_same_site(kind.same_site());
        cookie.set_secure(self.secure);
        if let Some(secs) = kind.max_age_secs() {
            cookie.set_max_age(time::Duration::seconds(secs));
        }
        cookie
    }

    /// The `Set-Cookie` value that sets a cookie (signed when it is a signed one).
    pub fn set(&self, kind: Kind, value: &str) -> Option<HeaderValue> {
        let cookie = self.cookie(kind, value.to_owned());
        let cookie = if kind.signed() {
            let mut jar = cookie::CookieJar::new();
            jar.signed_mut(&self.key).add(cookie);
            jar.get(&self.name(kind))?.clone()
        } else {
            cookie
        };
        HeaderValue::from_str(&cookie.to_string()).ok()
    }

    /// The `Set-Cookie` value that removes a cookie.
    pub fn clear(&self, kind: Kind) -> Option<HeaderValue> {
        let mut cookie = self.cookie(kind, String::new());
        cookie.make_removal();
        HeaderValue::from_str(&cookie.to_string()).ok()
    }

    /// Appends the `Set-Cookie` that sets a cookie to `headers`.
    pub fn add_set(&self, headers: &mut HeaderMap, kind: Kind, value: &str) {
        if let Some(v) = self.set(kind, value) {
            headers.append(SET_COOKIE, v);
        }
    }

    /// Appends the `Set-Cookie` that removes a cookie to `headers`.
    pub fn add_clear(&self, headers: &mut HeaderMap, kind: Kind) {
        if let Some(v) = self.clear(kind) {
            headers.append(SET_COOKIE, v);
        }
    }
}
