//! Delivery envelopes: what the owner sees, revealing the ciphertext, burning it.

use time::OffsetDateTime;

use super::{App, AppResult, Ctx};
use crate::delivery::envelope::Sealed;
use crate::domain::envelope::{self, Envelope, EnvelopeState};
use crate::domain::{Actor, DomainError, Login, RequestId};
use crate::store::{self, StoreError};

/// An envelope as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeView {
    pub id: String,
    pub request_id: RequestId,
    pub owner: Login,
    pub state: EnvelopeState,
    pub expires_at: OffsetDateTime,
    pub reveals_left: u32,
}

impl App {
    fn view(&self, e: &Envelope) -> EnvelopeView {
        let now = self.now();
        EnvelopeView {
            id: e.id.clone(),
            request_id: e.request_id,
            owner: e.owner.clone(),
            state: e.state_at(now),
            expires_at: e.expires_at,
            reveals_left: e.reveals_left(&self.policy(), now),
        }
    }

    /// The envelope, for its owner only (anyone else: not found).
    pub async fn envelope(&self, actor: &Actor, id: &str) -> AppResult<EnvelopeView> {
        let mut conn = self.read().await?;
        let stored = store::get_envelope(&mut conn, id)
            .await?
            .filter(|e| e.envelope.owner == actor.login)
            .ok_or(DomainError::NotFound)?;
        Ok(self.view(&stored.envelope))
    }

    /// Hands the owner the ciphertext (counted as a reveal); the key is in their link only.
    pub async fn reveal(
        &self,
        actor: &Actor,
        id: &str,
        ctx: &Ctx,
    ) -> AppResult<(Sealed, EnvelopeView)> {
        let now = self.now();
        let mut tx = self.write().await?;
        let Some(stored) = store::get_envelope(&mut tx, id).await? else {
            return Err(DomainError::NotFound.into());
        };
        let change = match envelope::reveal(&stored.envelope, actor, &self.policy(), now) {
            Ok(change) => change,
            Err(DomainError::NotFound) => {
                drop(tx);
                // Someone tried to open another person's envelope: worth a line in the trail.
                let record = crate::domain::refused(
                    actor,
                    "envelope.reveal",
                    format!("envelope:{id}"),
                    "not the owner",
                );
                self.record_refusal(&record, ctx).await?;
                return Err(DomainError::NotFound.into());
            }
            Err(e) => return Err(e.into()),
        };
        let Some((nonce, ciphertext)) = stored.sealed.clone() else {
            return Err(DomainError::Conflict {
                code: "envelope_empty",
                message: "this envelope no longer holds the token".into(),
            }
            .into());
        };
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("envelope {id}: nonce length")))?;
        store::update_envelope(&mut tx, &stored.envelope, &change.state).await?;
        self.audit(&mut tx, &change.audit, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        // The owner is about to activate the token: ask Canvas soon.
        if let Err(e) = self.check_soon(stored.envelope.request_id).await {
            tracing::warn!(error = %e, "cannot move the activation check forward");
        }
        Ok((Sealed { nonce, ciphertext }, self.view(&change.state)))
    }

    /// The owner destroys the envelope ("I have saved it"); its ciphertext is erased.
    pub async fn burn(&self, actor: &Actor, id: &str, ctx: &Ctx) -> AppResult<EnvelopeView> {
        let now = self.now();
        let mut tx = self.write().await?;
        let stored = store::get_envelope(&mut tx, id)
            .await?
            .ok_or(DomainError::NotFound)?;
        let change = envelope::burn(&stored.envelope, actor, now)?;
        store::update_envelope(&mut tx, &stored.envelope, &change.state).await?;
        self.audit(&mut tx, &change.audit, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(self.view(&change.state))
    }
}
