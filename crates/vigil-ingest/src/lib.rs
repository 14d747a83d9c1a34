//! The ingest pipeline, testable without HTTP.
//!
//! ```text
//! handler ── IngestQueue::submit ──▶ bounded crossbeam channel ──▶ batcher thread(s)
//!   (reserve budget, try_send)                                     │ takes all that is queued
//!                                                                  │ allocate ids, one INSERT
//!   ◀──────────── oneshot ack: ids (201) or IngestError (503) ─────┘ after COMMIT
//! ```
//!
//! Handlers never block: a request reserves its event count from an atomic budget and is
//! `try_send`-ed as one entry; over budget is an immediate [`IngestError::Overloaded`]. The
//! batcher, on its own thread, writes as soon as it is free, taking everything queued up to
//! the row and byte bounds: batches grow with the requests in flight (group commit), with no
//! timer and no added latency for a trickle. With several store writers (MySQL), one batcher
//! thread per writer overlaps large batches, and the commit line keeps ids in commit order
//! (see `line`).
//!
//! A request may carry an idempotency key ([`KeyedRequest`]): its record is written in the
//! same transaction as its events, and a retry is answered from it (see `idempotency`).

mod batcher;
mod config;
mod error;
mod idempotency;
mod line;
mod pipeline;
mod queue;
mod stats;

pub use config::IngestConfig;
pub use error::IngestError;
pub use idempotency::{KeyClaim, KeyedRequest, Stored};
pub use pipeline::Ingest;
pub use queue::{Ack, IngestQueue, StoreState};
pub use stats::{BATCH_ROWS_BOUNDS, BatchStats};
