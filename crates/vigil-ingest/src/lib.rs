//! The ingest pipeline, testable without HTTP.
//!
//! ```text
//! handler ── IngestQueue::submit ──▶ bounded crossbeam channel ──▶ batcher thread
//!   (reserve budget, try_send)                                     │ takes all that is queued
//!                                                                  │ allocate ids, one INSERT
//!   ◀──────────── oneshot ack: ids (201) or IngestError (503) ─────┘ after COMMIT
//! ```
//!
//! Handlers never block: a request reserves its event count from an atomic budget and is
//! `try_send`-ed as one entry; over budget is an immediate [`IngestError::Overloaded`]. The
//! batcher, on its own thread, writes as soon as it is free, taking everything queued up to
//! the row and byte bounds: batches grow with the requests in flight (group commit), with no
//! timer and no added latency for a trickle. One writer keeps ids in commit order.
//!
//! A request may carry an idempotency key ([`KeyedRequest`]): its record is written in the
//! same transaction as its events, and a retry is answered from it (see `idempotency`).

mod batcher;
mod config;
mod error;
mod idempotency;
mod pipeline;
mod queue;
mod stats;

pub use config::IngestConfig;
pub use error::IngestError;
pub use idempotency::{KeyClaim, KeyedRequest, Stored};
pub use pipeline::Ingest;
pub use queue::{Ack, IngestQueue, StoreState};
pub use stats::{BATCH_ROWS_BOUNDS, BatchStats};
