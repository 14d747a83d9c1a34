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
//! ([`MySqlStore`]) for the full mode, where several instances share one database, and an
//! embedded SQLite file ([`SqliteStore`]) for the default mode, which needs no service. Both
//! run the same statements and plans ([`sql`]), the same id scheme and the same
//! all-or-nothing insert contract, and return byte-identical events.

mod backend;
mod common;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod mysql;
mod mysql_session;
mod reads;
pub mod sole_writer;
pub mod sql;
pub mod sqlite;
mod write;

use std::path::Path;
use std::time::Duration;

use vigil_core::{EventFilter, EventQuery, Level, NewEvent, StoredEventRef, UnixMillis};

pub use error::{InsertError, StoreError};
pub use idempotency::{Digest, IdempotencyRecord};
pub use mysql::MySqlStore;
pub use sole_writer::SoleWriterLock;
pub use sqlite::{SqliteSettings, SqliteStore};
pub use write::CommitTurn;

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
    Sqlite(SqliteStore),
}

/// Dispatches a method call to whichever backend holds the store.
macro_rules! on_backend {
    ($store:expr, $backend:ident => $call:expr) => {
        match $store {
            Store::MySql($backend) => $call,
            Store::Sqlite($backend) => $call,
        }
    };
}

impl Store {
    /// Connects to the database `database_url` names, runs the embedded migrations and opens
    /// the writer connection:
    ///
    /// - `mysql://…` (or `mariadb://…`): every session pinned to UTC;
    /// - `sqlite:///path/to/file.db` or `sqlite:/path/to/file.db`: the file and its directory
    ///   are created when missing (`sqlite://relative.db` is relative to the current directory).
    pub async fn connect(database_url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        // `ssl-mode=` runs rustls: choose its crypto provider (ring) here rather than leave it
        // to rustls's features, which a workspace build can unify with another provider's
        // (then rustls panics at the first handshake). A no-op when one is set already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let scheme = url_scheme(database_url);
        match scheme {
            "mysql" | "mariadb" => Ok(Store::MySql(
                MySqlStore::connect(database_url, options).await?,
            )),
            "sqlite" => Ok(Store::Sqlite(
                SqliteStore::connect(database_url, options).await?,
            )),
            _ => Err(StoreError::UnsupportedScheme {
                scheme: printable_scheme(scheme),
            }),
        }
    }

    /// Opens the embedded store: the SQLite file `<data_dir>/vigil.db`, creating the
    /// directory and the file when missing.
    pub async fn open_embedded(
        data_dir: &Path,
        options: &StoreOptions,
    ) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(
            SqliteStore::open_in(data_dir, options).await?,
        ))
    }

    /// Claims an SQLite file for this process alone, for a mode in which no other process
    /// may write it (see [`SoleWriterLock`]); a no-op on MySQL, which many instances share.
    pub fn claim_sole_writer(&self) -> Result<(), StoreError> {
        match self {
            Store::MySql(_) => Ok(()),
            Store::Sqlite(store) => store.claim_sole_writer(),
        }
    }

    /// `"mysql"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::MySql(_) => "mysql",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Where the events are, for the start-up log, without credentials:
    /// `mysql 127.0.0.1:3306/vigil` or `sqlite /path/vigil.db (wal, synchronous=full)`.
    pub fn description(&self) -> String {
        match self {
            Store::MySql(store) => format!("mysql {}", store.location()),
            Store::Sqlite(store) => {
                format!("sqlite {} (wal, synchronous=full)", store.path().display())
            }
        }
    }

    /// `count` fresh ids, increasing, from this store's cached block (reserving a new block in
    /// the database when it runs out).
    pub async fn allocate_ids(&self, count: usize) -> Result<Vec<u64>, StoreError> {
        on_backend!(self, store => ids::allocate(store, count).await)
    }

    /// Stores the batch, all or nothing. See [`InsertError`] for what a failure means.
    pub async fn insert(&self, rows: &[EventRow<'_>]) -> Result<(), InsertError> {
        self.insert_with_keys(rows, &[]).await
    }

    /// Stores the batch and the idempotency records of its keyed requests in one transaction:
    /// all or nothing. A record whose key exists fails the whole batch with
    /// [`InsertError::KeyTaken`], committing nothing.
    pub async fn insert_with_keys(
        &self,
        rows: &[EventRow<'_>],
        keys: &[IdempotencyRecord],
    ) -> Result<(), InsertError> {
        self.insert_on_writer(0, rows, keys, None).await
    }

    /// How many writer connections the store keeps: batches on different writers overlap
    /// (one runs its INSERT while another commits), which is how a MySQL server uses more
    /// than one core for a single stream of batches. SQLite admits one writer at a time: 1.
    pub fn writers(&self) -> usize {
        match self {
            Store::MySql(store) => store.writers(),
            Store::Sqlite(_) => 1,
        }
    }

    /// [`Store::insert_with_keys`] on writer `writer` (below [`Store::writers`]). With a
    /// `turn`, the batch always runs as a transaction and its COMMIT waits for the turn: that
    /// is how the caller keeps commits in id order while batches overlap on several writers.
    /// A turn that fails rolls the batch back ([`InsertError::NotCommitted`] with the turn's
    /// error).
    pub async fn insert_on_writer(
        &self,
        writer: usize,
        rows: &[EventRow<'_>],
        keys: &[IdempotencyRecord],
        turn: Option<CommitTurn<'_>>,
    ) -> Result<(), InsertError> {
        // Checked once here, for both backends, before the writer is taken.
        if rows.is_empty() {
            return Ok(());
        }
        if let Some((index, reason)) = rows
            .iter()
            .enumerate()
            .find_map(|(index, row)| sql::row_problem(row).map(|reason| (index, reason)))
        {
            return Err(InsertError::NotCommitted(StoreError::InvalidRow {
                index,
                reason,
            }));
        }
        let batch = write::Batch { rows, keys, turn };
        match self {
            Store::MySql(store) => store.insert(writer, batch).await,
            Store::Sqlite(store) => store.insert(batch).await,
        }
    }

    /// The records among `keys` that have not expired at `now`, in no particular order.
    pub async fn idempotency_records(
        &self,
        keys: &[Digest],
        now: UnixMillis,
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let statement = idempotency::select_statement(keys, now);
        const OPERATION: &str = "read idempotency records";
        on_backend!(self, store => store.reads().fetch_records(OPERATION, statement).await)
    }

    /// Deletes the records among `keys` that expired by `now`, so new requests can take those
    /// keys; the number deleted.
    pub async fn delete_expired_idempotency_keys(
        &self,
        keys: &[Digest],
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let statement = idempotency::delete_expired_keys_statement(keys, now);
        on_backend!(self, store => store.execute_write("delete expired idempotency keys", statement).await)
    }

    /// Purge: deletes at most `limit` records that expired by `now`, oldest first, in one
    /// short statement; the number deleted. Callers loop with pauses, as retention does.
    pub async fn purge_idempotency_records(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let statement = idempotency::purge_statement(self.dialect(), now, limit as u64);
        on_backend!(self, store => store.execute_write("purge idempotency records", statement).await)
    }

    /// Makes sure writer `writer` is open and answering (opening it if need be), without
    /// writing: how the batcher learns that a database it could not reach is back.
    pub async fn check_writer(&self, writer: usize) -> Result<(), StoreError> {
        match self {
            Store::MySql(store) => store.check_writer(writer).await,
            Store::Sqlite(store) => store.check_writer().await,
        }
    }

    /// After an [`InsertError::OutcomeUnknown`]: decides for certain whether the batch with
    /// these ids is in the table (`true`) or not (`false`).
    pub async fn resolve(&self, ids: &[u64]) -> Result<bool, StoreError> {
        let mut wanted = ids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(true);
        }
        on_backend!(self, store => store.resolve(&wanted).await)
    }

    /// The event with this id, if stored.
    pub async fn get(&self, id: u64) -> Result<Option<StoredEvent>, StoreError> {
        on_backend!(self, store => store.reads().get(id).await)
    }

    /// The `limit` newest events, newest (highest id) first.
    pub async fn latest(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        on_backend!(self, store => store.reads().latest(limit).await)
    }

    /// One page of the events `query` selects, newest first by id: filters, time window,
    /// offset or cursor. Every plan reads an index in id order and stops near the page size;
    /// see `sql::list`.
    pub async fn list(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        on_backend!(self, store => store.reads().list(query).await)
    }

    /// [`Store::list`], plus what it cost, for tests and measurements: on MySQL the rows the
    /// server examined (the session's `Handler_read_*` counters around the very statements
    /// `list` runs); on SQLite, which exposes no row counter through sqlx, the virtual-machine
    /// instructions its statements ran (see [`SqliteStore::list_with_rows_examined`]).
    #[doc(hidden)]
    pub async fn list_with_rows_examined(
        &self,
        query: &EventQuery,
    ) -> Result<(EventPage, u64), StoreError> {
        on_backend!(self, store => store.list_with_rows_examined(query).await)
    }

    /// Events with `id > after_id` that pass `filter`, oldest first, at most `limit` (a
    /// WebSocket resume; see [`sql::forward`]).
    pub async fn events_after(
        &self,
        after_id: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let statement = sql::forward::after_id(self.dialect(), after_id, filter, limit as u64);
        self.fetch_events("replay events after an id", statement)
            .await
    }

    /// The stored events among `ids`, in increasing id order.
    pub async fn events_by_ids(&self, ids: &[u64]) -> Result<Vec<StoredEvent>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let statement = sql::forward::by_ids(self.dialect(), ids);
        self.fetch_events("read events by id", statement).await
    }

    /// Events created at or after `from`, in `(createdAt, id)` order, strictly after
    /// `cursor` (the last event of the previous page), at most `limit` (a realtime backfill).
    pub async fn events_created_since(
        &self,
        from: UnixMillis,
        cursor: Option<(UnixMillis, u64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match sql::forward::created_since(self.dialect(), from, cursor, limit as u64) {
            Some(statement) => {
                self.fetch_events("read events created since", statement)
                    .await
            }
            None => Ok(Vec::new()),
        }
    }

    /// Retention: deletes at most `limit` of the events created before `cutoff`, oldest
    /// first, in one short statement; returns how many went. Callers loop with pauses so
    /// that deleting never holds the writer (SQLite) or many row locks (MySQL) for long.
    pub async fn delete_created_before(
        &self,
        cutoff: UnixMillis,
        limit: usize,
    ) -> Result<u64, StoreError> {
        use vigil_core::time::{MAX_TIMESTAMP, MIN_TIMESTAMP};
        if cutoff <= MIN_TIMESTAMP || limit == 0 {
            return Ok(0);
        }
        let cutoff = cutoff.min(MAX_TIMESTAMP);
        let statement = sql::list::Statement {
            sql: sql::delete_expired_sql(self.dialect()).to_owned(),
            binds: vec![
                sql::list::time_bind(self.dialect(), cutoff),
                sql::list::Bind::Unsigned(limit as u64),
            ],
        };
        on_backend!(self, store => store.execute_write("delete expired events", statement).await)
    }

    fn dialect(&self) -> sql::Dialect {
        match self {
            Store::MySql(_) => sql::Dialect::MySql,
            Store::Sqlite(_) => sql::Dialect::Sqlite,
        }
    }

    async fn fetch_events(
        &self,
        operation: &'static str,
        statement: sql::list::Statement,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        on_backend!(self, store => store.reads().fetch_events(operation, statement).await)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, store => store.reads().ping().await)
    }

    /// Closes the writer and the pool, waiting for borrowed connections to come back.
    pub async fn close(&self) {
        on_backend!(self, store => store.close().await)
    }
}

/// The scheme of a URL (before `://`, or before `:` for `sqlite:path`), or `""` when there is
/// none.
fn url_scheme(url: &str) -> &str {
    if url.starts_with("sqlite:") {
        return "sqlite";
    }
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
        assert_eq!(url_scheme("sqlite:/var/lib/vigil.db"), "sqlite");
        assert_eq!(url_scheme("sqlite:///var/lib/vigil.db"), "sqlite");
        assert_eq!(printable_scheme("sqlite"), "sqlite");
        assert_eq!(printable_scheme(""), "(none)");
        assert_eq!(printable_scheme("user:secret@host"), "(none)");
    }

    #[tokio::test]
    async fn other_schemes_are_refused_with_a_clear_error() {
        let options = StoreOptions::default();
        for url in ["postgres://u:secret@h/db", "u:secret@host/db"] {
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
