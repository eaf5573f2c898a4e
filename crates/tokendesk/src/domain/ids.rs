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

impl Login {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: &str) -> Result<Login, FieldError> {
        let value = raw.trim();
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
        Ok(Login(value.to_lowercase()))
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
}
