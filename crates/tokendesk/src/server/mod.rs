//! Running the service: the HTTP server and the workers, started together and stopped cleanly.

mod http;

pub use http::{HttpOptions, Listener, serve};

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::{Config, DatabaseUrl};
use crate::domain::Login;
use crate::web::{WebAuth, WebOptions, router_with};

/// A serving tokendesk.
pub struct RunningServer {
    /// The TCP address (a Unix socket's: [`crate::config::UNIX_PEER`]).
    pub addr: SocketAddr,
    /// Where it listens, for messages: `http://ADDR` or `unix:PATH`.
    pub described: String,
    /// Where `metrics.listen` serves `/metrics`, when set.
    pub metrics_addr: Option<SocketAddr>,
    pub app: App,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    metrics_server: Option<JoinHandle<std::io::Result<()>>>,
    head_log: JoinHandle<()>,
    workers: JoinHandle<()>,
    /// SQLite: held while serving, so that no second instance serves the same file.
    _sqlite_lock: Option<std::fs::File>,
}

/// An SQLite database is served by one process: its status look-up cache (and its writers'
/// queue) know of no other. The lock is `<database>.lock`, released when the process ends.
fn lock_sqlite(database: &DatabaseUrl) -> anyhow::Result<Option<std::fs::File>> {
    let DatabaseUrl::Sqlite(path) = database else {
        return Ok(None);
    };
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another tokendesk is already serving the SQLite database {} (it holds {}); \
             SQLite serves one instance: stop the other one, or move to PostgreSQL \
             (tokendesk db copy) to run several",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
        }
    }
}

/// Starts the server on `listener` and the workers beside it.
pub async fn start(
    config: &Config,
    app: App,
    demo_people: Vec<(Login, String)>,
    listener: impl Into<Listener>,
) -> anyhow::Result<RunningServer> {
    let listener = listener.into();
    let addr = listener.local_addr()?;
    let described = listener.describe();
    let sqlite_lock = lock_sqlite(&config.database)?;
    let oidc = match &config.oidc {
        Some(oidc) => Some(
            crate::web::oidc::Oidc::new(
                oidc.clone(),
                crate::web::oidc::GroupRoles::from_config(&config.roles),
                &config.public_url,
            )
            .map_err(|e| anyhow::anyhow!("auth.oidc: {e}"))?,
        ),
        None => None,
    };
    let auth = WebAuth::with_oidc(&config.auth, addr, demo_people, oidc)
        .context("cannot set up sign-in")?;
    crate::telemetry::install();
    let routes = router_with(app.clone(), auth, WebOptions::from_config(config));
    let (stop, stopped) = watch::channel(false);
    let options = HttpOptions::from_limits(&config.limits);
    let metrics = match config.metrics.listen {
        Some(at) => {
            let listener = TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (metrics.listen)"))?;
            let metrics_addr = listener.local_addr()?;
            let routes = crate::web::metrics::own_router(app.clone());
            let task = tokio::spawn(serve(listener, routes, options, stopped.clone()));
            Some((metrics_addr, task))
        }
        None => None,
    };
    let workers = crate::jobs::spawn_workers(app.clone(), stopped.clone());
    tokio::spawn(probe_database(app.clone(), stopped.clone()));
    // The exporter keeps every histogram sample until an upkeep folds it into its buckets; a
    // scrape does that too, but a service nobody scrapes must not pile them up.
    tokio::spawn(every(
        crate::telemetry::UPKEEP_EVERY,
        stopped.clone(),
        || async { crate::telemetry::upkeep() },
    ));
    let head_log = tokio::spawn(log_audit_head(
        app.clone(),
        std::time::Duration::from_secs(config.audit.head_log_minutes * 60),
        stopped.clone(),
    ));
    let server = tokio::spawn(serve(listener, routes, options, stopped));
    let (metrics_addr, metrics_server) = metrics.unzip();
    Ok(RunningServer {
        addr,
        described,
        metrics_addr,
        app,
        stop,
        server,
        metrics_server,
        workers,
        head_log,
        _sqlite_lock: sqlite_lock,
    })
}

impl RunningServer {
    /// Stops taking requests, lets the ones in flight and the work in hand finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        if let Some(metrics) = self.metrics_server {
            let _ = metrics.await;
        }
        let _ = self.workers.await;
        let _ = self.head_log.await;
        // The last word on the chain, after the work in hand has written its events.
        log_head_once(&self.app).await;
        self.app.close().await;
    }
}

/// Once a second while the database is down, a short ping: the first answer ends the outage.
async fn probe_database(app: App, stop: watch::Receiver<bool>) {
    every(std::time::Duration::from_secs(1), stop, || {
        app.probe_database()
    })
    .await;
}

/// Logs the audit chain's head every `period` until `stop`.
async fn log_audit_head(app: App, period: std::time::Duration, stop: watch::Receiver<bool>) {
    every(period, stop, || log_head_once(&app)).await;
}

/// Runs `tick` every `period`, the first at once, until `stop` changes; a tick that takes
/// longer than the period delays the next rather than making them bunch.
async fn every<F, Fut>(period: std::time::Duration, mut stop: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => tick().await,
            _ = stop.changed() => return,
        }
    }
}

async fn log_head_once(app: &App) {
    match app.audit_head().await {
        Ok(Some((seq, hash))) => tracing::info!(
            audit.head = %format!("{seq}:{hash}"),
            "audit chain head (check later with tokendesk audit verify --expect-head)"
        ),
        Ok(None) => tracing::info!("audit chain head: the trail is empty"),
        Err(e) => tracing::warn!(error = %e, "cannot read the audit chain's head"),
    }
}

/// Resolves when the process is asked to stop (Ctrl-C, or SIGTERM on Unix).
pub async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_ticks_at_once_then_each_period_until_stopped() {
        let (stop, stopped) = watch::channel(false);
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        let period = Duration::from_millis(20);
        let started = std::time::Instant::now();
        let task = tokio::spawn(every(period, stopped, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        }));
        while ticks.load(Ordering::SeqCst) < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "it keeps ticking"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The first at once, then one a period: the third after two periods, not before.
        assert!(started.elapsed() >= 2 * period, "{:?}", started.elapsed());
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("it stops when told")
            .unwrap();
        let at_stop = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(5 * period).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            at_stop,
            "no tick after the stop"
        );
    }
}
