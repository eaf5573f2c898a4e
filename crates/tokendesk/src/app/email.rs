//! Sending a queued email: a notice composed now from its kind, request and recipient, or a
//! delivery email (opened from its sealed copy, or re-issued with a fresh value and envelope
//! when there is no key or the sender died), through SMTP or into the mailbox.

use serde_json::json;
use tokendesk_canvas::{CanvasError, CanvasTokenId, CanvasUserId, TokenRef, UserRef};

use super::delivery::outbox_aad;
use super::{App, AppResult, Ctx, WorkError, backoff};
use crate::delivery::email::{
    BulkRevokedMail, DenialMail, DigestItem, DigestMail, ExpiredUnusedMail, ExtendedMail,
    LeakReportedMail, NewRequestMail, OutgoingEmail, ReminderMail, RevocationMail,
    UnusedWarningMail, compose,
};
use crate::delivery::envelope::open_at_rest;
use crate::domain::envelope::EnvelopeState;
use crate::domain::request::{self, Request, RequestState};
use crate::domain::{Actor, DomainError, EmailKind, Login, RequestId, TokenState};
use crate::store::{self, ClaimedEmail, Person, QueuedEmail, StoreError};

use super::work::MAX_ATTEMPTS;

impl App {
    /// Sends a claimed email; a failure is retried later with back-off, or given up.
    pub async fn send_email(&self, claimed: ClaimedEmail) -> AppResult<()> {
        let composed = match (claimed.kind, &claimed.email) {
            (_, QueuedEmail::Clear(email)) => Ok(Some(email.clone())),
            (EmailKind::Delivery, QueuedEmail::Sealed { sealed, .. }) => match self
                .parts()
                .outbox_key
                .as_ref()
                .and_then(|key| open_at_rest(key, &outbox_aad(claimed.id), sealed).ok())
                .and_then(|plain| serde_json::from_slice::<OutgoingEmail>(&plain).ok())
            {
                Some(email) => Ok(Some(email)),
                // The outbox key changed: the link is lost, so issue a new one.
                None => self.reissue(&claimed).await,
            },
            (EmailKind::Delivery, _) => self.reissue(&claimed).await,
            (kind, _) => self.compose(kind, &claimed).await,
        };
        match composed {
            Ok(Some(email)) => self.deliver(claimed.id, &email, claimed.attempts).await,
            Ok(None) => {
                crate::telemetry::email_dropped();
                let mut tx = self.write().await?;
                store::email_retry(&mut tx, claimed.id, "no longer needed", None).await?;
                tx.commit().await.map_err(StoreError::from)?;
                Ok(())
            }
            Err(e) => {
                let now = self.now();
                let again = match &e {
                    WorkError::Transient(_) if claimed.attempts < MAX_ATTEMPTS => {
                        Some(now + backoff(claimed.attempts))
                    }
                    _ => None,
                };
                tracing::warn!(email.id = claimed.id, kind = %claimed.kind, error = %e, "email not composed");
                crate::telemetry::email_failed("compose", again.is_some());
                let mut tx = self.write().await?;
                self.audit_email_failure(
                    &mut tx,
                    claimed.id,
                    claimed.attempts,
                    &e.to_string(),
                    again.is_some(),
                )
                .await?;
                store::email_retry(&mut tx, claimed.id, &e.to_string(), again).await?;
                tx.commit().await.map_err(StoreError::from)?;
                Ok(())
            }
        }
    }

    /// The recipient's address and name: known to tokendesk, or looked up in Canvas.
    async fn recipient(&self, login: &str) -> Result<Person, WorkError> {
        let login = Login::parse(login).map_err(|e| WorkError::Permanent(e.message))?;
        let mut conn = self.read().await?;
        if let Some(p) = store::person(&mut conn, &login).await?
            && p.email.is_some()
        {
            return Ok(p);
        }
        drop(conn);
        Ok(self.resolve_person(&login).await?.1)
    }

    async fn request_of(&self, id: Option<RequestId>) -> Result<Request, WorkError> {
        let id = id.ok_or_else(|| WorkError::Permanent("the email names no request".into()))?;
        let mut conn = self.read().await?;
        store::get_request(&mut conn, id)
            .await?
            .ok_or_else(|| WorkError::Permanent(format!("request {id} does not exist")))
    }

    /// Composes a notice for its recipient.
    async fn compose(
        &self,
        kind: EmailKind,
        claimed: &ClaimedEmail,
    ) -> Result<Option<OutgoingEmail>, WorkError> {
        let login = claimed
            .to_login
            .as_deref()
            .ok_or_else(|| WorkError::Permanent("the email names no recipient".into()))?;
        let person = self.recipient(login).await?;
        let to = person.email.clone().ok_or_else(|| {
            WorkError::Permanent(format!("no email address is known for {login}"))
        })?;
        let name = person.name.as_deref();
        let portal = self.page_url("/requests/new");
        let product_name = &self.parts().product_name;
        if kind == EmailKind::Digest {
            return self
                .compose_digest(&to, name, login, claimed.created_at)
                .await;
        }
        let request = self.request_of(claimed.request_id).await?;
        let token_url = {
            let mut conn = self.read().await?;
            let token = store::token_for_request(&mut conn, request.id).await?;
            token.map_or_else(
                || self.page_url("/me"),
                |t| self.page_url(&format!("/tokens/{}", t.id)),
            )
        };
        let composed = match kind {
            EmailKind::Reminder => compose(&ReminderMail {
                to: &to,
                to_name: name,
                request_id: request.id.0,
                purpose: &request.purpose,
                expires_on: request.expires_on,
                days_left: (request.expires_on - self.now().date()).whole_days(),
                token_url: &token_url,
                product_name,
            }),
            EmailKind::ExpiredUnused => compose(&ExpiredUnusedMail {
                to: &to,
                to_name: name,
                request_id: request.id.0,
                reason: request.reason.as_deref().unwrap_or(""),
                portal_url: &portal,
                product_name,
            }),
            EmailKind::Extended => compose(&ExtendedMail {
                to: &to,
                to_name: name,
                request_id: request.id.0,
                expires_on: request.expires_on,
                token_url: &token_url,
                product_name,
            }),
            EmailKind::UnusedWarning => compose(&UnusedWarningMail {
                to: &to,
                to_name: name,
                request_id: request.id.0,
                days: self.policy().revoke_unused_days,
                revoke_on: (claimed.created_at + super::lifecycle::UNUSED_WARNING).date(),
                token_url: &token_url,
                product_name,
            }),
            EmailKind::Digest => unreachable_digest()?,
            EmailKind::LeakReported => {
                let mut conn = self.read().await?;
                let token = store::token_for_request(&mut conn, request.id).await?;
                let audit = self.page_url(&format!("/audit?target=request:{}", request.id));
                compose(&LeakReportedMail {
                    to: &to,
                    to_name: name,
                    owner: request.requester.as_str(),
                    request_id: request.id.0,
                    token_hint: token.as_ref().map_or("", |t| t.hint.as_str()),
                    token_url: &token_url,
                    audit_url: &audit,
                    product_name,
                })
            }
            EmailKind::BulkRevoked => {
                let mut conn = self.read().await?;
                let Some((reason, tokens)) =
                    store::run_tokens_of(&mut conn, request.id, login).await?
                else {
                    return Ok(None);
                };
                compose(&BulkRevokedMail {
                    to: &to,
                    to_name: name,
                    reason: &reason,
                    tokens: &tokens,
                    portal_url: &portal,
                    product_name,
                })
            }
            EmailKind::NewRequest => {
                let requester = self.recipient(request.requester.as_str()).await.ok();
                let review = self.page_url(&format!("/requests/{}", request.id));
                compose(&NewRequestMail {
                    to: &to,
                    to_name: name,
                    requester_name: requester
                        .as_ref()
                        .and_then(|p| p.name.as_deref())
                        .unwrap_or(request.requester.as_str()),
                    requester_login: request.requester.as_str(),
                    request_id: request.id.0,
                    purpose: &request.purpose,
                    expires_on: request.requested_expires_on,
                    review_url: &review,
                    product_name,
                })
            }
            EmailKind::Denied => compose(&DenialMail {
                to: &to,
                to_name: name,
                request_id: request.id.0,
                reason: request.reason.as_deref().unwrap_or(""),
                portal_url: Some(&portal),
                product_name,
            }),
            EmailKind::Revoked => {
                let mut conn = self.read().await?;
                let token = store::token_for_request(&mut conn, request.id).await?;
                compose(&RevocationMail {
                    to: &to,
                    to_name: name,
                    request_id: Some(request.id.0),
                    token_hint: token.as_ref().map(|t| t.hint.as_str()),
                    reason: request.reason.as_deref().unwrap_or(""),
                    portal_url: Some(&portal),
                    product_name,
                })
            }
            EmailKind::Delivery => {
                return Err(WorkError::Permanent(
                    "a delivery email is not composed from a notice".into(),
                ));
            }
        };
        composed
            .map(Some)
            .map_err(|e| WorkError::Permanent(format!("composing: {e}")))
    }

    /// An approver's digest: every request still waiting (but their own), oldest first, those
    /// that arrived in the digest's period marked new. Nothing when none is left waiting.
    async fn compose_digest(
        &self,
        to: &str,
        name: Option<&str>,
        login: &str,
        queued_at: time::OffsetDateTime,
    ) -> Result<Option<OutgoingEmail>, WorkError> {
        let period = time::Duration::minutes(i64::from(
            self.parts().notify.approver_digest_minutes.max(1),
        ));
        let mut conn = self.read().await?;
        let waiting =
            store::submitted_since(&mut conn, time::OffsetDateTime::UNIX_EPOCH, 200).await?;
        drop(conn);
        let items: Vec<DigestItem> = waiting
            .iter()
            .filter(|r| r.requester.as_str() != login)
            .map(|r| DigestItem {
                request_id: r.id.0,
                requester: r.requester.to_string(),
                purpose: r.purpose.clone(),
                expires_on: r.requested_expires_on,
                renews: r.renews.map(|id| id.0),
                new: r.created_at > queued_at - period,
                url: self.page_url(&format!("/requests/{}", r.id)),
            })
            .collect();
        if items.is_empty() {
            return Ok(None);
        }
        let queue = self.page_url("/queue");
        compose(&DigestMail {
            to,
            to_name: name,
            items: &items,
            queue_url: &queue,
            product_name: &self.parts().product_name,
        })
        .map(Some)
        .map_err(|e| WorkError::Permanent(format!("composing: {e}")))
    }

    /// The delivery email's link was lost (its key lived only in the memory of a sender that
    /// died, or sending failed without an outbox key): regenerate the token in Canvas, seal a
    /// new envelope, close the old one, and send a new link.
    async fn reissue(&self, claimed: &ClaimedEmail) -> Result<Option<OutgoingEmail>, WorkError> {
        let request = self.request_of(claimed.request_id).await?;
        let mut conn = self.read().await?;
        let token = store::token_for_request(&mut conn, request.id).await?;
        drop(conn);
        let token = match token {
            Some(t) if request.state == RequestState::Issued && t.state == TokenState::Pending => t,
            // Activated, revoked or expired since: there is nothing to deliver any more.
            _ => return Ok(None),
        };
        let (delivery, hint) = self.regenerate_and_seal(&request, &token).await?;
        let now = self.now();
        let details = json!({"envelope_id": delivery.envelope.id, "hint": hint});
        let envelope = delivery.envelope.clone();
        let (nonce, ciphertext) = (delivery.sealed.nonce, delivery.sealed.ciphertext.clone());
        let token_id = token.id;
        self.transition_with(
            request.id,
            &Ctx::system(),
            |r| request::link_reissued(r, details, now),
            |tx, r| {
                Box::pin(async move {
                    store::close_envelopes_of(tx, r.id, EnvelopeState::Burned).await?;
                    store::insert_envelope(tx, &envelope, &nonce, &ciphertext).await?;
                    store::set_token_hint(tx, token_id, &hint, now).await?;
                    Ok(())
                })
            },
        )
        .await?;
        Ok(Some(delivery.email))
    }

    /// A new value for an issued token (regenerated in Canvas, which puts it back to pending)
    /// sealed in a new envelope, with its delivery email (in memory), and the new hint.
    pub(super) async fn regenerate_and_seal(
        &self,
        request: &Request,
        token: &crate::store::StoredToken,
    ) -> Result<(super::delivery::Delivery, String), WorkError> {
        let (_, person) = self.resolve_person(&request.requester).await?;
        let user = UserRef::Id(CanvasUserId(token.canvas_user_id.unsigned_abs()));
        let canvas_id = TokenRef::Id(CanvasTokenId(token.canvas_token_id.unsigned_abs()));
        let regenerated = self
            .parts()
            .canvas
            .regenerate_token(&user, &canvas_id, None)
            .await
            .map_err(|e| match e {
                CanvasError::NotFound { .. } => {
                    WorkError::Permanent("the token no longer exists in Canvas".into())
                }
                e => WorkError::canvas(e, "regenerating the token"),
            })?;
        let delivery = self.seal_for(request, &person, &regenerated.value)?;
        Ok((delivery, regenerated.token.hint().to_owned()))
    }

    /// The help desk sends a new delivery link (while the token is pending and its link was
    /// never opened, or has expired): a new value regenerated in Canvas, sealed in a new
    /// envelope; the old envelope is closed; the new link is emailed; all audited.
    pub async fn resend_link(&self, actor: &Actor, id: RequestId, ctx: &Ctx) -> AppResult<Request> {
        let view = self.request(actor, id).await?;
        let delivery_now = self.delivery_of(&view);
        // Ask the rules first, so that Canvas is not touched for a refused re-send.
        request::may_resend_link(&view.request, actor, delivery_now)?;
        let token = view.token.clone().ok_or(DomainError::Conflict {
            code: "no_token",
            message: "there is no token to send a link for".into(),
        })?;
        let (delivery, hint) = self
            .regenerate_and_seal(&view.request, &token)
            .await
            .map_err(|e| match e {
                WorkError::Transient(why) => super::AppError::Canvas(CanvasError::Unavailable {
                    status: None,
                    detail: why,
                }),
                WorkError::Permanent(why) => DomainError::Conflict {
                    code: "cannot_resend",
                    message: why,
                }
                .into(),
            })?;
        let now = self.now();
        let details = json!({"envelope_id": delivery.envelope.id, "hint": hint});
        let envelope = delivery.envelope.clone();
        let (nonce, ciphertext) = (delivery.sealed.nonce, delivery.sealed.ciphertext.clone());
        let held_until = now + self.workers().lease;
        let token_id = token.id;
        let (request, email_id) = self
            .transition_with(
                id,
                ctx,
                |r| request::link_resent(r, actor, delivery_now, details, now),
                |tx, r| {
                    Box::pin(async move {
                        store::close_envelopes_of(tx, r.id, EnvelopeState::Burned).await?;
                        store::insert_envelope(tx, &envelope, &nonce, &ciphertext).await?;
                        store::set_token_hint(tx, token_id, &hint, now).await?;
                        let email_id = store::enqueue_email(
                            tx,
                            EmailKind::Delivery,
                            Some(r.id),
                            Some(&r.requester),
                            &QueuedEmail::Notice,
                            Some(held_until),
                            now,
                        )
                        .await?;
                        Ok(email_id)
                    })
                },
            )
            .await?;
        self.deliver(email_id, &delivery.email, 1).await?;
        Ok(request)
    }
}

/// A digest names no request: it is composed before the request is looked up.
fn unreachable_digest()
-> Result<Result<OutgoingEmail, crate::delivery::email::EmailError>, WorkError> {
    Err(WorkError::Permanent(
        "a digest is composed on its own".into(),
    ))
}
