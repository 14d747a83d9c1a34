//! `GET /metrics`: Vigil's Prometheus metrics, and the cheap recording behind them.
//!
//! Recording must cost nothing a request would notice, so nothing here takes a lock per
//! event or per request: HTTP requests land in fixed arrays of atomics indexed by route,
//! method and status, and latencies in lock-free histograms ([`AtomicHistogram`]). Most
//! metrics are not recorded here at all: the pipeline's parts already keep atomic counters
//! (the batcher's [`BatchStats`], the publisher's [`PublisherStats`], the hub's and bridge's
//! stats, the cache's [`CacheStats`]), and the [`Collector`] reads them at scrape time.
//!
//! Labels have bounded values only: `route` is the route pattern (`/api/events/{id}`, never
//! the raw path), `method` one of four, `status` a status code, `reason` one of the ingest
//! error codes. The output is the OpenMetrics text format of the `prometheus-client` crate
//! (counters are named without `_total` in `# TYPE` and with it on samples), which
//! Prometheus scrapes natively.
//!
//! [`BatchStats`]: vigil_ingest::BatchStats
//! [`PublisherStats`]: vigil_bus::PublisherStats

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use vigil_bus::Publisher;
use vigil_core::{AtomicHistogram, HistogramSnapshot};
use vigil_ingest::{IngestQueue, StoreState};

use crate::api::{ErrorCode, Route};
use crate::cache::CacheStats;
use vigil_realtime::{BridgeStats, Hub};

/// The `Content-Type` of a scrape answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `method` label values; everything else is `other`.
const METHODS: [&str; 4] = ["GET", "HEAD", "POST", "other"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        _ => 3,
    }
}

/// Status codes 100..=599, one counter each.
const FIRST_STATUS: u16 = 100;
const STATUS_SLOTS: usize = 500;

/// One (route, method) pair's counters.
#[derive(Debug)]
struct EndpointStats {
    /// Responses by status code, `status - FIRST_STATUS`.
    statuses: Box<[AtomicU64]>,
    latency: AtomicHistogram,
}

/// What the HTTP layer records. Read by the [`Collector`] at scrape time.
#[derive(Debug)]
pub struct Metrics {
    /// `Route::ALL.len() × METHODS.len()` endpoints, route-major.
    endpoints: Box<[EndpointStats]>,
    /// Refused ingest requests, by [`ErrorCode::index`] (only the codes ingest can answer
    /// are exported).
    ingest_rejected: [AtomicU64; ErrorCode::ALL.len()],
    /// Database reads (list, get) that failed.
    db_read_errors: AtomicU64,
    /// Keyed ingest requests answered from an earlier request's record.
    idempotent_replays: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let endpoints = (0..Route::ALL.len() * METHODS.len())
            .map(|_| EndpointStats {
                statuses: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
                latency: AtomicHistogram::latency_seconds(),
            })
            .collect();
        Metrics {
            endpoints,
            ingest_rejected: Default::default(),
            idempotent_replays: AtomicU64::new(0),
            db_read_errors: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    fn endpoint(&self, route: Route, method: usize) -> &EndpointStats {
        let route = Route::ALL
            .iter()
            .position(|candidate| *candidate == route)
            .unwrap_or(Route::ALL.len() - 1);
        &self.endpoints[route * METHODS.len() + method]
    }

    /// Counts one answered request and its latency.
    pub fn record_request(&self, route: Route, method: &Method, status: u16, elapsed: Duration) {
        let endpoint = self.endpoint(route, method_index(method));
        let slot = usize::from(status.saturating_sub(FIRST_STATUS)).min(STATUS_SLOTS - 1);
        endpoint.statuses[slot].fetch_add(1, Ordering::Relaxed);
        endpoint.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts one refused `POST /api/events`, by its error code.
    pub fn record_ingest_rejected(&self, code: ErrorCode) {
        self.ingest_rejected[code.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one keyed ingest request answered from its key's record.
    pub fn record_idempotent_replay(&self) {
        self.idempotent_replays.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed database read.
    pub fn record_db_read_error(&self) {
        self.db_read_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a scrape reads: the HTTP layer's [`Metrics`] and the pipeline's own counters.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub ingest: IngestQueue,
    /// `VIGIL_QUEUE_EVENTS`, for the queue's fill ratio.
    pub queue_capacity: u64,
    pub publisher: Option<Publisher>,
    pub cache: Option<Arc<CacheStats>>,
    pub hub: Hub,
    pub bridge: Option<Arc<BridgeStats>>,
    pub retention: Option<Arc<crate::retention::RetentionStats>>,
    /// The purge of expired idempotency records.
    pub key_purge: Arc<crate::retention::RetentionStats>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// The registry a scrape encodes.
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    pub fn new(sources: Sources) -> Exporter {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(sources));
        Exporter { registry }
    }

    /// The scrape answer's body.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "metrics encoding failed");
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

/// `(name, value)` label pairs.
type Labels<'a> = [(&'static str, &'a str)];

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// One counter family with a single label, one sample per `(label value, count)`.
fn labelled_counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in samples {
        let labels: &Labels = &[(label, value)];
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
) -> Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    histogram_samples(&mut metric, snapshot)
}

fn histogram_samples(metric: &mut MetricEncoder, snapshot: &HistogramSnapshot) -> Result {
    metric.encode_histogram::<NoLabelSet>(snapshot.sum, snapshot.count, &snapshot.buckets, None)
}

type Result = std::result::Result<(), std::fmt::Error>;

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Sources {
    fn encode_http(&self, encoder: &mut DescriptorEncoder) -> Result {
        let metrics = &self.metrics;
        let mut requests = encoder.encode_descriptor(
            "vigil_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            None,
            MetricType::Counter,
        )?;
        let mut status_text = itoa::Buffer::new();
        for route in Route::ALL {
            for (method_position, method) in METHODS.iter().enumerate() {
                let endpoint = metrics.endpoint(route, method_position);
                for (slot, count) in endpoint.statuses.iter().enumerate() {
                    let count = count.load(Ordering::Relaxed);
                    if count == 0 {
                        continue;
                    }
                    let status = status_text.format(FIRST_STATUS as usize + slot);
                    let labels: &Labels = &[
                        ("route", route.pattern()),
                        ("method", method),
                        ("status", status),
                    ];
                    requests
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
            }
        }
        let mut latency = encoder.encode_descriptor(
            "vigil_http_request_duration_seconds",
            "Time from a request's headers to its response, by route pattern and method",
            None,
            MetricType::Histogram,
        )?;
        for route in Route::ALL {
            for (method_position, method) in METHODS.iter().enumerate() {
                let endpoint = metrics.endpoint(route, method_position);
                if endpoint.latency.count() == 0 {
                    continue;
                }
                let labels: &Labels = &[("route", route.pattern()), ("method", method)];
                histogram_samples(
                    &mut latency.encode_family(&labels)?,
                    &endpoint.latency.snapshot(),
                )?;
            }
        }
        Ok(())
    }

    fn encode_ingest(&self, encoder: &mut DescriptorEncoder) -> Result {
        let stats = self.ingest.stats();
        counter(
            encoder,
            "vigil_events_accepted",
            "Events committed to the database and acknowledged",
            stats.rows.load(Ordering::Relaxed),
        )?;
        labelled_counters(
            encoder,
            "vigil_ingest_rejected",
            "POST /api/events requests refused, by error code (a refused bulk counts once: it is all or nothing)",
            "reason",
            ErrorCode::ALL
                .iter()
                .zip(&self.metrics.ingest_rejected)
                .filter(|(code, _)| code.answers_ingest())
                .map(|(code, count)| (code.as_str(), count.load(Ordering::Relaxed))),
        )?;
        counter(
            encoder,
            "vigil_idempotent_replays",
            "POST /api/events requests with an Idempotency-Key answered from the original request's record (nothing written)",
            self.metrics.idempotent_replays.load(Ordering::Relaxed),
        )?;
        gauge(
            encoder,
            "vigil_ingest_queue_depth",
            "Events admitted to the ingest queue and not yet answered (queued or being written)",
            saturating_i64(self.ingest.depth() as u64),
        )?;
        gauge(
            encoder,
            "vigil_ingest_queue_capacity",
            "The ingest queue's budget in events (VIGIL_QUEUE_EVENTS)",
            saturating_i64(self.queue_capacity),
        )?;
        counter(
            encoder,
            "vigil_batches",
            "Batches committed to the database",
            stats.batches.load(Ordering::Relaxed),
        )?;
        counter(
            encoder,
            "vigil_batches_overlapped",
            "Batches written on a second writer connection while another batch committed",
            stats.overlapped_batches.load(Ordering::Relaxed),
        )?;
        histogram(
            encoder,
            "vigil_batch_rows",
            "Rows per committed batch",
            &stats.batch_rows.snapshot(),
        )?;
        histogram(
            encoder,
            "vigil_batch_flush_duration_seconds",
            "Time to write one batch and learn its outcome, retries included",
            &stats.flush_seconds.snapshot(),
        )?;
        let store_state = self.ingest.store_state();
        gauge(
            encoder,
            "vigil_store_up",
            "1 while the batcher can write to the database; 0 while it is unreachable or a batch's outcome is being settled (new posts are then refused with 503)",
            i64::from(store_state == StoreState::Up),
        )?;
        gauge(
            encoder,
            "vigil_store_settling",
            "1 while the batcher is finding out whether a batch whose connection failed committed",
            i64::from(store_state == StoreState::Settling),
        )?;
        labelled_counters(
            encoder,
            "vigil_batches_settled_late",
            "Batches answered 504 outcome_unknown whose outcome the batcher learned afterwards, by outcome (committed ones are published as usual)",
            "outcome",
            [
                (
                    "committed",
                    stats.settled_late_committed.load(Ordering::Relaxed),
                ),
                (
                    "not_committed",
                    stats.settled_late_not_committed.load(Ordering::Relaxed),
                ),
            ],
        )?;
        labelled_counters(
            encoder,
            "vigil_db_errors",
            "Database calls that failed, by operation (write: the batcher's; read: list and get)",
            "operation",
            [
                ("write", stats.store_errors.load(Ordering::Relaxed)),
                ("read", self.metrics.db_read_errors.load(Ordering::Relaxed)),
            ],
        )
    }

    fn encode_redis(&self, encoder: &mut DescriptorEncoder) -> Result {
        let publisher = self.publisher.as_ref().map(Publisher::stats);
        let cache = self.cache.as_deref();
        labelled_counters(
            encoder,
            "vigil_redis_errors",
            "Redis round trips that failed, by operation (publish: the publisher's; read: the recent-list cache's)",
            "operation",
            [
                ("publish", publisher.map_or(0, |stats| stats.redis_errors())),
                ("read", cache.map_or(0, CacheStats::redis_errors)),
            ],
        )?;
        counter(
            encoder,
            "vigil_publisher_published_events",
            "Events pushed to the Redis list and channel",
            publisher.map_or(0, |stats| stats.events_published()),
        )?;
        counter(
            encoder,
            "vigil_publisher_dropped_events",
            "Committed events the publisher could not send to Redis (the database has them)",
            publisher.map_or(0, |stats| stats.events_dropped()),
        )?;
        counter(
            encoder,
            "vigil_publisher_gaps",
            "Gaps opened in the Redis list by dropped events",
            publisher.map_or(0, |stats| stats.gaps()),
        )?;
        counter(
            encoder,
            "vigil_cache_hits",
            "Cacheable list reads answered from the Redis recent list",
            cache.map_or(0, CacheStats::hits),
        )?;
        counter(
            encoder,
            "vigil_cache_misses",
            "Cacheable list reads the recent list could not answer (read from the database)",
            cache.map_or(0, CacheStats::misses),
        )?;
        Ok(())
    }

    fn encode_retention(&self, encoder: &mut DescriptorEncoder) -> Result {
        let stats = self.retention.as_deref();
        counter(
            encoder,
            "vigil_retention_deleted_events",
            "Events deleted because they were older than VIGIL_RETENTION",
            stats.map_or(0, |stats| stats.deleted()),
        )?;
        counter(
            encoder,
            "vigil_retention_errors",
            "Retention passes that stopped on a database error",
            stats.map_or(0, |stats| stats.errors()),
        )?;
        counter(
            encoder,
            "vigil_idempotency_records_purged",
            "Idempotency records deleted after VIGIL_IDEMPOTENCY_TTL",
            self.key_purge.deleted(),
        )
    }

    fn encode_ws(&self, encoder: &mut DescriptorEncoder) -> Result {
        let hub = self.hub.stats();
        gauge(
            encoder,
            "vigil_ws_clients",
            "WebSocket clients connected now",
            saturating_i64((self.hub.client_count() - self.hub.sse_client_count()) as u64),
        )?;
        gauge(
            encoder,
            "vigil_sse_clients",
            "Server-Sent Events clients (GET /api/events/stream) connected now",
            saturating_i64(self.hub.sse_client_count() as u64),
        )?;
        counter(
            encoder,
            "vigil_ws_frames_sent",
            "Event frames handed to live clients' send queues (WebSocket and SSE)",
            hub.frames_queued(),
        )?;
        counter(
            encoder,
            "vigil_ws_slow_consumer_drops",
            "WebSocket clients closed because their queue was full (slow consumers)",
            hub.slow_consumers(),
        )?;
        counter(
            encoder,
            "vigil_ws_refused_clients",
            "WebSocket upgrades refused because VIGIL_WS_MAX_CLIENTS were connected",
            hub.clients_refused(),
        )?;
        counter(
            encoder,
            "vigil_ws_backfilled_events",
            "Events the live feed had lost, re-read from the database and fanned out (backfill)",
            hub.backfilled_events(),
        )?;
        counter(
            encoder,
            "vigil_ws_backfills",
            "Backfill runs completed (after a subscription loss or a gap notice)",
            hub.backfills(),
        )?;
        counter(
            encoder,
            "vigil_ws_resumes",
            "WebSocket clients resumed with ?since=",
            hub.resumes(),
        )?;
        counter(
            encoder,
            "vigil_ws_replayed_events",
            "Stored events replayed to resuming WebSocket clients",
            hub.replayed_events(),
        )?;
        counter(
            encoder,
            "vigil_ws_duplicates_dropped",
            "Events a source offered the hub again after they were fanned out (not resent)",
            hub.duplicates_dropped(),
        )?;
        counter(
            encoder,
            "vigil_ws_bridge_reconnects",
            "Reconnects of the Redis subscription that feeds the hub",
            self.bridge.as_ref().map_or(0, |bridge| bridge.reconnects()),
        )?;
        Ok(())
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        let version: &Labels = &[("version", env!("CARGO_PKG_VERSION"))];
        encoder
            .encode_descriptor(
                "vigil_build",
                "The running Vigil's version",
                None,
                MetricType::Info,
            )?
            .encode_info(&version)?;
        self.encode_http(&mut encoder)?;
        self.encode_ingest(&mut encoder)?;
        self.encode_redis(&mut encoder)?;
        self.encode_retention(&mut encoder)?;
        self.encode_ws(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_reasons_and_statuses_stay_in_bounds() {
        let metrics = Metrics::default();
        metrics.record_ingest_rejected(ErrorCode::Internal);
        assert_eq!(
            metrics.ingest_rejected[ErrorCode::Internal.index()].load(Ordering::Relaxed),
            1
        );
        metrics.record_request(Route::Ws, &Method::PATCH, 999, Duration::ZERO);
        metrics.record_request(Route::Ws, &Method::PATCH, 0, Duration::ZERO);
        let endpoint = metrics.endpoint(Route::Ws, 3);
        assert_eq!(
            endpoint.statuses[STATUS_SLOTS - 1].load(Ordering::Relaxed),
            1
        );
        assert_eq!(endpoint.statuses[0].load(Ordering::Relaxed), 1);
    }
}
