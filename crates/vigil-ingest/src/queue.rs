//! The front half of the pipeline: the event budget, the bounded channel and the handle that
//! starts and stops the batcher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use vigil_core::{CommitSink, NewEvent};
use vigil_store::{Digest, Store};

use crate::batcher::{BatchStats, Batcher};
use crate::error::IngestError;
use crate::idempotency::{KeyClaim, KeyClaims, KeyedRequest, Stored};

/// Bounds of the pipeline (the settings `VIGIL_QUEUE_EVENTS` and `VIGIL_BATCH_MAX_*`).
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Events that may wait in the queue or the batch being written, all requests together.
    pub queue_events: usize,
    /// Most rows per batch; a single request larger than this still goes whole, alone.
    pub batch_max_rows: usize,
    /// Most event bytes per batch (same rule for an oversized single request).
    pub batch_max_bytes: usize,
    /// How long one batch is retried against a failing database before it is answered
    /// `StoreUnavailable`. Once a batch has used it all, later batches get one attempt each
    /// until a write succeeds, so producers hear 503 quickly while the database is down.
    pub retry_window: Duration,
    /// The longest a submitted request waits for its answer (`VIGIL_REQUEST_TIMEOUT_S`),
    /// whatever the database does: [`Ack::wait`] answers by then, and the batcher never sends
    /// a request's rows after it.
    pub answer_timeout: Duration,
    /// How long an idempotency record is kept (`VIGIL_IDEMPOTENCY_TTL`).
    pub idempotency_ttl: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            queue_events: 50_000,
            batch_max_rows: 1_000,
            batch_max_bytes: 4 * 1024 * 1024,
            retry_window: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(15),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// What the batcher answers each request: its ids, in the order of its events (or, for a keyed
/// request another instance stored first, that request's record).
pub(crate) type AckResult = Result<Stored, IngestError>;

/// Whether the store can take writes now, as the batcher last found it. Handlers read it to
/// refuse at once what cannot be stored, instead of queueing requests behind a dead database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// Writes go through.
    Up = 0,
    /// The database cannot be reached; the batcher checks every few hundred milliseconds.
    Down = 1,
    /// A batch's outcome is unknown and the batcher is finding it out; no new batch is sent
    /// before it knows (a resent batch could commit twice, or after its requests were told
    /// it did not).
    Settling = 2,
}

impl StoreState {
    fn from_u8(value: u8) -> StoreState {
        match value {
            0 => StoreState::Up,
            1 => StoreState::Down,
            _ => StoreState::Settling,
        }
    }

    /// `up`, `down` or `settling`, as `/api/ready` and the logs say it.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Up => "up",
            StoreState::Down => "down",
            StoreState::Settling => "settling",
        }
    }
}

/// Where a submitted request is, shared by its [`Ack`] and the batcher, so that exactly one
/// side decides what a request that ran out of time is told: a request nobody took is
/// abandoned (certainly never written), one the batcher took is its to answer.
#[derive(Debug, Default)]
pub(crate) struct Progress(AtomicU8);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl Progress {
    /// The batcher takes the request into a batch; `false` if its requester gave up first.
    pub fn take(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The requester gives up; `false` if the batcher took the request first.
    fn abandon(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// One request's events on their way to the batcher.
pub(crate) struct Submission {
    pub events: Vec<NewEvent>,
    pub request_id: String,
    /// Sum of the events' approximate sizes, for the batch byte bound.
    pub bytes: usize,
    /// Taken when the request is answered.
    pub ack: Option<oneshot::Sender<AckResult>>,
    /// The request's idempotency key, if it has one; its claim is released on answering.
    pub key: Option<PendingKey>,
    /// Taken by the batcher or abandoned by the requester, whichever comes first.
    pub progress: Arc<Progress>,
    /// When the requester stops waiting ([`IngestConfig::answer_timeout`] after submitting).
    pub deadline: Instant,
}

/// A keyed submission's key: the claim until answered, then just the digests.
pub(crate) struct PendingKey {
    pub key: Digest,
    pub body: Digest,
    pub claim: Option<KeyClaim>,
}

impl Submission {
    /// Answers the request (once; later calls do nothing). A requester that went away is fine.
    /// A key's claim is released first, so a producer that hears the answer and retries finds
    /// the key free (and, after a commit, its record).
    pub fn answer(&mut self, result: AckResult) {
        if let Some(key) = &mut self.key {
            drop(key.claim.take());
        }
        if let Some(sender) = self.ack.take() {
            let _ = sender.send(result);
        }
    }
}

/// State shared by every queue handle and the batcher.
pub(crate) struct Shared {
    /// Events admitted and not yet answered.
    pub reserved_events: AtomicUsize,
    pub budget: usize,
    /// Set at shutdown: no new submissions.
    pub closed: AtomicBool,
    pub stats: BatchStats,
    /// Idempotency keys in flight on this instance.
    pub claims: KeyClaims,
    /// A [`StoreState`], set by the batcher.
    pub store_state: AtomicU8,
    /// [`IngestConfig::answer_timeout`].
    pub answer_timeout: Duration,
}

impl Shared {
    pub fn store_state(&self) -> StoreState {
        StoreState::from_u8(self.store_state.load(Ordering::Acquire))
    }

    /// Sets the state; the previous one.
    pub fn set_store_state(&self, state: StoreState) -> StoreState {
        StoreState::from_u8(self.store_state.swap(state as u8, Ordering::AcqRel))
    }

    pub fn release(&self, events: usize) {
        self.reserved_events.fetch_sub(events, Ordering::AcqRel);
    }
}

/// The handlers' side of the pipeline. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct IngestQueue {
    sender: Sender<Submission>,
    shared: Arc<Shared>,
}

/// A submitted request's pending answer.
#[must_use = "an ack must be awaited to learn whether the events were stored"]
pub struct Ack {
    receiver: oneshot::Receiver<AckResult>,
    progress: Arc<Progress>,
    deadline: Instant,
}

impl Ack {
    /// Waits for the batcher's answer, at most until the request's deadline
    /// ([`IngestConfig::answer_timeout`] after it was submitted): the ids after COMMIT, or why
    /// nothing was stored, or [`IngestError::OutcomeUnknown`] when the deadline came while the
    /// batcher was writing the request and could not yet say whether it committed.
    pub async fn wait(self) -> Result<Vec<u64>, IngestError> {
        self.wait_stored().await.map(|stored| match stored {
            Stored::Committed(ids) => ids,
            Stored::Replayed(record) => record.ids,
        })
    }

    /// [`Ack::wait`] for a keyed submission: whether the events were written now or by an
    /// earlier request with the key.
    pub async fn wait_stored(self) -> Result<Stored, IngestError> {
        // The batcher answers every submission it takes. A submission dropped unanswered was
        // still in the channel when the batcher stopped, so it was never written.
        let Ack {
            mut receiver,
            progress,
            deadline,
        } = self;
        let deadline = tokio::time::Instant::from_std(deadline);
        if let Ok(answer) = tokio::time::timeout_at(deadline, &mut receiver).await {
            return answer.unwrap_or(Err(IngestError::ShuttingDown));
        }
        if progress.abandon() {
            // Never taken, and now never will be: certainly not stored.
            return Err(IngestError::StoreUnavailable);
        }
        // Taken: answered in the same instant, or still being written or settled.
        receiver
            .try_recv()
            .unwrap_or(Err(IngestError::OutcomeUnknown))
    }
}

impl IngestQueue {
    /// Admits a request's events whole or not at all. Over budget or shutting down → an
    /// immediate error; otherwise an [`Ack`] to await.
    pub fn submit(&self, events: Vec<NewEvent>, request_id: String) -> Result<Ack, IngestError> {
        self.submit_with(events, request_id, None)
    }

    /// Claims an idempotency key for a request on this instance; `None` while another
    /// request with the key is being handled here (409).
    pub fn claim_key(&self, key: Digest) -> Option<KeyClaim> {
        self.shared.claims.claim(key)
    }

    /// [`IngestQueue::submit`] for a request with an idempotency key: its record is written in
    /// the same transaction as its events. Await it with [`Ack::wait_stored`].
    pub fn submit_keyed(
        &self,
        events: Vec<NewEvent>,
        request_id: String,
        keyed: KeyedRequest,
    ) -> Result<Ack, IngestError> {
        let key = PendingKey {
            key: keyed.claim.key().clone(),
            body: keyed.body,
            claim: Some(keyed.claim),
        };
        self.submit_with(events, request_id, Some(key))
    }

    fn submit_with(
        &self,
        events: Vec<NewEvent>,
        request_id: String,
        key: Option<PendingKey>,
    ) -> Result<Ack, IngestError> {
        debug_assert!(!events.is_empty());
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(IngestError::ShuttingDown);
        }
        if self.shared.store_state() != StoreState::Up {
            return Err(IngestError::StoreUnavailable);
        }
        let count = events.len();
        let admitted = self.shared.reserved_events.fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |reserved| (reserved + count <= self.shared.budget).then_some(reserved + count),
        );
        if admitted.is_err() {
            return Err(IngestError::Overloaded);
        }
        let bytes = events.iter().map(NewEvent::approximate_size).sum();
        let (ack, receiver) = oneshot::channel();
        let progress = Arc::new(Progress::default());
        let deadline = Instant::now() + self.shared.answer_timeout;
        let submission = Submission {
            events,
            request_id,
            bytes,
            ack: Some(ack),
            key,
            progress: Arc::clone(&progress),
            deadline,
        };
        match self.sender.try_send(submission) {
            Ok(()) => Ok(Ack {
                receiver,
                progress,
                deadline,
            }),
            Err(TrySendError::Full(_)) => {
                self.shared.release(count);
                Err(IngestError::Overloaded)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.release(count);
                Err(IngestError::ShuttingDown)
            }
        }
    }

    /// Events admitted and not yet answered (queued or being written).
    pub fn depth(&self) -> usize {
        self.shared.reserved_events.load(Ordering::Acquire)
    }

    /// Whether the queue still takes events.
    pub fn is_open(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire)
    }

    /// Whether the store takes writes now, as the batcher last found it; anything but
    /// [`StoreState::Up`] refuses new requests at once.
    pub fn store_state(&self) -> StoreState {
        self.shared.store_state()
    }

    /// Batch counters since start.
    pub fn stats(&self) -> &BatchStats {
        &self.shared.stats
    }
}

/// The running pipeline: its queue and its batcher thread.
pub struct Ingest {
    queue: IngestQueue,
    /// Dropped to tell the batcher to drain and stop.
    stop: Option<Sender<()>>,
    /// Cancelled at the shutdown deadline: stop retrying, answer what is left.
    force: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ingest {
    /// Starts the batcher thread writing to `store` and, after each commit, handing the
    /// batch's encoded events to `sink` if there is one: vigil-bus's `Publisher` (the
    /// Redis list and channel), or the server's in-process realtime feed when Redis is off.
    ///
    /// The thread runs its own single-threaded tokio runtime and the store's write path uses
    /// only connections it opens itself (the writer, id reservations, outcome checks), so a
    /// batch's database round trips are driven by the batcher thread alone: no wake-up of a
    /// runtime worker and back per round trip, which profiles of the single-event load test
    /// showed as a large share of the server's CPU.
    pub fn start(
        store: Store,
        config: IngestConfig,
        sink: Option<Arc<dyn CommitSink>>,
    ) -> std::io::Result<Ingest> {
        assert!(config.queue_events > 0 && config.batch_max_rows > 0);
        assert!(!config.answer_timeout.is_zero());
        let (sender, receiver): (Sender<Submission>, Receiver<Submission>) =
            crossbeam_channel::bounded(config.queue_events);
        let (stop, stop_receiver) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            reserved_events: AtomicUsize::new(0),
            budget: config.queue_events,
            closed: AtomicBool::new(false),
            stats: BatchStats::default(),
            claims: KeyClaims::default(),
            store_state: AtomicU8::new(StoreState::Up as u8),
            answer_timeout: config.answer_timeout,
        });
        let force = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let batcher = Batcher::new(
            receiver,
            stop_receiver,
            store,
            sink,
            config,
            Arc::clone(&shared),
            force.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("vigil-batcher".into())
            .spawn(move || batcher.run(&runtime))?;
        Ok(Ingest {
            queue: IngestQueue { sender, shared },
            stop: Some(stop),
            force,
            thread: Some(thread),
        })
    }

    /// A handle for request handlers.
    pub fn queue(&self) -> IngestQueue {
        self.queue.clone()
    }

    /// Closes the queue to new events, lets the batcher commit and acknowledge everything
    /// already queued, and returns when it has stopped. At `deadline` the batcher stops
    /// retrying and answers whatever is left as not stored.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.queue.shared.closed.store(true, Ordering::Release);
        drop(self.stop.take());
        let Some(thread) = self.thread.take() else {
            return;
        };
        let (finished, mut finished_receiver) = oneshot::channel::<()>();
        let join = tokio::task::spawn_blocking(move || {
            let outcome = thread.join();
            let _ = finished.send(());
            outcome
        });
        if tokio::time::timeout(deadline, &mut finished_receiver)
            .await
            .is_err()
        {
            tracing::warn!(
                deadline_s = deadline.as_secs_f64(),
                "shutdown deadline reached with events still queued; answering the rest"
            );
            self.force.cancel();
        }
        if let Ok(Err(_panic)) = join.await {
            tracing::error!("the batcher thread panicked");
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // Without an orderly shutdown, still stop the thread rather than leak it.
        self.queue.shared.closed.store(true, Ordering::Release);
        self.force.cancel();
        drop(self.stop.take());
    }
}
