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

/// The first time Canvas is asked whether a newly issued, pending token was activated: a few
/// minutes after delivery (the owner needs the email first).
pub fn first_check(issued: time::OffsetDateTime) -> time::OffsetDateTime {
    issued + time::Duration::minutes(5)
}

/// After a reveal the owner is about to activate: ask soon.
pub fn check_after_reveal(now: time::OffsetDateTime) -> time::OffsetDateTime {
    now + time::Duration::minutes(1)
}

/// The longest wait between two checks of a pending token.
pub const LONGEST_CHECK_WAIT: time::Duration = time::Duration::hours(6);

/// When to ask again after `checks` checks that found the token still pending: one minute,
/// then twice as long each time, at most [`LONGEST_CHECK_WAIT`].
pub fn next_check(checks: u32, now: time::OffsetDateTime) -> time::OffsetDateTime {
    let minutes = 1i64.checked_shl(checks.min(30)).unwrap_or(i64::MAX);
    let wait = time::Duration::minutes(minutes.min(LONGEST_CHECK_WAIT.whole_minutes()));
    now + wait
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn checks_back_off_to_six_hours() {
        let now = datetime!(2026-12-01 12:00 UTC);
        let waits: Vec<i64> = (0..12)
            .map(|c| (next_check(c, now) - now).whole_minutes())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 360, 360, 360]);
        assert_eq!(next_check(u32::MAX, now) - now, LONGEST_CHECK_WAIT);
        assert!(check_after_reveal(now) < first_check(now));
    }
}
