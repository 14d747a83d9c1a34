//! Vigil's server: the hyper front end, its configuration and its lifecycle.
//!
//! `main` only reads the configuration, starts logging and calls
//! [`Application::build`] then [`Application::run_until_stopped`]; everything else is this
//! library, so integration tests start the real server on `127.0.0.1:0`.
//!
//! Start-up: connect the store (running migrations), start the realtime hub and its feed (the
//! Redis bridge, or the in-process feed without Redis), start the ingest pipeline, bind.
//! Shutdown (SIGINT/SIGTERM): stop accepting, close the ingest queue to new events, let
//! in-flight requests finish while the batcher commits and acknowledges everything queued,
//! all within `VIGIL_SHUTDOWN_TIMEOUT_S`; the hub delivers what it was fed and closes every
//! WebSocket with 1001; then close the database pool.

pub mod cache;
pub mod config;
pub mod http;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use vigil_bus::{BusNames, Publisher, RedisBus};
use vigil_core::Limits;
use vigil_ingest::{CommitSink, Ingest, IngestConfig};
use vigil_store::{Store, StoreOptions};

use crate::cache::RecentCache;
use crate::config::Config;
use crate::server::ServerOptions;
use crate::state::AppState;
use crate::ws::{Bridge, BridgeStats, Hub, HubSettings, LocalFeed};

/// Pending connections the kernel holds while Vigil is at its connection cap or busy.
const LISTEN_BACKLOG: u32 = 4096;
/// Committed batches waiting for Redis; past this the publisher drops the oldest and marks a
/// gap (the database keeps everything; the list refills and the realtime hub backfills).
const PUBLISH_QUEUE_BATCHES: usize = 4096;
/// How long the publisher gets at shutdown to send what is queued.
const PUBLISH_DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// How long start-up waits for the Redis subscription before serving anyway.
const BRIDGE_START_WAIT: Duration = Duration::from_secs(3);
/// How long the in-process feed gets at shutdown to hand the last batches to the hub.
const LOCAL_FEED_DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// How long WebSocket clients get at shutdown to take their last frames and the Close.
const WS_CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// A built, bound, not yet serving Vigil.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
    ingest: Ingest,
    publisher: Option<Publisher>,
    store: Store,
    hub: Hub,
    /// What feeds the hub: the Redis bridge, or the in-process feed's task.
    feed: HubFeed,
}

/// The hub's source of events.
enum HubFeed {
    /// Every instance's events, from the Redis channel.
    Redis(Bridge),
    /// This instance's commits, straight from the batcher; ends when the batcher drops its
    /// handle.
    Local(tokio::task::JoinHandle<()>),
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
                    "REDIS_URL is not set: list reads come from the database, nothing is published to redis, and websocket clients get this instance's events only"
                );
                None
            }
        };
        let hub = Hub::new(HubSettings {
            client_queue: config.ws_client_queue as usize,
            max_clients: config.ws_max_clients as usize,
            ping_interval: config.ws_ping_interval(),
        });
        let publisher = bus
            .clone()
            .map(|bus| Publisher::start(bus, PUBLISH_QUEUE_BATCHES));
        // With Redis, committed batches go to the publisher and every instance's hub hears
        // them on the channel; without it, the batcher feeds this instance's hub directly.
        let (sink, feed): (Arc<dyn CommitSink>, HubFeed) = match (&publisher, &config.redis_url) {
            (Some(publisher), Some(redis_url)) => {
                let bridge = Bridge::start(
                    redis_url.expose(),
                    config.redis_channel.clone(),
                    hub.clone(),
                )
                .with_context(|| format!("configure redis at {redis_url}"))?;
                if !bridge.wait_subscribed(BRIDGE_START_WAIT).await {
                    tracing::warn!(redis = %redis_url, "not subscribed to the event channel yet; websocket clients get events once it is up");
                }
                (Arc::new(publisher.clone()), HubFeed::Redis(bridge))
            }
            _ => {
                let (feed, task) = LocalFeed::start(&hub);
                (feed, HubFeed::Local(task))
            }
        };
        let ingest = Ingest::start(store.clone(), ingest_config, Some(sink))
            .context("start the batcher thread")?;
        let cache =
            bus.map(|bus| RecentCache::new(bus, config.recent_size as usize, publisher.clone()));
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
            hub: hub.clone(),
        });
        Ok(Application {
            listener,
            local_addr,
            state,
            ingest,
            publisher,
            store,
            hub,
            feed,
        })
    }

    /// The realtime hub (its counters, its clients).
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// The Redis bridge's counters, when `REDIS_URL` is set.
    pub fn bridge_stats(&self) -> Option<Arc<BridgeStats>> {
        match &self.feed {
            HubFeed::Redis(bridge) => Some(bridge.stats()),
            HubFeed::Local(_) => None,
        }
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
        match self.feed {
            HubFeed::Redis(bridge) => bridge.stop().await,
            HubFeed::Local(mut task) => {
                // The batcher has stopped and dropped the feed: the task delivers what is
                // queued, then ends.
                if tokio::time::timeout(LOCAL_FEED_DRAIN_DEADLINE, &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
            }
        }
        self.hub.shutdown(WS_CLOSE_DEADLINE).await;
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
