//! The periodic sweep: close envelopes whose time is up, expire requests whose token has passed
//! its date, follow activation in Canvas, end tokens never put to use, send reminders and
//! digests, retire renewed tokens and unused ones. Each part works through everything due, in
//! batches; what fails is left for the next sweep.

use super::lifecycle::BATCH;
use super::{App, AppResult, Ctx};
use crate::domain::envelope::{self, EnvelopeState};
use crate::domain::request;
use crate::store::{self, StoreError};

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub envelopes_expired: usize,
    pub requests_expired: usize,
    pub activated: usize,
    pub gone_from_canvas: usize,
    /// Pending tokens asked about that are still pending.
    pub checked: usize,
    /// Tokens whose state Canvas could not tell this time.
    pub unknown: usize,
    /// Tokens never revealed or never activated, deleted and their requests ended.
    pub never_used: usize,
    pub reminded: usize,
    /// Renewed tokens retired once their renewal's token was active.
    pub replaced: usize,
    pub warned_unused: usize,
    pub revoked_unused: usize,
    pub digests: usize,
    /// Ended, expired and idle sessions deleted.
    pub sessions_purged: u64,
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

        self.expire_due(&mut report).await?;
        self.check_due_activations(&mut report).await?;
        self.retire_replaced(&mut report).await?;
        self.expire_unused(&mut report).await?;
        self.send_reminders(&mut report).await?;
        self.revoke_unused(&mut report).await?;
        self.send_digests(&mut report).await?;
        report.sessions_purged = self.purge_sessions().await?;
        Ok(report)
    }

    /// Requests whose token has passed its date end `expired` (the token is then deleted in
    /// Canvas by a job, with `policy.delete_expired`).
    async fn expire_due(&self, report: &mut SweepReport) -> AppResult<()> {
        let policy = self.policy();
        loop {
            let now = self.now();
            let mut conn = self.read().await?;
            let due = store::expiring_requests(&mut conn, now.date(), BATCH).await?;
            drop(conn);
            if due.is_empty() {
                return Ok(());
            }
            let mut progress = false;
            for r in due {
                let expired = self
                    .transition_with(
                        r.id,
                        &Ctx::system(),
                        |r| request::expire(r, &policy, now),
                        |tx, r| {
                            Box::pin(async move {
                                store::close_envelopes_of(tx, r.id, EnvelopeState::Expired).await?;
                                Ok(())
                            })
                        },
                    )
                    .await;
                match expired {
                    Ok(_) => {
                        report.requests_expired += 1;
                        progress = true;
                    }
                    Err(e) => {
                        tracing::warn!(request.id = %r.id, error = %e, "cannot expire a request now")
                    }
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }
}
