//! Reading the mailbox (the demo's inbox) and the audit trail.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{App, AppError, AppResult, Mailer};
use crate::domain::{Actor, DomainError, FieldError};
use crate::store::{self, AuditEvent, AuditFilter, ChainBreak, MailboxMessage};

/// Filters of the audit trail as given by a person (validated here).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    /// RFC 3339 or YYYY-MM-DD.
    pub since: Option<String>,
    pub until: Option<String>,
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}

fn time_field(
    field: &'static str,
    raw: Option<&str>,
) -> Result<Option<OffsetDateTime>, FieldError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(Some(t));
    }
    crate::domain::request::parse_date(field, raw)
        .map(|d| Some(d.midnight().assume_utc()))
        .map_err(|_| {
            FieldError::new(
                field,
                "invalid_time",
                format!(
                    "{field} must be a date (2026-11-28) or an RFC 3339 time (2026-11-28T12:00:00Z)"
                ),
            )
        })
}

fn text_filter(raw: Option<&str>) -> Option<String> {
    raw.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `GET /api/v1/mailbox`: how many messages a list answers with.
pub const MAILBOX_LIST: crate::domain::ListSize = crate::domain::ListSize {
    default: 200,
    max: 200,
};
/// `GET /api/v1/audit`: how many events a page of the trail answers with.
pub const AUDIT_LIST: crate::domain::ListSize = crate::domain::ListSize {
    default: 500,
    max: 5000,
};

impl App {
    /// Delivered messages (mailbox transport only), newest first, at most `limit` (1–200,
    /// default 200): everyone's for admins (optionally one login's), one's own for others.
    pub async fn mailbox(
        &self,
        actor: &Actor,
        to: Option<&str>,
        limit: Option<i64>,
    ) -> AppResult<Vec<MailboxMessage>> {
        if !matches!(self.parts().mailer, Mailer::Mailbox) {
            return Err(AppError::Unavailable(
                "there is no mailbox: email is sent by SMTP in this configuration".into(),
            ));
        }
        // Admins read every inbox; others only their own.
        let to = super::whose(
            actor,
            "to",
            to,
            actor.roles.admin,
            "only admins can read other people's mail",
        )?;
        let mut conn = self.read().await?;
        let limit = MAILBOX_LIST
            .check(limit)
            .map_err(|e| DomainError::Invalid(vec![e]))?;
        Ok(store::mailbox(&mut conn, to.as_ref(), limit).await?)
    }

    fn require_auditor(actor: &Actor) -> AppResult<()> {
        if actor.roles.can_audit() {
            Ok(())
        } else {
            Err(
                DomainError::Forbidden("only auditors and admins can read the audit trail".into())
                    .into(),
            )
        }
    }

    /// The audit trail, oldest first, for auditors and admins.
    pub async fn audit_events(
        &self,
        actor: &Actor,
        query: &AuditQuery,
    ) -> AppResult<Vec<AuditEvent>> {
        Self::require_auditor(actor)?;
        let mut errors = Vec::new();
        let since = time_field("since", query.since.as_deref())
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let until = time_field("until", query.until.as_deref())
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let after_seq = match query.after_seq {
            Some(n) if n < 0 => {
                errors.push(FieldError::new(
                    "after_seq",
                    "out_of_range",
                    format!("after_seq must be 0 or more (not {n})"),
                ));
                0
            }
            n => n.unwrap_or(0),
        };
        let limit = AUDIT_LIST
            .check(query.limit)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        if !errors.is_empty() {
            return Err(DomainError::Invalid(errors).into());
        }
        let filter = AuditFilter {
            actor: text_filter(query.actor.as_deref()),
            action: text_filter(query.action.as_deref()),
            target: text_filter(query.target.as_deref()),
            since,
            until,
            after_seq,
            limit,
        };
        let mut conn = self.read().await?;
        Ok(store::list_audit(&mut conn, &filter).await?)
    }

    /// Walks the audit chain: the number of events, or the first broken link.
    pub async fn verify_audit(&self) -> AppResult<Result<u64, ChainBreak>> {
        let mut conn = self.read().await?;
        Ok(store::verify_chain(&mut conn).await?)
    }

    /// The audit chain's newest event (sequence number, hash), if any.
    pub async fn audit_head(&self) -> AppResult<Option<(i64, String)>> {
        let mut conn = self.read().await?;
        Ok(store::audit_head(&mut conn).await?)
    }

    /// Checks the chain against a head recorded earlier (`SEQ:HASH`): the event at `seq` must
    /// still exist with that hash. `Err` says what differs.
    pub async fn audit_matches_head(&self, seq: i64, hash: &str) -> AppResult<Result<(), String>> {
        let mut conn = self.read().await?;
        let found = store::audit_hash_at(&mut conn, seq).await?;
        let head = store::audit_head(&mut conn).await?;
        Ok(match found {
            Some(h) if h == hash => Ok(()),
            Some(h) => Err(format!(
                "event {seq} has hash {h}, not the expected {hash}: the trail was rewritten from there on"
            )),
            None => Err(match head {
                Some((newest, _)) if newest < seq => format!(
                    "the chain ends at event {newest}, before the expected head {seq}: the newest events were removed"
                ),
                Some(_) => format!("event {seq} is missing from the chain"),
                None => format!("the trail is empty, but it had reached event {seq}"),
            }),
        })
    }
}
