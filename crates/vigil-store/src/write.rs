//! Writing one batch, and what a failed statement means for it: one model for both backends.
//!
//! A batch goes in as one autocommit INSERT, or, when protocol limits split it or idempotency
//! records go with it, as several statements inside one transaction. Each statement ends in
//! success or a [`StatementFailure`]; where it stood in the batch ([`Phase`]) and what the
//! database said ([`Backend::may_have_committed`], [`Backend::is_duplicate_key`]) decide the
//! batch's fate: certainly not committed, or unknown (then [`crate::Store::resolve`] finds out).
//! How the writer is made fit again after a failure is the one thing each backend does its own
//! way ([`BatchSession::recover`]).

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use crate::backend::{Backend, Phase};
use crate::common::query_error;
use crate::idempotency::{self, IdempotencyRecord};
use crate::sql;
use crate::{EventRow, InsertError, StoreError};

/// How one statement on the writer failed.
#[derive(Debug)]
pub(crate) enum StatementFailure {
    /// The statement timeout fired; the statement may have been sent, and may still run.
    TimedOut(Duration),
    /// The driver answered with an error.
    Driver(sqlx::Error),
}

/// Runs one writer statement under `timeout`.
pub(crate) async fn timed<T>(
    timeout: Duration,
    statement: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StatementFailure> {
    match tokio::time::timeout(timeout, statement).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(cause)) => Err(StatementFailure::Driver(cause)),
        Err(_) => Err(StatementFailure::TimedOut(timeout)),
    }
}

/// What a statement that hit an existing primary key was writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writing {
    /// Event rows: their ids are taken ([`InsertError::DuplicateIds`]).
    Events,
    /// Idempotency records: a key is taken ([`InsertError::KeyTaken`]).
    Keys,
}

impl StatementFailure {
    /// What the failure means for the batch. A statement before COMMIT changes nothing that
    /// lasts; a committing statement that timed out, or failed in a way `DB` cannot rule out
    /// having committed, leaves the outcome unknown.
    pub(crate) fn into_insert_error<DB: Backend>(
        self,
        phase: Phase,
        writing: Writing,
    ) -> InsertError {
        let cause = match self {
            StatementFailure::TimedOut(after) => {
                let error = StoreError::Timeout {
                    operation: phase.operation(),
                    after,
                };
                return match phase {
                    Phase::BeforeCommit => InsertError::NotCommitted(error),
                    Phase::Autocommit | Phase::Commit => InsertError::OutcomeUnknown(error),
                };
            }
            StatementFailure::Driver(cause) => cause,
        };
        if phase != Phase::Commit && DB::is_duplicate_key(&cause) {
            return match writing {
                Writing::Events => InsertError::DuplicateIds(StoreError::DuplicateIds { cause }),
                Writing::Keys => InsertError::KeyTaken(StoreError::IdempotencyKeyTaken { cause }),
            };
        }
        let may_have_committed =
            phase != Phase::BeforeCommit && DB::may_have_committed(&cause, phase);
        let error = query_error(phase.operation(), cause);
        if may_have_committed {
            InsertError::OutcomeUnknown(error)
        } else {
            InsertError::NotCommitted(error)
        }
    }
}

/// A backend's writer, held for the length of one batch.
pub(crate) trait BatchSession: Send {
    type Db: Backend;

    /// One INSERT of `rows`, at most the dialect's rows per statement.
    fn insert_rows(
        &mut self,
        rows: &[EventRow<'_>],
    ) -> impl Future<Output = Result<(), StatementFailure>> + Send;

    /// The INSERT of idempotency records.
    fn insert_records(
        &mut self,
        statement: sql::list::Statement,
    ) -> impl Future<Output = Result<(), StatementFailure>> + Send;

    /// A statement without values: `BEGIN` or `COMMIT`.
    fn execute_plain(
        &mut self,
        sql: &'static str,
    ) -> impl Future<Output = Result<(), StatementFailure>> + Send;

    /// After a statement failed in `phase`: leaves no transaction open on the writer, or marks
    /// the writer to be replaced.
    fn recover(
        &mut self,
        failure: &StatementFailure,
        phase: Phase,
    ) -> impl Future<Output = ()> + Send;
}

/// When a batch written on one of several writers may commit: resolves `Ok` once every batch
/// with smaller ids is settled, or `Err` (the batch is then rolled back, certainly not
/// committed) when it cannot wait any longer. See [`crate::Store::insert_on_writer`].
pub type CommitTurn<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// One batch as the store writes it: the events, and the idempotency records of its keyed
/// requests, which go in the same transaction.
pub(crate) struct Batch<'a> {
    /// Non-empty and valid: [`crate::Store::insert_with_keys`] checks them.
    pub(crate) rows: &'a [EventRow<'a>],
    pub(crate) keys: &'a [IdempotencyRecord],
    /// Awaited just before COMMIT, when the batch must not commit before earlier ones.
    pub(crate) turn: Option<CommitTurn<'a>>,
}

/// Writes the batch through `session`, all or nothing: one autocommit INSERT when the rows fit
/// in one statement (of at most `statement_budget` parameter bytes), no records go with them
/// and no turn must be awaited, else a transaction of the planned INSERTs, then the records,
/// then (after the batch's turn) COMMIT.
pub(crate) async fn write_batch<S: BatchSession>(
    session: &mut S,
    Batch { rows, keys, turn }: Batch<'_>,
    statement_budget: usize,
) -> Result<(), InsertError> {
    debug_assert!(!rows.is_empty(), "Store::insert_with_keys checks the rows");
    let plan = sql::plan_statements(
        rows.iter().map(sql::estimated_row_bytes),
        S::Db::DIALECT.max_rows_per_statement(),
        statement_budget,
    );
    if let ([_], [], None) = (plan.as_slice(), keys, &turn) {
        let inserted = session.insert_rows(rows).await;
        return settle(session, inserted, Phase::Autocommit, Writing::Events).await;
    }
    let begun = session.execute_plain(S::Db::BEGIN_WRITE).await;
    settle(session, begun, Phase::BeforeCommit, Writing::Events).await?;
    for range in plan {
        let inserted = session.insert_rows(&rows[Range::clone(&range)]).await;
        settle(session, inserted, Phase::BeforeCommit, Writing::Events).await?;
    }
    if !keys.is_empty() {
        let recorded = session
            .insert_records(idempotency::insert_statement(keys))
            .await;
        settle(session, recorded, Phase::BeforeCommit, Writing::Keys).await?;
    }
    if let Some(turn) = turn
        && let Err(error) = turn.await
    {
        // Its turn did not come in time: nothing of it may last.
        let rolled_back = session.execute_plain("ROLLBACK").await;
        if let Err(failure) = rolled_back {
            session.recover(&failure, Phase::BeforeCommit).await;
        }
        return Err(InsertError::NotCommitted(error));
    }
    let committed = session.execute_plain("COMMIT").await;
    settle(session, committed, Phase::Commit, Writing::Events).await
}

/// A statement's result as the batch's: on failure the session recovers first.
async fn settle<S: BatchSession>(
    session: &mut S,
    result: Result<(), StatementFailure>,
    phase: Phase,
    writing: Writing,
) -> Result<(), InsertError> {
    let Err(failure) = result else {
        return Ok(());
    };
    session.recover(&failure, phase).await;
    Err(failure.into_insert_error::<S::Db>(phase, writing))
}
