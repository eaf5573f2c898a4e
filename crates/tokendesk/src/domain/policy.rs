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

/// The longest purpose accepted (Canvas's own column holds 255 characters, and tokendesk adds
/// a `tokendesk #<id>: ` prefix).
pub const PURPOSE_MAX_CHARS: usize = 200;
/// The longest application name accepted.
pub const APPLICATION_MAX_CHARS: usize = 100;
/// The longest reason (denial, revocation) accepted.
pub const REASON_MAX_CHARS: usize = 1000;
