//! The periodic sweep: close envelopes whose time is up, expire requests whose token has passed
//! its date, and follow activation in Canvas (pending → active), noticing tokens deleted there.

use std::collections::BTreeMap;

use tokendesk_canvas::{
    CanvasError, CanvasTokenId, CanvasUserId, TokenRef, TokenState as CanvasState, UserRef,
};

use super::{App, AppResult, Ctx};
use crate::domain::TokenState;
use crate::domain::envelope::{self, EnvelopeState};
use crate::domain::request::{self, RequestState};
use crate::store::{self, StoreError, StoredToken};

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub envelopes_expired: usize,
    pub requests_expired: usize,
    pub activated: usize,
    pub gone_from_canvas: usize,
    /// Tokens whose state Canvas could not tell this time.
    pub unknown: usize,
}

impl App {
    pub async fn sweep(&self) -> AppResult<SweepReport> {
        let mut report = SweepReport::default();
        let now = self.now();

        let mut tx = self.write().await?;
        let closed = store::expire_envelopes(&mut tx, now).await?;
        for id in &closed {
            self.audit(&mut tx, &envelope::expired(id), &Ctx::system())
                .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        report.envelopes_expired = closed.len();

        let mut conn = self.read().await?;
        let due = store::expiring_requests(&mut conn, now.date(), 500).await?;
        let pending = store::pending_tokens(&mut conn, 1000).await?;
        drop(conn);
        for r in due {
            let expired = self
                .transition_with(
                    r.id,
                    &Ctx::system(),
                    |r| request::expire(r, now),
                    |tx, r| {
                        Box::pin(async move {
                            store::close_envelopes_of(tx, r.id, EnvelopeState::Expired).await?;
                            Ok(())
                        })
                    },
                )
                .await;
            if expired.is_ok() {
                report.requests_expired += 1;
            }
        }

        // Ask Canvas about every pending token, one person at a time, under the client's
        // governor.
        let mut by_user: BTreeMap<i64, Vec<StoredToken>> = BTreeMap::new();
        for t in pending
            .into_iter()
            .filter(|t| t.state == TokenState::Pending)
        {
            by_user.entry(t.canvas_user_id).or_default().push(t);
        }
        for (user_id, tokens) in by_user {
            let user = UserRef::Id(CanvasUserId(user_id.unsigned_abs()));
            let refs: Vec<TokenRef> = tokens
                .iter()
                .map(|t| TokenRef::Id(CanvasTokenId(t.canvas_token_id.unsigned_abs())))
                .collect();
            let answers = self.parts().canvas.show_tokens(&user, refs).await;
            for (token, answer) in tokens.iter().zip(answers) {
                let gone = match answer {
                    Ok(t) if t.workflow_state == CanvasState::Active => false,
                    Ok(t) if t.workflow_state == CanvasState::Deleted => true,
                    Err(CanvasError::NotFound { .. }) => true,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(token.id = %token.id, error = %e, "cannot read a token's state in Canvas");
                        report.unknown += 1;
                        continue;
                    }
                };
                let state = if gone {
                    TokenState::Deleted
                } else {
                    TokenState::Active
                };
                let token_id = token.id;
                let result = self
                    .transition_with(
                        token.request_id,
                        &Ctx::system(),
                        |r| {
                            if gone {
                                request::gone_from_canvas(r, now)
                            } else {
                                request::activated(r, now)
                            }
                        },
                        |tx, r| {
                            Box::pin(async move {
                                store::set_token_state(tx, token_id, state, now).await?;
                                store::close_envelopes_of(tx, r.id, EnvelopeState::Burned).await?;
                                Ok(())
                            })
                        },
                    )
                    .await;
                match result {
                    Ok((r, ())) if r.state == RequestState::Activated => report.activated += 1,
                    Ok(_) => report.gone_from_canvas += 1,
                    Err(e) => {
                        tracing::warn!(token.id = %token.id, error = %e, "activation not recorded")
                    }
                }
            }
        }
        Ok(report)
    }
}
