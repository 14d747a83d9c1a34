//! The commit-ordered publisher: committed batches go to the Redis list and channel, in the
//! order the batcher committed them, without ever making the batcher wait.
//!
//! The batcher hands each committed batch to [`Publisher::publish`], which only queues it (a
//! short mutex, never an await); one task sends what is queued, one pipelined round trip at a
//! time, coalescing the batches that queued up meanwhile. A slow or absent Redis shows up as a
//! full queue (the oldest batch is dropped) or a failed round trip (its batches are dropped):
//! both are counted and mark a gap, in Redis for every instance's readers and in this process
//! for the realtime backfill. CACHE.md beside this crate has the whole argument.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::entry::entry_id;
use crate::redis_bus::WRITE_DEADLINE;
use crate::{CommittedBatch, PublishedEvent, RedisBus};

/// At most this many queued batches are coalesced into one round trip…
const MAX_BATCHES_PER_ROUND_TRIP: usize = 64;

/// …and at most this many events (a single batch larger than this still goes whole).
const MAX_EVENTS_PER_ROUND_TRIP: usize = 4096;

/// Counters of the publisher's work, for metrics and tests. Every event handed to
/// [`Publisher::publish`] ends up counted once, as published or as dropped.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Batches whose round trip succeeded.
    batches_published: AtomicU64,
    /// Events in those batches.
    events_published: AtomicU64,
    /// Batches dropped: pushed out of a full queue, lost with a failed round trip, or left over
    /// at shutdown.
    batches_dropped: AtomicU64,
    /// Events in those batches.
    events_dropped: AtomicU64,
    /// Round trips that failed (Redis down, slow past the deadline, or an error reply).
    redis_errors: AtomicU64,
    /// Gaps opened: a gap opens with a drop while none is pending and closes when its mark
    /// reaches Redis. Also the process-local gap epoch.
    gaps: AtomicU64,
}

/// A copy of [`PublisherStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherCounts {
    pub batches_published: u64,
    pub events_published: u64,
    pub batches_dropped: u64,
    pub events_dropped: u64,
    pub redis_errors: u64,
    pub gaps: u64,
}

impl PublisherStats {
    pub fn batches_published(&self) -> u64 {
        self.batches_published.load(Ordering::Relaxed)
    }

    pub fn events_published(&self) -> u64 {
        self.events_published.load(Ordering::Relaxed)
    }

    pub fn batches_dropped(&self) -> u64 {
        self.batches_dropped.load(Ordering::Relaxed)
    }

    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }

    pub fn redis_errors(&self) -> u64 {
        self.redis_errors.load(Ordering::Relaxed)
    }

    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Acquire)
    }

    /// All counters at once (each read on its own; they may be a moment apart).
    pub fn snapshot(&self) -> PublisherCounts {
        PublisherCounts {
            batches_published: self.batches_published(),
            events_published: self.events_published(),
            batches_dropped: self.batches_dropped(),
            events_dropped: self.events_dropped(),
            redis_errors: self.redis_errors(),
            gaps: self.gaps(),
        }
    }

    fn count_published(&self, batches: usize, events: usize) {
        self.batches_published
            .fetch_add(batches as u64, Ordering::Relaxed);
        self.events_published
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    fn count_dropped(&self, batches: usize, events: usize) {
        self.batches_dropped
            .fetch_add(batches as u64, Ordering::Relaxed);
        self.events_dropped
            .fetch_add(events as u64, Ordering::Relaxed);
    }
}

/// The handle on the publishing task. Cheap to clone; when the last clone is dropped without
/// [`shutdown`](Self::shutdown), the task publishes what is queued and stops.
#[derive(Clone)]
pub struct Publisher {
    handle: Arc<Handle>,
}

/// Shared by the clones of one [`Publisher`].
struct Handle {
    /// What the task shares with the handles.
    shared: Arc<Shared>,
    /// The task, taken by [`Publisher::shutdown`].
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// State shared by the handles and the task.
struct Shared {
    /// Batches waiting for the task, oldest first.
    queue: Mutex<Queue>,
    /// Wakes the task when a batch is queued or the queue closes.
    wake: Notify,
    /// Most batches the queue holds.
    capacity: usize,
    /// Counters.
    stats: PublisherStats,
    /// A drop happened whose mark has not reached Redis yet; the next round trip raises it.
    gap_pending: AtomicBool,
    /// A round trip carrying the gap mark is in flight.
    gap_marking: AtomicBool,
    /// The earliest `createdAt` (ms) among the events dropped since the last notice went
    /// out; [`NO_GAP_FROM`] when none.
    gap_from_ms: AtomicI64,
    /// Batches and events the task took from the queue and has not counted yet, so that a
    /// shutdown that stops the task mid round trip can count them as dropped.
    in_flight_batches: AtomicU64,
    in_flight_events: AtomicU64,
}

/// The queue and whether it still takes batches.
#[derive(Default)]
struct Queue {
    batches: VecDeque<CommittedBatch>,
    closed: bool,
}

/// What the task does next.
enum Next {
    /// Send these batches in one round trip.
    Send(Vec<CommittedBatch>),
    /// Nothing queued: wait for a batch.
    Wait,
    /// Closed and empty: stop.
    Stop,
}

impl Publisher {
    /// Starts the publishing task on the current tokio runtime, with a queue of at most
    /// `queue_batches` batches (at least 1). It uses `bus`'s publishing connection.
    pub fn start(bus: RedisBus, queue_batches: usize) -> Publisher {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            capacity: queue_batches.max(1),
            stats: PublisherStats::default(),
            gap_pending: AtomicBool::new(false),
            gap_marking: AtomicBool::new(false),
            gap_from_ms: AtomicI64::new(NO_GAP_FROM),
            in_flight_batches: AtomicU64::new(0),
            in_flight_events: AtomicU64::new(0),
        });
        let task = tokio::spawn(run(Arc::clone(&shared), bus));
        Publisher {
            handle: Arc::new(Handle {
                shared,
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// Hands a committed batch (events in commit order) to the task. Never blocks, never fails,
    /// callable from any thread: if the queue is full, the oldest queued batch is dropped,
    /// counted, and marks a gap. Batches are published in the order they are handed over.
    pub fn publish(&self, batch: CommittedBatch) {
        if batch.events.is_empty() {
            return;
        }
        debug_assert!(
            batch
                .events
                .iter()
                .all(|event| entry_id(&event.json) == Some(event.id)),
            "an event's json must start with its id"
        );
        let shared = &self.handle.shared;
        let evicted = {
            let mut queue = shared.lock_queue();
            if queue.closed {
                Some(batch)
            } else {
                let evicted = if queue.batches.len() >= shared.capacity {
                    queue.batches.pop_front()
                } else {
                    None
                };
                queue.batches.push_back(batch);
                evicted
            }
        };
        if let Some(evicted) = evicted {
            shared.stats.count_dropped(1, evicted.events.len());
            shared.open_gap(earliest(std::slice::from_ref(&evicted)));
        }
        shared.wake.notify_one();
    }

    /// The counters.
    pub fn stats(&self) -> &PublisherStats {
        &self.handle.shared.stats
    }

    /// The process-local gap epoch: starts at 0 and grows by one each time a gap opens (events
    /// were dropped, so the channel missed them). A subscriber that sees it change must backfill
    /// from the database.
    pub fn gap_epoch(&self) -> u64 {
        self.handle.shared.stats.gaps()
    }

    /// Whether this process dropped events whose gap mark has not reached Redis yet. Until it
    /// has, the list may look complete to [`RedisBus::recent`](crate::RedisBus::recent) while
    /// missing them, so this process's readers must not trust it.
    pub fn has_unmarked_gap(&self) -> bool {
        let shared = &self.handle.shared;
        shared.gap_pending.load(Ordering::Acquire) || shared.gap_marking.load(Ordering::Acquire)
    }

    /// Stops taking batches, publishes what is queued, and stops the task, waiting at most
    /// `deadline`. What is still queued or in flight at the deadline is counted as dropped.
    /// Other clones' later [`publish`](Self::publish) calls are counted as dropped.
    pub async fn shutdown(self, deadline: Duration) {
        let shared = Arc::clone(&self.handle.shared);
        shared.close();
        let task = lock(&self.handle.task).take();
        drop(self);
        let Some(mut task) = task else {
            return;
        };
        if tokio::time::timeout(deadline, &mut task).await.is_ok() {
            return;
        }
        task.abort();
        let _ = task.await;
        let left_over: Vec<CommittedBatch> =
            std::mem::take(&mut shared.lock_queue().batches).into();
        let events: usize = left_over.iter().map(|batch| batch.events.len()).sum();
        let in_flight_batches = shared.in_flight_batches.swap(0, Ordering::AcqRel);
        let in_flight_events = shared.in_flight_events.swap(0, Ordering::AcqRel);
        let batches = left_over.len() + in_flight_batches as usize;
        let events = events + in_flight_events as usize;
        if batches > 0 {
            shared.stats.count_dropped(batches, events);
            // What was in flight is older than what was queued; the queue's earliest batch
            // is the best bound known here.
            shared.open_gap(earliest(&left_over));
            warn!(
                batches,
                events, "publisher stopped at its deadline; dropped what was left"
            );
        }
    }
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    fn close(&self) {
        self.lock_queue().closed = true;
        self.wake.notify_one();
    }

    /// Records that events created at or after `from_ms` were dropped: opens a gap unless one
    /// is already waiting for its mark.
    fn open_gap(&self, from_ms: i64) {
        self.gap_from_ms.fetch_min(from_ms, Ordering::AcqRel);
        if !self.gap_pending.swap(true, Ordering::AcqRel) {
            self.stats.gaps.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Takes the oldest queued batches, as many as one round trip carries.
    fn next(&self) -> Next {
        let mut queue = self.lock_queue();
        if queue.batches.is_empty() {
            return if queue.closed { Next::Stop } else { Next::Wait };
        }
        let mut taken = Vec::new();
        let mut events = 0;
        while let Some(batch) = queue.batches.front() {
            let fits = events + batch.events.len() <= MAX_EVENTS_PER_ROUND_TRIP;
            if !taken.is_empty() && (!fits || taken.len() == MAX_BATCHES_PER_ROUND_TRIP) {
                break;
            }
            events += batch.events.len();
            taken.extend(queue.batches.pop_front());
        }
        self.in_flight_batches
            .store(taken.len() as u64, Ordering::Release);
        self.in_flight_events
            .store(events as u64, Ordering::Release);
        Next::Send(taken)
    }

    fn clear_in_flight(&self) {
        self.in_flight_batches.store(0, Ordering::Release);
        self.in_flight_events.store(0, Ordering::Release);
    }
}

/// `gap_from_ms` when no dropped event awaits its notice.
const NO_GAP_FROM: i64 = i64::MAX;

/// The earliest `createdAt` (ms) among `batches`.
fn earliest(batches: &[CommittedBatch]) -> i64 {
    batches
        .iter()
        .map(|batch| batch.created_at.0)
        .min()
        .unwrap_or(NO_GAP_FROM)
}

/// How often an idle publisher retries marking a pending gap in Redis.
const GAP_MARK_RETRY: Duration = Duration::from_millis(250);

/// The publishing task: one round trip at a time, in queue order, until closed and drained.
async fn run(shared: Arc<Shared>, bus: RedisBus) {
    let mut failing = false;
    // Whether Redis is known to hold the merge script. Cleared by any failed round trip (a
    // reconnect, a restarted Redis or a SCRIPT FLUSH can each lose it); the next round trip
    // then loads it first, in the same pipeline, instead of sending it with every push.
    let mut script_loaded = false;
    loop {
        let batches = match shared.next() {
            Next::Send(batches) => batches,
            // Idle with a gap not yet marked: mark it as soon as Redis answers again, without
            // waiting for the next batch, so other instances' readers stop trusting the list.
            Next::Wait if shared.gap_pending.load(Ordering::Acquire) => {
                match tokio::time::timeout(GAP_MARK_RETRY, shared.wake.notified()).await {
                    Ok(()) => continue,
                    Err(_) => Vec::new(),
                }
            }
            Next::Wait => {
                shared.wake.notified().await;
                continue;
            }
            Next::Stop => return,
        };
        let events: Vec<&PublishedEvent> = batches.iter().flat_map(|batch| &batch.events).collect();

        let raise_gap = shared.gap_pending.swap(false, Ordering::AcqRel);
        shared.gap_marking.store(raise_gap, Ordering::Release);
        let mut pipeline = redis::pipe();
        if !script_loaded {
            bus.add_load_script(&mut pipeline);
        }
        // The notice carries the earliest dropped `createdAt`; if the round trip fails it goes
        // back, so the next notice covers it too.
        let gap_from = if raise_gap {
            shared.gap_from_ms.swap(NO_GAP_FROM, Ordering::AcqRel)
        } else {
            NO_GAP_FROM
        };
        if raise_gap {
            bus.add_raise_gap(&mut pipeline, gap_from);
        }
        if !events.is_empty() {
            bus.add_push(
                &mut pipeline,
                &list_entries(&events, bus.keys.names.recent_size),
            );
        }
        for event in &events {
            pipeline
                .cmd("PUBLISH")
                .arg(&bus.keys.names.channel)
                .arg(event.json.as_ref())
                .ignore();
        }
        let pipeline = &pipeline;
        let result = bus
            .writer
            .run(WRITE_DEADLINE, |mut connection| async move {
                Ok(pipeline.exec_async(&mut connection.manager).await?)
            })
            .await;
        shared.clear_in_flight();
        shared.gap_marking.store(false, Ordering::Release);

        match result {
            Ok(()) => {
                script_loaded = true;
                shared.stats.count_published(batches.len(), events.len());
                if failing {
                    failing = false;
                    info!("redis publishing resumed");
                }
            }
            Err(error) => {
                script_loaded = false;
                shared.stats.count_dropped(batches.len(), events.len());
                shared.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
                if raise_gap {
                    // The mark did not reach Redis: the gap it belonged to is still pending.
                    shared.gap_from_ms.fetch_min(gap_from, Ordering::AcqRel);
                    shared.gap_pending.store(true, Ordering::Release);
                }
                shared.open_gap(earliest(&batches));
                if !failing {
                    failing = true;
                    warn!(
                        %error,
                        batches = batches.len(),
                        events = events.len(),
                        "redis publish failed; dropping batches and marking a gap"
                    );
                }
            }
        }
    }
}

/// The entries a round trip puts in the list: the `keep` largest ids among `events`, in
/// increasing id order (the order the merge script's LPUSH wants). Events arrive in commit
/// order, which is increasing id order within one process, so this is normally the tail.
fn list_entries<'a>(events: &[&'a PublishedEvent], keep: usize) -> Vec<&'a Bytes> {
    let mut ordered = events.to_vec();
    if !ordered.is_sorted_by_key(|event| event.id) {
        ordered.sort_by_key(|event| event.id);
    }
    let skip = ordered.len().saturating_sub(keep);
    ordered[skip..].iter().map(|event| &event.json).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::event;

    fn ids(entries: &[&Bytes]) -> Vec<u64> {
        entries
            .iter()
            .map(|entry| entry_id(entry).unwrap())
            .collect()
    }

    #[test]
    fn list_entries_keep_commit_order_when_it_is_id_order() {
        let events = [event(1), event(2), event(3)];
        let refs: Vec<&PublishedEvent> = events.iter().collect();
        assert_eq!(ids(&list_entries(&refs, 100)), [1, 2, 3]);
    }

    #[test]
    fn list_entries_are_the_largest_ids_when_the_batch_exceeds_the_list() {
        let events: Vec<PublishedEvent> = (1..=10).map(event).collect();
        let refs: Vec<&PublishedEvent> = events.iter().collect();
        assert_eq!(ids(&list_entries(&refs, 4)), [7, 8, 9, 10]);
    }

    #[test]
    fn list_entries_are_put_in_id_order() {
        // Coalesced batches whose ids are not in order (not expected, but harmless).
        let events = [event(5), event(9), event(2), event(7)];
        let refs: Vec<&PublishedEvent> = events.iter().collect();
        assert_eq!(ids(&list_entries(&refs, 3)), [5, 7, 9]);
    }

    fn shared(capacity: usize) -> Shared {
        Shared {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            capacity,
            stats: PublisherStats::default(),
            gap_pending: AtomicBool::new(false),
            gap_marking: AtomicBool::new(false),
            gap_from_ms: AtomicI64::new(NO_GAP_FROM),
            in_flight_batches: AtomicU64::new(0),
            in_flight_events: AtomicU64::new(0),
        }
    }

    fn batch(ids: std::ops::Range<u64>) -> CommittedBatch {
        CommittedBatch {
            created_at: vigil_core::UnixMillis(ids.start as i64),
            events: ids.map(event).collect(),
        }
    }

    #[test]
    fn gap_notices_round_trip() {
        use crate::{gap_notice, read_gap_notice};
        assert_eq!(
            gap_notice(1_700_000_000_123),
            r#"{"gap":{"fromMs":1700000000123}}"#
        );
        assert_eq!(read_gap_notice(gap_notice(-5).as_bytes()), Some(-5));
        assert_eq!(read_gap_notice(br#"{"id":1}"#), None);
    }

    #[test]
    fn queued_batches_are_coalesced_up_to_the_event_bound() {
        let shared = shared(10);
        {
            let mut queue = shared.lock_queue();
            queue.batches.push_back(batch(0..3000));
            queue.batches.push_back(batch(3000..4000));
            queue.batches.push_back(batch(4000..4100));
        }
        let Next::Send(first) = shared.next() else {
            panic!("expected batches");
        };
        assert_eq!(first.len(), 2);
        assert_eq!(shared.in_flight_events.load(Ordering::Relaxed), 4000);
        let Next::Send(second) = shared.next() else {
            panic!("expected batches");
        };
        assert_eq!(second.len(), 1);
        assert!(matches!(shared.next(), Next::Wait));
    }

    #[test]
    fn a_batch_larger_than_the_bound_goes_alone() {
        let shared = shared(10);
        shared.lock_queue().batches.push_back(batch(0..5000));
        shared.lock_queue().batches.push_back(batch(5000..5001));
        let Next::Send(first) = shared.next() else {
            panic!("expected batches");
        };
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].events.len(), 5000);
    }

    #[test]
    fn closed_empty_queue_stops_the_task() {
        let shared = shared(1);
        shared.close();
        assert!(matches!(shared.next(), Next::Stop));
    }

    #[test]
    fn drops_while_a_gap_is_pending_open_no_new_gap() {
        let shared = shared(1);
        shared.open_gap(20);
        shared.open_gap(10);
        assert_eq!(shared.stats.gaps(), 1);
        // The task takes the mark into a round trip; a drop meanwhile is a new gap.
        assert!(shared.gap_pending.swap(false, Ordering::AcqRel));
        shared.open_gap(30);
        assert_eq!(shared.stats.gaps(), 2);
        // The notice covers the earliest dropped event.
        assert_eq!(shared.gap_from_ms.load(Ordering::Relaxed), 10);
    }
}
