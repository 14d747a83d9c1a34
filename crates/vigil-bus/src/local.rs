//! The recent list inside the process, for the embedded mode (SQLite, no Redis).
//!
//! With one instance writing its own SQLite file, the Redis list would be a second service
//! for nothing: the newest `VIGIL_RECENT_SIZE` encoded events fit in memory. [`LocalRecent`]
//! keeps them with the same semantics as the Redis list (CACHE.md): largest id first, each id
//! once, at most K entries, fed from the batcher's committed batches, warmed and repaired
//! from the store by merging by id, and answering a page only with a look-ahead entry, so a
//! short list never hides events the store has.
//!
//! One thing differs: the batcher acknowledges a batch before handing it to its sinks, so
//! for a moment an acknowledged event may not be in the list yet. Redis readers live with
//! that; here the reader can do better at no cost. The list counts the events pushed into it,
//! and [`LocalRecent::newest`] takes the number of events the batcher has committed: while
//! the list has seen fewer, it answers a miss and the store answers, so a client always reads
//! its own acknowledged writes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::{CommittedBatch, PublishedEvent};

/// The newest events of this process's store, largest id first. Cheap to clone: clones
/// share the list.
#[derive(Clone)]
pub struct LocalRecent {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    /// Largest id first, strictly decreasing, at most `capacity` entries.
    newest_first: VecDeque<PublishedEvent>,
    /// `VIGIL_RECENT_SIZE`.
    capacity: usize,
    /// Events pushed from committed batches since start (refills not counted), compared
    /// with the batcher's committed count by [`LocalRecent::newest`].
    pushed_events: u64,
}

impl LocalRecent {
    /// An empty list keeping at most `capacity` entries.
    pub fn new(capacity: usize) -> LocalRecent {
        debug_assert!(capacity > 0, "the list keeps at least one entry");
        LocalRecent {
            inner: Arc::new(Mutex::new(Inner {
                newest_first: VecDeque::with_capacity(capacity),
                capacity,
                pushed_events: 0,
            })),
        }
    }

    /// Adds a committed batch (events in id-ascending order). Never blocks for long: the
    /// lock is held for at most K moves of reference-counted entries.
    pub fn push(&self, batch: &CommittedBatch) {
        let mut inner = self.lock();
        inner.pushed_events += batch.events.len() as u64;
        inner.merge(batch.events.iter().cloned());
    }

    /// Merges the store's newest events (any order) into the list, after a warm-up read or
    /// a miss. Entries pushed meanwhile are kept: the merge is by id.
    pub fn refill(&self, events: impl IntoIterator<Item = PublishedEvent>) {
        self.lock().merge(events);
    }

    /// The newest `size` entries, largest id first, when the list can answer truthfully:
    /// it has taken every batch the batcher committed (`committed_events`, counted since
    /// start) and holds more than `size` entries (so more events exist beyond the page).
    /// `None` is a miss: read the store.
    pub fn newest(&self, size: usize, committed_events: u64) -> Option<Vec<Bytes>> {
        let inner = self.lock();
        if inner.pushed_events < committed_events || inner.newest_first.len() <= size {
            return None;
        }
        Some(
            inner
                .newest_first
                .iter()
                .take(size)
                .map(|event| event.json.clone())
                .collect(),
        )
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().newest_first.len()
    }

    /// Whether the list holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events pushed from committed batches since start.
    pub fn pushed_events(&self) -> u64 {
        self.lock().pushed_events
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the list out of order (every
        // mutation rebuilds it before storing), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn merge(&mut self, events: impl IntoIterator<Item = PublishedEvent>) {
        let mut incoming: Vec<PublishedEvent> = events.into_iter().collect();
        incoming.sort_unstable_by_key(|event| event.id);
        let head = self.newest_first.front().map(|event| event.id);
        let fits_at_head = incoming.windows(2).all(|pair| pair[0].id < pair[1].id)
            && incoming
                .first()
                .is_none_or(|oldest| head.is_none_or(|head| oldest.id > head));
        if fits_at_head {
            // The one path a single writer takes: every new id is larger than the head's.
            let skip = incoming.len().saturating_sub(self.capacity);
            for event in incoming.into_iter().skip(skip) {
                self.newest_first.push_front(event);
            }
        } else {
            let mut merged: Vec<PublishedEvent> = self.newest_first.drain(..).collect();
            merged.extend(incoming);
            merged.sort_unstable_by_key(|event| std::cmp::Reverse(event.id));
            merged.dedup_by_key(|event| event.id);
            self.newest_first.extend(merged);
        }
        self.newest_first.truncate(self.capacity);
        debug_assert!(
            self.newest_first
                .iter()
                .zip(self.newest_first.iter().skip(1))
                .all(|(newer, older)| newer.id > older.id),
            "the list stays strictly id-descending"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::event;
    use vigil_core::UnixMillis;

    fn batch(ids: impl IntoIterator<Item = u64>) -> CommittedBatch {
        CommittedBatch {
            events: ids.into_iter().map(event).collect(),
            created_at: UnixMillis(0),
        }
    }

    fn ids(entries: &[Bytes]) -> Vec<u64> {
        entries
            .iter()
            .map(|entry| crate::entry_id(entry).unwrap())
            .collect()
    }

    #[test]
    fn keeps_the_largest_ids_newest_first() {
        let list = LocalRecent::new(5);
        list.push(&batch(1..=3));
        list.push(&batch(4..=9));
        assert_eq!(list.len(), 5);
        assert_eq!(ids(&list.newest(4, 9).unwrap()), [9, 8, 7, 6]);
    }

    #[test]
    fn a_short_list_is_a_miss() {
        let list = LocalRecent::new(100);
        list.push(&batch(1..=10));
        assert!(list.newest(10, 10).is_none(), "no look-ahead entry");
        assert_eq!(
            ids(&list.newest(9, 10).unwrap()),
            (2..=10).rev().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_list_behind_the_batcher_is_a_miss() {
        let list = LocalRecent::new(100);
        list.push(&batch(1..=20));
        assert!(
            list.newest(5, 21).is_none(),
            "an acknowledged event is not in yet"
        );
        assert!(list.newest(5, 20).is_some());
    }

    #[test]
    fn refills_merge_by_id_with_concurrent_pushes() {
        let list = LocalRecent::new(6);
        list.push(&batch([10, 11]));
        // A refill read before 10 and 11 were pushed, holding older events and one overlap.
        list.refill([10, 9, 8, 7, 6, 5, 4].map(event));
        assert_eq!(ids(&list.newest(5, 2).unwrap()), [11, 10, 9, 8, 7]);
        assert_eq!(list.len(), 6);
        assert_eq!(list.pushed_events(), 2, "refills are not pushes");
    }

    #[test]
    fn out_of_order_batches_are_merged() {
        let list = LocalRecent::new(4);
        list.push(&batch([5, 6]));
        list.push(&batch([2, 7]));
        list.push(&batch([1]));
        assert_eq!(ids(&list.newest(3, 5).unwrap()), [7, 6, 5]);
        assert_eq!(list.len(), 4);
    }
}
