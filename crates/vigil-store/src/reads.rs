//! The reads both backends run, written once: a read pool and the statement bound, generic over
//! the [`Backend`].
//!
//! Gets, the newest events, list pages (plans in [`crate::sql::list`]), the forward reads of
//! [`crate::sql::forward`], idempotency records, pings and `resolve`'s count are the same SQL
//! flow on MySQL and SQLite; only spellings, binds and time units differ, and the backend says
//! those. Every statement is bounded by the store's statement timeout.

use std::future::Future;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Type};
use vigil_core::EventQuery;

use crate::backend::{Backend, bound_query};
use crate::common::{self, decode, query_error};
use crate::idempotency::IdempotencyRecord;
use crate::sql::list::{self, Statement, TimeBounds};
use crate::sql::{self};
use crate::{EventPage, StoreError, StoredEvent};

/// A backend's read pool and the bound on each statement. Never used for inserts.
pub(crate) struct Reads<DB: sqlx::Database> {
    pool: Pool<DB>,
    statement_timeout: Duration,
}

impl<DB: sqlx::Database> Reads<DB> {
    pub(crate) fn new(pool: Pool<DB>, statement_timeout: Duration) -> Self {
        Reads {
            pool,
            statement_timeout,
        }
    }

    /// Runs a statement under the statement timeout, naming `operation` in any error.
    pub(crate) async fn bounded<T>(
        &self,
        operation: &'static str,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        common::bounded_query(operation, self.statement_timeout, query).await
    }

    /// A pooled connection, within the statement timeout.
    pub(crate) async fn acquire(
        &self,
        operation: &'static str,
    ) -> Result<PoolConnection<DB>, StoreError> {
        self.bounded(operation, self.pool.acquire()).await
    }

    /// Closes the pool, waiting for borrowed connections to come back.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

impl<DB> Reads<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> u64: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> &'r str: Decode<'r, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB>,
    for<'q> String: Encode<'q, DB>,
{
    /// The event with this id.
    pub(crate) async fn get(&self, id: u64) -> Result<Option<StoredEvent>, StoreError> {
        let query = DB::bind_unsigned(sqlx::query(DB::DIALECT.select_by_id()), id);
        let row = self
            .bounded("get event", query.fetch_optional(&self.pool))
            .await?;
        row.as_ref().map(stored_event_from_row::<DB>).transpose()
    }

    /// The `limit` newest events, newest first.
    pub(crate) async fn latest(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = DB::bind_unsigned(sqlx::query(DB::DIALECT.select_latest()), limit as u64);
        let rows = self
            .bounded("list latest events", query.fetch_all(&self.pool))
            .await?;
        rows.iter().map(stored_event_from_row::<DB>).collect()
    }

    /// One page of the events `query` selects, newest first by id, on one pooled connection.
    pub(crate) async fn list(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        let Some(bounds) = TimeBounds::of(query) else {
            return Ok(EventPage::default());
        };
        let mut connection = self.acquire("list events").await?;
        self.list_on(&mut connection, query, &bounds).await
    }

    /// One page of `query` on `connection` (so both statements see one state of the table): a
    /// probe sizing the time window when the query has one, then the page itself.
    pub(crate) async fn list_on(
        &self,
        connection: &mut DB::Connection,
        query: &EventQuery,
        bounds: &TimeBounds,
    ) -> Result<EventPage, StoreError> {
        let window_size = match list::window_probe(DB::DIALECT, query, bounds) {
            Some(probe) => {
                const OPERATION: &str = "size event window";
                let row = self
                    .bounded(
                        OPERATION,
                        bound_query::<DB>(probe).fetch_optional(&mut *connection),
                    )
                    .await?
                    .ok_or_else(|| query_error(OPERATION, sqlx::Error::RowNotFound))?;
                let window: Option<i64> = decode(&row, 0, OPERATION)?;
                let newer = match bounds.to {
                    Some(_) => Some(decode::<DB::Row, Option<i64>>(&row, 1, OPERATION)?.is_some()),
                    None => None,
                };
                Some(list::WindowSize {
                    window_is_large: window.is_some(),
                    newer_is_large: newer,
                })
            }
            None => None,
        };
        let drive = list::drive_for(bounds, window_size);
        let statement = list::list_statement(DB::DIALECT, query, bounds, drive);
        let rows = self
            .bounded(
                "list events",
                bound_query::<DB>(statement).fetch_all(&mut *connection),
            )
            .await?;
        let size = usize::try_from(query.size).unwrap_or(usize::MAX);
        let mut events = rows
            .iter()
            .map(stored_event_from_row::<DB>)
            .collect::<Result<Vec<_>, _>>()?;
        debug_assert!(events.windows(2).all(|pair| pair[0].id > pair[1].id));
        let has_more = events.len() > size;
        events.truncate(size);
        Ok(EventPage { events, has_more })
    }

    /// The events a planned read selects ([`crate::sql::forward`]), in its order.
    pub(crate) async fn fetch_events(
        &self,
        operation: &'static str,
        statement: Statement,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.fetch_decoded(operation, statement, stored_event_from_row::<DB>)
            .await
    }

    /// The idempotency records a planned read selects.
    pub(crate) async fn fetch_records(
        &self,
        operation: &'static str,
        statement: Statement,
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        self.fetch_decoded(operation, statement, common::idempotency_record_from_row)
            .await
    }

    /// Runs a planned read on a pooled connection and decodes each row with `decode_row`.
    async fn fetch_decoded<T>(
        &self,
        operation: &'static str,
        statement: Statement,
        decode_row: fn(&DB::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let query = bound_query::<DB>(statement);
        let rows = self.bounded(operation, query.fetch_all(&self.pool)).await?;
        rows.iter().map(decode_row).collect()
    }

    /// Runs a short write that is not an insert batch on a pooled connection, autocommit; the
    /// rows it changed.
    pub(crate) async fn execute(
        &self,
        operation: &'static str,
        statement: Statement,
    ) -> Result<u64, StoreError> {
        let result = self
            .bounded(operation, bound_query::<DB>(statement).execute(&self.pool))
            .await?;
        Ok(DB::rows_affected(&result))
    }

    /// Whether the database answers a trivial query.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", sqlx::query::<DB>("SELECT 1").execute(&self.pool))
            .await?;
        Ok(())
    }

    /// `resolve`'s count: whether all of `wanted` (sorted, distinct, non-empty) are in the
    /// table, read on `connection`, which the backend has made sure sees every outcome.
    pub(crate) async fn all_present(
        &self,
        connection: &mut DB::Connection,
        wanted: &[u64],
    ) -> Result<bool, StoreError> {
        const OPERATION: &str = "resolve batch";
        let mut present = 0u64;
        for chunk in wanted.chunks(sql::RESOLVE_IDS_PER_QUERY) {
            let mut query =
                sqlx::query(sqlx::AssertSqlSafe(DB::DIALECT.count_ids_sql(chunk.len())));
            for &id in chunk {
                query = DB::bind_unsigned(query, id);
            }
            let row = self
                .bounded(OPERATION, query.fetch_one(&mut *connection))
                .await?;
            let count: i64 = decode(&row, 0, OPERATION)?;
            present += u64::try_from(count).unwrap_or(0);
        }
        sql::resolution(present, wanted.len() as u64)
    }
}

/// Decodes a row selected with [`crate::sql::Dialect::columns`].
fn stored_event_from_row<DB>(row: &DB::Row) -> Result<StoredEvent, StoreError>
where
    DB: Backend,
    usize: ColumnIndex<DB::Row>,
    for<'r> u64: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> &'r str: Decode<'r, DB> + Type<DB>,
{
    common::stored_event_from_row(row, DB::millis)
}
