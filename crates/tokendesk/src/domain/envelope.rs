//! The delivery envelope's lifecycle: `sealed → revealed (n times) → burned | expired`.

use std::fmt;

use serde_json::json;
use time::OffsetDateTime;

use super::{Actor, AuditRecord, Change, DomainError, Login, Policy, RequestId};

/// Where a delivery envelope is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnvelopeState {
    Sealed,
    Revealed,
    Burned,
    Expired,
}

impl EnvelopeState {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvelopeState::Sealed => "sealed",
            EnvelopeState::Revealed => "revealed",
            EnvelopeState::Burned => "burned",
            EnvelopeState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        <Self as super::StateSet>::from_name(s)
    }

    /// Whether the ciphertext may still be handed out.
    pub fn is_open(self) -> bool {
        matches!(self, EnvelopeState::Sealed | EnvelopeState::Revealed)
    }
}

impl super::StateSet for EnvelopeState {
    const ALL: &'static [EnvelopeState] = &[
        EnvelopeState::Sealed,
        EnvelopeState::Revealed,
        EnvelopeState::Burned,
        EnvelopeState::Expired,
    ];

    fn as_str(self) -> &'static str {
        EnvelopeState::as_str(self)
    }
}

impl fmt::Display for EnvelopeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An envelope as the rules see it (the ciphertext lives in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub request_id: RequestId,
    pub owner: Login,
    pub state: EnvelopeState,
    pub reveals: u32,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl Envelope {
    /// The state as of `now`: an open envelope past its time is expired.
    pub fn state_at(&self, now: OffsetDateTime) -> EnvelopeState {
        if self.state.is_open() && now >= self.expires_at {
            EnvelopeState::Expired
        } else {
            self.state
        }
    }

    pub fn reveals_left(&self, policy: &Policy, now: OffsetDateTime) -> u32 {
        if self.state_at(now).is_open() {
            policy.max_reveals.saturating_sub(self.reveals)
        } else {
            0
        }
    }

    /// When a link sent at `sent_at` stops working.
    pub fn expiry_for(policy: &Policy, sent_at: OffsetDateTime) -> OffsetDateTime {
        sent_at + time::Duration::days(i64::from(policy.link_ttl_days))
    }
}

fn audit(
    actor: &Actor,
    action: &'static str,
    envelope: &Envelope,
    details: serde_json::Value,
) -> AuditRecord {
    AuditRecord {
        actor: actor.login.to_string(),
        action,
        target: format!("envelope:{}", envelope.id),
        outcome: "ok",
        details,
    }
}

fn require_owner(envelope: &Envelope, actor: &Actor) -> Result<(), DomainError> {
    // Not even the help desk may open someone else's envelope: it does not exist for them.
    if actor.is(&envelope.owner) {
        Ok(())
    } else {
        Err(DomainError::NotFound)
    }
}

fn closed(envelope: &Envelope, now: OffsetDateTime, action: &str) -> DomainError {
    let (code, message) = match envelope.state_at(now) {
        EnvelopeState::Expired => (
            "envelope_expired",
            format!(
                "this link expired at {}; ask the help desk to send a new one",
                envelope.expires_at
            ),
        ),
        EnvelopeState::Burned => (
            "envelope_burned",
            format!("this envelope was destroyed; it cannot {action} any more"),
        ),
        _ => (
            "no_reveals_left",
            "this envelope has been opened as many times as allowed".to_owned(),
        ),
    };
    DomainError::Conflict { code, message }
}

/// The sweep closed an envelope whose time was up (its ciphertext is erased with it).
pub fn expired(envelope_id: &str) -> AuditRecord {
    AuditRecord {
        actor: super::SYSTEM.to_owned(),
        action: "envelope.expire",
        target: format!("envelope:{envelope_id}"),
        outcome: "ok",
        details: json!({}),
    }
}

/// The owner reveals the ciphertext (counted).
pub fn reveal(
    envelope: &Envelope,
    actor: &Actor,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Change<Envelope>, DomainError> {
    require_owner(envelope, actor)?;
    if !envelope.state_at(now).is_open() || envelope.reveals >= policy.max_reveals {
        return Err(closed(envelope, now, "be revealed"));
    }
    let next = Envelope {
        state: EnvelopeState::Revealed,
        reveals: envelope.reveals + 1,
        ..envelope.clone()
    };
    let audit = audit(
        actor,
        "envelope.reveal",
        envelope,
        json!({"reveal": next.reveals, "of": policy.max_reveals}),
    );
    Ok(Change {
        state: next,
        audit,
        effects: vec![],
    })
}

/// The owner destroys the envelope ("I have saved it").
pub fn burn(
    envelope: &Envelope,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<Change<Envelope>, DomainError> {
    require_owner(envelope, actor)?;
    if !envelope.state_at(now).is_open() {
        return Err(closed(envelope, now, "be burned"));
    }
    let next = Envelope {
        state: EnvelopeState::Burned,
        ..envelope.clone()
    };
    let audit = audit(actor, "envelope.burn", envelope, json!({}));
    Ok(Change {
        state: next,
        audit,
        effects: vec![],
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::domain::Roles;

    const SENT: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn owner() -> Actor {
        Actor {
            login: Login::parse("sam").unwrap(),
            roles: Roles::default(),
        }
    }

    fn envelope() -> Envelope {
        let p = Policy::default();
        Envelope {
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            request_id: RequestId(1),
            owner: owner().login,
            state: EnvelopeState::Sealed,
            reveals: 0,
            created_at: SENT,
            expires_at: Envelope::expiry_for(&p, SENT),
        }
    }

    #[test]
    fn reveals_are_counted_and_limited() {
        let p = Policy::default();
        let mut e = envelope();
        for n in 1..=3 {
            let c = reveal(&e, &owner(), &p, SENT).unwrap();
            assert_eq!(c.state.reveals, n);
            e = c.state;
        }
        assert_eq!(e.reveals_left(&p, SENT), 0);
        assert!(matches!(
            reveal(&e, &owner(), &p, SENT),
            Err(DomainError::Conflict {
                code: "no_reveals_left",
                ..
            })
        ));
    }

    #[test]
    fn only_the_owner_and_only_in_time() {
        let p = Policy::default();
        let e = envelope();
        let desk = Actor {
            login: Login::parse("hal").unwrap(),
            roles: Roles {
                helpdesk: true,
                admin: true,
                ..Roles::default()
            },
        };
        assert_eq!(reveal(&e, &desk, &p, SENT), Err(DomainError::NotFound));
        assert_eq!(burn(&e, &desk, SENT), Err(DomainError::NotFound));
        let late = SENT + time::Duration::days(7);
        assert_eq!(e.state_at(late), EnvelopeState::Expired);
        assert!(matches!(
            reveal(&e, &owner(), &p, late),
            Err(DomainError::Conflict {
                code: "envelope_expired",
                ..
            })
        ));
        let burned = burn(&e, &owner(), SENT).unwrap().state;
        assert_eq!(burned.state, EnvelopeState::Burned);
        assert!(matches!(
            reveal(&burned, &owner(), &p, SENT),
            Err(DomainError::Conflict {
                code: "envelope_burned",
                ..
            })
        ));
    }
}
