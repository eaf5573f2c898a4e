//! When something goes wrong: a leaked token reported (matched by its keyed fingerprint or its
//! hint, revoked at once, the pasted value never kept), and bulk revocation (a person's tokens
//! for off-boarding, or by date, purpose or all at once in an emergency) as a run of queued jobs
//! that a crash resumes without repeating a deletion.

use serde_json::json;
use subtle::ConstantTimeEq as _;

use super::{App, AppResult, Ctx, WorkError};
use crate::domain::request::{self, REVOKE_ALL_CONFIRMATION, RevokeFilter};
use crate::domain::{Actor, AuditRecord, DomainError, EmailKind, FieldError, Login, TokenState};
use crate::store::{self, ClaimedJob, QueuedEmail, RevokeRun, StoreError, StoredToken};

/// The most a pasted value or "where I found it" may be.
const REPORT_VALUE_MAX: usize = 200;
const REPORT_WHERE_MAX: usize = 500;

/// What the reporter of a leak learns: the same for every token that is not a live token of
/// tokendesk's, whoever's it would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// It matched a token tokendesk issued, which is revoked (or being revoked).
    Revoked,
    /// Not a token issued here.
    NotHere,
}

impl ReportOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportOutcome::Revoked => "revoked",
            ReportOutcome::NotHere => "not_found",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ReportOutcome::Revoked => {
                "Revoked: it was a token issued here, and it no longer works. Its owner and the help desk have been told. Thank you."
            }
            ReportOutcome::NotHere => {
                "Not a token issued here: contact the help desk, who can tell where it comes from."
            }
        }
    }
}

/// How many tokens a bulk revocation would take, and whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokePreview {
    pub filter: RevokeFilter,
    pub count: i64,
    /// The owners with most tokens among them (at most 50), most first.
    pub owners: Vec<(String, i64)>,
}

/// "Where I found it": required, up to 500 characters, checked as every free text is.
fn where_found(raw: &str) -> Result<String, FieldError> {
    Ok(request::text("where", Some(raw), 1, REPORT_WHERE_MAX)?.unwrap_or_default())
}

impl App {
    /// The keyed fingerprint of a token value, when `security.fingerprint_key` is set.
    pub(super) fn fingerprint_of(&self, value: &str) -> Option<String> {
        self.parts()
            .fingerprint_key
            .as_ref()
            .map(|k| k.fingerprint(value))
    }

    /// Someone reports a leaked token by its value or its 5-character hint. A match is revoked
    /// at once (deleted in Canvas first; if Canvas does not answer, a revocation run keeps
    /// trying); the owner and the help desk are emailed; the report is recorded and audited
    /// with the tokens it matched, never the pasted text.
    pub async fn report_leak(
        &self,
        actor: &Actor,
        value: &str,
        where_raw: &str,
        ctx: &Ctx,
    ) -> AppResult<ReportOutcome> {
        let value = value.trim();
        let mut errors = Vec::new();
        if value.is_empty() {
            errors.push(FieldError::new(
                "value",
                "required",
                "paste the token, or its 5-character hint",
            ));
        } else if value.chars().count() > REPORT_VALUE_MAX
            || value.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push(FieldError::new(
                "value",
                "invalid",
                "paste the token alone (no spaces), or its 5-character hint",
            ));
        }
        let where_text = match where_found(where_raw) {
            Ok(w) => Some(w),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if !errors.is_empty() {
            return Err(DomainError::Invalid(errors).into());
        }
        let where_text = where_text.unwrap_or_default();
        let by_hint = value.chars().count() == 5;
        let hint = if by_hint {
            value.to_owned()
        } else {
            tokendesk_canvas::token_hint(value)
        };
        let mut conn = self.read().await?;
        let candidates = store::live_tokens_with_hint(&mut conn, &hint).await?;
        drop(conn);
        let matched: Vec<StoredToken> = if by_hint {
            candidates.into_iter().map(|(t, _)| t).collect()
        } else {
            let pasted = self.fingerprint_of(value);
            candidates
                .into_iter()
                .filter(|(_, stored)| match (&pasted, stored) {
                    (Some(p), Some(s)) => bool::from(p.as_bytes().ct_eq(s.as_bytes())),
                    _ => false,
                })
                .map(|(t, _)| t)
                .collect()
        };
        let now = self.now();
        let mut tx = self.write().await?;
        let report = store::insert_report(
            &mut tx,
            actor.login.as_str(),
            &where_text,
            by_hint,
            matched.len(),
            now,
        )
        .await?;
        let record = AuditRecord {
            actor: actor.login.to_string(),
            action: "token.report",
            target: format!("report:{report}"),
            outcome: if matched.is_empty() { "no_match" } else { "ok" },
            details: json!({
                "where": where_text,
                "by": if by_hint { "hint" } else { "value" },
                "matched": matched.iter().map(|t| t.id.0).collect::<Vec<_>>(),
            }),
        };
        self.audit(&mut tx, &record, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        for token in &matched {
            self.revoke_reported(token, report, by_hint, ctx).await?;
        }
        Ok(if matched.is_empty() {
            ReportOutcome::NotHere
        } else {
            ReportOutcome::Revoked
        })
    }

    /// Revokes one reported token: in Canvas first, then here; the help desk is emailed. When
    /// Canvas cannot be reached, a one-token revocation run takes over (its job retries).
    async fn revoke_reported(
        &self,
        token: &StoredToken,
        report: i64,
        by_hint: bool,
        ctx: &Ctx,
    ) -> AppResult<()> {
        let helpdesk = self.roles().support();
        if let Err(e) = self.delete_in_canvas(token).await {
            tracing::warn!(token.id = %token.id, error = %e, "a reported token could not be deleted in Canvas now; a revocation run keeps trying");
            let mut tx = self.write().await?;
            let filter = RevokeFilter::Owner(token.owner.clone());
            store::create_run(
                &mut tx,
                &filter,
                "reported as leaked",
                crate::domain::SYSTEM,
                self.now(),
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.wake();
            return Ok(());
        }
        let now = self.now();
        let (token_id, request_id) = (token.id, token.request_id);
        let result = self
            .transition_with(
                request_id,
                ctx,
                |r| request::revoke_reported(r, report, by_hint, now),
                |tx, _| {
                    Box::pin(async move {
                        store::set_token_state(tx, token_id, TokenState::Deleted, now).await?;
                        store::close_envelopes_of(
                            tx,
                            request_id,
                            crate::domain::envelope::EnvelopeState::Burned,
                        )
                        .await?;
                        for login in &helpdesk {
                            store::enqueue_email(
                                tx,
                                EmailKind::LeakReported,
                                Some(request_id),
                                Some(login),
                                &QueuedEmail::Notice,
                                None,
                                now,
                            )
                            .await?;
                        }
                        Ok(())
                    })
                },
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            // Revoked meanwhile by someone else: nothing left to do.
            Err(super::AppError::Domain(DomainError::WrongState { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// How many live tokens a filter takes, and whose.
    pub async fn revoke_preview(
        &self,
        actor: &Actor,
        filter: RevokeFilter,
    ) -> AppResult<RevokePreview> {
        filter.allowed(actor)?;
        let mut conn = self.read().await?;
        let (count, owners) = store::revoke_preview(&mut conn, &filter).await?;
        Ok(RevokePreview {
            filter,
            count,
            owners,
        })
    }

    /// Starts a bulk revocation: one queued job per live token the filter takes (tokens already
    /// in an unfinished run are left to it). The emergency switch (`All`) needs
    /// [`REVOKE_ALL_CONFIRMATION`] typed. Audited; the run's id and what it holds.
    pub async fn start_revocation(
        &self,
        actor: &Actor,
        filter: RevokeFilter,
        reason: &str,
        confirmation: Option<&str>,
        ctx: &Ctx,
    ) -> AppResult<RevokeRun> {
        filter.allowed(actor)?;
        let reason = reason.trim();
        if reason.chars().count() < 3 || reason.chars().count() > 500 {
            return Err(DomainError::field(
                "reason",
                "required",
                "give the reason (3 to 500 characters): the owners read it",
            )
            .into());
        }
        if filter == RevokeFilter::All
            && confirmation.map(str::trim) != Some(REVOKE_ALL_CONFIRMATION)
        {
            return Err(DomainError::field(
                "confirm",
                "confirmation",
                format!(
                    "revoking every token needs the words {REVOKE_ALL_CONFIRMATION} typed to confirm"
                ),
            )
            .into());
        }
        let now = self.now();
        let mut tx = self.write().await?;
        let (run, total) =
            store::create_run(&mut tx, &filter, reason, actor.login.as_str(), now).await?;
        let record = AuditRecord {
            actor: actor.login.to_string(),
            action: "token.revoke_bulk",
            target: format!("revocation:{run}"),
            outcome: "ok",
            details: json!({
                "filter": filter.to_json(),
                "what": filter.describe(),
                "reason": reason,
                "tokens": total,
            }),
        };
        self.audit(&mut tx, &record, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.wake();
        let mut conn = self.read().await?;
        Ok(store::revoke_run(&mut conn, run)
            .await?
            .ok_or(DomainError::NotFound)?)
    }

    /// A run's progress: its actor, the help desk and admins.
    pub async fn revocation(&self, actor: &Actor, id: i64) -> AppResult<RevokeRun> {
        if !actor.roles.can_support() {
            return Err(DomainError::NotFound.into());
        }
        let mut conn = self.read().await?;
        Ok(store::revoke_run(&mut conn, id)
            .await?
            .ok_or(DomainError::NotFound)?)
    }

    /// A `revoke_token` job: the token of one item of a run, deleted in Canvas first (a token
    /// Canvas no longer has counts as deleted, so a job redone after a crash deletes nothing
    /// twice), then recorded revoked; the last item of a run emails each owner once.
    pub(super) async fn revoke_job(&self, job: &ClaimedJob) -> Result<(), WorkError> {
        let Some(request_id) = job.request_id else {
            return self.job_finished(job).await;
        };
        let mut conn = self.read().await?;
        let item = store::queued_item(&mut conn, request_id).await?;
        let token = store::token_for_request(&mut conn, request_id).await?;
        drop(conn);
        let Some((item, run, reason, actor)) = item else {
            return self.job_finished(job).await;
        };
        if let Some(t) = token.as_ref().filter(|t| t.state.is_live()) {
            self.delete_in_canvas(t)
                .await
                .map_err(|e| WorkError::canvas(e, "deleting the token in Canvas"))?;
        }
        let now = self.now();
        let job_id = job.id;
        let token_id = token.as_ref().map(|t| t.id);
        let done = self
            .transition_with(
                request_id,
                &Ctx::system(),
                |r| request::revoke_in_run(r, &actor, run, &reason, now),
                |tx, _| {
                    Box::pin(async move {
                        if let Some(token_id) = token_id {
                            store::set_token_state(tx, token_id, TokenState::Deleted, now).await?;
                        }
                        store::close_envelopes_of(
                            tx,
                            request_id,
                            crate::domain::envelope::EnvelopeState::Burned,
                        )
                        .await?;
                        finish(tx, item, run, None, job_id, now).await
                    })
                },
            )
            .await;
        match done {
            Ok(_) => Ok(()),
            // No longer live (revoked, expired meanwhile): nothing was left to revoke.
            Err(super::AppError::Domain(DomainError::WrongState { .. })) => {
                let mut tx = self.write().await?;
                finish(&mut tx, item, run, None, job_id, now).await?;
                tx.commit().await.map_err(StoreError::from)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A `revoke_token` job that gave up: its item is `failed`, with why.
    pub(super) async fn give_up_revocation(&self, job: &ClaimedJob, why: &str) -> AppResult<()> {
        let now = self.now();
        let mut tx = self.write().await?;
        store::job_retry(&mut tx, job.id, why, None, now).await?;
        if let Some(request_id) = job.request_id
            && let Some((item, run, _, _)) = store::queued_item(&mut tx, request_id).await?
            && store::finish_item(&mut tx, item, run, Some(why), now).await?
        {
            notify_owners(&mut tx, run, now).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

/// Finishes an item and its job; when it was the run's last, each owner is emailed once.
async fn finish(
    tx: &mut store::Tx,
    item: i64,
    run: i64,
    failed: Option<&str>,
    job: i64,
    now: time::OffsetDateTime,
) -> AppResult<()> {
    if store::finish_item(tx, item, run, failed, now).await? {
        notify_owners(tx, run, now).await?;
    }
    store::job_done(tx, job, now).await?;
    Ok(())
}

/// One email per owner of a finished run's revoked tokens.
async fn notify_owners(tx: &mut store::Tx, run: i64, now: time::OffsetDateTime) -> AppResult<()> {
    for (owner, request) in store::run_owners(tx, run).await? {
        let owner = Login::from_stored(&owner);
        store::enqueue_email(
            tx,
            EmailKind::BulkRevoked,
            Some(crate::domain::RequestId(request)),
            Some(&owner),
            &QueuedEmail::Notice,
            None,
            now,
        )
        .await?;
    }
    Ok(())
}
