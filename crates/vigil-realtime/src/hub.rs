//! The hub: fan-out of each new event to every connected client whose filter matches, without
//! ever waiting on a client. A client is a WebSocket (`/ws`) or a Server-Sent Events stream
//! (`/api/events/stream`): its [`Wire`]; both kinds share the limits, the policy and the log
//! below.
//!
//! Each event's frame is built once per wire ([`HubEvent`]) and shared (`Bytes`) by every
//! client it goes to. Clients live in one `RwLock`ed map that the feeder (the Redis bridge, or the
//! in-process feed without Redis) reads once per run of events: a read lock, and one push of
//! the run's matching frames per client (the `queue` module); registration and removal take the
//! write lock briefly.
//!
//! **Slow-consumer policy.** Every client has a bounded queue of frames
//! (`VIGIL_WS_CLIENT_QUEUE`). Sources hand the hub events in slices of at most a quarter of a
//! queue ([`Hub::deliver_paced`]); before a slice, the hub waits until every client has room
//! for it, at most [`SLOW_CONSUMER_GRACE`]. A burst (the publisher draining its backlog after
//! Redis came back, a backfill) thus reaches every client that keeps reading it.
//! A client whose queue is full when a frame is queued is removed from the hub at once (it
//! gets no further events) and its socket task closes it with 1008 (policy violation) and the
//! reason "slow consumer", after at most a short grace for the write in progress; it is counted
//! in [`HubStats::slow_consumers`]. It must reconnect and resume from the last id it saw
//! (`/ws?since=<id>`).
//!
//! **No client holds the others back for long.** The time the hub spends waiting for room is
//! charged to each client it waited for, against a budget of [`SLOW_CONSUMER_GRACE`] that
//! refills over [`WAIT_BUDGET_REFILL`]. A client whose budget is spent is not waited for: the
//! others get their events at their own pace, and it keeps up or its queue fills and it is
//! closed as above. So a stuck client, and a slow one that catches up in bursts now and then
//! (a browser tab starved of CPU), delays the others by at most one grace period in every
//! refill period, not one per slice.
//!
//! **Delivery log.** The hub remembers the ids it fanned out, in fan-out order, for the last
//! [`DELIVERY_LOG_EVENTS`] events. Every source goes through it ([`Hub::deliver`]): an id
//! already fanned out is not sent again, so the live channel, a backfill and a late publish
//! can overlap freely. Fan-out order is the Redis channel's order, which every instance sees
//! alike; that is what makes resume exact across instances: a client that last saw `since`
//! missed exactly the events logged after it, whatever their ids ([`Hub::register_resuming`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vigil_bus::{CommittedBatch, entry_id};
use vigil_core::CommitSink;
use vigil_core::EventFilter;

use crate::event::{HubEvent, Wire};
use crate::queue::{FrameReceiver, FrameSender, Pushed, frame_queue};

/// Committed batches the in-process feed holds for the hub task; past it batches are dropped
/// and counted (the database keeps them; backfill will recover them).
const LOCAL_FEED_BATCHES: usize = 4096;

/// Ids the delivery log remembers (about 7 MB): 13 s of fan-out at 20,000 events/s, hours at
/// a site's usual rates. Resume is exact across instances for a `since` still in the log;
/// backfill and late publishes are deduplicated within it, and so are the database polls that
/// stand in for Redis while it is down (each re-reads 5.5 s: exact up to ~47,000 events/s).
pub const DELIVERY_LOG_EVENTS: usize = 1 << 18;

/// How long the hub waits for a full client queue to make room before closing that client as a
/// slow consumer (see the module docs).
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_millis(250);
/// How long a client's spent wait budget takes to refill.
pub const WAIT_BUDGET_REFILL: Duration = Duration::from_secs(10);
/// How often the room in client queues is looked at while waiting.
const ROOM_POLL: Duration = Duration::from_millis(2);

/// `backfill_from_ms` when no backfill is requested.
const NO_BACKFILL: i64 = i64::MAX;

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
    /// Events fanned out again by a source after they had been (dropped, not sent).
    duplicates_dropped: AtomicU64,
    /// Backfill runs completed.
    pub(crate) backfills: AtomicU64,
    /// Events a backfill found missing and fanned out.
    pub(crate) backfilled_events: AtomicU64,
    /// Resumes served, and the events they replayed.
    pub(crate) resumes: AtomicU64,
    pub(crate) replayed_events: AtomicU64,
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

    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates_dropped.load(Ordering::Relaxed)
    }

    pub fn backfills(&self) -> u64 {
        self.backfills.load(Ordering::Relaxed)
    }

    pub fn backfilled_events(&self) -> u64 {
        self.backfilled_events.load(Ordering::Relaxed)
    }

    pub fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Relaxed)
    }

    pub fn replayed_events(&self) -> u64 {
        self.replayed_events.load(Ordering::Relaxed)
    }
}

/// The ids fanned out recently, in fan-out order.
struct DeliveryLog {
    order: VecDeque<u64>,
    seen: HashSet<u64>,
    capacity: usize,
}

impl DeliveryLog {
    fn new(capacity: usize) -> DeliveryLog {
        DeliveryLog {
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id` as fanned out; `false` if it already was.
    fn admit(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }

    /// Where `since` stands in the log; `None` if it is not in the log.
    fn resume_point(&self, since: u64) -> Option<ResumePoint> {
        if !self.seen.contains(&since) {
            return None;
        }
        let position = self.order.iter().rposition(|&id| id == since)?;
        Some(ResumePoint {
            logged_after: self.order.range(position + 1..).copied().collect(),
            seen_above: self
                .order
                .range(..position)
                .copied()
                .filter(|&id| id > since)
                .collect(),
        })
    }
}

/// What a resuming client missed among the events already fanned out, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The ids fanned out after `since`, in fan-out order: missed.
    pub logged_after: Vec<u64>,
    /// The ids above `since` fanned out before it (another instance's newer id block): seen.
    pub seen_above: HashSet<u64>,
}

/// The handle on the hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    /// Connected clients by id.
    clients: RwLock<HashMap<u64, ClientSlot>>,
    /// `clients.len()`, kept beside the map (updated under its write lock) so that
    /// [`Hub::deliver`] can read it under the log's lock without taking the map's.
    client_count: AtomicUsize,
    /// How many of them are SSE clients, kept the same way: events are given their SSE
    /// message only while there is one.
    sse_count: AtomicUsize,
    /// What was fanned out, in order. Lock order: `clients`, then `log`.
    log: Mutex<DeliveryLog>,
    /// A lower bound on the free slots of every client's queue: the least room the last look
    /// found, less every frame queued since (clients draining only add room). Lets
    /// [`Hub::deliver_paced`] skip looking at every queue before every slice.
    room_hint: AtomicUsize,
    /// The earliest `createdAt` (ms) a requested backfill must cover; [`NO_BACKFILL`] if none.
    backfill_from_ms: AtomicI64,
    /// Wakes the backfill task.
    backfill_wake: Notify,
    /// The next client id.
    next_client_id: AtomicU64,
    /// When the hub started: the clients' wait budgets count from it.
    started: tokio::time::Instant,
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
    /// Which of an event's frames the client is sent.
    wire: Wire,
    /// The client's bounded frame queue.
    frames: FrameSender,
    /// Cancelled when the client is dropped as a slow consumer, and with the hub's shutdown
    /// token (it is its child): see [`Registration::ending`].
    kick: CancellationToken,
    /// The part of its wait budget the client has spent, in ms, as of `charged_at_ms`; at
    /// [`SLOW_CONSUMER_GRACE`] it is waited for no more.
    waited_ms: AtomicU64,
    /// When `waited_ms` was last brought up to date, in ms since the hub started.
    charged_at_ms: AtomicU64,
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
    pub(crate) frames: FrameReceiver,
    /// Cancelled when the hub dropped this client as a slow consumer or shuts down: the one
    /// signal a socket task waits on besides its frames ([`Registration::ending`] says which).
    pub(crate) kick: CancellationToken,
}

/// Why the hub told a client to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HubEnding {
    /// Its queue overflowed; it is out of the hub already.
    SlowConsumer,
    /// The server is shutting down; its queued frames are still to be sent.
    Shutdown,
}

impl Registration {
    /// The client's id in the hub (for logs).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Takes the next frame queued for this client without waiting: `None` when the queue is
    /// empty. Socket tasks await their frames instead; this is for in-process consumers
    /// (the fan-out bench, tests).
    pub fn try_next_frame(&mut self) -> Option<Bytes> {
        self.frames.try_recv()
    }

    /// The hub this client belongs to.
    pub(crate) fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// Why the hub told this client to go, once `kick` is cancelled (`None` before). A slow
    /// consumer is taken out of the map when it is kicked, and nothing else takes a client
    /// out while its registration lives; so a kicked client still in the map was kicked by
    /// the shutdown. Slow wins when both happened, as its queue cannot be flushed.
    pub(crate) fn ending(&self) -> Option<HubEnding> {
        if !self.kick.is_cancelled() {
            return None;
        }
        if self.hub.read_clients().contains_key(&self.id) {
            Some(HubEnding::Shutdown)
        } else {
            Some(HubEnding::SlowConsumer)
        }
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
                client_count: AtomicUsize::new(0),
                sse_count: AtomicUsize::new(0),
                room_hint: AtomicUsize::new(0),
                log: Mutex::new(DeliveryLog::new(DELIVERY_LOG_EVENTS)),
                backfill_from_ms: AtomicI64::new(NO_BACKFILL),
                backfill_wake: Notify::new(),
                next_client_id: AtomicU64::new(1),
                started: tokio::time::Instant::now(),
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
        self.inner.client_count.load(Ordering::Acquire)
    }

    /// SSE clients connected now (they are also counted in [`Hub::client_count`]).
    pub fn sse_client_count(&self) -> usize {
        self.inner.sse_count.load(Ordering::Acquire)
    }

    /// Adds a WebSocket client that wants the events `filter` matches.
    pub fn register(&self, filter: EventFilter) -> Result<Registration, RegisterError> {
        self.join(Wire::WebSocket, filter, None)
            .map(|(registration, _)| registration)
    }

    /// Adds a WebSocket client that resumes after the event `since`: [`Hub::join`].
    pub fn register_resuming(
        &self,
        filter: EventFilter,
        since: u64,
    ) -> Result<(Registration, Option<ResumePoint>), RegisterError> {
        self.join(Wire::WebSocket, filter, Some(since))
    }

    /// Adds a client on `wire` that wants the events `filter` matches. With `since` (the last
    /// event id it saw, when it resumes), also says where `since` stands in the delivery log
    /// (`None` when it is not there). Everything fanned out from now on reaches the client's
    /// queue.
    pub fn join(
        &self,
        wire: Wire,
        filter: EventFilter,
        since: Option<u64>,
    ) -> Result<(Registration, Option<ResumePoint>), RegisterError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(RegisterError::ShuttingDown);
        }
        let (sender, frames) = frame_queue(self.inner.settings.client_queue);
        // One token per client for both reasons to go: each wake-up of a socket task polls it,
        // and a token shared by every client would be a lock both workers take per wake-up.
        let kick = self.inner.shutdown.child_token();
        let id = self.inner.next_client_id.fetch_add(1, Ordering::Relaxed);
        let missed = {
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
                    wire,
                    frames: sender,
                    kick: kick.clone(),
                    waited_ms: AtomicU64::new(0),
                    charged_at_ms: AtomicU64::new(0),
                },
            );
            if wire == Wire::Sse {
                self.inner.sse_count.fetch_add(1, Ordering::AcqRel);
            }
            self.counted(&clients);
            // Taken after the client joined (and before the map's lock is let go): an event
            // logged before this point is in the snapshot, one logged after it is fanned out
            // to this client (see `deliver`).
            since.and_then(|since| self.lock_log().resume_point(since))
        };
        self.inner
            .stats
            .clients_accepted
            .fetch_add(1, Ordering::Relaxed);
        Ok((
            Registration {
                hub: self.clone(),
                id,
                frames,
                kick,
            },
            missed,
        ))
    }

    /// Fans out each encoded event of `messages`, in order, unless it was fanned out before
    /// (within the delivery log). Every source feeds the hub through here: the Redis bridge,
    /// the in-process feed and backfills. Returns how many events were new.
    pub fn deliver<'a>(&self, messages: impl IntoIterator<Item = &'a [u8]>) -> usize {
        let mut events = Vec::new();
        let mut admitted = 0;
        let mut duplicates = 0;
        {
            let mut log = self.lock_log();
            // Read under the log's lock: a client registering concurrently either is counted
            // here (and gets these events) or snapshots the log after them (and replays them).
            let listening = self.client_count() > 0;
            let sse = self.sse_client_count() > 0;
            for json in messages {
                let Some(id) = entry_id(json) else {
                    self.count_unreadable(json);
                    continue;
                };
                if !log.admit(id) {
                    duplicates += 1;
                    continue;
                }
                admitted += 1;
                // With no client connected, nothing more is parsed, and nothing framed.
                if listening {
                    match HubEvent::for_wires(id, json, sse) {
                        Some(event) => events.push(event),
                        None => self.count_unreadable(json),
                    }
                }
            }
        }
        if duplicates > 0 {
            self.inner
                .stats
                .duplicates_dropped
                .fetch_add(duplicates, Ordering::Relaxed);
        }
        self.broadcast(&events);
        admitted
    }

    /// [`Hub::deliver`] in slices of a quarter of a client queue, each once every client has
    /// room for it (waiting at most [`SLOW_CONSUMER_GRACE`] per slice). Returns how many
    /// events were new.
    pub async fn deliver_paced(&self, messages: &[&[u8]]) -> usize {
        let slice = (self.inner.settings.client_queue / 4).max(1);
        let mut admitted = 0;
        for chunk in messages.chunks(slice) {
            if self.inner.room_hint.load(Ordering::Acquire) < chunk.len() {
                self.wait_for_room(chunk.len()).await;
            }
            admitted += self.deliver(chunk.iter().copied());
            let _ =
                self.inner
                    .room_hint
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |room| {
                        Some(room.saturating_sub(chunk.len()))
                    });
        }
        admitted
    }

    /// Waits until every client still waited for has room for `frames` more, at most
    /// [`SLOW_CONSUMER_GRACE`]; each wait is charged to the clients short of room.
    async fn wait_for_room(&self, frames: usize) {
        let deadline = tokio::time::Instant::now() + SLOW_CONSUMER_GRACE;
        let mut looked = tokio::time::Instant::now();
        let mut charge = Duration::ZERO;
        loop {
            let room = self.least_room(frames, charge);
            self.inner.room_hint.store(room, Ordering::Release);
            if room >= frames || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(ROOM_POLL).await;
            let now = tokio::time::Instant::now();
            charge = now - looked;
            looked = now;
        }
    }

    /// The fewest free frame slots among the queues of the clients still waited for (the
    /// queue size when there is none). `charge`, the time just waited, is taken from the wait
    /// budget of each of those with less room than `frames`.
    fn least_room(&self, frames: usize, charge: Duration) -> usize {
        let grace = SLOW_CONSUMER_GRACE.as_millis() as u64;
        let refill = WAIT_BUDGET_REFILL.as_millis() as u64;
        let charge = charge.as_millis() as u64;
        let now_ms = self.inner.started.elapsed().as_millis() as u64;
        let mut least = self.inner.settings.client_queue.max(1);
        for client in self.read_clients().values() {
            let room = client.frames.room();
            if room >= frames && room >= least {
                // Not short of room, and not the least: nothing to charge or to count.
                continue;
            }
            // What was spent, less what refilled since (grace per refill period).
            let since = now_ms.saturating_sub(client.charged_at_ms.load(Ordering::Relaxed));
            let mut spent = client
                .waited_ms
                .load(Ordering::Relaxed)
                .saturating_sub(since * grace / refill);
            if room < frames && charge > 0 && spent < grace {
                spent += charge;
                if spent >= grace {
                    tracing::debug!(
                        "a realtime client spent its wait budget; the others no longer wait for it"
                    );
                }
            }
            client.waited_ms.store(spent, Ordering::Relaxed);
            client.charged_at_ms.store(now_ms, Ordering::Relaxed);
            if spent < grace {
                least = least.min(room);
            }
        }
        least
    }

    /// Asks the backfill task (see `crate::backfill`) to re-read the events created from
    /// `from_ms` on and fan out those the hub has not: after the channel lost messages.
    pub fn request_backfill(&self, from_ms: i64) {
        self.inner
            .backfill_from_ms
            .fetch_min(from_ms, Ordering::AcqRel);
        self.inner.backfill_wake.notify_one();
    }

    /// Waits for a backfill request; the earliest `createdAt` (ms) it must cover.
    pub(crate) async fn next_backfill(&self) -> i64 {
        loop {
            let from = self
                .inner
                .backfill_from_ms
                .swap(NO_BACKFILL, Ordering::AcqRel);
            if from != NO_BACKFILL {
                return from;
            }
            self.inner.backfill_wake.notified().await;
        }
    }

    fn count_unreadable(&self, json: &[u8]) {
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

    /// Queues each event, in order, to every client whose filter matches it. Never waits: a
    /// client whose queue is full is dropped from the hub and told to close (slow consumer).
    /// Bypasses the delivery log: sources use [`Hub::deliver`].
    fn broadcast(&self, events: &[HubEvent]) {
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
            // Client by client, all of a run's frames under one lock of its queue: they are all
            // there before its task, woken by the push, runs on the other worker and writes
            // them at once.
            for (&id, client) in clients.iter() {
                // An SSE client that joined after the event was taken in: not its event (a
                // resuming one replays it, from the log).
                let frames = events
                    .iter()
                    .filter(|event| client.wants(event))
                    .filter_map(|event| event.frame_for(client.wire).cloned());
                match client.frames.push(frames) {
                    Pushed::All(count) => queued += count as u64,
                    Pushed::Full(count) => {
                        queued += count as u64;
                        overflowed.push(id);
                    }
                    // The socket task ended; its registration is leaving the map.
                    Pushed::Closed => {}
                }
            }
        }
        stats.frames_queued.fetch_add(queued, Ordering::Relaxed);
        if !overflowed.is_empty() {
            let mut clients = self.write_clients();
            let mut dropped = 0;
            for id in &overflowed {
                // Told to go once out of the map, which is how its task tells this from the
                // shutdown (`Registration::ending`); a source fanning out at the same time may
                // have found it full too, and dropped it first.
                if let Some(client) = self.take_out(&mut clients, *id) {
                    client.kick.cancel();
                    dropped += 1;
                }
            }
            self.counted(&clients);
            drop(clients);
            if dropped > 0 {
                stats.slow_consumers.fetch_add(dropped, Ordering::Relaxed);
                tracing::warn!(
                    clients = dropped,
                    queue = self.inner.settings.client_queue,
                    "realtime clients fell a full queue behind; closing them (slow consumer)"
                );
            }
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
        let mut clients = self.write_clients();
        self.take_out(&mut clients, id);
        self.counted(&clients);
    }

    /// Removes a client from the map (under its write lock), keeping the SSE count.
    fn take_out(&self, clients: &mut HashMap<u64, ClientSlot>, id: u64) -> Option<ClientSlot> {
        let client = clients.remove(&id)?;
        if client.wire == Wire::Sse {
            self.inner.sse_count.fetch_sub(1, Ordering::AcqRel);
        }
        Some(client)
    }

    /// Updates the count kept beside the map, under its write lock.
    fn counted(&self, clients: &HashMap<u64, ClientSlot>) {
        self.inner
            .client_count
            .store(clients.len(), Ordering::Release);
    }

    fn lock_log(&self) -> MutexGuard<'_, DeliveryLog> {
        self.inner
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
            while let Some(batch) = receiver.recv().await {
                let messages: Vec<&[u8]> =
                    batch.events.iter().map(|event| &event.json[..]).collect();
                task_hub.deliver_paced(&messages).await;
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
        let created_at = batch.created_at;
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
                // The database has them: the backfill task fans them out once it catches up.
                self.hub.request_backfill(created_at.0);
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
        while let Some(frame) = registration.frames.try_recv() {
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

    fn encoded(id: u64) -> Vec<u8> {
        NewEvent {
            source: "sensor-1".into(),
            event_type: "GAS".into(),
            level: Level::Warn,
            payload: None,
            occurred_at: None,
        }
        .as_stored(id, UnixMillis(0), "r")
        .encode()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_client_holds_the_others_back_for_one_grace_period_in_all() {
        let hub = Hub::new(settings(8, 10));
        let mut fast = hub.register(EventFilter::default()).unwrap();
        let slow = hub.register(EventFilter::default()).unwrap();
        // Reads a frame every 100 ms: never stuck, always behind.
        let reader = tokio::spawn(async move {
            let mut slow = slow;
            while !slow.kick.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = slow.try_next_frame();
            }
        });
        let started = tokio::time::Instant::now();
        let mut received = 0;
        for run in 0..40u64 {
            let messages: Vec<Vec<u8>> = (run * 2..run * 2 + 2).map(|id| encoded(id + 1)).collect();
            let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            hub.deliver_paced(&slices).await;
            received += drain(&mut fast).len();
        }
        assert_eq!(received, 80, "the fast client got every event");
        // Waiting for the slow one on every slice would take 40 × ~200 ms.
        assert!(
            started.elapsed() < SLOW_CONSUMER_GRACE * 2,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(hub.stats().slow_consumers(), 1);
        reader.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_whose_budget_refilled_is_waited_for_again() {
        let hub = Hub::new(settings(8, 10));
        let mut client = hub.register(EventFilter::default()).unwrap();
        // A first burst it reads slowly: it spends much of its budget.
        let messages: Vec<Vec<u8>> = (1..=8).map(encoded).collect();
        let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let delivering = hub.deliver_paced(&slices);
        let reading = async {
            let mut got = 0;
            while got < 8 {
                tokio::time::sleep(Duration::from_millis(40)).await;
                got += drain(&mut client).len();
            }
        };
        tokio::join!(delivering, reading);
        // Its budget refills: a second burst waits for it again and loses nothing.
        tokio::time::sleep(WAIT_BUDGET_REFILL).await;
        let messages: Vec<Vec<u8>> = (9..=40).map(encoded).collect();
        let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let delivering = hub.deliver_paced(&slices);
        let reading = async {
            let mut got = 0;
            while got < 32 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                got += drain(&mut client).len();
            }
        };
        tokio::join!(delivering, reading);
        assert_eq!(hub.stats().slow_consumers(), 0);
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
        let mut client = hub.register(EventFilter::default()).unwrap();
        assert_eq!(hub.deliver([&b"not an event"[..]]), 0);
        assert_eq!(hub.stats().unreadable_messages(), 1);
        assert!(drain(&mut client).is_empty());
    }
}
