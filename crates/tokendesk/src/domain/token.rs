//! A Canvas token as tokendesk tracks it: it mirrors Canvas's `workflow_state`.

use std::fmt;

use super::StateSet;

/// A Canvas token's state as tokendesk last saw it (Canvas's `workflow_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Made for the person; unusable until they activate it in Canvas.
    Pending,
    Active,
    /// Deleted in Canvas (revoked, expired, or removed there).
    Deleted,
}

impl StateSet for TokenState {
    const ALL: &'static [TokenState] =
        &[TokenState::Pending, TokenState::Active, TokenState::Deleted];

    fn as_str(self) -> &'static str {
        match self {
            TokenState::Pending => "pending",
            TokenState::Active => "active",
            TokenState::Deleted => "deleted",
        }
    }
}

impl TokenState {
    /// The configuration spelling (also the column's).
    pub fn as_str(self) -> &'static str {
        StateSet::as_str(self)
    }

    /// Still usable, or about to be, in Canvas.
    pub fn is_live(self) -> bool {
        matches!(self, TokenState::Pending | TokenState::Active)
    }
}

impl fmt::Display for TokenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
