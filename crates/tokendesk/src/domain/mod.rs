//! The rules of tokendesk, free of I/O: requests and their lifecycle, envelopes, roles and
//! policy. Every transition takes the current state and the clock's reading and returns the new
//! state with the audit event and follow-up work it causes, or a typed error.

pub mod email;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod policy;
pub mod request;
pub mod roles;
pub mod token;

pub use email::EmailKind;
pub use error::{DomainError, FieldError, ListSize};
pub use ids::{Login, RequestId, TokenId, UserIdPattern, is_bidi_or_invisible};
pub use policy::Policy;
pub use roles::{Actor, Roles};
pub use token::TokenState;

use serde_json::Value;

/// What a transition records in the audit trail (time and client address are added by the
/// caller, who knows them). Never holds a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Who did it: a login, or `system` for the workers.
    pub actor: String,
    /// What was done, e.g. `request.approve`.
    pub action: &'static str,
    /// What it was done to, e.g. `request:12`.
    pub target: String,
    /// `ok`, or why it did not go through.
    pub outcome: &'static str,
    pub details: Value,
}

/// Work a transition asks for about its request, queued in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Create the token in Canvas, seal it and send the delivery email.
    IssueToken,
    /// Tell the approvers a request arrived.
    NotifyApprovers,
    /// Tell the requester their request was denied.
    NotifyDenied,
    /// Tell the owner their token was revoked.
    NotifyRevoked,
    /// Delete the request's token in Canvas (it expired, or a renewal replaced it).
    DeleteToken,
    /// Move the expiry of the token a renewal renews, in Canvas (`policy.renewal = "extend"`).
    ExtendToken,
    /// Tell the owner their token was never put to use, was deleted, and how to ask again.
    NotifyExpiredUnused,
    /// Tell the owner their token's expiry was moved.
    NotifyExtended,
}

/// The result of a transition: the new state, its audit event, and what must follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<T> {
    pub state: T,
    pub audit: AuditRecord,
    pub effects: Vec<Effect>,
}

/// Bytes as lower-case hex (digests, fingerprints).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The actor name of the background workers.
pub const SYSTEM: &str = "system";

/// The record of something refused that is worth a line in the trail (e.g. someone trying to
/// open another person's envelope).
pub fn refused(actor: &Actor, action: &'static str, target: String, why: &str) -> AuditRecord {
    AuditRecord {
        actor: actor.login.to_string(),
        action,
        target,
        outcome: "refused",
        details: serde_json::json!({ "reason": why }),
    }
}

/// A closed set of states (or kinds) stored by name: the one list the store's SQL, the
/// migrations' checks and the pages' filters are derived from.
pub trait StateSet: Copy + Eq + 'static {
    /// Every member, in display order.
    const ALL: &'static [Self];

    /// The stored name.
    fn as_str(self) -> &'static str;

    /// The member with this stored name.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == name)
    }

    /// The names of the members for which `keep` holds, in order.
    fn names_where(keep: impl Fn(Self) -> bool) -> Vec<&'static str> {
        Self::ALL
            .iter()
            .copied()
            .filter(|s| keep(*s))
            .map(Self::as_str)
            .collect()
    }
}
