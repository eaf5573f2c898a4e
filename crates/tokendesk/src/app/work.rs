//! Background work as service operations: the workers (`crate::jobs`) claim a job or an email
//! through these and hand it back here to run; retries, back-off and giving up are decided
//! here too, so the workers hold no rules and write nothing themselves.

use time::Duration;

use super::{App, AppError, AppResult};
use crate::store::{self, ClaimedEmail, ClaimedJob, JobKind, StoreError};

/// Attempts before a job or an email is given up.
pub const MAX_ATTEMPTS: u32 = 8;

/// The wait before attempt `attempts + 1`: 5 s, 10 s, 20 s … at most 10 minutes.
pub fn backoff(attempts: u32) -> Duration {
    let secs = 5i64.saturating_mul(1i64 << attempts.saturating_sub(1).min(7));
    Duration::seconds(secs.min(600))
}

/// Why a piece of work did not finish.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// Worth another attempt later.
    #[error("{0}")]
    Transient(String),
    /// Will not get better by retrying.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for WorkError {
    fn from(e: StoreError) -> Self {
        WorkError::Transient(format!("database: {e}"))
    }
}

impl From<AppError> for WorkError {
    fn from(e: AppError) -> Self {
        WorkError::Transient(e.to_string())
    }
}

impl WorkError {
    /// A Canvas failure while `doing` something: transient when Canvas may recover.
    pub(super) fn canvas(e: tokendesk_canvas::CanvasError, doing: &str) -> WorkError {
        let message = format!("{doing}: {e}");
        if e.is_transient() {
            WorkError::Transient(message)
        } else {
            WorkError::Permanent(message)
        }
    }
}

impl App {
    /// Claims the next job that is due (or whose holder's lease ran out), for this instance.
    pub async fn claim_job(&self) -> AppResult<Option<ClaimedJob>> {
        Ok(store::claim_job_by(
            self.store(),
            self.now(),
            self.workers().lease,
            Some(self.instance()),
        )
        .await?)
    }

    /// Runs a claimed job; a failure is retried later with back-off, or given up.
    pub async fn run_job(&self, job: ClaimedJob) -> AppResult<()> {
        let outcome = match job.kind {
            JobKind::IssueToken => self.issue(&job).await,
            JobKind::ExtendToken => self.extend(&job).await,
            JobKind::DeleteToken => self.delete_token_job(&job).await,
            JobKind::RevokeToken => self.revoke_job(&job).await,
        };
        let now = self.now();
        match outcome {
            Ok(()) => Ok(()),
            Err(WorkError::Transient(why)) if job.attempts < MAX_ATTEMPTS => {
                tracing::warn!(job.id = job.id, attempts = job.attempts, error = %why, "job failed; will retry");
                let mut tx = self.write().await?;
                store::job_retry(
                    &mut tx,
                    job.id,
                    &why,
                    Some(now + backoff(job.attempts)),
                    now,
                )
                .await?;
                tx.commit().await.map_err(StoreError::from)?;
                Ok(())
            }
            Err(WorkError::Transient(why) | WorkError::Permanent(why)) => {
                tracing::error!(job.id = job.id, attempts = job.attempts, error = %why, "job gave up");
                match job.kind {
                    // A renewal that cannot be extended fails like an issuance: an approver
                    // sees why and may retry or deny.
                    JobKind::IssueToken | JobKind::ExtendToken => {
                        self.give_up_issuance(&job, &why).await
                    }
                    JobKind::DeleteToken => self.give_up_deletion(&job, &why).await,
                    JobKind::RevokeToken => self.give_up_revocation(&job, &why).await,
                }
            }
        }
    }

    /// A token that could not be deleted in Canvas: the job is buried (the token has expired
    /// there anyway; reconciliation keeps comparing it).
    async fn give_up_deletion(&self, job: &ClaimedJob, why: &str) -> AppResult<()> {
        let mut tx = self.write().await?;
        store::job_retry(&mut tx, job.id, why, None, self.now()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Claims the next email that is due.
    pub async fn claim_email(&self) -> AppResult<Option<ClaimedEmail>> {
        Ok(store::claim_email(self.store(), self.now(), self.workers().lease).await?)
    }

    /// Whether this instance should run the periodic work `name` now: once per `period` across
    /// every instance sharing the database.
    pub async fn claim_period(&self, name: &str, period: Duration) -> AppResult<bool> {
        Ok(store::claim_period(self.store(), name, self.instance(), self.now(), period).await?)
    }
}
