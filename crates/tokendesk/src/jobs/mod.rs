//! The workers: they claim queued work (jobs and emails, held with a lease so that work
//! survives a crash and runs once) and the periodic sweep (once per period across instances),
//! and hand each to the service operation that does it. They hold no rules and write nothing
//! themselves.

use std::time::Duration as StdDuration;

use time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{App, AppResult};

pub use crate::app::SweepReport;

/// Runs one due job, if any. Returns whether there was one.
pub async fn run_one_job(app: &App) -> AppResult<bool> {
    let Some(job) = app.claim_job().await? else {
        return Ok(false);
    };
    app.run_job(job).await?;
    Ok(true)
}

/// Sends one due email, if any. Returns whether there was one.
pub async fn run_one_email(app: &App) -> AppResult<bool> {
    let Some(email) = app.claim_email().await? else {
        return Ok(false);
    };
    app.send_email(email).await?;
    Ok(true)
}

/// Runs every job and email that is due now, then returns how many ran (tests and the CLI).
pub async fn drain(app: &App) -> AppResult<usize> {
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

/// [`drain`], until the service stops: the job and the email in hand are finished, the rest
/// stays queued for the next start (a long queue must not hold a stopping service for minutes,
/// past its supervisor's patience and into a SIGKILL). Returns how many ran.
pub async fn drain_until(app: &App, shutdown: &watch::Receiver<bool>) -> AppResult<usize> {
    let mut ran = 0;
    while !*shutdown.borrow() {
        let job = run_one_job(app).await?;
        let mail = run_one_email(app).await?;
        if !job && !mail {
            break;
        }
        ran += usize::from(job) + usize::from(mail);
    }
    Ok(ran)
}

/// Job runners a bulk revocation uses at once (`tokendesk admin revoke`, the revocation bench):
/// the Canvas client's governor keeps them under Canvas's throttle.
pub const REVOKE_RUNNERS: usize = 32;

/// Runs every job that is due now with `runners` job runners at once, each claiming the next
/// due job under its own lease; how many ran.
pub async fn drain_jobs_concurrently(app: &App, runners: usize) -> AppResult<usize> {
    let runners = (0..runners.max(1)).map(|_| async {
        let mut ran = 0usize;
        while run_one_job(app).await? {
            ran += 1;
        }
        AppResult::Ok(ran)
    });
    let mut ran = 0;
    for done in futures::future::join_all(runners).await {
        ran += done?;
    }
    Ok(ran)
}

/// Runs the sweep now (tests and the CLI).
pub async fn sweep(app: &App) -> AppResult<SweepReport> {
    app.sweep().await
}

/// The name of the sweep in `periodic_runs`.
pub const SWEEP: &str = "sweep";

/// Runs the sweep if no instance has run it in the current period (`[workers]
/// sweep_every_secs`). Returns the report when this instance ran it.
pub async fn sweep_if_due(app: &App) -> AppResult<Option<SweepReport>> {
    let period = app.workers().sweep_every;
    // Claims an instant apart must not lose a period to the time between a tick and its
    // claim: allow a twentieth of the period (at most a second) of slack.
    let period = Duration::try_from(period).unwrap_or(Duration::MAX);
    let claim = period - (period / 20_i32).min(Duration::SECOND);
    if !app.claim_period(SWEEP, claim).await? {
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
    app.sweep().await.map(Some)
}

/// The name of reconciliation in `periodic_runs`.
pub const RECONCILE: &str = "reconcile";

/// Runs reconciliation if no instance has run it in the current period (`[workers]
/// reconcile_every_secs`).
pub async fn reconcile_if_due(app: &App) -> AppResult<Option<crate::app::ReconcileReport>> {
    let period = Duration::try_from(app.workers().reconcile_every).unwrap_or(Duration::MAX);
    let claim = period - (period / 20_i32).min(Duration::SECOND);
    if !app.claim_period(RECONCILE, claim).await? {
        return Ok(None);
    }
    let report = app.reconcile().await?;
    tracing::info!(
        people = report.people,
        tokens = report.tokens,
        gone = report.gone,
        activated = report.activated,
        expiry_corrected = report.expiry_corrected,
        orphans_found = report.orphans_found,
        failed = report.failed,
        "reconcile: pass done"
    );
    Ok(Some(report))
}

/// Starts the workers; they stop when `shutdown` turns true, after the work in hand. Jobs and
/// emails are drained in one loop; the sweep and reconciliation run in loops of their own, so
/// that neither holds up issuance.
pub fn spawn_workers(app: App, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let sweeper = tokio::spawn(sweep_loop(app.clone(), shutdown.clone()));
        let reconciler = tokio::spawn(reconcile_loop(app.clone(), shutdown.clone()));
        work_loop(app, shutdown).await;
        let _ = sweeper.await;
        let _ = reconciler.await;
    })
}

async fn reconcile_loop(app: App, mut shutdown: watch::Receiver<bool>) {
    // Checked once a minute; runs once per period across the instances.
    let mut tick =
        tokio::time::interval(StdDuration::from_secs(60).min(app.workers().reconcile_every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = reconcile_if_due(&app).await
                    && !e.is_database_down()
                {
                    tracing::error!(error = %e, "reconcile failed");
                }
            }
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn work_loop(app: App, mut shutdown: watch::Receiver<bool>) {
    loop {
        // The database's outage is logged once by the store, not at every turn.
        if let Err(e) = drain_until(&app, &shutdown).await
            && !e.is_database_down()
        {
            tracing::error!(error = %e, "worker failed");
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
                if let Err(e) = sweep_if_due(&app).await
                    && !e.is_database_down()
                {
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
