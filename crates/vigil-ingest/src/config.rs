//! The pipeline's bounds and deadlines, as the server hands them over from its settings.
//!
//! A module of its own because the queue, the batcher and the pipeline's start-up all read
//! it, and it must sit below each of them.

use std::time::Duration;

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
    /// whatever the database does: [`Ack::wait`](crate::Ack::wait) answers by then, and the batcher never sends
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
