//! The HTTP server's accept loop: HTTP/1.1 and HTTP/2 on one listener, each connection told
//! where it came from ([`ConnectInfo`]), slow clients cut off, and a graceful stop.
//!
//! `axum::serve` would do, but it cannot bound how long a client may take to send its request
//! head: a client trickling a header byte by byte would hold a connection (and a task) for
//! ever. Here `limits.header_timeout_secs` bounds it, and also how long a kept-alive connection
//! may sit idle between requests (hyper starts the clock whenever it waits for a head).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// How long the connections still open at a stop may take to finish their requests.
const DRAIN: Duration = Duration::from_secs(30);

/// How the server treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// How long a client may take to send a request head (and a kept-alive connection may idle).
    pub header_timeout: Duration,
}

impl HttpOptions {
    pub fn from_limits(limits: &crate::config::LimitsConfig) -> HttpOptions {
        HttpOptions {
            header_timeout: Duration::from_secs(limits.header_timeout_secs),
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true, then lets the requests in flight
/// finish (for up to [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: HttpOptions,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(options.header_timeout))
        .keep_alive_timeout(options.header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if is_connection_error(&e) {
                        continue;
                    }
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::error!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let service = connection_service(router.clone(), remote);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "some connections were still busy {}s after the stop; closing them",
            DRAIN.as_secs()
        );
    }
    Ok(())
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The router, for one connection from `remote`.
fn connection_service(
    router: Router,
    remote: SocketAddr,
) -> TowerToHyperService<
    impl tower::Service<
        hyper::Request<Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send,
> {
    TowerToHyperService::new(
        router.map_request(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            request.map(axum::body::Body::new)
        }),
    )
}

/// Errors of one connection (the client went away during the handshake), not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
