//! Vigil's durable storage: every acknowledged event is a committed row here.
//!
//! The batcher hands the store whole batches ([`EventRow`]s) and the store writes each batch
//! with one multi-row `INSERT` (split only where protocol limits force it, then inside one
//! transaction), so a batch is all-or-nothing. An insert that fails says whether the batch is
//! certainly not committed ([`InsertError::NotCommitted`]) or unknown
//! ([`InsertError::OutcomeUnknown`]); after an unknown outcome, [`Store::resolve`] finds out
//! for certain, so Vigil never acknowledges a lost event and never refuses a stored one.
//!
//! # Ids
//!
//! Vigil assigns event ids itself, from blocks reserved in the database table
//! `vigil_id_blocks` ([`Store::allocate_ids`]), and every `INSERT` names its ids. Auto-increment
//! ids cannot be inferred safely for multi-row inserts (interleaved under
//! `innodb_autoinc_lock_mode=2`, strided under Galera's `auto_increment_increment`, and MySQL 8
//! has no `INSERT … RETURNING`); named ids make each acknowledged id exactly its row's id with
//! any server settings and any number of Vigil instances. Ids are unique, below 2^53, and
//! increase in each instance's commit order; a restart leaves a gap. The full argument, with
//! what each step guarantees, is in `crates/vigil-store/ID_SCHEME.md`.
//!
//! # Backends
//!
//! [`Store`] is an enum over backends so callers stay backend-agnostic: MySQL/MariaDB
//! ([`MySqlStore`]) today, an embedded SQLite variant later.

pub mod error;
pub mod ids;
pub mod mysql;
pub mod sql;

use std::time::Duration;

use vigil_core::{EventQuery, Level, NewEvent, StoredEventRef, UnixMillis};

pub use error::{InsertError, StoreError};
pub use mysql::MySqlStore;

/// One row to insert: an event with the id, `createdAt` and request id Vigil assigned.
#[derive(Debug, Clone, Copy)]
pub struct EventRow<'a> {
    /// From [`Store::allocate_ids`].
    pub id: u64,
    pub event: &'a NewEvent,
    pub created_at: UnixMillis,
    pub request_id: &'a str,
}

/// An event read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: u64,
    pub source: String,
    pub event_type: String,
    pub level: Level,
    pub payload: Option<String>,
    pub occurred_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub request_id: String,
}

impl StoredEvent {
    /// A borrowed view that encodes with vigil-core's one encoder, byte-identical to the JSON
    /// the event had when it was first stored.
    pub fn as_ref(&self) -> StoredEventRef<'_> {
        StoredEventRef {
            id: self.id,
            source: &self.source,
            event_type: &self.event_type,
            level: self.level,
            payload: self.payload.as_deref(),
            occurred_at: self.occurred_at,
            created_at: self.created_at,
            request_id: &self.request_id,
        }
    }
}

/// One page of events, newest first by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventPage {
    /// At most the query's `size` events, highest id first.
    pub events: Vec<StoredEvent>,
    /// Whether at least one more matching event lies beyond this page.
    pub has_more: bool,
}

/// How the store uses the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Size of the read pool (reads, id reservations, pings). The writer has its own
    /// connection on top of these.
    pub max_connections: u32,
    /// Bound on every statement the store runs, inserts included. An insert that exceeds it
    /// ends with [`InsertError::OutcomeUnknown`] and its connection is dropped.
    pub statement_timeout: Duration,
    /// Bound on opening a connection and on waiting for a pooled one.
    pub connect_timeout: Duration,
}

/// Default read pool size.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default statement bound: generous for a large batch on a busy server, short enough that
/// waiting requests get an answer.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default connect bound.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// The event store, whichever backend holds it. Cheap to clone: clones share one pool and
/// one writer.
#[derive(Clone)]
pub enum Store {
    MySql(MySqlStore),
}

impl Store {
    /// Connects to the database named by `database_url` (`mysql://…`), pins every session to
    /// UTC, runs the embedded migrations and opens the writer connection.
    pub async fn connect(database_url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let scheme = url_scheme(database_url);
        match scheme {
            "mysql" | "mariadb" => Ok(Store::MySql(
                MySqlStore::connect(database_url, options).await?,
            )),
            _ => Err(StoreError::UnsupportedScheme {
                scheme: printable_scheme(scheme),
            }),
        }
    }

    /// `count` fresh ids, increasing, from this store's cached block (reserving a new block in
    /// the database when it runs out).
    pub async fn allocate_ids(&self, count: usize) -> Result<Vec<u64>, StoreError> {
        match self {
            Store::MySql(store) => store.allocate_ids(count).await,
        }
    }

    /// Stores the batch, all or nothing. See [`InsertError`] for what a failure means.
    pub async fn insert(&self, rows: &[EventRow<'_>]) -> Result<(), InsertError> {
        match self {
            Store::MySql(store) => store.insert(rows).await,
        }
    }

    /// After an [`InsertError::OutcomeUnknown`]: decides for certain whether the batch with
    /// these ids is in the table (`true`) or not (`false`).
    pub async fn resolve(&self, ids: &[u64]) -> Result<bool, StoreError> {
        match self {
            Store::MySql(store) => store.resolve(ids).await,
        }
    }

    /// The event with this id, if stored.
    pub async fn get(&self, id: u64) -> Result<Option<StoredEvent>, StoreError> {
        match self {
            Store::MySql(store) => store.get(id).await,
        }
    }

    /// The `limit` newest events, newest (highest id) first.
    pub async fn latest(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        match self {
            Store::MySql(store) => store.latest(limit).await,
        }
    }

    /// One page of the events `query` selects, newest first by id: filters, time window,
    /// offset or cursor. Every plan reads an index in id order and stops near the page size;
    /// see `sql::list`.
    pub async fn list(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        match self {
            Store::MySql(store) => store.list(query).await,
        }
    }

    /// [`Store::list`], plus the rows the server examined for it (the session's
    /// `Handler_read_*` counters around the very statements `list` runs). For tests and
    /// measurements.
    #[doc(hidden)]
    pub async fn list_with_rows_examined(
        &self,
        query: &EventQuery,
    ) -> Result<(EventPage, u64), StoreError> {
        match self {
            Store::MySql(store) => store.list_with_rows_examined(query).await,
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::MySql(store) => store.ping().await,
        }
    }

    /// Closes the writer and the pool, waiting for borrowed connections to come back.
    pub async fn close(&self) {
        match self {
            Store::MySql(store) => store.close().await,
        }
    }
}

/// The scheme of a URL (before `://`), or `""` when there is none.
fn url_scheme(url: &str) -> &str {
    url.split_once("://").map_or("", |(scheme, _)| scheme)
}

/// The scheme as it may appear in an error: short and plain, so nothing else of the URL
/// (which may hold a password) can leak through it.
fn printable_scheme(scheme: &str) -> String {
    let plain = !scheme.is_empty()
        && scheme.len() <= 16
        && scheme
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'));
    if plain {
        scheme.to_owned()
    } else {
        "(none)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_schemes_are_repeated_in_errors() {
        assert_eq!(url_scheme("mysql://root@127.0.0.1/test"), "mysql");
        assert_eq!(url_scheme("127.0.0.1:3306"), "");
        assert_eq!(printable_scheme("sqlite"), "sqlite");
        assert_eq!(printable_scheme(""), "(none)");
        assert_eq!(printable_scheme("user:secret@host"), "(none)");
    }

    #[tokio::test]
    async fn other_schemes_are_refused_with_a_clear_error() {
        let options = StoreOptions::default();
        for url in [
            "sqlite:///tmp/vigil.db",
            "postgres://u:secret@h/db",
            "u:secret@host/db",
        ] {
            let Err(error) = Store::connect(url, &options).await else {
                panic!("{url} was accepted");
            };
            assert!(matches!(error, StoreError::UnsupportedScheme { .. }));
            let text = error.to_string();
            assert!(text.contains("mysql://"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }
}
