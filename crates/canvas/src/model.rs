//! The Canvas resources tokendesk reads and writes.

use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::ids::{CanvasTokenId, CanvasUserId};

/// A Canvas user profile (`GET /api/v1/users/:id`, account user search). Unknown fields are
/// ignored; fields that Canvas omits depending on permissions are optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: CanvasUserId,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sortable_name: String,
    #[serde(default)]
    pub short_name: Option<String>,
    #[serde(default)]
    pub login_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub sis_user_id: Option<String>,
    #[serde(default)]
    pub integration_id: Option<String>,
}

/// `workflow_state` of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TokenState {
    /// Created on someone else's behalf; unusable until its owner activates it in the web UI.
    Pending,
    /// Usable (if not expired). Also assumed when Canvas omits the field (older versions).
    #[default]
    Active,
    /// Soft-deleted; no longer usable.
    Deleted,
    /// A state this client does not know.
    Other(String),
}

impl TokenState {
    pub fn as_str(&self) -> &str {
        match self {
            TokenState::Pending => "pending",
            TokenState::Active => "active",
            TokenState::Deleted => "deleted",
            TokenState::Other(s) => s,
        }
    }
}

impl fmt::Display for TokenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TokenState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(deserializer)?;
        Ok(match s.as_deref() {
            None | Some("active") => TokenState::Active,
            Some("pending") => TokenState::Pending,
            Some("deleted") => TokenState::Deleted,
            Some(other) => TokenState::Other(other.to_owned()),
        })
    }
}

impl Serialize for TokenState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An access token as Canvas describes it (`lib/api/v1/token.rb`).
///
/// `visible_token` always holds the hint form (`"abcde..."`): when Canvas returns a full value
/// (create, regenerate) the client moves it into [`CreatedToken::value`] first, so a `Token` can be
/// logged and stored safely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: CanvasTokenId,
    pub user_id: CanvasUserId,
    #[serde(default)]
    pub real_user_id: Option<CanvasUserId>,
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub workflow_state: TokenState,
    #[serde(default, deserialize_with = "null_as_default")]
    pub scopes: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub visible_token: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub can_manually_regenerate: bool,
    #[serde(default)]
    pub remember_access: Option<bool>,
    #[serde(default)]
    pub app_name: Option<String>,
}

impl Token {
    /// The 5-character hint (the `visible_token` without its trailing `...`).
    pub fn hint(&self) -> &str {
        self.visible_token
            .strip_suffix("...")
            .unwrap_or(&self.visible_token)
    }

    /// Whether the token is active and not past its expiry at `now`.
    pub fn is_usable_at(&self, now: OffsetDateTime) -> bool {
        self.workflow_state == TokenState::Active && self.expires_at.is_none_or(|at| at > now)
    }
}

/// The hint Canvas shows for a full token value: its first 5 characters, ignoring a hosted
/// instance's `shard~` prefix.
pub fn token_hint(value: &str) -> String {
    let bare = value.split_once('~').map_or(value, |(_, rest)| rest);
    bare.chars().take(5).collect()
}

/// Whether `visible_token` holds a whole value rather than the `"abcde..."` hint.
pub(crate) fn is_full_value(visible_token: &str) -> bool {
    !visible_token.ends_with("...") && visible_token.len() > 8
}

/// A token just created or regenerated, with its value — which Canvas shows only once.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    /// The token's description; its `visible_token` is already reduced to the hint.
    pub token: Token,
    /// The whole value (send it as `Authorization: Bearer`). Never logged.
    pub value: SecretString,
}

/// Parameters of `POST /api/v1/users/:user_id/tokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Required by Canvas (since 2025-10).
    pub purpose: String,
    /// `None` = no expiry (Canvas may refuse that for some users).
    pub expires_at: Option<OffsetDateTime>,
    /// Scopes, for developer-key scoping; empty = unscoped.
    pub scopes: Vec<String>,
}

impl NewToken {
    pub fn new(purpose: impl Into<String>) -> Self {
        Self {
            purpose: purpose.into(),
            expires_at: None,
            scopes: Vec::new(),
        }
    }

    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    pub fn scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

/// Parameters of `PUT /api/v1/users/:user_id/tokens/:id`; `None` fields are left unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenUpdate {
    pub purpose: Option<String>,
    pub expires_at: Option<OffsetDateTime>,
    pub scopes: Option<Vec<String>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn token_json_is_parsed_leniently() {
        let json = r#"{"id":7,"user_id":"3","real_user_id":null,"purpose":"sync",
            "created_at":"2025-01-02T03:04:05Z","updated_at":"2025-01-02T03:04:05Z",
            "expires_at":null,"last_used_at":"2025-01-03T00:00:00Z","workflow_state":"pending",
            "scopes":null,"remember_access":null,"app_name":"User-Generated",
            "can_manually_regenerate":true,"visible_token":"abcde...","new_field":1}"#;
        let token: Token = serde_json::from_str(json).unwrap();
        assert_eq!(token.id, CanvasTokenId(7));
        assert_eq!(token.user_id, CanvasUserId(3));
        assert_eq!(token.workflow_state, TokenState::Pending);
        assert_eq!(token.hint(), "abcde");
        assert!(token.scopes.is_empty());
        assert!(token.last_used_at.is_some());
        let odd: TokenState = serde_json::from_str("\"frozen\"").unwrap();
        assert_eq!(odd, TokenState::Other("frozen".into()));
    }

    #[test]
    fn hints() {
        assert_eq!(token_hint("abcdefgh"), "abcde");
        assert_eq!(token_hint("12345~xyzwvuts"), "xyzwv");
        assert!(!is_full_value("abcde..."));
        assert!(is_full_value(&"a".repeat(64)));
    }
}
