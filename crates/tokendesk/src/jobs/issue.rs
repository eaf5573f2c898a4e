//! Issuing a token for an approved request: find the person in Canvas, remove any token an
//! earlier attempt left behind, create the token, seal it, record it (token, envelope, state,
//! audit and a held delivery email in one transaction), then send the delivery email from
//! memory. The envelope key never rests in the database.

use secrecy::SecretString;
use serde_json::json;
use tokendesk_canvas::{CanvasError, NewToken, TokenRef, TokenState as CanvasState, UserRef};

use super::{WorkError, email};
use crate::app::{App, Ctx};
use crate::delivery::email::{ApprovalMail, OutgoingEmail, approval_email};
use crate::delivery::envelope::{self, EnvelopeId, EnvelopeKey, Sealed};
use crate::domain::envelope::{Envelope, EnvelopeState};
use crate::domain::request::{self, Request, RequestState};
use crate::domain::{Login, RequestId};
use crate::store::{self, ClaimedJob, Person, QueuedEmail, StoreError, TokenState};

fn canvas_error(e: CanvasError, doing: &str) -> WorkError {
    let message = format!("{doing}: {e}");
    if e.is_transient() {
        WorkError::Transient(message)
    } else {
        WorkError::Permanent(message)
    }
}

/// The person in Canvas, remembered with their name and address.
pub(crate) async fn resolve_person(
    app: &App,
    login: &Login,
) -> Result<(UserRef, Person), WorkError> {
    let reference = app.canvas_user_ref(login);
    let user = app.canvas.get_user(&reference).await.map_err(|e| match e {
        CanvasError::NotFound { .. } => WorkError::Permanent(format!(
            "Canvas has no user {reference} for the login {login}; check canvas.user_id_pattern"
        )),
        other => canvas_error(other, "looking the person up in Canvas"),
    })?;
    let person = Person {
        login: login.clone(),
        name: Some(user.name.clone()),
        email: user.email.clone(),
        canvas_user_id: i64::try_from(user.id.0).ok(),
    };
    let mut tx = app.store.write().await?;
    store::upsert_person(&mut tx, &person, app.now()).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok((UserRef::Id(user.id), person))
}

/// Deletes live tokens an earlier attempt made for this request (it died after Canvas created
/// the token and before tokendesk recorded it), so there is never a second live token.
async fn remove_orphans(app: &App, user: &UserRef, id: RequestId) -> Result<usize, WorkError> {
    let prefix = request::canvas_purpose(id, "");
    let tokens = app
        .canvas
        .list_user_tokens(user)
        .await
        .map_err(|e| canvas_error(e, "listing the person's tokens in Canvas"))?;
    let mut removed = 0;
    for t in tokens.iter().filter(|t| {
        t.workflow_state != CanvasState::Deleted
            && t.purpose.as_deref().is_some_and(|p| p.starts_with(&prefix))
    }) {
        match app.canvas.delete_token(user, &TokenRef::Id(t.id)).await {
            Ok(_) | Err(CanvasError::NotFound { .. }) => removed += 1,
            Err(e) => {
                return Err(canvas_error(
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

/// A freshly sealed envelope and the email that carries its link.
pub(crate) struct Delivery {
    pub envelope: Envelope,
    pub sealed: Sealed,
    pub email: OutgoingEmail,
}

/// Seals a value for a request's owner and composes the delivery email (link in memory only).
pub(crate) fn seal_for(
    app: &App,
    request: &Request,
    person: &Person,
    value: &SecretString,
) -> Result<Delivery, WorkError> {
    let to = person.email.as_deref().ok_or_else(|| {
        WorkError::Permanent(format!(
            "Canvas has no email address for {}; the link cannot be sent",
            person.login
        ))
    })?;
    let now = app.now();
    let id = EnvelopeId::generate();
    let key = EnvelopeKey::generate();
    let sealed = envelope::seal(&id, &key, value)
        .map_err(|e| WorkError::Permanent(format!("sealing: {e}")))?;
    let link = envelope::delivery_link(&app.public_url, &id, &key);
    let env = Envelope {
        id: id.as_str().to_owned(),
        request_id: request.id,
        owner: request.requester.clone(),
        state: EnvelopeState::Sealed,
        reveals: 0,
        created_at: now,
        expires_at: Envelope::expiry_for(&app.policy, now),
    };
    let settings = app.canvas_settings_url();
    let email = approval_email(&ApprovalMail {
        to,
        to_name: person.name.as_deref(),
        request_id: request.id.0,
        link: &link,
        link_expires_at: env.expires_at,
        token_expires_on: request.expires_on,
        canvas_settings_url: &settings,
        product_name: &app.product_name,
    })
    .map_err(|e| WorkError::Permanent(format!("composing the delivery email: {e}")))?;
    Ok(Delivery {
        envelope: env,
        sealed,
        email,
    })
}

pub(super) async fn run(app: &App, job: &ClaimedJob) -> Result<(), WorkError> {
    let Some(id) = job.request_id else {
        return finish(app, job).await;
    };
    let mut conn = app.read().await?;
    let request = store::get_request(&mut conn, id)
        .await?
        .ok_or_else(|| WorkError::Permanent(format!("request {id} does not exist")))?;
    drop(conn);
    if request.state != RequestState::Approved {
        // Cancelled, retried elsewhere, or already issued by an instance that lost its lease.
        return finish(app, job).await;
    }
    let (user, person) = resolve_person(app, &request.requester).await?;
    remove_orphans(app, &user, id).await?;
    let new = NewToken::new(request::canvas_purpose(id, &request.purpose))
        .expires_at(request::canvas_expiry(request.expires_on));
    let created = app
        .canvas
        .create_token(&user, &new)
        .await
        .map_err(|e| canvas_error(e, "creating the token in Canvas"))?;
    let delivery = match seal_for(app, &request, &person, &created.value) {
        Ok(d) => d,
        Err(e) => {
            // Never leave a usable token nobody can receive.
            let _ = app
                .canvas
                .delete_token(&user, &TokenRef::Id(created.token.id))
                .await;
            return Err(e);
        }
    };
    let now = app.now();
    let state = match created.token.workflow_state {
        CanvasState::Active => TokenState::Active,
        _ => TokenState::Pending,
    };
    let recorded = async {
        let mut tx = app.store.write().await?;
        let change = request::issued(
            &request,
            json!({
                "canvas_token_id": created.token.id.0,
                "hint": created.token.hint(),
                "envelope_id": delivery.envelope.id,
                "expires_on": request.expires_on.to_string(),
            }),
            now,
        )
        .map_err(|e| WorkError::Permanent(e.to_string()))?;
        store::update_request(&mut tx, RequestState::Approved, &change.state).await?;
        store::insert_token(
            &mut tx,
            id,
            &request.requester,
            person.canvas_user_id.unwrap_or_default(),
            i64::try_from(created.token.id.0).unwrap_or_default(),
            created.token.hint(),
            state,
            request::canvas_expiry(request.expires_on),
            now,
        )
        .await?;
        store::insert_envelope(
            &mut tx,
            &delivery.envelope,
            &delivery.sealed.nonce,
            &delivery.sealed.ciphertext,
        )
        .await?;
        app.audit(&mut tx, &change.audit, &Ctx::system()).await?;
        let email_id = store::enqueue_email(
            &mut tx,
            "delivery",
            Some(id),
            Some(&request.requester),
            &QueuedEmail::Notice,
            Some(now + app.workers().lease),
            now,
        )
        .await?;
        store::job_done(&mut tx, job.id, now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<i64, WorkError>(email_id)
    }
    .await;
    let email_id = match recorded {
        Ok(email_id) => email_id,
        Err(e) => {
            // The token exists in Canvas but not here: remove it now (a retry would too).
            let _ = app
                .canvas
                .delete_token(&user, &TokenRef::Id(created.token.id))
                .await;
            return Err(e);
        }
    };
    drop(created);
    app.wake();
    email::deliver(app, email_id, &delivery.email, 1).await?;
    Ok(())
}

async fn finish(app: &App, job: &ClaimedJob) -> Result<(), WorkError> {
    let mut tx = app.store.write().await?;
    store::job_done(&mut tx, job.id, app.now()).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// Issuance gave up: the request ends `failed` with the reason shown to approvers.
pub(super) async fn give_up(app: &App, job: &ClaimedJob, why: &str) -> Result<(), StoreError> {
    let now = app.now();
    let mut tx = app.store.write().await?;
    store::job_retry(&mut tx, job.id, why, None, now).await?;
    if let Some(id) = job.request_id
        && let Some(current) = store::get_request(&mut tx, id).await?
        && let Ok(change) = request::issue_failed(&current, why, now)
    {
        store::update_request(&mut tx, current.state, &change.state).await?;
        store::append_audit(&mut tx, app.store.backend(), &change.audit, now, None).await?;
    }
    tx.commit().await?;
    Ok(())
}
