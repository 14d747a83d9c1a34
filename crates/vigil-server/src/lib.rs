//! Vigil's server: the hyper front end, its configuration and its lifecycle.
//!
//! `main` only reads the configuration, starts logging and calls
//! [`Application::build`] then [`Application::run_until_stopped`]; everything else is this
//! library, so integration tests start the real server on `127.0.0.1:0`.
//!
//! Start-up: connect the store (running migrations), decide the mode once (the README's
//! *Modes*: no `DATABASE_URL` is the embedded SQLite file in `VIGIL_DATA_DIR`, no `REDIS_URL`
//! is the in-process cache and broadcast) and log it in one line; one `match` on the mode
//! builds what differs between the modes: the realtime hub's feed (the Redis bridge, or the
//! in-process feed without Redis), the one commit sink (the publisher; or the in-process feed,
//! fanned out with the in-process recent list in the embedded mode) and the recent list. Then
//! start the ingest pipeline with that sink, warm the recent list, bind.
//! Shutdown (SIGINT/SIGTERM): mark the process draining (`/api/ready` answers 503) and wait
//! `VIGIL_DRAIN_DELAY_S` so load balancers stop sending; then stop accepting, close the ingest queue to new events, let
//! in-flight requests finish while the batcher commits and acknowledges everything queued,
//! all within `VIGIL_SHUTDOWN_TIMEOUT_S`; the hub delivers what it was fed and closes every
//! WebSocket with 1001; then close the database pool.

pub mod api;
pub mod cache;
pub mod config;
pub mod console;
pub mod http;
pub mod metrics;
pub mod page;
pub mod retention;
pub mod security;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod write_deadline;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use vigil_bus::{BusNames, LocalRecent, Publisher, RedisBus, RedisTarget};
use vigil_core::Limits;
use vigil_core::{CommitSink, FanOut};
use vigil_ingest::{Ingest, IngestConfig};
use vigil_store::{Store, StoreOptions};

use crate::cache::{RecentCache, RecentSource};
use crate::config::{Config, RedisSettings, SecretUrl, StoreSettings};
use crate::metrics::{Exporter, Metrics, Sources};
use crate::retention::{Expiring, Retention};
use crate::server::ServerOptions;
use crate::state::AppState;
use vigil_realtime::{Bridge, BridgeStats, Hub, HubSettings, LocalFeed};

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
    /// The separate `/metrics` listener, when `VIGIL_METRICS_ADDR` is set.
    metrics_listener: Option<TcpListener>,
    state: Arc<AppState>,
    ingest: Ingest,
    publisher: Option<Publisher>,
    store: Store,
    hub: Hub,
    /// What feeds the hub: the Redis bridge, or the in-process feed's task.
    feed: HubFeed,
    /// The backfill task (ends when the hub shuts down).
    backfill: tokio::task::JoinHandle<()>,
    /// Deletes expired events, when `VIGIL_RETENTION` is set.
    retention: Option<Retention>,
    /// Deletes expired idempotency records.
    key_purge: Retention,
}

/// The hub's source of events.
enum HubFeed {
    /// Every instance's events, from the Redis channel.
    Redis(Bridge),
    /// This instance's commits, straight from the batcher; ends when the batcher drops its
    /// handle.
    Local(tokio::task::JoinHandle<()>),
}

impl HubFeed {
    fn bridge_stats(&self) -> Option<Arc<BridgeStats>> {
        match self {
            HubFeed::Redis(bridge) => Some(bridge.stats()),
            HubFeed::Local(_) => None,
        }
    }
}

impl Application {
    /// Connects to the database, starts the ingest pipeline and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        config.check_combinations().map_err(anyhow::Error::msg)?;
        // The addresses first: a port in use is a setting to change, said before anything
        // (the embedded database) is created.
        let listener = reserve(config.http.addr, "VIGIL_ADDR")?;
        let metrics_listener = config
            .telemetry
            .metrics_addr
            .map(|addr| reserve(addr, "VIGIL_METRICS_ADDR"))
            .transpose()?;
        let store = open_store(&config.store).await?;
        // Where Redis is (one server, or the primary Sentinel names): the bus, the publisher
        // and the bridge all reach it through this one target.
        let mode = Mode::of(&store, redis_target(&config.redis)?);
        let line = mode.line(&config);
        tracing::info!(
            mode = line.name,
            store = %store.description(),
            cache = line.cache,
            broadcast = line.broadcast,
            why = line.why.as_str(),
            "vigil mode"
        );

        let recent_size = config.redis.recent_size as usize;
        let hub = Hub::new(HubSettings {
            client_queue: config.ws.ws_client_queue as usize,
            max_clients: config.ws.ws_max_clients as usize,
            ping_interval: config.ws.ws_ping_interval(),
        });
        // With Redis, committed batches go to the publisher and every instance's hub hears
        // them on the channel; without it, the batcher feeds this instance's hub directly.
        let wiring = match mode {
            Mode::Embedded => {
                // With SQLite this process is the only writer, so its own commits are the
                // whole story: they feed the in-process recent list too. A second process on
                // the file would break that: claim it (the data directory's store already has).
                store
                    .claim_sole_writer()
                    .context("claim the sqlite database named by DATABASE_URL")?;
                let list = LocalRecent::new(recent_size);
                let (feed, task) = LocalFeed::start(&hub);
                Wiring {
                    publisher: None,
                    sink: Arc::new(FanOut::new(vec![Arc::new(list.clone()), feed])),
                    feed: HubFeed::Local(task),
                    recent: Some(RecentList::Local(list)),
                    recent_answered: true,
                }
            }
            Mode::MysqlWithoutRedis => {
                // Another instance may write, so list reads go to the database.
                let (feed, task) = LocalFeed::start(&hub);
                Wiring {
                    publisher: None,
                    sink: feed,
                    feed: HubFeed::Local(task),
                    recent: None,
                    recent_answered: true,
                }
            }
            Mode::SqliteWithRedis(target) => {
                tracing::warn!(
                    "SQLite with Redis: the events stay in this instance's file; several \
                     instances cannot share one SQLite database, so each serves its own events \
                     (use DATABASE_URL=mysql://… to scale out)"
                );
                redis_wiring(target, &config.redis, &hub).await?
            }
            Mode::Full(target) => redis_wiring(target, &config.redis, &hub).await?,
        };
        let Wiring {
            publisher,
            sink,
            feed,
            recent,
            recent_answered,
        } = wiring;
        // Re-reads from the database what the live feed lost; ends with the hub.
        let backfill = vigil_realtime::backfill::start(hub.clone(), store.clone());
        let retention = config.retention.period().map(|keep| {
            tracing::info!(
                retention_s = keep.as_secs(),
                "deleting events older than the retention period"
            );
            Retention::start(store.clone(), Expiring::Events { keep })
        });
        let key_purge = Retention::start(
            store.clone(),
            Expiring::IdempotencyRecords {
                ttl: config.retention.idempotency_ttl,
            },
        );

        let ingest_config = IngestConfig {
            queue_events: config.ingest.queue_events as usize,
            batch_max_rows: config.ingest.batch_max_rows as usize,
            batch_max_bytes: config.ingest.batch_max_bytes as usize,
            idempotency_ttl: config.retention.idempotency_ttl,
            answer_timeout: config.http.request_timeout(),
            ..IngestConfig::default()
        };
        if ingest_config.queue_events < config.http.max_bulk_events as usize {
            tracing::warn!(
                queue_events = config.ingest.queue_events,
                max_bulk_events = config.http.max_bulk_events,
                "VIGIL_QUEUE_EVENTS is below VIGIL_MAX_BULK_EVENTS: the largest bulks can never be admitted"
            );
        }
        let ingest = Ingest::start(store.clone(), ingest_config, Some(sink))
            .context("start the batcher thread")?;
        let cache = recent.map(|list| RecentCache::new(list.source(&ingest), recent_size));
        if let Some(cache) = &cache
            && recent_answered
            && let Err(error) = cache.warm(&store).await
        {
            tracing::warn!(error = %format!("{error:#}"), "could not warm the recent list; it refills on the first read");
        }

        let listener = listener
            .listen(LISTEN_BACKLOG)
            .with_context(|| format!("listen on {}", config.http.addr))?;
        let local_addr = listener.local_addr().context("read the bound address")?;
        let metrics_listener = metrics_listener
            .map(|socket| socket.listen(LISTEN_BACKLOG))
            .transpose()
            .context("listen for metrics (VIGIL_METRICS_ADDR)")?;
        let limits = Limits {
            max_bulk_events: config.http.max_bulk_events as usize,
            ..Limits::default()
        };
        let metrics = Arc::new(Metrics::default());
        let exporter = Arc::new(Exporter::new(Sources {
            metrics: Arc::clone(&metrics),
            ingest: ingest.queue(),
            queue_capacity: u64::from(config.ingest.queue_events),
            publisher: publisher.clone(),
            cache: cache.as_ref().map(RecentCache::stats),
            hub: hub.clone(),
            bridge: feed.bridge_stats(),
            retention: retention.as_ref().map(Retention::stats),
            key_purge: key_purge.stats(),
        }));
        let security = security::Security::new(config.security.rules());
        let state = Arc::new(AppState {
            security,
            config,
            limits,
            ingest: ingest.queue(),
            store: store.clone(),
            cache,
            hub: hub.clone(),
            metrics,
            exporter,
            draining: AtomicBool::new(false),
        });
        Ok(Application {
            listener,
            local_addr,
            metrics_listener,
            state,
            ingest,
            publisher,
            store,
            hub,
            feed,
            backfill,
            retention,
            key_purge,
        })
    }

    /// The realtime hub (its counters, its clients).
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// The Redis bridge's counters, when `REDIS_URL` is set.
    pub fn bridge_stats(&self) -> Option<Arc<BridgeStats>> {
        self.feed.bridge_stats()
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics listener's bound address, when `VIGIL_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `stop` resolves, then shuts down gracefully.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let config = &self.state.config;
        let deadline = config.shutdown.shutdown_timeout();
        let options = ServerOptions {
            max_connections: config.http.max_connections as usize,
            header_read_timeout: config.http.header_read_timeout(),
            write_timeout: config.http.write_timeout(),
            drain_deadline: deadline,
        };
        tracing::info!(addr = %self.local_addr, "vigil listening");

        let stopping = CancellationToken::new();
        let metrics_stopping = CancellationToken::new();
        let metrics_server = self.metrics_listener.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics listening (GET /metrics)");
            }
            tokio::spawn(server::serve_metrics(
                listener,
                Arc::clone(&self.state.exporter),
                config.http.write_timeout(),
                metrics_stopping.clone(),
            ))
        });
        let server = tokio::spawn(server::serve(
            self.listener,
            Arc::clone(&self.state),
            options,
            stopping.clone(),
        ));
        stop.await;
        self.state.draining.store(true, Ordering::Release);
        let drain_delay = config.shutdown.drain_delay();
        if !drain_delay.is_zero() {
            tracing::info!(
                drain_delay_s = drain_delay.as_secs(),
                "draining: /api/ready answers 503; still serving until the delay ends"
            );
            tokio::time::sleep(drain_delay).await;
        }
        tracing::info!(deadline_s = deadline.as_secs(), "shutting down");
        stopping.cancel();
        // Realtime ends alongside the HTTP drain, not after it: an event stream is a response
        // that lasts until the hub closes it, so the drain waits on the hub's shutdown.
        let realtime = async {
            // Once the batcher has stopped, nothing more is committed here.
            self.ingest.shutdown(deadline).await;
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
        };
        let (served, ()) = tokio::join!(server, realtime);
        served.context("the accept loop panicked")?;
        let _ = self.backfill.await;
        if let Some(retention) = self.retention {
            retention.stop().await;
        }
        self.key_purge.stop().await;
        tokio::time::timeout(Duration::from_secs(5), self.store.close())
            .await
            .ok();
        metrics_stopping.cancel();
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The four ways Vigil runs (the README's *Modes*), decided once at start from the store's
/// backend and whether Redis is configured; everything that differs between them is built by
/// the one `match` in [`Application::build`].
enum Mode {
    /// SQLite, no Redis: this process is the only writer, so its own commits are the whole
    /// story: in-process recent list and broadcast.
    Embedded,
    /// SQLite with Redis: the Redis list and channel, carrying this instance's events only.
    SqliteWithRedis(RedisTarget),
    /// MySQL with Redis: the Redis list and channel, shared by every instance.
    Full(RedisTarget),
    /// MySQL, no Redis: another instance may write, so no recent list (reads go to the
    /// database), and an in-process broadcast of this instance's events.
    MysqlWithoutRedis,
}

/// The start-up line that says which mode runs and why.
struct ModeLine {
    name: &'static str,
    /// What serves the cache rule's page-1 reads.
    cache: &'static str,
    /// Whose events WebSocket clients get.
    broadcast: &'static str,
    why: String,
}

impl Mode {
    fn of(store: &Store, redis: Option<RedisTarget>) -> Mode {
        match (store.backend_name() == "sqlite", redis) {
            (true, None) => Mode::Embedded,
            (true, Some(target)) => Mode::SqliteWithRedis(target),
            (false, Some(target)) => Mode::Full(target),
            (false, None) => Mode::MysqlWithoutRedis,
        }
    }

    fn line(&self, config: &Config) -> ModeLine {
        let redis_set = format!("{} is set", config.redis.redis_setting());
        match self {
            Mode::Embedded => ModeLine {
                name: "embedded",
                cache: "in-process recent list",
                broadcast: "in-process, this instance",
                why: if config.store.database_url.is_some() {
                    "DATABASE_URL is sqlite and REDIS_URL is not set".into()
                } else {
                    "DATABASE_URL and REDIS_URL are not set".into()
                },
            },
            Mode::SqliteWithRedis(_) => ModeLine {
                name: "sqlite with redis",
                cache: "redis list",
                broadcast: "redis channel, this instance's events only",
                why: format!("DATABASE_URL is not mysql and {redis_set}"),
            },
            Mode::Full(_) => ModeLine {
                name: "full",
                cache: "redis list",
                broadcast: "redis channel, every instance",
                why: format!("DATABASE_URL is mysql and {redis_set}"),
            },
            Mode::MysqlWithoutRedis => ModeLine {
                name: "mysql without redis",
                cache: "none: list reads come from the database (other instances may write)",
                broadcast: "in-process, this instance's events only",
                why: "DATABASE_URL is mysql and REDIS_URL is not set".into(),
            },
        }
    }
}

/// What differs between the modes, built by the one `match` on [`Mode`].
struct Wiring {
    /// The Redis publisher, drained at shutdown; `None` without Redis.
    publisher: Option<Publisher>,
    /// Where the batcher hands each committed batch.
    sink: Arc<dyn CommitSink>,
    /// What feeds the hub.
    feed: HubFeed,
    /// The recent list behind the cache rule; `None` when the mode has none.
    recent: Option<RecentList>,
    /// Whether the list answered at start: a list that did not is not warmed (it refills on
    /// the first read), so start-up does not wait on it.
    recent_answered: bool,
}

/// A mode's recent list, before the pipeline it follows has started.
enum RecentList {
    /// The Redis list every instance shares.
    Redis { bus: RedisBus, publisher: Publisher },
    /// The embedded mode's in-process list, fed by this process's batcher.
    Local(LocalRecent),
}

impl RecentList {
    /// Where the cache reads the list; the in-process one also follows the batcher's
    /// acknowledged commits, so a client always reads its own writes.
    fn source(self, ingest: &Ingest) -> RecentSource {
        match self {
            RecentList::Redis { bus, publisher } => RecentSource::Redis {
                bus,
                publisher: Some(publisher),
            },
            RecentList::Local(list) => RecentSource::Local {
                list,
                ingest: ingest.queue(),
            },
        }
    }
}

/// The Redis modes' wiring: the bus (the list), the publisher (the commit sink) and the
/// bridge that feeds the hub from the channel.
async fn redis_wiring(
    target: RedisTarget,
    settings: &RedisSettings,
    hub: &Hub,
) -> anyhow::Result<Wiring> {
    let names = BusNames {
        recent_key: settings.redis_recent_key.clone(),
        channel: settings.redis_channel.clone(),
        recent_size: settings.recent_size as usize,
    };
    let bus = RedisBus::connect_lazy_to(target.clone(), names)
        .with_context(|| format!("configure {}", target.description()))?;
    let answered = match bus.ping().await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(redis = target.description(), %error, "redis is not answering; ingest and reads go on, the cache and broadcast resume when it is back");
            false
        }
    };
    let publisher = Publisher::start(bus.clone(), PUBLISH_QUEUE_BATCHES);
    let bridge = Bridge::start(
        target.clone(),
        settings.redis_channel.clone(),
        bus.names().gap_channel(),
        hub.clone(),
    );
    // Worth waiting for only when Redis answered: otherwise the warning above said it all,
    // and the bridge reads new events from the database until the channel is up.
    if answered && !bridge.wait_subscribed(BRIDGE_START_WAIT).await {
        tracing::warn!(
            redis = target.description(),
            "not subscribed to the event channel yet; websocket clients get events from the database until it is up"
        );
    }
    Ok(Wiring {
        publisher: Some(publisher.clone()),
        sink: Arc::new(publisher.clone()),
        feed: HubFeed::Redis(bridge),
        recent: Some(RecentList::Redis { bus, publisher }),
        recent_answered: answered,
    })
}

/// Where Redis is: the primary the sentinels name (`VIGIL_REDIS_SENTINELS` and
/// `VIGIL_REDIS_SENTINEL_MASTER`, with `REDIS_URL`'s scheme, credentials and database for the
/// data nodes), else the one server at `REDIS_URL`; `None` without Redis.
fn redis_target(settings: &RedisSettings) -> anyhow::Result<Option<RedisTarget>> {
    if let (Some(sentinels), Some(master)) =
        (&settings.redis_sentinels, &settings.redis_sentinel_master)
    {
        if let Some(redis_url) = &settings.redis_url {
            tracing::info!(
                redis_url = %redis_url,
                "with VIGIL_REDIS_SENTINELS, REDIS_URL gives only the scheme, credentials and \
                 database of the data nodes; its host and port are not used"
            );
        }
        let data_url = settings.redis_url.as_ref().map(SecretUrl::expose);
        let target = RedisTarget::sentinel(sentinels, master, data_url)
            .context("configure redis sentinel (VIGIL_REDIS_SENTINELS)")?;
        return Ok(Some(target));
    }
    settings
        .redis_url
        .as_ref()
        .map(|redis_url| {
            RedisTarget::direct(redis_url.expose())
                .with_context(|| format!("configure redis at {redis_url}"))
        })
        .transpose()
}

/// Opens the store the README's *Modes* name: `DATABASE_URL` when set (`mysql://…` or
/// `sqlite://…`), else the embedded SQLite file in `VIGIL_DATA_DIR`, created if missing.
async fn open_store(settings: &StoreSettings) -> anyhow::Result<Store> {
    let options = StoreOptions {
        statement_timeout: settings.statement_timeout(),
        ..StoreOptions::default()
    };
    match &settings.database_url {
        Some(database_url) => connect_waiting(database_url, &options, settings.database_wait())
            .await
            .with_context(|| format!("connect to the database at {database_url}")),
        None => {
            let data_dir = settings.resolved_data_dir().map_err(anyhow::Error::msg)?;
            Store::open_embedded(&data_dir, &options)
                .await
                .with_context(|| {
                    format!(
                        "open the embedded database in {} (VIGIL_DATA_DIR)",
                        data_dir.display()
                    )
                })
        }
    }
}

/// First wait between connection attempts at start-up, doubled after each up to
/// [`DATABASE_RETRY_MAX`].
const DATABASE_RETRY_FIRST: Duration = Duration::from_millis(500);
const DATABASE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Connects to `DATABASE_URL`, trying again with back-off for up to `wait` while the failure
/// may pass (the server refuses or does not answer yet, as when a stack starts its database
/// second); a failure no retry can fix (a bad URL, bad credentials, a migration) ends at once.
async fn connect_waiting(
    database_url: &SecretUrl,
    options: &StoreOptions,
    wait: Duration,
) -> Result<Store, vigil_store::StoreError> {
    let give_up_at = tokio::time::Instant::now() + wait;
    let mut pause = DATABASE_RETRY_FIRST;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match Store::connect(database_url.expose(), options).await {
            Ok(store) => {
                if attempts > 1 {
                    tracing::info!(attempts, "the database answered");
                }
                return Ok(store);
            }
            Err(error) => error,
        };
        let now = tokio::time::Instant::now();
        if !error.is_retriable() || now >= give_up_at {
            return Err(error);
        }
        if attempts == 1 {
            tracing::warn!(
                %error,
                wait_s = wait.as_secs(),
                "the database does not answer yet; trying again until VIGIL_DATABASE_WAIT_S passes"
            );
        } else {
            tracing::debug!(%error, attempts, "the database still does not answer");
        }
        tokio::time::sleep(pause.min(give_up_at - now)).await;
        pause = (pause * 2).min(DATABASE_RETRY_MAX);
    }
}

/// A start-up failure that a setting caused and only a change of setting (or stopping
/// another process) can fix: the binary exits 2 with one line naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct BadSetting {
    /// The environment variable (its flag is in `--help`).
    pub setting: &'static str,
    pub problem: String,
}

/// Binds `addr` (the `setting` names it in an error) without listening yet, so that the
/// address is ours before anything else starts, and no connection is accepted before Vigil
/// can answer it.
fn reserve(addr: SocketAddr, setting: &'static str) -> Result<TcpSocket, BadSetting> {
    let bound = (|| {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok::<_, std::io::Error>(socket)
    })();
    bound.map_err(|error| BadSetting {
        setting,
        problem: format!("cannot listen on {addr}: {error}"),
    })
}
