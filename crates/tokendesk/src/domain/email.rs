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
}

impl StateSet for EmailKind {
    const ALL: &'static [EmailKind] = &[
        EmailKind::Delivery,
        EmailKind::NewRequest,
        EmailKind::Denied,
        EmailKind::Revoked,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EmailKind::Delivery => "delivery",
            EmailKind::NewRequest => "new_request",
            EmailKind::Denied => "denied",
            EmailKind::Revoked => "revoked",
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
