//! The read side of the Redis recent list, as the list API uses it.
//!
//! [`RecentCache::page`] answers page 1 from the list when it can do so truthfully; on a miss
//! (a short or cold list, or a gap the publisher marked) the caller reads the database and
//! [`RecentCache::refill_soon`] repairs the list in the background, one refill at a time, so
//! a burst of misses costs one database read, not one each. A Redis failure is a miss: reads
//! fall back to the database and never wait long on Redis (the bus bounds every command).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use vigil_bus::{Publisher, RecentRead, RedisBus, RefillTicket};
use vigil_core::EventQuery;
use vigil_store::Store;

use crate::http::list::finish_page;

pub struct RecentCache {
    bus: RedisBus,
    /// Entries kept in the list (`VIGIL_RECENT_SIZE`), the amount a refill reads.
    recent_size: usize,
    /// Set while a background refill runs.
    refilling: Arc<AtomicBool>,
    /// This process's publisher: while it holds a gap not yet marked in Redis, the list may
    /// look complete yet miss the dropped events, so reads go to the database.
    publisher: Option<Publisher>,
}

impl RecentCache {
    pub fn new(bus: RedisBus, recent_size: usize, publisher: Option<Publisher>) -> Self {
        RecentCache {
            bus,
            recent_size,
            refilling: Arc::new(AtomicBool::new(false)),
            publisher,
        }
    }

    /// The response body for a cacheable `query`, if the list can answer it.
    pub async fn page(&self, query: &EventQuery) -> Option<Bytes> {
        if self
            .publisher
            .as_ref()
            .is_some_and(Publisher::has_unmarked_gap)
        {
            return None;
        }
        let read = self.bus.recent(query.size as usize).await;
        let (newest_first, has_more) = match read {
            Ok(RecentRead::Hit {
                newest_first,
                has_more,
            }) => (newest_first, has_more),
            Ok(RecentRead::Miss(_)) => return None,
            Err(error) => {
                tracing::debug!(%error, "recent list unavailable; reading the database");
                return None;
            }
        };
        let length: usize = newest_first.iter().map(Bytes::len).sum();
        let mut out = Vec::with_capacity(64 + length + newest_first.len());
        out.extend_from_slice(b"{\"items\":[");
        for (position, entry) in newest_first.iter().enumerate() {
            if position > 0 {
                out.push(b',');
            }
            out.extend_from_slice(entry);
        }
        out.push(b']');
        finish_page(&mut out, query, has_more, None);
        Some(Bytes::from(out))
    }

    /// Refills the list from the database in the background, unless a refill is running.
    pub fn refill_soon(&self, store: &Store) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let bus = self.bus.clone();
        let store = store.clone();
        let recent_size = self.recent_size;
        let refilling = Arc::clone(&self.refilling);
        tokio::spawn(async move {
            if let Err(error) = refill(&bus, &store, recent_size).await {
                tracing::debug!(%error, "recent list refill failed");
            }
            refilling.store(false, Ordering::Release);
        });
    }

    /// Fills the list from the database now (at start).
    pub async fn warm(&self, store: &Store) -> anyhow::Result<()> {
        refill(&self.bus, store, self.recent_size).await
    }
}

async fn refill(bus: &RedisBus, store: &Store, recent_size: usize) -> anyhow::Result<()> {
    // The ticket is taken before the database read, so gaps raised meanwhile stay marked.
    let ticket: RefillTicket = bus.refill_ticket().await?;
    let newest = store.latest(recent_size).await?;
    let encoded: Vec<Bytes> = newest
        .iter()
        .map(|event| Bytes::from(event.as_ref().encode()))
        .collect();
    bus.refill(ticket, &encoded).await?;
    Ok(())
}
