//! Typed identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::FieldError;

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

int_id!(
    /// A token request.
    RequestId
);
int_id!(
    /// A Canvas token as tokendesk tracks it (not Canvas's own id).
    TokenId
);

/// A person's login (the institution's user name, as the sign-in proxy passes it and as Canvas
/// knows it as the SIS login). Stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Login(String);

/// Characters that reorder or hide text: bidi embeddings, overrides and isolates, and the
/// invisible marks and joiners around them. Refused in logins and in free text people read.
pub fn is_bidi_or_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' // zero-width space, joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}' // LRE, RLE, PDF, LRO, RLO
        | '\u{2066}'..='\u{2069}' // LRI, RLI, FSI, PDI
        | '\u{061C}' // Arabic letter mark
        | '\u{FEFF}' // zero-width no-break space
    )
}

impl Login {
    pub const MAX_CHARS: usize = 128;

    /// A login as a sign-in names it (the proxy's header, an OIDC claim), with `scope`
    /// (`@example.edu`, lower case) removed when it ends so; then [`Login::parse`]'s rules.
    /// A login of another scope stays whole. One rule for every way of signing in.
    pub fn parse_scoped(raw: &str, scope: Option<&str>) -> Result<Login, FieldError> {
        let value = raw.trim();
        if let Some(scope) = scope {
            let lower = value.to_lowercase();
            if let Some(bare) = lower.strip_suffix(scope) {
                return Login::parse(bare);
            }
        }
        Login::parse(value)
    }

    /// A login as a person signs in with it: trimmed and lower-cased, and a plain identifier
    /// (it goes into addresses and Canvas look-ups): no spaces, no control, bidi or invisible
    /// characters, no `/`, `\`, `?`, `#` or `%`, and not only dots.
    pub fn parse(raw: &str) -> Result<Login, FieldError> {
        let value = raw.trim();
        let invalid = |why: &str| {
            Err(FieldError::new(
                "login",
                "invalid",
                format!(
                    "the login `{}` cannot be used: {why}",
                    value.escape_default()
                ),
            ))
        };
        if value.is_empty() {
            return Err(FieldError::new("login", "required", "a login is required"));
        }
        if value.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "login",
                "too_long",
                format!("a login has at most {} characters", Self::MAX_CHARS),
            ));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(FieldError::new(
                "login",
                "invalid",
                "a login cannot contain spaces or control characters",
            ));
        }
        if value.chars().any(is_bidi_or_invisible) {
            return invalid("it contains characters that reorder or hide text");
        }
        if let Some(c) = value.chars().find(|c| "/\\?#%".contains(*c)) {
            return invalid(&format!("it contains `{c}`, which a login cannot"));
        }
        if value.chars().all(|c| c == '.') {
            return invalid("a login cannot be only dots");
        }
        if value.to_lowercase().starts_with(Self::SERVICE_KEY_PREFIX) {
            return invalid("logins beginning with `key:` name service keys");
        }
        Ok(Login(value.to_lowercase()))
    }

    /// What begins the name a service key acts under (`key:NAME`); no person's login can.
    pub const SERVICE_KEY_PREFIX: &'static str = "key:";

    /// The name the service key `name` acts under: `key:NAME`.
    pub fn service_key(name: &str) -> Login {
        Login(format!("{}{name}", Self::SERVICE_KEY_PREFIX))
    }

    /// Whether this names a service key rather than a person.
    pub fn is_service_key(&self) -> bool {
        self.0.starts_with(Self::SERVICE_KEY_PREFIX)
    }

    /// A login as the database holds it. Not checked again: a login stored by an earlier release,
    /// under looser rules, must still read back (and is encoded wherever it goes).
    pub fn from_stored(raw: &str) -> Login {
        Login(raw.trim().to_lowercase())
    }

    /// The login as one segment of an address (percent-encoded).
    pub fn path_segment(&self) -> String {
        url::form_urlencoded::byte_serialize(self.0.as_bytes()).collect::<String>()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Login {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Login {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a login names its person in Canvas (`canvas.user_id_pattern`): always one kind of
/// identifier, so that no login can be read as another person's (`self`, another prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserIdPattern {
    /// `sis_login_id:{login}`: the login is the person's SIS login in Canvas.
    #[default]
    SisLogin,
    /// `sis_user_id:{login}`: the login is the person's SIS user id.
    SisUser,
    /// `{login}`: the login is the person's numeric Canvas id (then only numbers are logins).
    CanvasId,
}

impl UserIdPattern {
    pub const ALL: [UserIdPattern; 3] = [
        UserIdPattern::SisLogin,
        UserIdPattern::SisUser,
        UserIdPattern::CanvasId,
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UserIdPattern::SisLogin => "sis_login_id:{login}",
            UserIdPattern::SisUser => "sis_user_id:{login}",
            UserIdPattern::CanvasId => "{login}",
        }
    }

    /// Reads `canvas.user_id_pattern`; anything that could let a login name someone else is
    /// refused, saying which patterns exist.
    pub fn parse(raw: &str) -> Result<UserIdPattern, String> {
        let raw = raw.trim();
        if let Some(p) = UserIdPattern::ALL.into_iter().find(|p| p.as_str() == raw) {
            return Ok(p);
        }
        let known: Vec<&str> = UserIdPattern::ALL.iter().map(|p| p.as_str()).collect();
        if !raw.contains("{login}") {
            return Err(format!(
                "`{raw}` must contain {{login}}, e.g. \"sis_login_id:{{login}}\" or \"{{login}}\""
            ));
        }
        Err(format!(
            "`{raw}` cannot guarantee that a login names exactly its own person in Canvas (text around {{login}} lets a login such as `self` or `sis_user_id:…` name someone else); use one of {}",
            known.join(", ")
        ))
    }

    /// Whether a login can name a person this way (numeric ids take only numbers).
    pub fn check(self, login: &Login) -> Result<(), FieldError> {
        if self == UserIdPattern::CanvasId && !login.as_str().bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::new(
                "login",
                "not_a_canvas_id",
                format!(
                    "tokendesk finds people in Canvas by their numeric id here, and `{login}` is not a number; ask the help desk"
                ),
            ));
        }
        Ok(())
    }
}

impl UserIdPattern {
    /// Whether the Canvas user found for `login` (Canvas id `id`, with the login and SIS id
    /// Canvas reports) is that person: what Canvas reports for the identifier this pattern uses
    /// must be the login. `Err` says why not, for the request's failure reason.
    pub fn owns(
        self,
        login: &Login,
        id: u64,
        login_id: Option<&str>,
        sis_user_id: Option<&str>,
    ) -> Result<(), String> {
        let (what, reported) = match self {
            UserIdPattern::SisLogin => ("login", login_id.map(str::to_owned)),
            UserIdPattern::SisUser => ("SIS user id", sis_user_id.map(str::to_owned)),
            UserIdPattern::CanvasId => ("id", Some(id.to_string())),
        };
        match reported {
            // Logins are lower-cased as Canvas compares them: in full Unicode, not ASCII only.
            Some(r) if r.trim().to_lowercase() == login.as_str() => Ok(()),
            Some(r) => Err(format!(
                "the Canvas user found for {login} (Canvas id {id}) has the {what} `{r}`, not `{login}`: refused, nothing was created"
            )),
            None => Err(format!(
                "Canvas did not say whose account it found for {login} (Canvas id {id}; no {what} in its answer: the admin token may lack the permission to read logins): refused, nothing was created"
            )),
        }
    }
}

impl fmt::Display for UserIdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_trimmed_lowercased_and_checked() {
        assert_eq!(Login::parse("  Ada.Admin ").unwrap().as_str(), "ada.admin");
        assert_eq!(Login::parse("").unwrap_err().code, "required");
        assert_eq!(Login::parse("a b").unwrap_err().code, "invalid");
        assert_eq!(Login::parse(&"x".repeat(129)).unwrap_err().code, "too_long");
    }

    #[test]
    fn logins_are_plain_identifiers() {
        for bad in [
            "../audit",
            "a/b",
            "..",
            ".",
            "a\\b",
            "x?y",
            "x#y",
            "x%2Fy",
            "sam\u{202E}txt",
            "ad\u{200B}a",
            "\u{2066}x",
        ] {
            let e = Login::parse(bad).unwrap_err();
            assert_eq!(e.code, "invalid", "{bad:?}: {e:?}");
        }
        for good in [
            "sam.student",
            "s.o'neill",
            "sam@example.edu",
            "A0001",
            "jean-luc_p",
        ] {
            assert!(Login::parse(good).is_ok(), "{good}");
        }
        assert_eq!(Login::parse("x.y@z").unwrap().path_segment(), "x.y%40z");
    }

    #[test]
    fn user_id_patterns_tie_a_login_to_one_person() {
        assert_eq!(
            UserIdPattern::parse(" sis_login_id:{login} "),
            Ok(UserIdPattern::SisLogin)
        );
        assert_eq!(UserIdPattern::parse("{login}"), Ok(UserIdPattern::CanvasId));
        for bad in [
            "x{login}",
            "sis_login_id:{login}@example.edu",
            "{login}{login}",
            "self",
        ] {
            assert!(UserIdPattern::parse(bad).is_err(), "{bad}");
        }
        // Issuance checks the person Canvas found: their login must be the requester's.
        let sam = Login::parse("sam.student").unwrap();
        let by_login = UserIdPattern::SisLogin;
        assert!(by_login.owns(&sam, 2, Some("Sam.Student"), None).is_ok());
        let emile = Login::parse("Émile.Zola").unwrap();
        assert!(by_login.owns(&emile, 5, Some("ÉMILE.ZOLA"), None).is_ok());
        let other = by_login.owns(&sam, 1, Some("ada.admin"), None).unwrap_err();
        assert!(other.contains("`ada.admin`, not `sam.student`"), "{other}");
        assert!(
            by_login
                .owns(&sam, 2, None, Some("S1"))
                .unwrap_err()
                .contains("did not say")
        );
        let by_sis = UserIdPattern::SisUser;
        assert!(
            by_sis
                .owns(&Login::parse("s1002").unwrap(), 2, None, Some("S1002"))
                .is_ok()
        );
        assert!(
            by_sis
                .owns(&Login::parse("s1002").unwrap(), 3, None, Some("S1003"))
                .is_err()
        );
        let numbers = UserIdPattern::CanvasId;
        assert!(
            numbers
                .owns(&Login::parse("4711").unwrap(), 4711, None, None)
                .is_ok()
        );
        assert!(
            numbers
                .owns(&Login::parse("4711").unwrap(), 1, None, None)
                .is_err()
        );
        assert!(numbers.check(&Login::parse("4711").unwrap()).is_ok());
        for word in ["self", "sis_login_id:stella.student", "sis_user_id:s1"] {
            assert!(
                numbers.check(&Login::parse(word).unwrap()).is_err(),
                "{word}"
            );
        }
    }
}
