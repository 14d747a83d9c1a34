//! What the two databases differ in, for the statements and flows both backends share.
//!
//! The reads ([`crate::reads`]), the resolve count and the batch write
//! ([`crate::write::write_batch`]) are written once, generic over a [`Backend`]: the sqlx
//! database type itself (`sqlx::MySql`, `sqlx::Sqlite`), which knows its SQL spellings, how it
//! takes a bound value, how it stores times and what its errors mean for a batch. Each backend
//! implements it beside the code that truly differs (connecting, the writer's recovery):
//! `mysql.rs` and `sqlite.rs`.

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};
use vigil_core::UnixMillis;

use crate::sql::Dialect;
use crate::sql::list::Bind;

/// Where a statement stood in its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `BEGIN` or a statement inside the transaction: nothing commits without the COMMIT, which
    /// is not sent after a failure.
    BeforeCommit,
    /// The batch's only statement, autocommit: it commits by itself.
    Autocommit,
    /// The COMMIT of the transaction.
    Commit,
}

impl Phase {
    /// The operation named in errors.
    pub(crate) fn operation(self) -> &'static str {
        match self {
            Phase::BeforeCommit | Phase::Autocommit => "insert",
            Phase::Commit => "commit insert",
        }
    }
}

/// A database Vigil stores events in.
pub(crate) trait Backend: Database {
    /// The SQL spellings of this database.
    const DIALECT: Dialect;

    /// The statement that opens the transaction of a batch split into several statements.
    const BEGIN_WRITE: &'static str;

    /// A stored time column as [`UnixMillis`] (MySQL: microseconds computed by the server;
    /// SQLite: the stored milliseconds).
    fn millis(stored: i64) -> UnixMillis;

    /// Binds an unsigned value (an id, a limit) as this database takes it.
    fn bind_unsigned(
        query: Query<'static, Self, Self::Arguments>,
        value: u64,
    ) -> Query<'static, Self, Self::Arguments>;

    /// The rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Whether a statement failed because a row with its primary key exists.
    fn is_duplicate_key(cause: &sqlx::Error) -> bool;

    /// Whether a committing statement (an autocommit INSERT, or COMMIT) that failed with `cause`
    /// may nevertheless have committed. Never asked for a statement before COMMIT: nothing of a
    /// transaction commits without it.
    fn may_have_committed(cause: &sqlx::Error, phase: Phase) -> bool;
}

/// Binds one planned value as `DB` takes it.
pub(crate) fn bind<DB>(
    query: Query<'static, DB, DB::Arguments>,
    value: Bind,
) -> Query<'static, DB, DB::Arguments>
where
    DB: Backend,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    match value {
        Bind::Unsigned(value) => DB::bind_unsigned(query, value),
        Bind::Signed(value) => query.bind(value),
        Bind::Text(value) => query.bind(value),
    }
}

/// A planned statement with its values bound, for any backend.
pub(crate) fn bound_query<DB>(
    statement: crate::sql::list::Statement,
) -> Query<'static, DB, DB::Arguments>
where
    DB: Backend,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement.sql));
    for value in statement.binds {
        query = bind(query, value);
    }
    query
}
