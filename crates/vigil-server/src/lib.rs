//! Vigil's server: the hyper front end, its configuration and its lifecycle.
//!
//! `main` only reads the configuration, starts logging and calls
//! [`Application::build`] then [`Application::run_until_stopped`]; everything else is this
//! library, so integration tests start the real server on `127.0.0.1:0`.
//!
//! Start-up: connect the store (running migrations), start the ingest pipeline, bind.
//! Shutdown (SIGINT/SIGTERM): stop accepting, close the ingest queue to new events, let
//! in-flight requests finish while the batcher commits and acknowledges everything queued,
//! all within `VIGIL_SHUTDOWN_TIMEOUT_S`; then close the database pool.

pub mod config;
pub mod http;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use vigil_core::Limits;
use vigil_ingest::{Ingest, IngestConfig};
use vigil_store::{Store, StoreOptions};

use crate::config::Config;
use crate::server::ServerOptions;
use crate::state::AppState;

/// Pending connections the kernel holds while Vigil is at its connection cap or busy.
const LISTEN_BACKLOG: u32 = 4096;

/// A built, bound, not yet serving Vigil.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
    ingest: Ingest,
    store: Store,
}

impl Application {
    /// Connects to the database, starts the ingest pipeline and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let Some(database_url) = config.database_url.clone() else {
            bail!("DATABASE_URL is not set: set it to mysql://user:password@host:3306/database");
        };
        let store = Store::connect(database_url.expose(), &StoreOptions::default())
            .await
            .with_context(|| format!("connect to the database at {database_url}"))?;
        tracing::info!(database = %database_url, "database ready");

        let ingest_config = IngestConfig {
            queue_events: config.queue_events as usize,
            batch_max_rows: config.batch_max_rows as usize,
            batch_max_bytes: config.batch_max_bytes as usize,
            ..IngestConfig::default()
        };
        if ingest_config.queue_events < config.max_bulk_events as usize {
            tracing::warn!(
                queue_events = config.queue_events,
                max_bulk_events = config.max_bulk_events,
                "VIGIL_QUEUE_EVENTS is below VIGIL_MAX_BULK_EVENTS: the largest bulks can never be admitted"
            );
        }
        let ingest =
            Ingest::start(store.clone(), ingest_config).context("start the batcher thread")?;

        let listener = bind(config.addr).with_context(|| format!("listen on {}", config.addr))?;
        let local_addr = listener.local_addr().context("read the bound address")?;
        let limits = Limits {
            max_bulk_events: config.max_bulk_events as usize,
            ..Limits::default()
        };
        let state = Arc::new(AppState {
            config,
            limits,
            ingest: ingest.queue(),
        });
        Ok(Application {
            listener,
            local_addr,
            state,
            ingest,
            store,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `stop` resolves, then shuts down gracefully.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let config = &self.state.config;
        let deadline = config.shutdown_timeout();
        let options = ServerOptions {
            max_connections: config.max_connections as usize,
            header_read_timeout: config.header_read_timeout(),
            drain_deadline: deadline,
        };
        tracing::info!(addr = %self.local_addr, "vigil listening");

        let stopping = CancellationToken::new();
        let server = tokio::spawn(server::serve(
            self.listener,
            Arc::clone(&self.state),
            options,
            stopping.clone(),
        ));
        stop.await;
        tracing::info!(deadline_s = deadline.as_secs(), "shutting down");
        stopping.cancel();
        let (served, ()) = tokio::join!(server, self.ingest.shutdown(deadline));
        served.context("the accept loop panicked")?;
        tokio::time::timeout(Duration::from_secs(5), self.store.close())
            .await
            .ok();
        tracing::info!("stopped");
        Ok(())
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
