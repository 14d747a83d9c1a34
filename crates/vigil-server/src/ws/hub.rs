//! The hub: fan-out of each new event to every connected WebSocket client whose filter
//! matches, without ever waiting on a client.
//!
//! Each event's frame is built once ([`HubEvent`]) and shared (`Bytes`) by every client it
//! goes to. Clients live in one `RwLock`ed map that the feeder (the Redis bridge, or the
//! in-process feed without Redis) reads once per run of events: a read lock and one `try_send`
//! per matching client and event; registration and removal take the write lock briefly.
//!
//! **Slow-consumer policy.** Every client has a bounded queue of frames
//! (`VIGIL_WS_CLIENT_QUEUE`). When an event finds a client's queue full, that client is
//! removed from the hub at once (it gets no further events) and its socket task closes it with
//! 1008 (policy violation) and the reason "slow consumer", after at most a short grace for the
//! write in progress; it is counted in [`HubStats::slow_consumers`]. The hub and the other
//! clients never wait: a client that cannot keep up must reconnect (and, once resume lands,
//! resume from the last id it saw).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vigil_bus::CommittedBatch;
use vigil_core::EventFilter;
use vigil_ingest::CommitSink;

use super::event::HubEvent;

/// Committed batches the in-process feed holds for the hub task; past it batches are dropped
/// and counted (the database keeps them; backfill will recover them).
const LOCAL_FEED_BATCHES: usize = 4096;

/// The hub's bounds, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct HubSettings {
    /// Frames one client's queue holds (`VIGIL_WS_CLIENT_QUEUE`).
    pub client_queue: usize,
    /// Most clients at once (`VIGIL_WS_MAX_CLIENTS`).
    pub max_clients: usize,
    /// Server ping interval; a client silent for three is closed (`VIGIL_WS_PING_INTERVAL_S`).
    pub ping_interval: Duration,
}

/// The hub's counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Clients registered since start.
    clients_accepted: AtomicU64,
    /// Upgrades refused because `max_clients` were connected.
    clients_refused: AtomicU64,
    /// Clients closed by the slow-consumer policy.
    slow_consumers: AtomicU64,
    /// Events handed to the hub that were Vigil events.
    events: AtomicU64,
    /// Messages handed to the hub that were not Vigil events (dropped).
    unreadable_messages: AtomicU64,
    /// Frames queued to clients.
    frames_queued: AtomicU64,
    /// Events the in-process feed dropped because the hub task was behind.
    feed_dropped_events: AtomicU64,
}

impl HubStats {
    pub fn clients_accepted(&self) -> u64 {
        self.clients_accepted.load(Ordering::Relaxed)
    }

    pub fn clients_refused(&self) -> u64 {
        self.clients_refused.load(Ordering::Relaxed)
    }

    pub fn slow_consumers(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn unreadable_messages(&self) -> u64 {
        self.unreadable_messages.load(Ordering::Relaxed)
    }

    pub fn frames_queued(&self) -> u64 {
        self.frames_queued.load(Ordering::Relaxed)
    }

    pub fn feed_dropped_events(&self) -> u64 {
        self.feed_dropped_events.load(Ordering::Relaxed)
    }
}

/// The handle on the hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    /// Connected clients by id.
    clients: RwLock<HashMap<u64, ClientSlot>>,
    /// The next client id.
    next_client_id: AtomicU64,
    settings: HubSettings,
    stats: HubStats,
    /// Cancelled at server shutdown: every socket task sends Close 1001 and ends.
    shutdown: CancellationToken,
    /// The socket tasks (hyper no longer sees a connection once it is upgraded).
    tasks: TaskTracker,
}

/// What the hub keeps of one client.
struct ClientSlot {
    /// `None` for a client that takes every event.
    filter: Option<EventFilter>,
    /// The client's bounded frame queue.
    frames: mpsc::Sender<Bytes>,
    /// Cancelled when the client is dropped as a slow consumer.
    kick: CancellationToken,
}

impl ClientSlot {
    fn wants(&self, event: &HubEvent) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| filter.matches(&event.event_type, event.level, &event.source))
    }
}

/// Why a client could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// `max_clients` are connected.
    Full,
    /// The server is shutting down.
    ShuttingDown,
}

/// One client's place in the hub: its frame queue and kick signal. Leaves the hub when dropped.
pub struct Registration {
    hub: Hub,
    id: u64,
    /// Frames the hub queued for this client, in event order.
    pub(crate) frames: mpsc::Receiver<Bytes>,
    /// Cancelled when the hub dropped this client as a slow consumer.
    pub(crate) kick: CancellationToken,
}

impl Registration {
    /// The client's id in the hub (for logs).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.remove(self.id);
    }
}

impl Hub {
    pub fn new(settings: HubSettings) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                clients: RwLock::new(HashMap::new()),
                next_client_id: AtomicU64::new(1),
                settings,
                stats: HubStats::default(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn settings(&self) -> &HubSettings {
        &self.inner.settings
    }

    pub fn stats(&self) -> &HubStats {
        &self.inner.stats
    }

    /// Clients connected now.
    pub fn client_count(&self) -> usize {
        self.read_clients().len()
    }

    /// Adds a client that wants the events `filter` matches.
    pub fn register(&self, filter: EventFilter) -> Result<Registration, RegisterError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(RegisterError::ShuttingDown);
        }
        let (sender, frames) = mpsc::channel(self.inner.settings.client_queue.max(1));
        let kick = CancellationToken::new();
        let id = self.inner.next_client_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut clients = self.write_clients();
            if clients.len() >= self.inner.settings.max_clients {
                drop(clients);
                self.inner
                    .stats
                    .clients_refused
                    .fetch_add(1, Ordering::Relaxed);
                return Err(RegisterError::Full);
            }
            clients.insert(
                id,
                ClientSlot {
                    filter: (!filter.is_empty()).then_some(filter),
                    frames: sender,
                    kick: kick.clone(),
                },
            );
        }
        self.inner
            .stats
            .clients_accepted
            .fetch_add(1, Ordering::Relaxed);
        Ok(Registration {
            hub: self.clone(),
            id,
            frames,
            kick,
        })
    }

    /// Reads one message from the channel or the feed: the event, or `None` (counted) if it is
    /// not a Vigil event.
    pub fn read_event(&self, json: &[u8]) -> Option<HubEvent> {
        let event = HubEvent::from_json(json);
        if event.is_none() {
            let count = self
                .inner
                .stats
                .unreadable_messages
                .fetch_add(1, Ordering::Relaxed);
            if count == 0 {
                tracing::warn!(
                    bytes = json.len(),
                    "a message on the channel is not a vigil event; dropping such messages"
                );
            }
        }
        event
    }

    /// Queues each event, in order, to every client whose filter matches it. Never waits: a
    /// client whose queue is full is dropped from the hub and told to close (slow consumer).
    pub fn broadcast(&self, events: &[HubEvent]) {
        if events.is_empty() {
            return;
        }
        let stats = &self.inner.stats;
        stats
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut overflowed: Vec<u64> = Vec::new();
        let mut queued = 0u64;
        {
            let clients = self.read_clients();
            for event in events {
                for (&id, client) in clients.iter() {
                    if !client.wants(event) || overflowed.contains(&id) {
                        continue;
                    }
                    match client.frames.try_send(event.frame.clone()) {
                        Ok(()) => queued += 1,
                        Err(TrySendError::Full(_)) => {
                            client.kick.cancel();
                            overflowed.push(id);
                        }
                        // The socket task ended; its registration is leaving the map.
                        Err(TrySendError::Closed(_)) => {}
                    }
                }
            }
        }
        stats.frames_queued.fetch_add(queued, Ordering::Relaxed);
        if !overflowed.is_empty() {
            let mut clients = self.write_clients();
            for id in &overflowed {
                clients.remove(id);
            }
            drop(clients);
            stats
                .slow_consumers
                .fetch_add(overflowed.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                clients = overflowed.len(),
                queue = self.inner.settings.client_queue,
                "websocket clients fell a full queue behind; closing them (1008 slow consumer)"
            );
        }
    }

    /// Runs a socket task on the hub's tracker.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(task);
    }

    /// Cancelled when the hub shuts down.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Closes every client with 1001 and waits for their tasks, at most `deadline`.
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        let clients = self.inner.tasks.len();
        if clients > 0 {
            tracing::info!(clients, "closing websocket clients");
        }
        if tokio::time::timeout(deadline, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                clients = self.inner.tasks.len(),
                "websocket clients still open at the shutdown deadline"
            );
        }
    }

    fn remove(&self, id: u64) {
        self.write_clients().remove(&id);
    }

    fn read_clients(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, ClientSlot>> {
        // Nothing panics while holding the lock; if something did, the map is still usable.
        self.inner
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_clients(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, ClientSlot>> {
        self.inner
            .clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The hub's entrance without Redis: the batcher hands it each committed batch, and a task
/// fans them out (so the batcher thread never does the fan-out itself).
pub struct LocalFeed {
    batches: mpsc::Sender<CommittedBatch>,
    hub: Hub,
    /// Whether the last batch was dropped (to log once per run of drops).
    dropping: AtomicBool,
}

impl LocalFeed {
    /// Starts the feed's task; it ends once every handle on the feed is dropped and what was
    /// queued is delivered.
    pub fn start(hub: &Hub) -> (Arc<LocalFeed>, JoinHandle<()>) {
        let (batches, mut receiver) = mpsc::channel::<CommittedBatch>(LOCAL_FEED_BATCHES);
        let task_hub = hub.clone();
        let task = tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(batch) = receiver.recv().await {
                // With no client connected, nothing is parsed or framed.
                if task_hub.client_count() == 0 {
                    continue;
                }
                events.extend(
                    batch
                        .events
                        .iter()
                        .filter_map(|event| task_hub.read_event(&event.json)),
                );
                task_hub.broadcast(&events);
                events.clear();
            }
        });
        let feed = Arc::new(LocalFeed {
            batches,
            hub: hub.clone(),
            dropping: AtomicBool::new(false),
        });
        (feed, task)
    }
}

impl CommitSink for LocalFeed {
    fn committed(&self, batch: CommittedBatch) {
        let events = batch.events.len() as u64;
        match self.batches.try_send(batch) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("the realtime feed caught up");
                }
            }
            Err(_) => {
                self.hub
                    .inner
                    .stats
                    .feed_dropped_events
                    .fetch_add(events, Ordering::Relaxed);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the realtime feed is behind; dropping committed batches for live clients"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::{Level, NewEvent, UnixMillis};

    fn settings(client_queue: usize, max_clients: usize) -> HubSettings {
        HubSettings {
            client_queue,
            max_clients,
            ping_interval: Duration::from_secs(20),
        }
    }

    fn event(id: u64, event_type: &str, level: Level) -> HubEvent {
        let json = NewEvent {
            source: "sensor-1".into(),
            event_type: event_type.into(),
            level,
            payload: None,
            occurred_at: None,
        }
        .as_stored(id, UnixMillis(0), "r")
        .encode();
        HubEvent::from_json(&json).unwrap()
    }

    fn filter(query: &str) -> EventFilter {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        EventFilter::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
    }

    fn drain(registration: &mut Registration) -> Vec<Bytes> {
        let mut frames = Vec::new();
        while let Ok(frame) = registration.frames.try_recv() {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn every_matching_client_gets_the_same_frame_bytes() {
        let hub = Hub::new(settings(16, 10));
        let mut all = hub.register(EventFilter::default()).unwrap();
        let mut gas = hub.register(filter("type=GAS&level=WARN")).unwrap();
        let events = [
            event(1, "GAS", Level::Warn),
            event(2, "SMOKE", Level::Warn),
            event(3, "GAS", Level::Info),
        ];
        hub.broadcast(&events);
        let all_frames = drain(&mut all);
        assert_eq!(all_frames.len(), 3);
        let gas_frames = drain(&mut gas);
        assert_eq!(gas_frames, [events[0].frame.clone()]);
        // Shared, not copied.
        assert_eq!(gas_frames[0].as_ptr(), all_frames[0].as_ptr());
        assert_eq!(hub.stats().frames_queued(), 4);
    }

    #[test]
    fn a_full_queue_drops_only_that_client() {
        let hub = Hub::new(settings(2, 10));
        let slow = hub.register(EventFilter::default()).unwrap();
        let mut fast = hub.register(EventFilter::default()).unwrap();
        for id in 1..=3 {
            hub.broadcast(&[event(id, "GAS", Level::Warn)]);
            assert_eq!(drain(&mut fast).len(), 1);
        }
        assert!(slow.kick.is_cancelled());
        assert!(!fast.kick.is_cancelled());
        assert_eq!(hub.stats().slow_consumers(), 1);
        assert_eq!(hub.client_count(), 1);
        hub.broadcast(&[event(4, "GAS", Level::Warn)]);
        assert_eq!(drain(&mut fast).len(), 1);
        drop(slow);
        assert_eq!(hub.client_count(), 1);
    }

    #[test]
    fn registrations_past_the_limit_are_refused_and_leaving_frees_a_place() {
        let hub = Hub::new(settings(2, 2));
        let first = hub.register(EventFilter::default()).unwrap();
        let _second = hub.register(EventFilter::default()).unwrap();
        assert_eq!(
            hub.register(EventFilter::default()).err(),
            Some(RegisterError::Full)
        );
        drop(first);
        assert!(hub.register(EventFilter::default()).is_ok());
        assert_eq!(hub.stats().clients_refused(), 1);
    }

    #[test]
    fn unreadable_messages_are_counted_not_sent() {
        let hub = Hub::new(settings(2, 2));
        assert!(hub.read_event(b"not an event").is_none());
        assert_eq!(hub.stats().unreadable_messages(), 1);
    }
}
