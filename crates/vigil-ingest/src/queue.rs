//! The front half of the pipeline: the event budget, the bounded channel, what a request
//! carries to the batcher, and the store's state as the batcher last found it.
//!
//! The lowest of the pipeline's moving parts: the batcher consumes what this module queues,
//! and `pipeline` wires the two together; this module knows neither.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;
use vigil_core::NewEvent;
use vigil_store::Digest;

use crate::error::IngestError;
use crate::idempotency::{KeyClaim, KeyClaims, KeyedRequest, Stored};
use crate::stats::BatchStats;

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
    /// When the requester stops waiting ([`crate::IngestConfig::answer_timeout`] after submitting).
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
    /// [`crate::IngestConfig::answer_timeout`].
    pub answer_timeout: Duration,
}

impl Shared {
    /// A pipeline's shared state: an empty budget of `budget` events, open, store up.
    pub fn new(budget: usize, answer_timeout: Duration) -> Shared {
        Shared {
            reserved_events: AtomicUsize::new(0),
            budget,
            closed: AtomicBool::new(false),
            stats: BatchStats::default(),
            claims: KeyClaims::default(),
            store_state: AtomicU8::new(StoreState::Up as u8),
            answer_timeout,
        }
    }

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
    /// ([`crate::IngestConfig::answer_timeout`] after it was submitted): the ids after COMMIT, or why
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
    pub(crate) fn new(sender: Sender<Submission>, shared: Arc<Shared>) -> IngestQueue {
        IngestQueue { sender, shared }
    }

    /// Takes no new submissions from now on (shutdown).
    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

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
