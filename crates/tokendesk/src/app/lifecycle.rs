//! The token's life after delivery: activation (checked on a schedule that backs off, or at
//! once when the owner asks), tokens never put to use, reminders before expiry, renewal (a new
//! token, or the same one extended), unused tokens, and the approvers' digest. The sweep calls
//! the periodic parts; each works through everything due, in batches.

use serde_json::json;
use time::Duration;
use tokendesk_canvas::{
    CanvasError, CanvasTokenId, CanvasUserId, Token, TokenRef, TokenState as CanvasState,
    TokenUpdate, UserRef,
};

use super::{App, AppError, AppResult, Ctx, SweepReport, WorkError};
use crate::domain::envelope::EnvelopeState;
use crate::domain::request::{self, RawNewRequest, Request, RequestState, Unused};
use crate::domain::{Actor, DomainError, EmailKind, RequestId, TokenId, TokenState, token};
use crate::store::{self, ClaimedJob, QueuedEmail, StoreError, StoredToken};

/// How many rows the sweep takes at a time.
pub(super) const BATCH: i64 = 200;

/// An unused token's owner is warned, and the token revoked this long after if still unused.
pub const UNUSED_WARNING: Duration = Duration::days(7);

/// What Canvas said of a token, as far as its life in tokendesk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Active,
    Pending,
    /// Deleted in Canvas, or gone.
    Gone,
}

impl Seen {
    pub(super) fn of(answer: &Result<Token, CanvasError>) -> Option<Seen> {
        match answer {
            Ok(t) if t.workflow_state == CanvasState::Active => Some(Seen::Active),
            Ok(t) if t.workflow_state == CanvasState::Deleted => Some(Seen::Gone),
            Ok(_) => Some(Seen::Pending),
            Err(CanvasError::NotFound { .. }) => Some(Seen::Gone),
            Err(_) => None,
        }
    }
}

/// The answer to "I have activated it".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationCheck {
    pub token_id: TokenId,
    /// `active`, or `pending` (with where to activate it).
    pub active: bool,
    pub message: String,
    /// Where the owner activates the token in Canvas, while it is pending.
    pub activate_at: Option<String>,
}

pub(super) fn user_of(t: &StoredToken) -> UserRef {
    UserRef::Id(CanvasUserId(t.canvas_user_id.unsigned_abs()))
}

pub(super) fn ref_of(t: &StoredToken) -> TokenRef {
    TokenRef::Id(CanvasTokenId(t.canvas_token_id.unsigned_abs()))
}

impl App {
    // ---- activation -------------------------------------------------------------------------

    /// Records what Canvas said of a token of a live request: activated, deleted there, or
    /// still pending (then the next check is scheduled, further off). Returns the request's
    /// state afterwards.
    pub(super) async fn settle(
        &self,
        t: &StoredToken,
        seen: Option<Seen>,
    ) -> AppResult<Option<RequestState>> {
        let now = self.now();
        let token_id = t.id;
        match seen {
            Some(Seen::Active) if t.state == TokenState::Pending => {
                let (r, ()) = self
                    .transition_with(
                        t.request_id,
                        &Ctx::system(),
                        |r| request::activated(r, now),
                        |tx, r| {
                            Box::pin(async move {
                                store::set_token_state(tx, token_id, TokenState::Active, now)
                                    .await?;
                                store::close_envelopes_of(tx, r.id, EnvelopeState::Burned).await?;
                                Ok(())
                            })
                        },
                    )
                    .await?;
                if let Some(old) = r.renews {
                    self.retire_renewed(old, r.id).await;
                }
                Ok(Some(r.state))
            }
            Some(Seen::Active) => Ok(None),
            Some(Seen::Gone) => {
                let (r, ()) = self
                    .transition_with(
                        t.request_id,
                        &Ctx::system(),
                        |r| request::gone_from_canvas(r, now),
                        |tx, r| {
                            Box::pin(async move {
                                store::set_token_state(tx, token_id, TokenState::Deleted, now)
                                    .await?;
                                store::close_envelopes_of(tx, r.id, EnvelopeState::Burned).await?;
                                Ok(())
                            })
                        },
                    )
                    .await?;
                Ok(Some(r.state))
            }
            Some(Seen::Pending) | None => {
                if t.state == TokenState::Pending {
                    let checks = t.checks.saturating_add(1);
                    let mut tx = self.write().await?;
                    store::schedule_check(
                        &mut tx,
                        token_id,
                        token::next_check(checks, now),
                        checks,
                    )
                    .await?;
                    tx.commit().await.map_err(StoreError::from)?;
                }
                Ok(None)
            }
        }
    }

    /// Part of the sweep: asks Canvas about every pending token whose check is due (one
    /// person's at a time, under the client's governor), in batches until none is due.
    pub(super) async fn check_due_activations(&self, report: &mut SweepReport) -> AppResult<()> {
        loop {
            let mut conn = self.read().await?;
            let due = store::due_activation_checks(&mut conn, self.now(), BATCH).await?;
            drop(conn);
            if due.is_empty() {
                return Ok(());
            }
            let full = due.len() as i64 == BATCH;
            let mut by_user: std::collections::BTreeMap<i64, Vec<StoredToken>> = Default::default();
            for t in due {
                by_user.entry(t.canvas_user_id).or_default().push(t);
            }
            for tokens in by_user.values() {
                let user = user_of(&tokens[0]);
                let answers = self
                    .parts()
                    .canvas
                    .show_tokens(&user, tokens.iter().map(ref_of))
                    .await;
                for (t, answer) in tokens.iter().zip(answers) {
                    let seen = Seen::of(&answer);
                    if let Err(e) = &answer
                        && seen.is_none()
                    {
                        tracing::warn!(token.id = %t.id, error = %e, "cannot read a token's state in Canvas");
                        report.unknown += 1;
                    }
                    match self.settle(t, seen).await {
                        Ok(Some(RequestState::Activated)) => report.activated += 1,
                        Ok(Some(RequestState::Revoked)) => report.gone_from_canvas += 1,
                        Ok(_) => report.checked += 1,
                        Err(e) => {
                            tracing::warn!(token.id = %t.id, error = %e, "activation not recorded")
                        }
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// "I have activated it": the owner asks tokendesk to look in Canvas now.
    pub async fn check_activation(&self, actor: &Actor, id: TokenId) -> AppResult<ActivationCheck> {
        let (t, r) = self.token(actor, id).await?;
        if !actor.is(&t.owner) {
            return Err(DomainError::Forbidden(
                "only the token's owner can say it was activated".into(),
            )
            .into());
        }
        let pending = |message: String| ActivationCheck {
            token_id: id,
            active: false,
            message,
            activate_at: Some(self.canvas_settings_url()),
        };
        match (r.state, t.state) {
            (_, TokenState::Active) => {
                return Ok(ActivationCheck {
                    token_id: id,
                    active: true,
                    message: "The token is active in Canvas.".into(),
                    activate_at: None,
                });
            }
            (RequestState::Issued, TokenState::Pending) => {}
            (state, _) => {
                return Err(DomainError::WrongState {
                    action: "check the activation of",
                    current: state,
                }
                .into());
            }
        }
        let answer = self
            .parts()
            .canvas
            .show_token(&user_of(&t), &ref_of(&t))
            .await;
        let seen = Seen::of(&answer);
        if let (Err(e), None) = (&answer, seen) {
            return Err(AppError::Canvas(e.clone()));
        }
        match self.settle(&t, seen).await? {
            Some(RequestState::Activated) => Ok(ActivationCheck {
                token_id: id,
                active: true,
                message: "The token is active in Canvas.".into(),
                activate_at: None,
            }),
            Some(RequestState::Revoked) => Err(DomainError::Conflict {
                code: "gone_from_canvas",
                message: "Canvas no longer has this token: it was deleted there".into(),
            }
            .into()),
            _ => Ok(pending(
                "The token is still pending in Canvas: activate it under Approved Integrations in your Canvas settings."
                    .into(),
            )),
        }
    }

    /// After a reveal the owner is about to activate the token: look again soon.
    pub(super) async fn check_soon(&self, request: RequestId) -> AppResult<()> {
        let mut conn = self.read().await?;
        let token = store::token_for_request(&mut conn, request).await?;
        drop(conn);
        if let Some(t) = token.filter(|t| t.state == TokenState::Pending) {
            let mut tx = self.write().await?;
            store::schedule_check(&mut tx, t.id, token::check_after_reveal(self.now()), 0).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok(())
    }

    // ---- tokens never put to use --------------------------------------------------------------

    /// Part of the sweep: an issued token whose link expired unrevealed, or that was not
    /// activated within `policy.activation_grace_days`, is deleted in Canvas and its request
    /// ends `expired`; its owner is told how to ask again. (If Canvas says it was activated
    /// meanwhile, that is recorded instead.)
    pub(super) async fn expire_unused(&self, report: &mut SweepReport) -> AppResult<()> {
        let policy = self.policy();
        let mut after = RequestId(0);
        loop {
            let now = self.now();
            let mut conn = self.read().await?;
            let batch = store::pending_deliveries(&mut conn, after, BATCH).await?;
            drop(conn);
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = last.0.id;
            let full = batch.len() as i64 == BATCH;
            for (r, t, envelope) in batch {
                let why = match envelope {
                    Some(e) if e.state_at(now) == EnvelopeState::Expired && e.reveals == 0 => {
                        Unused::LinkExpiredUnrevealed
                    }
                    _ if t.created_at + policy.activation_grace() <= now => Unused::NotActivated {
                        days: policy.activation_grace_days,
                    },
                    _ => continue,
                };
                match self.end_unused(&r, &t, why).await {
                    Ok(true) => report.never_used += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(request.id = %r.id, error = %e, "cannot end an unused token now; the next sweep tries again")
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Deletes an unused token in Canvas and ends its request; `false` when Canvas said it is
    /// active after all (recorded as such).
    async fn end_unused(&self, r: &Request, t: &StoredToken, why: Unused) -> AppResult<bool> {
        let canvas = &self.parts().canvas;
        let answer = canvas.show_token(&user_of(t), &ref_of(t)).await;
        if let Some(Seen::Active) = Seen::of(&answer) {
            self.settle(t, Some(Seen::Active)).await?;
            return Ok(false);
        }
        self.delete_in_canvas(t).await.map_err(AppError::Canvas)?;
        let now = self.now();
        let token_id = t.id;
        self.transition_with(
            r.id,
            &Ctx::system(),
            |r| request::expire_unused(r, why, now),
            |tx, r| {
                Box::pin(async move {
                    store::set_token_state(tx, token_id, TokenState::Deleted, now).await?;
                    store::close_envelopes_of(tx, r.id, EnvelopeState::Expired).await?;
                    Ok(())
                })
            },
        )
        .await?;
        Ok(true)
    }

    // ---- reminders ----------------------------------------------------------------------------

    /// Part of the sweep: reminds the owners of tokens whose expiry is `policy.reminder_days`
    /// away, each reminder once (across instances: the notice is noted in the same transaction
    /// as the email). When the sweep finds a token already closer than a reminder day (it was
    /// down, or the token was made late), only the nearest reminder goes out; none goes out
    /// for a day the token was made inside of, or when a renewal is already under way.
    pub(super) async fn send_reminders(&self, report: &mut SweepReport) -> AppResult<()> {
        let days = self.policy().reminder_days;
        let Some(&furthest) = days.days().first() else {
            return Ok(());
        };
        let today = self.now().date();
        let until = today + Duration::days(i64::from(furthest));
        let mut after = RequestId(0);
        loop {
            let mut conn = self.read().await?;
            let batch = store::expiring_by(&mut conn, until, after, BATCH).await?;
            drop(conn);
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = last.0.id;
            let full = batch.len() as i64 == BATCH;
            for (r, t, _) in batch {
                let left = (r.expires_on - today).whole_days();
                let lifetime = (r.expires_on - t.created_at.date()).whole_days();
                // The nearest reminder day the token is within.
                let Some(&day) = days.days().iter().rev().find(|d| left <= i64::from(**d)) else {
                    continue;
                };
                if left < 0 || i64::from(day) >= lifetime {
                    continue;
                }
                let mut conn = self.read().await?;
                let renewing = !store::renewals_of(&mut conn, r.id).await?.is_empty();
                drop(conn);
                if renewing {
                    continue;
                }
                let now = self.now();
                let mut tx = self.write().await?;
                if store::note_once(&mut tx, r.id, &format!("expiry:{day}"), now).await? {
                    // The further reminders are past: they will not go out late.
                    for &further in days.days().iter().filter(|d| **d > day) {
                        store::note_once(&mut tx, r.id, &format!("expiry:{further}"), now).await?;
                    }
                    store::enqueue_email(
                        &mut tx,
                        EmailKind::Reminder,
                        Some(r.id),
                        Some(&r.requester),
                        &QueuedEmail::Notice,
                        None,
                        now,
                    )
                    .await?;
                    self.audit(
                        &mut tx,
                        &crate::domain::AuditRecord {
                            actor: crate::domain::SYSTEM.into(),
                            action: "request.remind",
                            target: format!("request:{}", r.id),
                            outcome: "ok",
                            details: json!({"days_before": day, "expires_on": r.expires_on.to_string()}),
                        },
                        &Ctx::system(),
                    )
                    .await?;
                    report.reminded += 1;
                }
                tx.commit().await.map_err(StoreError::from)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    // ---- renewal ------------------------------------------------------------------------------

    /// The owner asks to renew a live token: a new request marked as a renewal of the old one
    /// (the old purpose unless a new one is given), waiting for an approver like any other.
    pub async fn renew(
        &self,
        actor: &Actor,
        id: TokenId,
        raw: &RawNewRequest,
        ctx: &Ctx,
    ) -> AppResult<Request> {
        let (_, old) = self.token(actor, id).await?;
        let now = self.now();
        let new = request::renewal(&old, actor, raw, &self.policy(), now.date())?;
        let mut conn = self.read().await?;
        if let Some(other) = store::renewals_of(&mut conn, old.id).await?.first() {
            return Err(DomainError::Conflict {
                code: "already_renewing",
                message: format!(
                    "request #{} already renews this token ({})",
                    other.id, other.state
                ),
            }
            .into());
        }
        drop(conn);
        self.submit_new(actor, new, ctx).await
    }

    /// A renewal's new token is active: the old token is deleted in Canvas and its request
    /// ends. A failure here is left to the sweep, which retires what is left (see
    /// [`App::retire_replaced`]).
    pub(super) async fn retire_renewed(&self, old: RequestId, by: RequestId) {
        if let Err(e) = self.retire(old, by).await {
            tracing::warn!(request.id = %old, error = %e, "cannot retire a renewed token now; the sweep will");
        }
    }

    async fn retire(&self, old: RequestId, by: RequestId) -> AppResult<()> {
        let mut conn = self.read().await?;
        let token = store::token_for_request(&mut conn, old).await?;
        drop(conn);
        if let Some(t) = token.as_ref().filter(|t| t.state.is_live()) {
            self.delete_in_canvas(t).await.map_err(AppError::Canvas)?;
        }
        let now = self.now();
        let token_id = token.map(|t| t.id);
        self.transition_with(
            old,
            &Ctx::system(),
            |r| request::replaced(r, by, now),
            |tx, r| {
                Box::pin(async move {
                    if let Some(id) = token_id {
                        store::set_token_state(tx, id, TokenState::Deleted, now).await?;
                    }
                    store::close_envelopes_of(tx, r.id, EnvelopeState::Burned).await?;
                    Ok(())
                })
            },
        )
        .await?;
        Ok(())
    }

    /// Part of the sweep: renewed requests whose renewal's token is active, still holding
    /// theirs (the retirement after the activation failed, or was interrupted).
    pub(super) async fn retire_replaced(&self, report: &mut SweepReport) -> AppResult<()> {
        loop {
            let mut conn = self.read().await?;
            let pairs = store::replaceable(&mut conn, BATCH).await?;
            drop(conn);
            if pairs.is_empty() {
                return Ok(());
            }
            let mut progress = false;
            for (old, by) in pairs {
                match self.retire(old, by).await {
                    Ok(()) => {
                        report.replaced += 1;
                        progress = true;
                    }
                    Err(e) => {
                        tracing::warn!(request.id = %old, error = %e, "cannot retire a renewed token now")
                    }
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// The job of a renewal under `policy.renewal = "extend"`: moves the renewed token's expiry
    /// in Canvas, then hands the token to the renewal and ends the old request, in one
    /// transaction.
    pub(super) async fn extend(&self, job: &ClaimedJob) -> Result<(), WorkError> {
        let Some(id) = job.request_id else {
            return self.job_finished(job).await;
        };
        let mut conn = self.read().await?;
        let renewal = store::get_request(&mut conn, id)
            .await?
            .ok_or_else(|| WorkError::Permanent(format!("request {id} does not exist")))?;
        let Some(old_id) = renewal
            .renews
            .filter(|_| renewal.state == RequestState::Approved)
        else {
            drop(conn);
            return self.job_finished(job).await;
        };
        let token = store::token_for_request(&mut conn, old_id)
            .await?
            .filter(|t| t.state.is_live())
            .ok_or_else(|| {
                WorkError::Permanent(format!(
                    "the token of request #{old_id} is no longer live: nothing to extend; deny this renewal and ask for a new token"
                ))
            })?;
        drop(conn);
        let expires_at = request::canvas_expiry(renewal.expires_on);
        let update = TokenUpdate {
            expires_at: Some(expires_at),
            ..TokenUpdate::default()
        };
        self.parts()
            .canvas
            .update_token(&user_of(&token), &ref_of(&token), &update)
            .await
            .map_err(|e| WorkError::canvas(e, "moving the token's expiry in Canvas"))?;
        let now = self.now();
        let state = if token.state == TokenState::Active {
            RequestState::Activated
        } else {
            RequestState::Issued
        };
        let mut tx = self.write().await?;
        let extended = self
            .step(&mut tx, id, &Ctx::system(), |r| {
                request::extended(r, state, now)
            })
            .await?;
        self.step(&mut tx, old_id, &Ctx::system(), |r| {
            request::carried_over(r, &extended, now)
        })
        .await?;
        store::move_token(&mut tx, token.id, id, now).await?;
        store::set_token_expiry(&mut tx, token.id, expires_at, now).await?;
        store::job_done(&mut tx, job.id, now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.wake();
        Ok(())
    }

    /// The job that deletes an expired (or replaced) request's token in Canvas.
    pub(super) async fn delete_token_job(&self, job: &ClaimedJob) -> Result<(), WorkError> {
        let Some(id) = job.request_id else {
            return self.job_finished(job).await;
        };
        let mut conn = self.read().await?;
        let token = store::token_for_request(&mut conn, id).await?;
        drop(conn);
        let now = self.now();
        let mut tx_token = None;
        if let Some(t) = token.filter(|t| t.state != TokenState::Deleted) {
            self.delete_in_canvas(&t)
                .await
                .map_err(|e| WorkError::canvas(e, "deleting the token in Canvas"))?;
            tx_token = Some(t.id);
        }
        let mut tx = self.write().await?;
        if let Some(token_id) = tx_token {
            store::set_token_state(&mut tx, token_id, TokenState::Deleted, now).await?;
        }
        store::job_done(&mut tx, job.id, now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    // ---- unused tokens ------------------------------------------------------------------------

    /// Part of the sweep (with `policy.revoke_unused_days`): the owner of an active token unused
    /// for that long is warned; seven days after the warning, still unused, it is revoked.
    pub(super) async fn revoke_unused(&self, report: &mut SweepReport) -> AppResult<()> {
        let days = self.policy().revoke_unused_days;
        if days == 0 {
            return Ok(());
        }
        let mut after = RequestId(0);
        loop {
            let now = self.now();
            let before = now - Duration::days(i64::from(days));
            let mut conn = self.read().await?;
            let batch = store::unused_since(&mut conn, before, after, BATCH).await?;
            drop(conn);
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = last.0.id;
            let full = batch.len() as i64 == BATCH;
            for (r, t, _) in batch {
                // One warning per unused spell: named by when the token was last used.
                let since = t.last_used_at.or(t.activated_at).unwrap_or(t.created_at);
                let kind = format!("unused:{}", since.unix_timestamp());
                let mut conn = self.read().await?;
                let warned = store::noticed_at(&mut conn, r.id, &kind).await?;
                drop(conn);
                match warned {
                    None => {
                        let mut tx = self.write().await?;
                        if store::note_once(&mut tx, r.id, &kind, now).await? {
                            store::enqueue_email(
                                &mut tx,
                                EmailKind::UnusedWarning,
                                Some(r.id),
                                Some(&r.requester),
                                &QueuedEmail::Notice,
                                None,
                                now,
                            )
                            .await?;
                            report.warned_unused += 1;
                        }
                        tx.commit().await.map_err(StoreError::from)?;
                    }
                    Some(at) if at + UNUSED_WARNING <= now => {
                        match self.revoke_as_unused(&r, &t, days).await {
                            Ok(()) => report.revoked_unused += 1,
                            Err(e) => {
                                tracing::warn!(request.id = %r.id, error = %e, "cannot revoke an unused token now")
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn revoke_as_unused(&self, r: &Request, t: &StoredToken, days: u32) -> AppResult<()> {
        self.delete_in_canvas(t).await.map_err(AppError::Canvas)?;
        let now = self.now();
        let token_id = t.id;
        self.transition_with(
            r.id,
            &Ctx::system(),
            |r| request::unused_revoked(r, days, now),
            |tx, r| {
                Box::pin(async move {
                    store::set_token_state(tx, token_id, TokenState::Deleted, now).await?;
                    store::close_envelopes_of(tx, r.id, EnvelopeState::Burned).await?;
                    Ok(())
                })
            },
        )
        .await?;
        Ok(())
    }

    // ---- the approvers' digest ----------------------------------------------------------------

    /// Part of the sweep (with `notify.approver_digest_minutes`): each approver with requests
    /// that arrived since their last digest (other than their own) gets one, at most once per
    /// period across instances.
    pub(super) async fn send_digests(&self, report: &mut SweepReport) -> AppResult<()> {
        let minutes = self.parts().notify.approver_digest_minutes;
        if minutes == 0 {
            return Ok(());
        }
        let period = Duration::minutes(i64::from(minutes));
        for approver in self.roles().reviewers() {
            let name = format!("digest:{approver}");
            let mut conn = self.read().await?;
            let last = store::periodic_run(&mut conn, &name).await?;
            let now = self.now();
            let since = last.map_or(now - period, |l| l.last_run_at);
            if since + period > now {
                continue;
            }
            let waiting = store::submitted_since(&mut conn, since, 1000).await?;
            drop(conn);
            if !waiting.iter().any(|r| r.requester != approver) {
                continue;
            }
            if !self.claim_period(&name, period).await? {
                continue;
            }
            let mut tx = self.write().await?;
            store::enqueue_email(
                &mut tx,
                EmailKind::Digest,
                None,
                Some(&approver),
                &QueuedEmail::Notice,
                None,
                now,
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)?;
            report.digests += 1;
        }
        Ok(())
    }
}
