//! Reconciliation: every person tokendesk found in Canvas has their tokens listed once per pass
//! (`user_generated_tokens`, one listing per person, many people at once under the client's
//! throttle-aware governor), and each live token tokendesk tracks is compared with what Canvas
//! says: deleted there (recorded `revoked`), activated, its expiry changed (recorded, and put
//! back when it breaks policy), when it was last used. Tokens whose purpose says tokendesk made
//! them but that it does not know are orphans: reported to admins, deleted only when they say.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt as _;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use tokendesk_canvas::{
    CanvasError, CanvasTokenId, CanvasUserId, Token, TokenRef, TokenState as CanvasState,
    TokenUpdate, UserRef,
};

use super::lifecycle::{Seen, ref_of, user_of};
use super::{App, AppError, AppResult, Ctx};
use crate::domain::request::RequestState;
use crate::domain::{Actor, AuditRecord, DomainError, Login, SYSTEM, TokenState};
use crate::store::{self, Orphan, SeenOrphan, StoreError, StoredToken};

/// People listed per batch (their tokens are read from the database together).
const PEOPLE_PER_BATCH: i64 = 1000;

/// Canvas's expiry may differ from tokendesk's by this much (rounding) without it counting as
/// a change.
const EXPIRY_SLACK: Duration = Duration::minutes(1);

/// What one reconciliation pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// People whose tokens were listed.
    pub people: usize,
    /// Live tokens compared.
    pub tokens: usize,
    pub activated: usize,
    /// Deleted in Canvas: recorded `revoked`.
    pub gone: usize,
    /// Expiries changed in Canvas (earlier: recorded).
    pub expiry_changed: usize,
    /// Expiries that broke policy (later, or none): put back.
    pub expiry_corrected: usize,
    /// Orphans seen for the first time.
    pub orphans_found: usize,
    /// People whose tokens Canvas could not list this time.
    pub failed: usize,
}

/// One person: their tokens here, and what Canvas listed.
struct PersonListed {
    id: i64,
    login: Login,
    ours: Vec<StoredToken>,
    listing: Result<Vec<Token>, CanvasError>,
}

/// Lists one person's tokens in Canvas.
async fn list_one(
    canvas: &tokendesk_canvas::CanvasClient,
    id: i64,
    login: Login,
    ours: Vec<StoredToken>,
) -> PersonListed {
    let user = UserRef::Id(CanvasUserId(id.unsigned_abs()));
    let listing = canvas.list_user_tokens(&user).await;
    PersonListed {
        id,
        login,
        ours,
        listing,
    }
}

/// Listings in flight or waiting for the governor at once (it decides how many run).
const LISTING_AT_ONCE: usize = 64;

/// The purpose prefix of every token tokendesk makes (`tokendesk #<id>: …`).
const OURS: &str = "tokendesk #";

impl App {
    /// One pass over everyone; what cannot be read now is left for the next pass. People are
    /// read from the database in batches, but listed in Canvas as one continuous stream (many
    /// at once, under the client's governor), so that Canvas is never left idle between
    /// batches (an idle bucket loses the leak's credit); what was listed is recorded, a batch
    /// at a time, while the listing goes on.
    pub async fn reconcile(&self) -> AppResult<ReconcileReport> {
        let canvas = &self.parts().canvas;
        let (found, mut heard) =
            tokio::sync::mpsc::channel::<AppResult<PersonListed>>(2 * PEOPLE_PER_BATCH as usize);
        let lister = async move {
            let mut listing = futures::stream::FuturesOrdered::new();
            let mut waiting: std::collections::VecDeque<(i64, Login, Vec<StoredToken>)> =
                std::collections::VecDeque::new();
            let mut after = Some(0i64);
            loop {
                // The next batch of people before this one runs out.
                if waiting.len() < LISTING_AT_ONCE
                    && let Some(from) = after
                {
                    match self.people_batch(from).await {
                        Ok(batch) => {
                            after = batch.last().map(|(id, _, _)| *id);
                            waiting.extend(batch);
                        }
                        Err(e) => {
                            let _ = found.send(Err(e)).await;
                            return;
                        }
                    }
                }
                while listing.len() < LISTING_AT_ONCE
                    && let Some((id, login, ours)) = waiting.pop_front()
                {
                    listing.push_back(list_one(canvas, id, login, ours));
                }
                let Some(seen) = listing.next().await else {
                    if after.is_none() {
                        return;
                    }
                    continue;
                };
                if found.send(Ok(seen)).await.is_err() {
                    // The recorder stopped (an error): so does the listing.
                    return;
                }
            }
        };
        let recorder = async {
            let mut report = ReconcileReport::default();
            let mut chunk: Vec<PersonListed> = Vec::new();
            while let Some(seen) = heard.recv().await {
                chunk.push(seen?);
                if chunk.len() >= PEOPLE_PER_BATCH as usize {
                    self.record_listed(std::mem::take(&mut chunk), &mut report)
                        .await?;
                }
            }
            if !chunk.is_empty() {
                self.record_listed(chunk, &mut report).await?;
            }
            Ok(report)
        };
        let ((), report) = tokio::join!(lister, recorder);
        report
    }

    /// The next batch of people found in Canvas, after Canvas user id `after`, with the
    /// tokens tokendesk tracks for each.
    async fn people_batch(&self, after: i64) -> AppResult<Vec<(i64, Login, Vec<StoredToken>)>> {
        let mut conn = self.read().await?;
        let people = store::people_in_canvas(&mut conn, after, PEOPLE_PER_BATCH).await?;
        let ids: Vec<i64> = people.iter().map(|(id, _)| *id).collect();
        let ours = store::tokens_of_canvas_users(&mut conn, &ids).await?;
        drop(conn);
        let mut by_user: HashMap<i64, Vec<StoredToken>> = HashMap::new();
        for t in ours {
            by_user.entry(t.canvas_user_id).or_default().push(t);
        }
        Ok(people
            .into_iter()
            .map(|(id, login)| {
                let ours = by_user.remove(&id).unwrap_or_default();
                (id, login, ours)
            })
            .collect())
    }

    /// Compares a listed batch with what tokendesk holds, and records what changed.
    async fn record_listed(
        &self,
        batch: Vec<PersonListed>,
        report: &mut ReconcileReport,
    ) -> AppResult<()> {
        let mut writes = Batch::default();
        for person in batch {
            match person.listing {
                Ok(listed) => {
                    report.people += 1;
                    self.compare(
                        person.id,
                        &person.login,
                        &person.ours,
                        &listed,
                        &mut writes,
                        report,
                    )
                    .await;
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(canvas.user_id = person.id, error = %e, "reconcile: cannot list a person's tokens now");
                }
            }
        }
        self.write_batch(writes, report).await
    }

    /// Compares one person's tokens; database writes that need no transition of their own go
    /// into `batch`.
    async fn compare(
        &self,
        user_id: i64,
        login: &Login,
        ours: &[StoredToken],
        listed: &[Token],
        batch: &mut Batch,
        report: &mut ReconcileReport,
    ) {
        let by_id: BTreeMap<i64, &Token> = listed
            .iter()
            .filter(|t| t.workflow_state != CanvasState::Deleted)
            .map(|t| (i64::try_from(t.id.0).unwrap_or(i64::MAX), t))
            .collect();
        for t in ours.iter().filter(|t| t.state.is_live()) {
            report.tokens += 1;
            let Some(canvas_token) = by_id.get(&t.canvas_token_id) else {
                // Not listed: deleted in Canvas.
                match self.settle(t, Some(Seen::Gone)).await {
                    Ok(Some(RequestState::Revoked)) => report.gone += 1,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(token.id = %t.id, error = %e, "reconcile: not recorded")
                    }
                }
                continue;
            };
            if t.state == TokenState::Pending && canvas_token.workflow_state == CanvasState::Active
            {
                match self.settle(t, Some(Seen::Active)).await {
                    Ok(Some(RequestState::Activated)) => report.activated += 1,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(token.id = %t.id, error = %e, "reconcile: not recorded")
                    }
                }
            }
            let canvas_expiry = canvas_token.expires_at;
            let breaks_policy = canvas_expiry.is_none_or(|at| at > t.expires_at + EXPIRY_SLACK);
            if breaks_policy {
                match self.correct_expiry(t).await {
                    Ok(()) => {
                        report.expiry_corrected += 1;
                        batch
                            .audits
                            .push(expiry_event(t, "token.expiry_corrected", canvas_expiry));
                        batch.views.push((
                            t.clone(),
                            canvas_token.last_used_at,
                            Some(t.expires_at),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(token.id = %t.id, error = %e, "reconcile: cannot put a token's expiry back now");
                        batch
                            .views
                            .push((t.clone(), canvas_token.last_used_at, canvas_expiry));
                    }
                }
                continue;
            }
            let changed = canvas_expiry.is_some_and(|at| {
                (at - t.expires_at).abs() > EXPIRY_SLACK
                    && t.canvas_expires_at
                        .is_none_or(|seen| (seen - at).abs() > EXPIRY_SLACK)
            });
            if changed {
                report.expiry_changed += 1;
                batch
                    .audits
                    .push(expiry_event(t, "token.expiry_changed", canvas_expiry));
            }
            batch
                .views
                .push((t.clone(), canvas_token.last_used_at, canvas_expiry));
        }
        // Tokens tokendesk made (by their purpose) but does not know.
        let known: Vec<i64> = ours.iter().map(|t| t.canvas_token_id).collect();
        let mut still = Vec::new();
        for t in by_id.values() {
            let id = i64::try_from(t.id.0).unwrap_or(i64::MAX);
            let purpose = t.purpose.as_deref().unwrap_or_default();
            if purpose.starts_with(OURS) && !known.contains(&id) {
                still.push(id);
                batch.orphans.push(OrphanSeen {
                    canvas_user_id: user_id,
                    canvas_token_id: id,
                    owner: login.clone(),
                    purpose: purpose.to_owned(),
                    hint: t.hint().to_owned(),
                    canvas_expires_at: t.expires_at,
                });
            }
        }
        batch.orphan_users.push((user_id, still));
    }

    /// Puts a token's expiry in Canvas back to tokendesk's.
    async fn correct_expiry(&self, t: &StoredToken) -> Result<(), CanvasError> {
        let update = TokenUpdate {
            expires_at: Some(t.expires_at),
            ..TokenUpdate::default()
        };
        self.parts()
            .canvas
            .update_token(&user_of(t), &ref_of(t), &update)
            .await
            .map(|_| ())
    }

    async fn write_batch(&self, batch: Batch, report: &mut ReconcileReport) -> AppResult<()> {
        let now = self.now();
        let mut tx = self.write().await?;
        for (t, last_used, canvas_expires) in &batch.views {
            store::record_canvas_view(&mut tx, t.id, *last_used, *canvas_expires, now).await?;
        }
        for record in &batch.audits {
            self.audit(&mut tx, record, &Ctx::system()).await?;
        }
        for o in &batch.orphans {
            let seen = SeenOrphan {
                canvas_user_id: o.canvas_user_id,
                canvas_token_id: o.canvas_token_id,
                owner: Some(&o.owner),
                purpose: &o.purpose,
                hint: &o.hint,
                canvas_expires_at: o.canvas_expires_at,
            };
            if store::saw_orphan(&mut tx, &seen, now).await? {
                report.orphans_found += 1;
                self.audit(
                    &mut tx,
                    &AuditRecord {
                        actor: SYSTEM.into(),
                        action: "orphan.found",
                        target: format!("canvas_token:{}", o.canvas_token_id),
                        outcome: "ok",
                        details: json!({
                            "canvas_user_id": o.canvas_user_id,
                            "login": o.owner.as_str(),
                            "purpose": o.purpose,
                            "hint": o.hint,
                        }),
                    },
                    &Ctx::system(),
                )
                .await?;
            }
        }
        for (user, still) in &batch.orphan_users {
            store::forget_orphans_except(&mut tx, *user, still).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    // ---- orphans ------------------------------------------------------------------------------

    fn require_admin(actor: &Actor) -> AppResult<()> {
        if actor.roles.admin {
            Ok(())
        } else {
            Err(DomainError::Forbidden("only admins see and delete orphaned tokens".into()).into())
        }
    }

    /// Tokens in Canvas that say tokendesk made them but that it does not know (admins).
    pub async fn orphans(&self, actor: &Actor) -> AppResult<Vec<Orphan>> {
        Self::require_admin(actor)?;
        let mut conn = self.read().await?;
        Ok(store::list_orphans(&mut conn, 1000).await?)
    }

    /// An admin deletes an orphan in Canvas; it is then forgotten, and the deletion audited.
    pub async fn delete_orphan(&self, actor: &Actor, id: i64, ctx: &Ctx) -> AppResult<Orphan> {
        Self::require_admin(actor)?;
        let mut conn = self.read().await?;
        let orphan = store::get_orphan(&mut conn, id)
            .await?
            .ok_or(DomainError::NotFound)?;
        drop(conn);
        let user = UserRef::Id(CanvasUserId(orphan.canvas_user_id.unsigned_abs()));
        let token = TokenRef::Id(CanvasTokenId(orphan.canvas_token_id.unsigned_abs()));
        match self.parts().canvas.delete_token(&user, &token).await {
            Ok(_) | Err(CanvasError::NotFound { .. }) => {}
            Err(e) => return Err(AppError::Canvas(e)),
        }
        let mut tx = self.write().await?;
        store::delete_orphan(&mut tx, id).await?;
        self.audit(
            &mut tx,
            &AuditRecord {
                actor: actor.login.to_string(),
                action: "orphan.delete",
                target: format!("canvas_token:{}", orphan.canvas_token_id),
                outcome: "ok",
                details: json!({
                    "canvas_user_id": orphan.canvas_user_id,
                    "purpose": orphan.purpose,
                    "hint": orphan.hint,
                }),
            },
            ctx,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(orphan)
    }
}

/// The writes of one batch of people, in one transaction.
#[derive(Default)]
struct Batch {
    /// `(token, last_used_at, Canvas's expiry)`.
    views: Vec<(StoredToken, Option<OffsetDateTime>, Option<OffsetDateTime>)>,
    audits: Vec<AuditRecord>,
    orphans: Vec<OrphanSeen>,
    /// Each person's orphans still listed (the others are forgotten).
    orphan_users: Vec<(i64, Vec<i64>)>,
}

struct OrphanSeen {
    canvas_user_id: i64,
    canvas_token_id: i64,
    owner: Login,
    purpose: String,
    hint: String,
    canvas_expires_at: Option<OffsetDateTime>,
}

fn expiry_event(
    t: &StoredToken,
    action: &'static str,
    canvas: Option<OffsetDateTime>,
) -> AuditRecord {
    let shown = |at: Option<OffsetDateTime>| {
        at.and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
    };
    AuditRecord {
        actor: SYSTEM.into(),
        action,
        target: format!("request:{}", t.request_id),
        outcome: "ok",
        details: json!({
            "token_id": t.id.0,
            "in_canvas": shown(canvas),
            "approved": shown(Some(t.expires_at)),
        }),
    }
}
