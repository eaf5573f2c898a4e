//! The simulator's accept loop (hyper, HTTP/1.1 and HTTP/2): like `axum::serve`, plus the one
//! thing it cannot do, closing a connection without answering. A response marked [`Unanswered`]
//! (by the API's fault injection) is never written: the connection is closed instead, as when
//! Canvas or the network between fails after, or before, doing the work.

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt as _;

/// Marks a response that must not be sent: its connection is closed instead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unanswered;

/// Why hyper closes the connection (never reaches a client: that is the point).
#[derive(Debug, thiserror::Error)]
#[error("the simulator closed the connection without answering (an injected fault)")]
struct Dropped;

pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let app = app.clone();
            async move {
                let response = match app.oneshot(request.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if response.extensions().get::<Unanswered>().is_some() {
                    return Err(Dropped);
                }
                Ok::<_, Dropped>(response)
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}
