//! The institution's rules as numbers, with the published defaults.

use serde::{Deserialize, Serialize};

/// Policy values (`[policy]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// A token lives at most this many days after it is created.
    pub max_lifetime_days: u32,
    /// A delivery link works this many days after it is sent.
    pub link_ttl_days: u32,
    /// How many times the owner may reveal the value.
    pub max_reveals: u32,
    /// The purpose must say at least this much.
    pub purpose_min_chars: u32,
    /// Requests a person may have waiting (submitted, approved or failed) at once.
    pub max_open_requests_per_person: u32,
    /// Live tokens (issued or activated) a person may hold at once.
    pub max_active_tokens_per_person: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_lifetime_days: 120,
            link_ttl_days: 7,
            max_reveals: 3,
            purpose_min_chars: 20,
            max_open_requests_per_person: 1,
            max_active_tokens_per_person: 2,
        }
    }
}

impl Policy {
    /// Problems with these values, as (field name, message); empty when valid.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let mut range = |field: &'static str, value: u32, min: u32, max: u32| {
            if !(min..=max).contains(&value) {
                problems.push((
                    field,
                    format!("must be between {min} and {max} (got {value})"),
                ));
                false
            } else {
                true
            }
        };
        let lifetime_ok = range("max_lifetime_days", self.max_lifetime_days, 1, 3650);
        let ttl_ok = range("link_ttl_days", self.link_ttl_days, 1, 90);
        range("max_reveals", self.max_reveals, 1, 100);
        range("purpose_min_chars", self.purpose_min_chars, 0, 1000);
        range(
            "max_open_requests_per_person",
            self.max_open_requests_per_person,
            1,
            1000,
        );
        range(
            "max_active_tokens_per_person",
            self.max_active_tokens_per_person,
            1,
            1000,
        );
        if lifetime_ok && ttl_ok && self.link_ttl_days > self.max_lifetime_days {
            problems.push((
                "link_ttl_days",
                format!(
                    "must not exceed max_lifetime_days ({}); got {}",
                    self.max_lifetime_days, self.link_ttl_days
                ),
            ));
        }
        problems
    }

    /// `max_lifetime_days` as a duration.
    pub fn max_lifetime(&self) -> time::Duration {
        time::Duration::days(i64::from(self.max_lifetime_days))
    }

    /// `link_ttl_days` as a duration.
    pub fn link_ttl(&self) -> time::Duration {
        time::Duration::days(i64::from(self.link_ttl_days))
    }
}

/// The longest purpose accepted (Canvas's own column holds 255 characters, and tokendesk adds
/// a `tokendesk #<id>: ` prefix).
pub const PURPOSE_MAX_CHARS: usize = 200;
/// The longest application name accepted.
pub const APPLICATION_MAX_CHARS: usize = 100;
/// The longest reason (denial, revocation) accepted.
pub const REASON_MAX_CHARS: usize = 1000;
