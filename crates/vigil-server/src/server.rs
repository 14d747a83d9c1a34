//! The accept loop: hyper HTTP/1.1 connections with limits, and graceful shutdown.
//!
//! Each connection is its own task with keep-alive and a header read timeout (slow-loris
//! clients are dropped). A semaphore caps open connections: past the cap, new clients wait
//! in the listen backlog instead of exhausting file descriptors. On shutdown the listener
//! closes, every connection finishes its in-flight request and closes, and `serve` returns
//! when all are gone or the deadline passes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use ::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http;
use crate::metrics::Exporter;
use crate::state::AppState;
use crate::write_deadline::WriteDeadline;

/// How long a scraper may take to send a request's headers on the metrics listener.
const METRICS_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection handling settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// How long a client may leave a response untaken ([`WriteDeadline`]).
    pub write_timeout: Duration,
    /// How long open connections get to finish after shutdown begins.
    pub drain_deadline: Duration,
}

/// Accepts and serves connections until `shutdown` is cancelled, then drains them.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    options: ServerOptions,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    let connection_slots = Arc::new(Semaphore::new(options.max_connections));
    let connections = TaskTracker::new();

    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&connection_slots).acquire_owned() => slot,
            () = shutdown.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let service =
            service_fn(move |request| http::serve(Arc::clone(&state), peer.ip(), request));
        let stream = WriteDeadline::new(stream, options.write_timeout);
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = shutdown.cancelled() => {
                    // Finish the request in flight, then close instead of keeping alive.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(slot);
        });
    }

    drop(listener);
    tracing::info!("stopped accepting; finishing in-flight requests");
    connections.close();
    tokio::select! {
        () = connections.wait() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(options.drain_deadline) => {
            tracing::warn!("connections still open at the shutdown deadline");
        }
    }
}

/// Serves `GET /metrics` alone on its own listener (`VIGIL_METRICS_ADDR`) until `shutdown`
/// is cancelled. Scrapes are few and small: no connection cap, no drain.
pub async fn serve_metrics(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    write_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(METRICS_HEADER_READ_TIMEOUT);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let exporter = Arc::clone(&exporter);
        let service = service_fn(move |request: Request<Incoming>| {
            let response = http::serve_metrics_only(&exporter, &request);
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let stream = WriteDeadline::new(stream, write_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
    connections.close();
}
