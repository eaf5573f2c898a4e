//! The emails tokendesk sends: one kind each, stored by name in the queue and dispatched on.

use std::fmt;

use super::StateSet;

/// What an email tells its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailKind {
    /// To the owner: the delivery link of their token.
    Delivery,
    /// To an approver: a request is waiting.
    NewRequest,
    /// To the requester: the request was denied, and why.
    Denied,
    /// To the owner: their token was revoked, and why.
    Revoked,
    /// To the owner: their token expires soon (`policy.reminder_days`); how to renew it.
    Reminder,
    /// To the owner: their token was never opened or activated, was deleted, and how to ask
    /// again.
    ExpiredUnused,
    /// To the owner: their token's expiry was moved (a renewal under `renewal = "extend"`).
    Extended,
    /// To the owner: their token has not been used for a while and will be revoked.
    UnusedWarning,
    /// To an approver: the requests that arrived since the last digest.
    Digest,
    /// To the help desk: a token was reported leaked and revoked.
    LeakReported,
    /// To an owner: tokens of theirs revoked in a bulk revocation, one email per run.
    BulkRevoked,
}

impl StateSet for EmailKind {
    const ALL: &'static [EmailKind] = &[
        EmailKind::Delivery,
        EmailKind::NewRequest,
        EmailKind::Denied,
        EmailKind::Revoked,
        EmailKind::Reminder,
        EmailKind::ExpiredUnused,
        EmailKind::Extended,
        EmailKind::UnusedWarning,
        EmailKind::Digest,
        EmailKind::LeakReported,
        EmailKind::BulkRevoked,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EmailKind::Delivery => "delivery",
            EmailKind::NewRequest => "new_request",
            EmailKind::Denied => "denied",
            EmailKind::Revoked => "revoked",
            EmailKind::Reminder => "reminder",
            EmailKind::ExpiredUnused => "expired_unused",
            EmailKind::Extended => "extended",
            EmailKind::UnusedWarning => "unused_warning",
            EmailKind::Digest => "digest",
            EmailKind::LeakReported => "leak_reported",
            EmailKind::BulkRevoked => "bulk_revoked",
        }
    }
}

impl EmailKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        StateSet::as_str(self)
    }
}

impl fmt::Display for EmailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
