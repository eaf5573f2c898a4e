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

/// Where the server takes connections: a TCP socket, or a Unix socket for a proxy on the
/// same host (removed again when the server stops).
pub enum Listener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Listener {
        Listener::Tcp(listener)
    }
}

impl Listener {
    /// Binds `listen`; a Unix socket gets `mode` (a stale socket file left by a crash is
    /// replaced; any other file at the path is refused).
    pub async fn bind(listen: &crate::config::Listen, mode: u32) -> anyhow::Result<Listener> {
        use anyhow::Context as _;
        match listen {
            crate::config::Listen::Tcp(addr) => Ok(Listener::Tcp(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            )),
            crate::config::Listen::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        anyhow::bail!(
                            "cannot listen on unix:{}: something other than a socket is there",
                            path.display()
                        );
                    }
                    std::fs::remove_file(path).with_context(|| {
                        format!("cannot replace the old socket {}", path.display())
                    })?;
                }
                let listener = tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("cannot listen on unix:{}", path.display()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("cannot set the mode of {}", path.display()))?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// The TCP address; a Unix socket's connections count as from [`crate::config::UNIX_PEER`].
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
            Listener::Unix(..) => Ok(crate::config::UNIX_PEER),
        }
    }

    /// How it is named in messages (`http://ADDR` or `unix:PATH`).
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "http://?".to_owned(), |a| format!("http://{a}")),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true, then lets the requests in flight
/// finish (for up to [`DRAIN`]).
pub async fn serve(
    listener: impl Into<Listener>,
    router: Router,
    options: HttpOptions,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = listener.into();
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
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = stopped(&mut stop) => break,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, remote)) => {
                let _ = stream.set_nodelay(true);
                spawn_connection(&builder, &graceful, &router, stream, remote);
            }
            Ok(Accepted::Unix(stream)) => {
                spawn_connection(
                    &builder,
                    &graceful,
                    &router,
                    stream,
                    crate::config::UNIX_PEER,
                );
            }
            Err(e) => {
                if is_connection_error(&e) {
                    continue;
                }
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::error!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
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

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

fn spawn_connection<I>(
    builder: &Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    router: &Router,
    io: I,
    remote: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = connection_service(router.clone(), remote);
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, %remote, "connection ended with an error");
        }
    });
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
