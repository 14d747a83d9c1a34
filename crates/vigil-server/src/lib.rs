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

pub mod cache;
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
use vigil_bus::{BusNames, Publisher, RedisBus};
use vigil_core::Limits;
use vigil_ingest::{Ingest, IngestConfig};
use vigil_store::{Store, StoreOptions};

use crate::cache::RecentCache;
use crate::config::Config;
use crate::server::ServerOptions;
use crate::state::AppState;

/// Pending connections the kernel holds while Vigil is at its connection cap or busy.
const LISTEN_BACKLOG: u32 = 4096;
/// Committed batches waiting for Redis; past this the publisher drops the oldest and marks a
/// gap (the database keeps everything; the list refills and the realtime hub backfills).
const PUBLISH_QUEUE_BATCHES: usize = 4096;
/// How long the publisher gets at shutdown to send what is queued.
const PUBLISH_DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// A built, bound, not yet serving Vigil.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
    ingest: Ingest,
    publisher: Option<Publisher>,
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
        let bus = match &config.redis_url {
            Some(redis_url) => {
                let names = BusNames {
                    recent_key: config.redis_recent_key.clone(),
                    channel: config.redis_channel.clone(),
                    recent_size: config.recent_size as usize,
                };
                let bus = RedisBus::connect_lazy(redis_url.expose(), names)
                    .with_context(|| format!("configure redis at {redis_url}"))?;
                if let Err(error) = bus.ping().await {
                    tracing::warn!(redis = %redis_url, %error, "redis is not answering; ingest and reads go on, the cache and broadcast resume when it is back");
                }
                Some(bus)
            }
            None => {
                tracing::info!(
                    "REDIS_URL is not set: list reads come from the database and nothing is published to redis"
                );
                None
            }
        };
        let publisher = bus
            .clone()
            .map(|bus| Publisher::start(bus, PUBLISH_QUEUE_BATCHES));
        let ingest = Ingest::start(store.clone(), ingest_config, publisher.clone())
            .context("start the batcher thread")?;
        let cache = bus.map(|bus| RecentCache::new(bus, config.recent_size as usize));
        if let Some(cache) = &cache
            && let Err(error) = cache.warm(&store).await
        {
            tracing::warn!(error = %format!("{error:#}"), "could not warm the recent list; it refills on the first read");
        }

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
            store: store.clone(),
            cache,
        });
        Ok(Application {
            listener,
            local_addr,
            state,
            ingest,
            publisher,
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
        if let Some(publisher) = self.publisher {
            publisher.shutdown(PUBLISH_DRAIN_DEADLINE).await;
        }
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
