//! The batcher's counters: what the pipeline has written, readable from any thread.
//!
//! Apart from the batcher because the queue's shared state holds them (so every
//! [`IngestQueue`](crate::IngestQueue) handle can read them) and the queue must not depend
//! on the batcher that consumes it.

use std::sync::atomic::AtomicU64;

use vigil_core::AtomicHistogram;

/// Upper bounds of the batch size histogram, in rows.
pub const BATCH_ROWS_BOUNDS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Counters of the batcher's work, readable from any thread (the metrics endpoint reads them
/// at scrape time; the batcher only adds to atomics).
#[derive(Debug)]
pub struct BatchStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Batches handed to a helper writer, to be written while another batch commits.
    pub overlapped_batches: AtomicU64,
    /// Rows committed.
    pub rows: AtomicU64,
    /// Largest batch committed, in rows.
    pub max_batch_rows: AtomicU64,
    /// Requests answered with an error.
    pub failed_requests: AtomicU64,
    /// Database calls of the write path that failed (id reservations, inserts, outcome
    /// checks), retried or not.
    pub store_errors: AtomicU64,
    /// Rows per committed batch.
    pub batch_rows: AtomicHistogram,
    /// Seconds from the start of a batch's write to its answer (retries included), committed
    /// or not.
    pub flush_seconds: AtomicHistogram,
    /// Batches whose requests were answered `outcome_unknown` and which later turned out
    /// committed (their events were then published).
    pub settled_late_committed: AtomicU64,
    /// Batches whose requests were answered `outcome_unknown` and which later turned out not
    /// committed.
    pub settled_late_not_committed: AtomicU64,
}

impl Default for BatchStats {
    fn default() -> Self {
        BatchStats {
            batches: AtomicU64::new(0),
            overlapped_batches: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            max_batch_rows: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            batch_rows: AtomicHistogram::new(BATCH_ROWS_BOUNDS, 1.0),
            flush_seconds: AtomicHistogram::latency_seconds(),
            settled_late_committed: AtomicU64::new(0),
            settled_late_not_committed: AtomicU64::new(0),
        }
    }
}
