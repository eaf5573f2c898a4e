//! Running the service: the HTTP server and the workers, started together and stopped cleanly.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::Config;
use crate::domain::Login;
use crate::web::{WebAuth, WebOptions, router_with};

/// A serving tokendesk.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub app: App,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    workers: JoinHandle<()>,
}

/// Starts the server on `listener` and the workers beside it.
pub async fn start(
    config: &Config,
    app: App,
    demo_people: Vec<(Login, String)>,
    listener: TcpListener,
) -> anyhow::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let auth = WebAuth::new(&config.auth, addr, demo_people).context("cannot set up sign-in")?;
    let routes = router_with(app.clone(), auth, WebOptions::from_config(config));
    let (stop, stopped) = watch::channel(false);
    let workers = crate::jobs::spawn_workers(app.clone(), stopped.clone());
    let mut stopped_server = stopped;
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            routes.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped_server.wait_for(|stop| *stop).await;
        })
        .await
    });
    Ok(RunningServer {
        addr,
        app,
        stop,
        server,
        workers,
    })
}

impl RunningServer {
    /// Stops taking requests, lets the ones in flight and the work in hand finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        let _ = self.workers.await;
        self.app.store.close().await;
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
