//! Issuing a token for an approved request: find the person in Canvas, remove any token an
//! earlier attempt left behind, create the token, seal it, and record it through the one
//! transition path (state, token, envelope, audit, a held delivery email and the job's end in
//! one transaction); then send the delivery email from memory. The envelope key never rests in
//! the database.

use serde_json::json;
use tokendesk_canvas::{CanvasError, NewToken, TokenRef, TokenState as CanvasState, UserRef};

use super::{App, AppResult, Ctx, WorkError};
use crate::domain::request::{self, RequestState};
use crate::domain::{DomainError, EmailKind, RequestId, TokenState};
use crate::store::{self, ClaimedJob, QueuedEmail, StoreError};

impl App {
    /// Deletes live tokens an earlier attempt made for this request (it died after Canvas
    /// created the token and before tokendesk recorded it), so there is never a second live
    /// token.
    async fn remove_leftovers(&self, user: &UserRef, id: RequestId) -> Result<usize, WorkError> {
        let prefix = request::canvas_purpose(id, "");
        let canvas = &self.parts().canvas;
        let tokens = canvas
            .list_user_tokens(user)
            .await
            .map_err(|e| WorkError::canvas(e, "listing the person's tokens in Canvas"))?;
        let mut removed = 0;
        for t in tokens.iter().filter(|t| {
            t.workflow_state != CanvasState::Deleted
                && t.purpose.as_deref().is_some_and(|p| p.starts_with(&prefix))
        }) {
            match canvas.delete_token(user, &TokenRef::Id(t.id)).await {
                Ok(_) | Err(CanvasError::NotFound { .. }) => removed += 1,
                Err(e) => {
                    return Err(WorkError::canvas(
                        e,
                        "deleting a token left by an earlier attempt",
                    ));
                }
            }
        }
        if removed > 0 {
            tracing::warn!(request.id = %id, removed, "deleted tokens left behind by an earlier attempt");
        }
        Ok(removed)
    }

    /// Ends a job that has nothing (more) to do.
    pub(super) async fn job_finished(&self, job: &ClaimedJob) -> Result<(), WorkError> {
        let mut tx = self.write().await?;
        store::job_done(&mut tx, job.id, self.now()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The issuance job of an approved request.
    pub(super) async fn issue(&self, job: &ClaimedJob) -> Result<(), WorkError> {
        let Some(id) = job.request_id else {
            return self.job_finished(job).await;
        };
        let mut conn = self.read().await?;
        let request = store::get_request(&mut conn, id)
            .await?
            .ok_or_else(|| WorkError::Permanent(format!("request {id} does not exist")))?;
        drop(conn);
        if request.state != RequestState::Approved {
            // Cancelled, retried elsewhere, or already issued by an instance that lost its lease.
            return self.job_finished(job).await;
        }
        let (user, person) = self.resolve_person(&request.requester).await?;
        self.remove_leftovers(&user, id).await?;
        let canvas = &self.parts().canvas;
        let new = NewToken::new(request::canvas_purpose(id, &request.purpose))
            .expires_at(request::canvas_expiry(request.expires_on));
        let created = canvas
            .create_token(&user, &new)
            .await
            .map_err(|e| WorkError::canvas(e, "creating the token in Canvas"))?;
        let delivery = match self.seal_for(&request, &person, &created.value) {
            Ok(d) => d,
            Err(e) => {
                // Never leave a usable token nobody can receive.
                let _ = canvas
                    .delete_token(&user, &TokenRef::Id(created.token.id))
                    .await;
                return Err(e);
            }
        };
        let now = self.now();
        let state = match created.token.workflow_state {
            CanvasState::Active => TokenState::Active,
            _ => TokenState::Pending,
        };
        let details = json!({
            "canvas_token_id": created.token.id.0,
            "hint": created.token.hint(),
            "envelope_id": delivery.envelope.id,
            "expires_on": request.expires_on.to_string(),
        });
        let canvas_user_id = person.canvas_user_id.unwrap_or_default();
        let canvas_token_id = i64::try_from(created.token.id.0).unwrap_or_default();
        let hint = created.token.hint().to_owned();
        let fingerprint = self.fingerprint_of(secrecy::ExposeSecret::expose_secret(&created.value));
        let held_until = now + self.workers().lease;
        let envelope = delivery.envelope.clone();
        let (nonce, ciphertext) = (delivery.sealed.nonce, delivery.sealed.ciphertext.clone());
        let job_id = job.id;
        let recorded = self
            .transition_with(
                id,
                &Ctx::system(),
                |r| request::issued(r, details, now),
                |tx, issued| {
                    Box::pin(async move {
                        store::insert_token(
                            tx,
                            id,
                            &issued.requester,
                            canvas_user_id,
                            canvas_token_id,
                            &hint,
                            state,
                            request::canvas_expiry(issued.expires_on),
                            now,
                        )
                        .await?;
                        if let Some(fp) = &fingerprint {
                            store::set_token_fingerprint(tx, id, fp).await?;
                        }
                        store::insert_envelope(tx, &envelope, &nonce, &ciphertext).await?;
                        let email_id = store::enqueue_email(
                            tx,
                            EmailKind::Delivery,
                            Some(id),
                            Some(&issued.requester),
                            &QueuedEmail::Notice,
                            Some(held_until),
                            now,
                        )
                        .await?;
                        store::job_done(tx, job_id, now).await?;
                        Ok(email_id)
                    })
                },
            )
            .await;
        let email_id = match recorded {
            Ok((_, email_id)) => email_id,
            Err(e) => {
                // The token exists in Canvas but not here: remove it now (a retry would too).
                let _ = canvas
                    .delete_token(&user, &TokenRef::Id(created.token.id))
                    .await;
                return Err(e.into());
            }
        };
        drop(created);
        self.deliver(email_id, &delivery.email, 1).await?;
        Ok(())
    }

    /// Issuance gave up: the request ends `failed` with the reason shown to approvers, and the
    /// job is buried, in one transaction (or only the job, when the request moved on).
    pub(super) async fn give_up_issuance(&self, job: &ClaimedJob, why: &str) -> AppResult<()> {
        let now = self.now();
        let job_id = job.id;
        fn bury<'t>(
            tx: &'t mut store::Tx,
            job_id: i64,
            why: String,
            now: time::OffsetDateTime,
        ) -> futures::future::BoxFuture<'t, AppResult<()>> {
            Box::pin(async move {
                store::job_retry(tx, job_id, &why, None, now).await?;
                Ok(())
            })
        }
        if let Some(id) = job.request_id {
            match self
                .transition_with(
                    id,
                    &Ctx::system(),
                    |r| request::issue_failed(r, why, now),
                    |tx, _| bury(tx, job_id, why.to_owned(), now),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(super::AppError::Domain(
                    DomainError::WrongState { .. } | DomainError::NotFound,
                )) => {}
                Err(e) => return Err(e),
            }
        }
        let mut tx = self.write().await?;
        bury(&mut tx, job_id, why.to_owned(), now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}
