//! The institution's rules as numbers, with the published defaults.

use serde::{Deserialize, Serialize};

crate::settings::section! {
    /// `[policy]`: the institution's rules, as numbers. The defaults are the published process:
    /// tokens live at most 120 days, links work 7 days.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Policy in "policy" {
        /// A token lives at most this many days after it is created; a requester may ask for
        /// an earlier expiry, and an approver may shorten it.
        max_lifetime_days: u32 = 120, in 1..=3650;
        /// A delivery link works this many days after it is sent; at most `max_lifetime_days`.
        link_ttl_days: u32 = 7, in 1..=90;
        /// How many times the owner may reveal the value from the delivery page.
        max_reveals: u32 = 3, in 1..=100;
        /// The purpose must say at least this much (characters).
        purpose_min_chars: u32 = 20, in 0..=1000;
        /// Requests a person may have waiting (submitted, approved or failed) at once.
        max_open_requests_per_person: u32 = 1, in 1..=1000;
        /// Live tokens (issued or activated) a person may hold at once.
        max_active_tokens_per_person: u32 = 2, in 1..=1000;
    }
}

impl Policy {
    /// Problems between these values (each one's range is checked as it is read), as (field
    /// name, message); empty when valid.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.link_ttl_days > self.max_lifetime_days {
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
