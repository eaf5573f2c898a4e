//! Driving the simulator's pages as a browser does, for tests and demos: sign in with
//! `GET /login?as=LOGIN` (see [`sign_in_path`]), read the answer's `Set-Cookie` headers into a
//! [`Session`], then send its [`Session::cookie_header`] with every request and its
//! [`Session::csrf_token`] as `X-CSRF-Token` (or as the `authenticity_token` form field) with
//! every request that changes something, such as posting to [`activation_path`].
//!
//! ```
//! use tokendesk_canvas_sim::browser::Session;
//!
//! let session = Session::from_set_cookies([
//!     "canvas_sim_session=abc; Path=/; HttpOnly; SameSite=Lax",
//!     "_csrf_token=xyz; Path=/; SameSite=Lax",
//! ])
//! .expect("both cookies");
//! assert_eq!(session.cookie_header(), "canvas_sim_session=abc; _csrf_token=xyz");
//! assert_eq!(session.csrf_token(), "xyz");
//! ```

use std::fmt::Display;

/// The cookie that names a signed-in browser session.
pub const SESSION_COOKIE: &str = "canvas_sim_session";
/// The cookie Canvas keeps its CSRF token in, for scripts to send back as `X-CSRF-Token`.
pub const CSRF_COOKIE: &str = "_csrf_token";
/// The header a page script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The path that signs in as the person with this login: it answers `303 See Other` with the
/// session's cookies (follow no redirect to read them).
pub fn sign_in_path(login: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("as", login)
        .finish();
    format!("/login?{query}")
}

/// The path of a pending token's Activate button (`POST`, by its signed-in owner only).
pub fn activation_path(token_id: impl Display) -> String {
    format!("/profile/tokens/{token_id}/activate")
}

/// A browser signed in to the simulator: the cookies it sends back and the CSRF token its
/// scripts and forms carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    cookie_header: String,
    csrf_token: String,
}

impl Session {
    /// Reads the `Set-Cookie` header values of the sign-in answer (as `&str`, or as header
    /// values); `None` unless they set both the session cookie and `_csrf_token`.
    pub fn from_set_cookies<I>(set_cookies: I) -> Option<Session>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let pairs: Vec<String> = set_cookies
            .into_iter()
            .filter_map(|value| {
                let value = std::str::from_utf8(value.as_ref()).ok()?;
                let pair = value.split(';').next()?.trim();
                pair.contains('=').then(|| pair.to_owned())
            })
            .collect();
        let value_of = |name: &str| {
            pairs.iter().find_map(|pair| {
                pair.split_once('=')
                    .filter(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_owned())
            })
        };
        value_of(SESSION_COOKIE)?;
        let csrf_token = value_of(CSRF_COOKIE)?;
        Some(Session {
            cookie_header: pairs.join("; "),
            csrf_token,
        })
    }

    /// The `Cookie` header to send with every request: each cookie's `name=value`, joined by
    /// `; `.
    pub fn cookie_header(&self) -> &str {
        &self.cookie_header
    }

    /// The session's CSRF token (the `_csrf_token` cookie's value): Canvas's page scripts send
    /// it back as `X-CSRF-Token` ([`CSRF_HEADER`]), its forms as `authenticity_token`.
    pub fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_needs_both_cookies() {
        let session = "canvas_sim_session=abc; Path=/; HttpOnly";
        let csrf = "_csrf_token=x=y; Path=/";
        assert_eq!(
            Session::from_set_cookies([session, csrf]),
            Some(Session {
                cookie_header: "canvas_sim_session=abc; _csrf_token=x=y".into(),
                csrf_token: "x=y".into(),
            })
        );
        assert_eq!(Session::from_set_cookies([session]), None);
        assert_eq!(Session::from_set_cookies([csrf]), None);
        assert_eq!(Session::from_set_cookies(Vec::<&str>::new()), None);
    }

    #[test]
    fn paths_encode_what_they_carry() {
        assert_eq!(sign_in_path("sam.student"), "/login?as=sam.student");
        assert_eq!(sign_in_path("dana+qa@x"), "/login?as=dana%2Bqa%40x");
        assert_eq!(activation_path(7), "/profile/tokens/7/activate");
    }
}
