//! What both backends share beyond SQL text and the generic reads: every operation bounded in
//! time, opening a connection and migrating, the option checks, and decoding a selected row
//! into a [`StoredEvent`] or an idempotency record.
//!
//! The row decoder is generic over sqlx's row type so that both backends read the same columns
//! (in [`crate::sql::Dialect::columns`]' order) with one function; only the unit of the two
//! time columns differs, and the caller says which.

use std::future::Future;
use std::time::Duration;

use sqlx::{ColumnIndex, ConnectOptions, Decode, Row, Type};
use vigil_core::{Level, UnixMillis};

use crate::idempotency::{self, Digest, IdempotencyRecord};
use crate::{StoreError, StoreOptions, StoredEvent};

/// Least time the migrations get, whatever the statement bound: a first start may create
/// tables and indexes on a slow disk.
const MIGRATION_TIME: Duration = Duration::from_secs(60);

/// Runs `work` under `timeout`, turning expiry into [`StoreError::Timeout`].
pub(crate) async fn bounded<T>(
    operation: &'static str,
    timeout: Duration,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(StoreError::Timeout {
            operation,
            after: timeout,
        }))
}

/// Runs a statement under `timeout`, naming `operation` in any error.
pub(crate) async fn bounded_query<T>(
    operation: &'static str,
    timeout: Duration,
    query: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    bounded(operation, timeout, async {
        query.await.map_err(|cause| query_error(operation, cause))
    })
    .await
}

pub(crate) fn query_error(operation: &'static str, cause: sqlx::Error) -> StoreError {
    StoreError::Query { operation, cause }
}

/// Opens one connection outside any pool, bounded by `timeout`.
pub(crate) async fn connect<O>(options: &O, timeout: Duration) -> Result<O::Connection, StoreError>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(cause)) => Err(StoreError::Connect { cause }),
        Err(_) => Err(StoreError::Timeout {
            operation: "connect",
            after: timeout,
        }),
    }
}

/// Runs the embedded migrations (`run`, on the connection the backend opened for them).
pub(crate) async fn migrate(
    statement_timeout: Duration,
    run: impl Future<Output = Result<(), sqlx::migrate::MigrateError>>,
) -> Result<(), StoreError> {
    bounded("migrate", statement_timeout.max(MIGRATION_TIME), async {
        run.await.map_err(|cause| StoreError::Migrate { cause })
    })
    .await
}

pub(crate) fn validate_options(options: &StoreOptions) -> Result<(), StoreError> {
    let reason = if options.max_connections == 0 {
        "max_connections must be at least 1"
    } else if options.statement_timeout.is_zero() {
        "statement_timeout must be positive"
    } else if options.connect_timeout.is_zero() {
        "connect_timeout must be positive"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidOptions { reason })
}

/// Column `index` of `row`, with a driver error named after `operation`.
pub(crate) fn decode<'r, R, T>(
    row: &'r R,
    index: usize,
    operation: &'static str,
) -> Result<T, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(index)
        .map_err(|cause| query_error(operation, cause))
}

/// Decodes a row selected with [`crate::sql::Dialect::columns`]. `millis` turns the stored
/// time columns (MySQL: microseconds computed by the server; SQLite: milliseconds) into
/// [`UnixMillis`].
pub(crate) fn stored_event_from_row<R>(
    row: &R,
    millis: fn(i64) -> UnixMillis,
) -> Result<StoredEvent, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> u64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
{
    const OPERATION: &str = "read event";
    let id: u64 = decode(row, 0, OPERATION)?;
    let level_text: &str = decode(row, 3, OPERATION)?;
    let level: Level = level_text.parse().map_err(|()| StoreError::CorruptRow {
        id,
        reason: "unknown level",
    })?;
    let occurred: Option<i64> = decode(row, 5, OPERATION)?;
    let created: i64 = decode(row, 6, OPERATION)?;
    Ok(StoredEvent {
        id,
        source: decode(row, 1, OPERATION)?,
        event_type: decode(row, 2, OPERATION)?,
        level,
        payload: decode(row, 4, OPERATION)?,
        occurred_at: occurred.map(millis),
        created_at: millis(created),
        request_id: decode(row, 7, OPERATION)?,
    })
}

/// Most ids one idempotency record may decode to: far above any bulk limit, a bound against
/// a hand-edited row.
const MAX_RECORD_IDS: usize = 1_000_000;

/// Decodes a row selected by [`crate::idempotency`]'s lookup.
pub(crate) fn idempotency_record_from_row<R>(row: &R) -> Result<IdempotencyRecord, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
{
    const OPERATION: &str = "read idempotency record";
    let corrupt = |reason| StoreError::CorruptIdempotencyRecord { reason };
    let key: &str = decode(row, 0, OPERATION)?;
    let body: &str = decode(row, 1, OPERATION)?;
    let request_id: &str = decode(row, 2, OPERATION)?;
    let ids: &str = decode(row, 3, OPERATION)?;
    Ok(IdempotencyRecord {
        key: Digest::parse(key).ok_or_else(|| corrupt("key_hash is not a digest"))?,
        body: Digest::parse(body).ok_or_else(|| corrupt("body_hash is not a digest"))?,
        request_id: request_id.to_owned(),
        ids: idempotency::decode_ids(ids, MAX_RECORD_IDS)
            .ok_or_else(|| corrupt("ids are not increasing ranges"))?,
        created_at: UnixMillis(decode(row, 4, OPERATION)?),
        expires_at: UnixMillis(decode(row, 5, OPERATION)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        assert!(validate_options(&StoreOptions::default()).is_ok());
        let zero_pool = StoreOptions {
            max_connections: 0,
            ..StoreOptions::default()
        };
        assert!(matches!(
            validate_options(&zero_pool),
            Err(StoreError::InvalidOptions { .. })
        ));
        let zero_timeout = StoreOptions {
            statement_timeout: Duration::ZERO,
            ..StoreOptions::default()
        };
        assert!(validate_options(&zero_timeout).is_err());
    }
}
