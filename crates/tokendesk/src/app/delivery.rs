//! Delivering a token: sealing its value in a fresh envelope with the email that carries the
//! link (in memory only), and sending an email through the configured transport.

use secrecy::SecretString;

use super::{App, AppResult, Mailer, WorkError, backoff};
use crate::delivery::email::{ApprovalMail, OutgoingEmail, compose};
use crate::delivery::envelope::{self, EnvelopeId, EnvelopeKey, Sealed, seal_at_rest};
use crate::domain::envelope::{Envelope, EnvelopeState};
use crate::domain::request::Request;
use crate::store::{self, Person, StoreError};

use super::work::MAX_ATTEMPTS;

/// A freshly sealed envelope and the email that carries its link.
pub(super) struct Delivery {
    pub envelope: Envelope,
    pub sealed: Sealed,
    pub email: OutgoingEmail,
}

/// The associated data of an email sealed under the outbox key.
pub(super) fn outbox_aad(id: i64) -> Vec<u8> {
    format!("tokendesk-outbox:{id}").into_bytes()
}

impl App {
    /// Seals a value for a request's owner and composes the delivery email (link in memory only).
    pub(super) fn seal_for(
        &self,
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
        let now = self.now();
        let id = EnvelopeId::generate();
        let key = EnvelopeKey::generate();
        let sealed = envelope::seal(&id, &key, value)
            .map_err(|e| WorkError::Permanent(format!("sealing: {e}")))?;
        let link = envelope::delivery_link(self.public_url(), &id, &key);
        let env = Envelope {
            id: id.as_str().to_owned(),
            request_id: request.id,
            owner: request.requester.clone(),
            state: EnvelopeState::Sealed,
            reveals: 0,
            created_at: now,
            expires_at: Envelope::expiry_for(&self.policy(), now),
        };
        let settings = self.canvas_settings_url();
        let email = compose(&ApprovalMail {
            to,
            to_name: person.name.as_deref(),
            request_id: request.id.0,
            link: &link,
            link_expires_at: env.expires_at,
            token_expires_on: request.expires_on,
            canvas_settings_url: &settings,
            product_name: &self.parts().product_name,
        })
        .map_err(|e| WorkError::Permanent(format!("composing the delivery email: {e}")))?;
        Ok(Delivery {
            envelope: env,
            sealed,
            email,
        })
    }

    /// Sends a composed email and records the outcome. A delivery email that cannot be sent is
    /// kept sealed under the outbox key, or left to be re-issued.
    pub(super) async fn deliver(
        &self,
        id: i64,
        email: &OutgoingEmail,
        attempts: u32,
    ) -> AppResult<()> {
        let result = match &self.parts().mailer {
            Mailer::Mailbox => Ok(()),
            Mailer::Smtp(sender) => sender.send(email).await,
        };
        let now = self.now();
        let mut tx = self.write().await?;
        match result {
            Ok(()) => {
                crate::telemetry::email_sent();
                tracing::info!(email.id = id, attempts, "email sent");
                store::email_done(&mut tx, id, email, self.uses_mailbox(), now).await?;
            }
            Err(e) => {
                let why = e.to_string();
                let again =
                    (e.is_transient() && attempts < MAX_ATTEMPTS).then(|| now + backoff(attempts));
                tracing::warn!(email.id = id, attempts, error = %why, retry = again.is_some(), "email not sent");
                crate::telemetry::email_failed("send", again.is_some());
                self.audit_email_failure(&mut tx, id, attempts, &why, again.is_some())
                    .await?;
                let sealed = match (&self.parts().outbox_key, again, serde_json::to_vec(email)) {
                    (Some(key), Some(_), Ok(plain)) => {
                        seal_at_rest(key, &outbox_aad(id), &plain).ok()
                    }
                    _ => None,
                };
                match (sealed, again) {
                    (Some(sealed), Some(at)) => {
                        store::email_seal(
                            &mut tx,
                            id,
                            &email.to,
                            &email.subject,
                            &sealed,
                            &why,
                            at,
                        )
                        .await?;
                    }
                    (_, again) => store::email_retry(&mut tx, id, &why, again).await?,
                }
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Every failed attempt at an email is in the audit trail: its id, the attempt, whether it
    /// will be tried again, and the server's answer (never the message).
    pub(super) async fn audit_email_failure(
        &self,
        tx: &mut store::Tx,
        id: i64,
        attempts: u32,
        why: &str,
        retry: bool,
    ) -> AppResult<()> {
        let record = crate::domain::AuditRecord {
            actor: crate::domain::SYSTEM.into(),
            action: if retry {
                "email.retry"
            } else {
                "email.give_up"
            },
            target: format!("email:{id}"),
            outcome: "failed",
            details: serde_json::json!({ "attempt": attempts, "error": why }),
        };
        self.audit(tx, &record, &super::Ctx::system()).await
    }
}
