//! Typed identifiers and the references Canvas accepts in URL paths.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Canvas emits ids as JSON numbers, or as strings when asked for
/// `application/json+canvas-string-ids`; accept both.
fn deserialize_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    match NumOrStr::deserialize(deserializer)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom("expected a numeric Canvas id")),
    }
}

macro_rules! canvas_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(#[serde(deserialize_with = "deserialize_id")] pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(id: u64) -> Self {
                Self(id)
            }
        }
    };
}

canvas_id!(
    /// A Canvas user id (`users.id`).
    CanvasUserId
);
canvas_id!(
    /// A Canvas access-token id (`access_tokens.id`).
    CanvasTokenId
);
canvas_id!(
    /// A Canvas account id (`accounts.id`); the root account is usually 1.
    CanvasAccountId
);

/// How to name a user in a Canvas API path (`:user_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserRef {
    /// `self`: the user the access token belongs to.
    Self_,
    /// A numeric Canvas id.
    Id(CanvasUserId),
    /// `sis_login_id:X` — the login (unique id) of a pseudonym.
    SisLoginId(String),
    /// `sis_user_id:X` — the SIS user id.
    SisUserId(String),
}

impl UserRef {
    /// Reads the forms Canvas accepts in a path (`self`, a number, `sis_login_id:X`,
    /// `sis_user_id:X`); anything else is taken as a SIS login.
    pub fn parse(reference: &str) -> UserRef {
        if reference == "self" {
            UserRef::Self_
        } else if let Some(login) = reference.strip_prefix("sis_login_id:") {
            UserRef::SisLoginId(login.to_owned())
        } else if let Some(sis) = reference.strip_prefix("sis_user_id:") {
            UserRef::SisUserId(sis.to_owned())
        } else if let Ok(id) = reference.parse::<u64>() {
            UserRef::Id(CanvasUserId(id))
        } else {
            UserRef::SisLoginId(reference.to_owned())
        }
    }

    /// The path segment Canvas expects, percent-encoded.
    pub fn path_segment(&self) -> String {
        match self {
            UserRef::Self_ => "self".to_owned(),
            UserRef::Id(id) => id.to_string(),
            UserRef::SisLoginId(login) => format!("sis_login_id:{}", encode_segment(login)),
            UserRef::SisUserId(sis) => format!("sis_user_id:{}", encode_segment(sis)),
        }
    }
}

impl From<CanvasUserId> for UserRef {
    fn from(id: CanvasUserId) -> Self {
        UserRef::Id(id)
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserRef::Self_ => f.write_str("self"),
            UserRef::Id(id) => write!(f, "{id}"),
            UserRef::SisLoginId(login) => write!(f, "sis_login_id:{login}"),
            UserRef::SisUserId(sis) => write!(f, "sis_user_id:{sis}"),
        }
    }
}

/// How to name a token in a Canvas API path (`:id`): its id or its 5-character hint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenRef {
    /// The numeric token id.
    Id(CanvasTokenId),
    /// The first 5 characters of the token value (`visible_token` without the `...`).
    Hint(String),
}

impl TokenRef {
    /// The path segment Canvas expects, percent-encoded.
    pub fn path_segment(&self) -> String {
        match self {
            TokenRef::Id(id) => id.to_string(),
            TokenRef::Hint(hint) => encode_segment(hint),
        }
    }
}

impl From<CanvasTokenId> for TokenRef {
    fn from(id: CanvasTokenId) -> Self {
        TokenRef::Id(id)
    }
}

impl fmt::Display for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenRef::Id(id) => write!(f, "{id}"),
            TokenRef::Hint(hint) => write!(f, "hint {hint}"),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn user_ref_segments() {
        assert_eq!(UserRef::Self_.path_segment(), "self");
        assert_eq!(UserRef::Id(CanvasUserId(42)).path_segment(), "42");
        assert_eq!(
            UserRef::SisLoginId("ada.admin@x.edu".into()).path_segment(),
            "sis_login_id:ada.admin%40x.edu"
        );
        assert_eq!(
            UserRef::SisUserId("a/b c%".into()).path_segment(),
            "sis_user_id:a%2Fb%20c%25"
        );
    }

    #[test]
    fn ids_accept_numbers_and_strings() {
        let a: CanvasUserId = serde_json::from_str("17").unwrap();
        let b: CanvasUserId = serde_json::from_str("\"17\"").unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<CanvasTokenId>("\"x\"").is_err());
    }
}
