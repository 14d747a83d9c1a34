//! The recent list behind the cache rule, as the list API uses it: the Redis list, or the
//! in-process list of the embedded mode, behind one [`RecentCache`].
//!
//! [`RecentCache::page`] answers page 1 from the list when it can do so truthfully; on a miss
//! (a short or cold list, a gap the publisher marked, or an in-process list that has not yet
//! taken the last acknowledged batch) the caller reads the database and
//! [`RecentCache::refill_soon`] repairs the list in the background, one refill at a time, so
//! a burst of misses costs one database read, not one each. A Redis failure is a miss: reads
//! fall back to the database and never wait long on Redis (the bus bounds every command).
//! Hits, misses and Redis failures are counted in [`CacheStats`] for the metrics endpoint.
//!
//! Both lists have the same semantics (vigil-bus's CACHE.md); only where the entries live
//! differs, so the page assembly, the counters and the refill guard are shared here and
//! [`RecentSource`] is the one place that knows the two apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use vigil_bus::{LocalRecent, PublishedEvent, Publisher, RecentRead, RedisBus, RefillTicket};
use vigil_core::EventQuery;
use vigil_ingest::IngestQueue;
use vigil_store::Store;

use crate::page::page_from_entries;

/// The cache's counters, for metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Cacheable reads the list answered.
    hits: AtomicU64,
    /// Cacheable reads sent to the database instead.
    misses: AtomicU64,
    /// Reads, refills and pings of the list that failed on Redis.
    redis_errors: AtomicU64,
}

impl CacheStats {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub fn redis_errors(&self) -> u64 {
        self.redis_errors.load(Ordering::Relaxed)
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where the recent list lives.
#[derive(Clone)]
pub enum RecentSource {
    /// The Redis list shared by every instance (`REDIS_URL`).
    Redis {
        bus: RedisBus,
        /// This process's publisher: while it holds a gap not yet marked in Redis, the list
        /// may look complete yet miss the dropped events, so reads go to the database.
        publisher: Option<Publisher>,
    },
    /// The in-process list of the embedded mode (SQLite, no Redis), fed by the batcher.
    Local {
        list: LocalRecent,
        /// The batcher's committed-event count, which the list must have caught up with.
        ingest: IngestQueue,
    },
}

pub struct RecentCache {
    source: RecentSource,
    /// Entries kept in the list (`VIGIL_RECENT_SIZE`), the amount a refill reads.
    recent_size: usize,
    /// Set while a background refill runs.
    refilling: Arc<AtomicBool>,
    stats: Arc<CacheStats>,
}

impl RecentCache {
    pub fn new(source: RecentSource, recent_size: usize) -> Self {
        RecentCache {
            source,
            recent_size,
            refilling: Arc::new(AtomicBool::new(false)),
            stats: Arc::default(),
        }
    }

    /// Hits, misses and Redis failures.
    pub fn stats(&self) -> Arc<CacheStats> {
        Arc::clone(&self.stats)
    }

    /// `"redis"` or `"in-process"`, for the start-up log.
    pub fn kind(&self) -> &'static str {
        match self.source {
            RecentSource::Redis { .. } => "redis",
            RecentSource::Local { .. } => "in-process",
        }
    }

    /// Whether Redis answers, within the bus's read deadline (for readiness); `None` for
    /// the in-process list, which has no Redis to ask.
    pub async fn ping_redis(&self) -> Option<bool> {
        let RecentSource::Redis { bus, .. } = &self.source else {
            return None;
        };
        let answered = bus.ping().await.is_ok();
        if !answered {
            CacheStats::count(&self.stats.redis_errors);
        }
        Some(answered)
    }

    /// The response body for a cacheable `query`, if the list can answer it.
    pub async fn page(&self, query: &EventQuery) -> Option<Bytes> {
        let answer = self.newest(query.size as usize).await.map(|newest_first| {
            // A hit always holds a look-ahead entry: more events exist beyond the page.
            page_from_entries(query, &newest_first, true)
        });
        CacheStats::count(if answer.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        });
        answer
    }

    /// The newest `size` entries, largest id first, if the list can answer truthfully.
    async fn newest(&self, size: usize) -> Option<Vec<Bytes>> {
        match &self.source {
            RecentSource::Redis { bus, publisher } => {
                if publisher.as_ref().is_some_and(Publisher::has_unmarked_gap) {
                    return None;
                }
                match bus.recent(size).await {
                    Ok(RecentRead::Hit { newest_first, .. }) => Some(newest_first),
                    Ok(RecentRead::Miss(_)) => None,
                    Err(error) => {
                        CacheStats::count(&self.stats.redis_errors);
                        tracing::debug!(%error, "recent list unavailable; reading the database");
                        None
                    }
                }
            }
            RecentSource::Local { list, ingest } => {
                let committed = ingest.stats().rows.load(Ordering::Acquire);
                list.newest(size, committed)
            }
        }
    }

    /// Refills the list from the database in the background, unless a refill is running.
    pub fn refill_soon(&self, store: &Store) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let source = self.source.clone();
        let store = store.clone();
        let recent_size = self.recent_size;
        let refilling = Arc::clone(&self.refilling);
        let stats = Arc::clone(&self.stats);
        tokio::spawn(async move {
            if let Err(error) = refill(&source, &store, recent_size).await {
                if error.is::<vigil_bus::BusError>() {
                    CacheStats::count(&stats.redis_errors);
                }
                tracing::debug!(%error, "recent list refill failed");
            }
            refilling.store(false, Ordering::Release);
        });
    }

    /// Fills the list from the database now (at start).
    pub async fn warm(&self, store: &Store) -> anyhow::Result<()> {
        refill(&self.source, store, self.recent_size).await
    }
}

async fn refill(source: &RecentSource, store: &Store, recent_size: usize) -> anyhow::Result<()> {
    match source {
        RecentSource::Redis { bus, .. } => {
            // The ticket is taken before the database read, so gaps raised meanwhile stay
            // marked.
            let ticket: RefillTicket = bus.refill_ticket().await?;
            let encoded: Vec<Bytes> = read_newest(store, recent_size)
                .await?
                .into_iter()
                .map(|event| event.json)
                .collect();
            bus.refill(ticket, &encoded).await?;
        }
        RecentSource::Local { list, .. } => {
            // Merged by id: batches pushed while the store was read are kept.
            list.refill(read_newest(store, recent_size).await?);
        }
    }
    Ok(())
}

/// The store's `recent_size` newest events, encoded as every reader receives them.
async fn read_newest(store: &Store, recent_size: usize) -> anyhow::Result<Vec<PublishedEvent>> {
    let newest = store.latest(recent_size).await?;
    Ok(newest
        .iter()
        .map(|event| PublishedEvent {
            id: event.id,
            json: Bytes::from(event.as_ref().encode()),
        })
        .collect())
}
