//! Sending email: notices composed at send time, delivery emails sent from memory (kept sealed
//! under the outbox key when that fails, or re-issued with a fresh value and envelope when there
//! is no key or the sender died), through SMTP or into the mailbox.

use serde_json::json;
use tokendesk_canvas::{CanvasError, TokenRef, UserRef};

use super::issue::{resolve_person, seal_for};
use super::{MAX_ATTEMPTS, WorkError, backoff};
use crate::app::{App, Ctx, Mailer};
use crate::delivery::email::{
    DenialMail, NewRequestMail, OutgoingEmail, RevocationMail, denial_email, new_request_email,
    revocation_email,
};
use crate::delivery::envelope::{open_at_rest, seal_at_rest};
use crate::domain::request::RequestState;
use crate::domain::{AuditRecord, Login, RequestId, SYSTEM};
use crate::store::{self, ClaimedEmail, Person, QueuedEmail, StoreError, TokenState};

fn outbox_aad(id: i64) -> Vec<u8> {
    format!("tokendesk-outbox:{id}").into_bytes()
}

/// Sends a composed email and records the outcome. A delivery email that cannot be sent is kept
/// sealed under the outbox key, or left to be re-issued.
pub(crate) async fn deliver(
    app: &App,
    id: i64,
    email: &OutgoingEmail,
    attempts: u32,
) -> Result<(), StoreError> {
    let result = match &app.mailer {
        Mailer::Mailbox => Ok(()),
        Mailer::Smtp(sender) => sender.send(email).await,
    };
    let now = app.now();
    let mut tx = app.store.write().await?;
    match result {
        Ok(()) => {
            store::email_done(
                &mut tx,
                id,
                email,
                matches!(app.mailer, Mailer::Mailbox),
                now,
            )
            .await?;
        }
        Err(e) => {
            let why = e.to_string();
            let again =
                (e.is_transient() && attempts < MAX_ATTEMPTS).then(|| now + backoff(attempts));
            tracing::warn!(email.id = id, attempts, error = %why, retry = again.is_some(), "email not sent");
            let sealed = match (&app.outbox_key, again, serde_json::to_vec(email)) {
                (Some(key), Some(_), Ok(plain)) => seal_at_rest(key, &outbox_aad(id), &plain).ok(),
                _ => None,
            };
            match (sealed, again) {
                (Some(sealed), Some(at)) => {
                    store::email_seal(&mut tx, id, &email.to, &email.subject, &sealed, &why, at)
                        .await?;
                }
                (_, again) => store::email_retry(&mut tx, id, &why, again).await?,
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Handles one claimed email.
pub(super) async fn run(app: &App, claimed: ClaimedEmail) -> Result<(), StoreError> {
    let composed = match &claimed.email {
        QueuedEmail::Clear(email) => Ok(Some(email.clone())),
        QueuedEmail::Sealed { sealed, .. } => match app
            .outbox_key
            .as_ref()
            .and_then(|key| open_at_rest(key, &outbox_aad(claimed.id), sealed).ok())
            .and_then(|plain| serde_json::from_slice::<OutgoingEmail>(&plain).ok())
        {
            Some(email) => Ok(Some(email)),
            // The outbox key changed: the link is lost, so issue a new one.
            None => reissue(app, &claimed).await,
        },
        QueuedEmail::Notice if claimed.kind == "delivery" => reissue(app, &claimed).await,
        QueuedEmail::Notice => compose(app, &claimed).await,
    };
    match composed {
        Ok(Some(email)) => deliver(app, claimed.id, &email, claimed.attempts).await,
        Ok(None) => {
            let mut tx = app.store.write().await?;
            store::email_retry(&mut tx, claimed.id, "no longer needed", None).await?;
            tx.commit().await?;
            Ok(())
        }
        Err(e) => {
            let now = app.now();
            let again = match &e {
                WorkError::Transient(_) if claimed.attempts < MAX_ATTEMPTS => {
                    Some(now + backoff(claimed.attempts))
                }
                _ => None,
            };
            tracing::warn!(email.id = claimed.id, kind = %claimed.kind, error = %e, "email not composed");
            let mut tx = app.store.write().await?;
            store::email_retry(&mut tx, claimed.id, &e.to_string(), again).await?;
            tx.commit().await?;
            Ok(())
        }
    }
}

/// The recipient's address and name: known to tokendesk, or looked up in Canvas.
async fn recipient(app: &App, login: &str) -> Result<Person, WorkError> {
    let login = Login::parse(login).map_err(|e| WorkError::Permanent(e.message))?;
    let mut conn = app.read().await?;
    if let Some(p) = store::person(&mut conn, &login).await?
        && p.email.is_some()
    {
        return Ok(p);
    }
    drop(conn);
    Ok(resolve_person(app, &login).await?.1)
}

async fn request_of(
    app: &App,
    id: Option<RequestId>,
) -> Result<crate::domain::request::Request, WorkError> {
    let id = id.ok_or_else(|| WorkError::Permanent("the email names no request".into()))?;
    let mut conn = app.read().await?;
    store::get_request(&mut conn, id)
        .await?
        .ok_or_else(|| WorkError::Permanent(format!("request {id} does not exist")))
}

/// Composes a notice for its recipient.
async fn compose(app: &App, claimed: &ClaimedEmail) -> Result<Option<OutgoingEmail>, WorkError> {
    let login = claimed
        .to_login
        .as_deref()
        .ok_or_else(|| WorkError::Permanent("the email names no recipient".into()))?;
    let person = recipient(app, login).await?;
    let to = person
        .email
        .clone()
        .ok_or_else(|| WorkError::Permanent(format!("no email address is known for {login}")))?;
    let request = request_of(app, claimed.request_id).await?;
    let name = person.name.as_deref();
    let portal = app.page_url("/requests/new");
    let composed = match claimed.kind.as_str() {
        "new_request" => {
            let requester = recipient(app, request.requester.as_str()).await.ok();
            let review = app.page_url(&format!("/requests/{}", request.id));
            new_request_email(&NewRequestMail {
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
                product_name: &app.product_name,
            })
        }
        "denied" => denial_email(&DenialMail {
            to: &to,
            to_name: name,
            request_id: request.id.0,
            reason: request.reason.as_deref().unwrap_or(""),
            portal_url: Some(&portal),
            product_name: &app.product_name,
        }),
        "revoked" => {
            let mut conn = app.read().await?;
            let token = store::token_for_request(&mut conn, request.id).await?;
            revocation_email(&RevocationMail {
                to: &to,
                to_name: name,
                request_id: Some(request.id.0),
                token_hint: token.as_ref().map(|t| t.hint.as_str()),
                reason: request.reason.as_deref().unwrap_or(""),
                portal_url: Some(&portal),
                product_name: &app.product_name,
            })
        }
        other => {
            return Err(WorkError::Permanent(format!(
                "unknown email kind {other:?}"
            )));
        }
    };
    composed
        .map(Some)
        .map_err(|e| WorkError::Permanent(format!("composing: {e}")))
}

/// The delivery email's link was lost (its key lived only in the memory of a sender that died,
/// or sending failed without an outbox key): regenerate the token in Canvas, seal a new
/// envelope, close the old one, and send a new link.
async fn reissue(app: &App, claimed: &ClaimedEmail) -> Result<Option<OutgoingEmail>, WorkError> {
    let request = request_of(app, claimed.request_id).await?;
    let mut conn = app.read().await?;
    let token = store::token_for_request(&mut conn, request.id).await?;
    drop(conn);
    let token = match token {
        Some(t) if request.state == RequestState::Issued && t.state == TokenState::Pending => t,
        // Activated, revoked or expired since: there is nothing to deliver any more.
        _ => return Ok(None),
    };
    let (_, person) = resolve_person(app, &request.requester).await?;
    let user = UserRef::Id(tokendesk_canvas::CanvasUserId(
        token.canvas_user_id.unsigned_abs(),
    ));
    let canvas_id = TokenRef::Id(tokendesk_canvas::CanvasTokenId(
        token.canvas_token_id.unsigned_abs(),
    ));
    let regenerated = app
        .canvas
        .regenerate_token(&user, &canvas_id, None)
        .await
        .map_err(|e| match e {
            CanvasError::NotFound { .. } => {
                WorkError::Permanent("the token no longer exists in Canvas".into())
            }
            e if e.is_transient() => WorkError::Transient(format!("regenerating the token: {e}")),
            e => WorkError::Permanent(format!("regenerating the token: {e}")),
        })?;
    let delivery = seal_for(app, &request, &person, &regenerated.value)?;
    let now = app.now();
    let mut tx = app.store.write().await?;
    store::close_envelopes_of(&mut tx, request.id, "burned").await?;
    store::insert_envelope(
        &mut tx,
        &delivery.envelope,
        &delivery.sealed.nonce,
        &delivery.sealed.ciphertext,
    )
    .await?;
    store::set_token_hint(&mut tx, token.id, regenerated.token.hint(), now).await?;
    let record = AuditRecord {
        actor: SYSTEM.to_owned(),
        action: "request.reissue_link",
        target: format!("request:{}", request.id),
        outcome: "ok",
        details: json!({"envelope_id": delivery.envelope.id, "hint": regenerated.token.hint()}),
    };
    app.audit(&mut tx, &record, &Ctx::system()).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Some(delivery.email))
}
