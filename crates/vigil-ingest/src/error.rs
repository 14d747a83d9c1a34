//! Why an ingest request was not acknowledged. Every variant means the events are certainly
//! not stored, except [`IngestError::OutcomeUnknown`].

/// The answer to a request that did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The queue budget (`VIGIL_QUEUE_EVENTS`) is spent: retry shortly.
    #[error("the ingest queue is full")]
    Overloaded,
    /// Vigil is shutting down and takes no new events.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The database refused or could not be reached for the whole retry window, is known to be
    /// down, or did not take the request before its deadline; nothing of the request was
    /// stored.
    #[error("the database is unavailable")]
    StoreUnavailable,
    /// The database rejected the rows for a reason retrying cannot fix; nothing was stored.
    #[error("the database rejected the events")]
    Rejected,
    /// The request's idempotency key is recorded for a different body (another instance
    /// stored that request first); nothing was written.
    #[error("the idempotency key was used for a different request")]
    IdempotencyMismatch,
    /// The request's deadline (or the shutdown deadline) came while its batch had been sent
    /// and the database had not confirmed whether it committed. The producer must treat it as
    /// unknown: a retry with the same idempotency key learns which, exactly.
    #[error("the outcome of the write is unknown")]
    OutcomeUnknown,
}
