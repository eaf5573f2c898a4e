//! Background work: issuing tokens, sending email, and the periodic sweep (expiry, activation
//! tracking). Workers claim queued rows with a lease, so that work survives a crash and runs once.

mod email;
mod issue;
mod sweep;

use std::time::Duration as StdDuration;

use time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::store::{self, JobKind, StoreError};

pub use sweep::{SweepReport, sweep};

/// Attempts before a job or an email is given up.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// The wait before attempt `attempts + 1`: 5 s, 10 s, 20 s … at most 10 minutes.
pub(crate) fn backoff(attempts: u32) -> Duration {
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

impl From<crate::app::AppError> for WorkError {
    fn from(e: crate::app::AppError) -> Self {
        WorkError::Transient(e.to_string())
    }
}

/// Runs one due job, if any. Returns whether there was one.
pub async fn run_one_job(app: &App) -> Result<bool, StoreError> {
    let now = app.now();
    let Some(job) =
        store::claim_job_by(&app.store, now, app.workers().lease, Some(app.instance())).await?
    else {
        return Ok(false);
    };
    let outcome = match job.kind {
        JobKind::IssueToken => issue::run(app, &job).await,
    };
    let now = app.now();
    match outcome {
        Ok(()) => {}
        Err(WorkError::Transient(why)) if job.attempts < MAX_ATTEMPTS => {
            tracing::warn!(job.id = job.id, attempts = job.attempts, error = %why, "job failed; will retry");
            let mut tx = app.store.write().await?;
            store::job_retry(
                &mut tx,
                job.id,
                &why,
                Some(now + backoff(job.attempts)),
                now,
            )
            .await?;
            tx.commit().await?;
        }
        Err(WorkError::Transient(why) | WorkError::Permanent(why)) => {
            tracing::error!(job.id = job.id, attempts = job.attempts, error = %why, "job gave up");
            issue::give_up(app, &job, &why).await?;
        }
    }
    Ok(true)
}

/// Sends one due email, if any. Returns whether there was one.
pub async fn run_one_email(app: &App) -> Result<bool, StoreError> {
    let now = app.now();
    let Some(claimed) = store::claim_email(&app.store, now, app.workers().lease).await? else {
        return Ok(false);
    };
    email::run(app, claimed).await?;
    Ok(true)
}

/// Runs every job and email that is due now, then returns how many ran (tests and the CLI).
pub async fn drain(app: &App) -> Result<usize, StoreError> {
    let mut ran = 0;
    loop {
        let job = run_one_job(app).await?;
        let mail = run_one_email(app).await?;
        if !job && !mail {
            return Ok(ran);
        }
        ran += usize::from(job) + usize::from(mail);
    }
}

/// The name of the sweep in `periodic_runs`.
pub const SWEEP: &str = "sweep";

/// Runs the sweep if no instance has run it in the current period (`[workers]
/// sweep_every_secs`). Returns the report when this instance ran it.
pub async fn sweep_if_due(app: &App) -> crate::app::AppResult<Option<SweepReport>> {
    let period = app.workers().sweep_every;
    // Claims an instant apart must not lose a period to the time between a tick and its
    // claim: allow a twentieth of the period (at most a second) of slack.
    let period = Duration::try_from(period).unwrap_or(Duration::MAX);
    let claim = period - (period / 20_i32).min(Duration::SECOND);
    let claimed = store::claim_period(&app.store, SWEEP, app.instance(), app.now(), claim).await?;
    if !claimed {
        tracing::debug!(
            instance = app.instance(),
            "sweep: another instance ran it this period"
        );
        return Ok(None);
    }
    tracing::info!(
        instance = app.instance(),
        "sweep: this instance claimed the period"
    );
    sweep(app).await.map(Some)
}

/// Starts the workers; they stop when `shutdown` turns true, after the work in hand. Jobs and
/// emails are drained in one loop; the sweep runs in a loop of its own, so that a long sweep
/// never holds up issuance.
pub fn spawn_workers(app: App, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let sweeper = tokio::spawn(sweep_loop(app.clone(), shutdown.clone()));
        work_loop(app, shutdown).await;
        let _ = sweeper.await;
    })
}

async fn work_loop(app: App, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = drain(&app).await {
            tracing::error!(error = %e, "worker: database unavailable");
        }
        tokio::select! {
            _ = app.wait_for_work() => {}
            _ = tokio::time::sleep(StdDuration::from_secs(2)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn sweep_loop(app: App, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(app.workers().sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = sweep_if_due(&app).await {
                    tracing::error!(error = %e, "sweep failed");
                }
            }
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
