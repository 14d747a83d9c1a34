//! The embedded SQLite backend: one database file, one writer connection, a small read-only
//! pool. It serves Vigil's embedded mode (no `DATABASE_URL`) with the same guarantees as the
//! MySQL backend: a 2xx means the row is committed and survives power loss, and an unknown
//! outcome is always resolved before anyone is answered.
//!
//! - **Durability**: WAL journal with `synchronous=FULL`, so a commit returns only after the
//!   WAL is synced; WAL also lets the read pool read while the writer writes.
//! - **One writer**: SQLite admits one writer per database at a time anyway; a dedicated
//!   connection behind an async mutex keeps the batcher's commits in id order and makes
//!   `resolve` decidable (below). The readers are opened read-only, so nothing but the writer
//!   can ever write through this store.
//! - **Ids**: the block scheme of `ID_SCHEME.md`, with the counter row updated by an
//!   `UPDATE … RETURNING` on the writer. SQLite's write lock serialises reservations across
//!   every process that opens the file, so two Vigil processes on one file get disjoint ids.
//! - **Unknown outcomes**: a sqlx SQLite connection runs its statements on a worker thread, in
//!   the order they were sent, and a statement whose future was dropped (a timeout) still runs
//!   to its end there. So after a timeout the writer is marked *unsettled*, and before it is
//!   used again, and in `resolve`, a `ROLLBACK` is sent on it: when that returns, everything
//!   sent before it has finished, and any transaction it left open is rolled back. There is no
//!   server session that could outlive the store, so the count `resolve` reads then is final.
//! - **Times**: integer milliseconds since the epoch, which the encoder turns into the same
//!   bytes as the MySQL backend's `DATETIME(3)` values.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Executor, Sqlite};
use tracing::{info, warn};
use vigil_core::{EventQuery, UnixMillis};

use crate::backend::{Backend, Phase, bound_query};
use crate::common::{self, query_error, validate_options};
use crate::error::sqlite_result_code;
use crate::ids::{self, IdBlock};
use crate::reads::Reads;
use crate::sole_writer::{self, SoleWriterLock};
use crate::sql::list::{Statement, TimeBounds};
use crate::sql::{self, Dialect};
use crate::write::{self, Batch, BatchSession, StatementFailure};
use crate::{EventPage, EventRow, InsertError, StoreError, StoreOptions};

/// The embedded migrations (`migrations/sqlite` at the workspace root), run at open.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The file [`SqliteStore::open_in`] keeps in the data directory.
pub const EMBEDDED_FILE_NAME: &str = "vigil.db";

/// Most read connections, whatever `StoreOptions::max_connections` says: each SQLite
/// connection owns a thread, and reads are CPU-bound on the same few cores the server has.
pub const MAX_READ_CONNECTIONS: u32 = 4;

/// Prepared INSERTs the writer keeps; one per distinct row count in recent batches.
const WRITER_STATEMENT_CACHE: usize = 256;

/// SQLite primary result codes after which an INSERT or COMMIT may or may not have committed:
/// the failure can strike while the commit itself is written.
const COMMIT_MAY_HAVE_FAILED_LATE: &[i32] = &[
    7,  // SQLITE_NOMEM
    10, // SQLITE_IOERR
    11, // SQLITE_CORRUPT
    13, // SQLITE_FULL
    26, // SQLITE_NOTADB
];

/// `SQLITE_CONSTRAINT_PRIMARYKEY`: a row with this id exists.
const PRIMARY_KEY_CONFLICT: i32 = 1555;

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database file, as opened.
    path: PathBuf,
    /// Read-only connections for gets and lists. Never used for writes.
    reads: Reads<Sqlite>,
    /// Timeouts and pool size as configured.
    options: StoreOptions,
    /// How to open the writer: WAL, `synchronous=FULL`, busy timeout, create if missing.
    writer_options: SqliteConnectOptions,
    /// The one connection inserts and id reservations run on.
    writer: tokio::sync::Mutex<Writer>,
    /// The reserved id range not yet handed out; held across a reservation.
    ids: tokio::sync::Mutex<IdBlock>,
    /// This process's exclusive claim on the file, when it is the only writer by design.
    sole_writer: std::sync::Mutex<Option<SoleWriterLock>>,
}

/// The writer connection's state, behind `Inner::writer`.
#[derive(Default)]
struct Writer {
    /// The open writer; `None` only after its worker thread died, reopened by the next use.
    connection: Option<SqliteConnection>,
    /// A statement sent on the writer may still be running (its timeout fired), or a
    /// transaction may be open: the next use rolls back first and waits for it.
    unsettled: bool,
    /// INSERT texts by row count.
    insert_sql: sql::InsertSqlCache,
}

/// The settings the writer runs with, read back from SQLite (for tests and the start-up log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteSettings {
    /// `PRAGMA journal_mode`: `wal`.
    pub journal_mode: String,
    /// `PRAGMA synchronous`: 2 is `FULL`.
    pub synchronous: i64,
    /// `PRAGMA busy_timeout`, in milliseconds.
    pub busy_timeout_ms: i64,
    /// `sqlite_version()`.
    pub version: String,
}

impl SqliteStore {
    /// Opens the database a `sqlite://path` or `sqlite:path` URL names (see [`sqlite_path`]).
    pub async fn connect(database_url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let path = sqlite_path(database_url)?;
        SqliteStore::open(&path, options).await
    }

    /// Opens `<data_dir>/vigil.db`, creating the directory and the file when missing.
    /// This process is then its only writer: it holds the file's [`SoleWriterLock`], taken
    /// before the database is opened, while the store is open.
    pub async fn open_in(data_dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let path = data_dir.join(EMBEDDED_FILE_NAME);
        sole_writer::create_private_dir(data_dir)?;
        let lock = SoleWriterLock::acquire(&path)?;
        let store = SqliteStore::open(&path, options).await?;
        store.keep_sole_writer(lock);
        Ok(store)
    }

    /// Claims the database file for this process alone (see [`SoleWriterLock`]); a no-op when
    /// it is claimed already.
    pub fn claim_sole_writer(&self) -> Result<(), StoreError> {
        if self.holds_sole_writer() {
            return Ok(());
        }
        let lock = SoleWriterLock::acquire(&self.inner.path)?;
        self.keep_sole_writer(lock);
        Ok(())
    }

    fn holds_sole_writer(&self) -> bool {
        self.sole_writer().is_some()
    }

    fn keep_sole_writer(&self, lock: SoleWriterLock) {
        *self.sole_writer() = Some(lock);
    }

    fn sole_writer(&self) -> std::sync::MutexGuard<'_, Option<SoleWriterLock>> {
        self.inner
            .sole_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens (creating when missing) the database file at `path` and its parent directory,
    /// runs the migrations on the writer and prepares the read pool.
    pub async fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        validate_options(options)?;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            // A few system calls, once at start-up.
            sole_writer::create_private_dir(parent)?;
        }
        sole_writer::create_private_file(path)?;
        // Lock waits end as a certain "busy" (not committed) well before the statement
        // timeout would leave the outcome unknown.
        let busy_timeout = options.statement_timeout / 2;
        let writer_options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout)
            .statement_cache_capacity(WRITER_STATEMENT_CACHE);
        let reader_options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.min(MAX_READ_CONNECTIONS))
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(reader_options);
        let store = SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                reads: Reads::new(pool, options.statement_timeout),
                options: options.clone(),
                writer_options,
                writer: tokio::sync::Mutex::new(Writer::default()),
                ids: tokio::sync::Mutex::new(IdBlock::default()),
                sole_writer: std::sync::Mutex::new(None),
            }),
        };

        let mut connection = store.open_writer().await?;
        common::migrate(options.statement_timeout, MIGRATOR.run(&mut connection)).await?;
        store.inner.writer.lock().await.connection = Some(connection);
        let settings = store.settings().await?;
        info!(
            path = %store.inner.path.display(),
            journal_mode = %settings.journal_mode,
            synchronous = synchronous_name(settings.synchronous),
            sqlite_version = %settings.version,
            "sqlite store opened"
        );
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The writer's journal mode, synchronous level and busy timeout, read back from SQLite.
    pub async fn settings(&self) -> Result<SqliteSettings, StoreError> {
        const OPERATION: &str = "read sqlite settings";
        let mut writer = self.inner.writer.lock().await;
        let connection = self.ready_writer(&mut writer).await?;
        let row = self
            .inner
            .reads
            .bounded(
                OPERATION,
                sqlx::query(
                    "SELECT (SELECT journal_mode FROM pragma_journal_mode), \
                     (SELECT synchronous FROM pragma_synchronous), \
                     (SELECT timeout FROM pragma_busy_timeout), sqlite_version()",
                )
                .fetch_one(&mut *connection),
            )
            .await?;
        Ok(SqliteSettings {
            journal_mode: common::decode(&row, 0, OPERATION)?,
            synchronous: common::decode(&row, 1, OPERATION)?,
            busy_timeout_ms: common::decode(&row, 2, OPERATION)?,
            version: common::decode(&row, 3, OPERATION)?,
        })
    }

    /// Stores the batch: one autocommit INSERT, or when the placeholder limit splits it, several
    /// inside one `BEGIN IMMEDIATE` transaction, all on the writer; with idempotency `keys`,
    /// their records go in the same transaction, after the events (see [`write::write_batch`]).
    pub(crate) async fn insert(&self, batch: Batch<'_>) -> Result<(), InsertError> {
        let mut writer = self.inner.writer.lock().await;
        self.ready_writer(&mut writer)
            .await
            .map_err(InsertError::NotCommitted)?;
        let mut on_writer = BatchOnWriter {
            store: self,
            writer: &mut writer,
        };
        // No packet limit: only the placeholder limit splits a batch.
        write::write_batch(&mut on_writer, batch, usize::MAX).await
    }

    /// Runs one statement on the writer, bounded by the statement timeout; returns the rows it
    /// changed. A timeout or a driver error leaves the writer to be settled.
    async fn run_on_writer(
        &self,
        writer: &mut Writer,
        query: Query<'_, Sqlite, SqliteArguments>,
    ) -> Result<u64, StatementFailure> {
        let timeout = self.inner.options.statement_timeout;
        let Some(connection) = writer.connection.as_mut() else {
            return Err(StatementFailure::Driver(sqlx::Error::WorkerCrashed));
        };
        match tokio::time::timeout(timeout, query.execute(&mut *connection)).await {
            Ok(Ok(result)) => Ok(result.rows_affected()),
            Ok(Err(cause)) => {
                self.note_failure(writer, &cause);
                Err(StatementFailure::Driver(cause))
            }
            Err(_) => {
                writer.unsettled = true;
                Err(StatementFailure::TimedOut(timeout))
            }
        }
    }

    /// After a driver error on the writer: a dead worker takes the connection with it (closing
    /// it rolls back whatever it held); anything else leaves the writer to be settled.
    fn note_failure(&self, writer: &mut Writer, cause: &sqlx::Error) {
        if matches!(cause, sqlx::Error::WorkerCrashed) {
            warn!(error = %cause, "sqlite writer worker ended, reopening on next use");
            writer.connection = None;
            writer.unsettled = false;
        } else {
            writer.unsettled = true;
        }
    }

    /// Returns the writer connection, opened if there is none and settled if a failure left
    /// it unsettled.
    async fn ready_writer<'w>(
        &self,
        writer: &'w mut Writer,
    ) -> Result<&'w mut SqliteConnection, StoreError> {
        if writer.connection.is_some() && writer.unsettled {
            self.settle(writer).await?;
        }
        if writer.connection.is_none() {
            writer.connection = Some(self.open_writer().await?);
            writer.unsettled = false;
        }
        Ok(writer
            .connection
            .as_mut()
            .expect("the writer was just opened"))
    }

    /// Sends `ROLLBACK` on the writer and waits for it. The worker runs statements in the order
    /// they were sent, so when it returns every earlier statement has finished, and no
    /// transaction is open any more: whatever a batch did is final. "No transaction is active"
    /// is the usual answer, and fine.
    async fn settle(&self, writer: &mut Writer) -> Result<(), StoreError> {
        const OPERATION: &str = "settle sqlite writer";
        let timeout = self.inner.options.statement_timeout;
        let Some(connection) = writer.connection.as_mut() else {
            writer.unsettled = false;
            return Ok(());
        };
        match tokio::time::timeout(timeout, connection.execute("ROLLBACK")).await {
            Ok(Ok(_)) | Ok(Err(sqlx::Error::Database(_))) => {
                writer.unsettled = false;
                Ok(())
            }
            Ok(Err(cause)) => {
                self.note_failure(writer, &cause);
                if writer.connection.is_none() {
                    return Ok(());
                }
                Err(query_error(OPERATION, cause))
            }
            Err(_) => {
                writer.unsettled = true;
                Err(StoreError::Timeout {
                    operation: OPERATION,
                    after: timeout,
                })
            }
        }
    }

    /// Decides for certain whether the batch with these ids is in the table.
    ///
    /// The ids come from this process's reserved block, so only this store's writer ever
    /// inserts them. Holding the writer, `resolve` settles it (see [`SqliteStore::settle`]):
    /// from then on no statement of any earlier batch is running or can still commit, and no
    /// new batch can start. SQLite commits atomically, so the count it then reads on the writer
    /// is the final answer: all present, none, or (never for a batch Vigil wrote) some.
    /// `wanted` is sorted, distinct and not empty ([`crate::Store::resolve`] sees to it).
    pub(crate) async fn resolve(&self, wanted: &[u64]) -> Result<bool, StoreError> {
        let mut writer = self.inner.writer.lock().await;
        self.settle(&mut writer).await?;
        let connection = self.ready_writer(&mut writer).await?;
        self.inner.reads.all_present(connection, wanted).await
    }

    /// The reads both backends run, on this store's read-only pool.
    pub(crate) fn reads(&self) -> &Reads<Sqlite> {
        &self.inner.reads
    }

    /// [`crate::Store::list`] and what it cost. SQLite counts no rows examined that sqlx can
    /// reach, so the measure is the virtual-machine instructions the list's statements ran
    /// (a progress handler called after every instruction): proportional to the index entries
    /// and rows visited, a few dozen per row, and comparable between queries and table sizes,
    /// not with MySQL's handler reads.
    pub async fn list_with_rows_examined(
        &self,
        query: &EventQuery,
    ) -> Result<(EventPage, u64), StoreError> {
        const OPERATION: &str = "count sqlite instructions";
        let reads = &self.inner.reads;
        let mut connection = reads.acquire("list events").await?;
        let instructions = Arc::new(AtomicU64::new(0));
        {
            let counter = Arc::clone(&instructions);
            let mut handle = self
                .inner
                .reads
                .bounded(OPERATION, connection.lock_handle())
                .await?;
            handle.set_progress_handler(1, move || {
                counter.fetch_add(1, Ordering::Relaxed);
                true
            });
        }
        let page = match TimeBounds::of(query) {
            Some(bounds) => reads.list_on(&mut connection, query, &bounds).await,
            None => Ok(EventPage::default()),
        };
        let removed = match self
            .inner
            .reads
            .bounded(OPERATION, connection.lock_handle())
            .await
        {
            Ok(mut handle) => {
                handle.remove_progress_handler();
                true
            }
            Err(_) => false,
        };
        if !removed {
            // Never hand a counting connection back to the pool.
            connection.close_on_drop();
        }
        Ok((page?, instructions.load(Ordering::Relaxed)))
    }

    /// Makes sure the writer connection is open and settled, and that it answers a trivial
    /// query: how the batcher learns that a file it could not write is writable again.
    pub async fn check_writer(&self) -> Result<(), StoreError> {
        let mut writer = self.inner.writer.lock().await;
        let connection = self.ready_writer(&mut writer).await?;
        self.inner
            .reads
            .bounded("check writer", sqlx::query("SELECT 1").execute(connection))
            .await?;
        Ok(())
    }

    /// Closes the writer (after settling it) and the pool. The last connection to close
    /// checkpoints the WAL into the database file.
    pub async fn close(&self) {
        let mut writer = self.inner.writer.lock().await;
        if writer.unsettled {
            self.settle(&mut writer).await.ok();
        }
        if let Some(connection) = writer.connection.take() {
            let _ =
                tokio::time::timeout(self.inner.options.connect_timeout, connection.close()).await;
        }
        drop(writer);
        self.inner.reads.close().await;
    }

    /// A new writer connection (WAL, `synchronous=FULL`), bounded by the connect timeout.
    async fn open_writer(&self) -> Result<SqliteConnection, StoreError> {
        let timeout = self.inner.options.connect_timeout;
        common::connect(&self.inner.writer_options, timeout).await
    }

    /// Runs a short write that is not an insert batch (retention) on the writer, between
    /// batches, autocommit; the rows it changed.
    pub(crate) async fn execute_write(
        &self,
        operation: &'static str,
        statement: Statement,
    ) -> Result<u64, StoreError> {
        let mut writer = self.inner.writer.lock().await;
        self.ready_writer(&mut writer).await?;
        match self
            .run_on_writer(&mut writer, bound_query::<Sqlite>(statement))
            .await
        {
            Ok(changed) => Ok(changed),
            Err(StatementFailure::Driver(cause)) => Err(query_error(operation, cause)),
            Err(StatementFailure::TimedOut(after)) => Err(StoreError::Timeout { operation, after }),
        }
    }
}

impl ids::ReserveBlock for SqliteStore {
    fn id_block(&self) -> &tokio::sync::Mutex<IdBlock> {
        &self.inner.ids
    }

    /// Moves the counter forward by `size` in one autocommit statement on the writer and
    /// returns the new `next_id`. A reservation that fails or times out wastes at most a block.
    async fn reserve_block(&self, size: u64) -> Result<u64, StoreError> {
        const OPERATION: &str = "reserve ids";
        let mut writer = self.inner.writer.lock().await;
        let timeout = self.inner.options.statement_timeout;
        let connection = self.ready_writer(&mut writer).await?;
        let size = i64::try_from(size).map_err(|_| StoreError::IdsExhausted { next_id: size })?;
        let reserved = tokio::time::timeout(
            timeout,
            sqlx::query(ids::SQLITE_RESERVE_SQL)
                .bind(size)
                .fetch_optional(&mut *connection),
        )
        .await;
        let row = match reserved {
            Ok(Ok(Some(row))) => row,
            Ok(Ok(None)) => return Err(StoreError::IdCounterMissing),
            Ok(Err(cause)) => {
                self.note_failure(&mut writer, &cause);
                return Err(query_error(OPERATION, cause));
            }
            Err(_) => {
                writer.unsettled = true;
                return Err(StoreError::Timeout {
                    operation: OPERATION,
                    after: timeout,
                });
            }
        };
        let next_id: i64 = common::decode(&row, 0, OPERATION)?;
        u64::try_from(next_id).map_err(|_| StoreError::IdCounterMissing)
    }
}

impl Backend for Sqlite {
    const DIALECT: Dialect = Dialect::Sqlite;
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    fn millis(stored: i64) -> UnixMillis {
        UnixMillis(stored)
    }

    /// SQLite integers are signed 64-bit: a value past `i64::MAX` (only a hand-built query
    /// could ask) means "no limit" as a limit and matches no id.
    fn bind_unsigned(
        query: Query<'static, Sqlite, SqliteArguments>,
        value: u64,
    ) -> Query<'static, Sqlite, SqliteArguments> {
        query.bind(i64::try_from(value).unwrap_or(i64::MAX))
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn is_duplicate_key(cause: &sqlx::Error) -> bool {
        sqlite_result_code(cause) == Some(PRIMARY_KEY_CONFLICT)
    }

    /// SQLite statements are atomic, so a statement that answered with an error changed
    /// nothing, except that a failure of the disk (I/O, full, out of memory, corruption) may
    /// strike while a commit is written; those and a dead worker leave it unknown.
    fn may_have_committed(cause: &sqlx::Error, _phase: Phase) -> bool {
        match sqlite_result_code(cause) {
            Some(code) => COMMIT_MAY_HAVE_FAILED_LATE.contains(&(code & 0xff)),
            None => matches!(cause, sqlx::Error::WorkerCrashed),
        }
    }
}

/// The writer lent to [`write::write_batch`] for one batch.
struct BatchOnWriter<'a> {
    store: &'a SqliteStore,
    writer: &'a mut Writer,
}

impl BatchSession for BatchOnWriter<'_> {
    type Db = Sqlite;

    async fn insert_rows(&mut self, rows: &[EventRow<'_>]) -> Result<(), StatementFailure> {
        debug_assert!((1..=sql::SQLITE_MAX_ROWS_PER_STATEMENT).contains(&rows.len()));
        let statement = self.writer.insert_sql.for_rows(rows.len());
        let mut query = sqlx::query(AssertSqlSafe(statement));
        for row in rows {
            query = query
                .bind(row.id as i64)
                .bind(row.event.source.as_str())
                .bind(row.event.event_type.as_str())
                .bind(row.event.level.as_str())
                .bind(row.event.payload.as_deref())
                .bind(row.event.occurred_at.map(|at| at.0))
                .bind(row.created_at.0)
                .bind(row.request_id);
        }
        let inserted = self.store.run_on_writer(self.writer, query).await?;
        debug_assert_eq!(inserted, rows.len() as u64);
        Ok(())
    }

    async fn insert_records(&mut self, statement: Statement) -> Result<(), StatementFailure> {
        let query = bound_query::<Sqlite>(statement);
        self.store.run_on_writer(self.writer, query).await.map(drop)
    }

    async fn execute_plain(&mut self, sql: &'static str) -> Result<(), StatementFailure> {
        let query = sqlx::query(sql);
        self.store.run_on_writer(self.writer, query).await.map(drop)
    }

    /// Leaves no transaction open: it would hold the database's write lock, which other
    /// processes on the file wait for. Settling also waits out a statement that timed out.
    async fn recover(&mut self, _failure: &StatementFailure, _phase: Phase) {
        self.store.settle(self.writer).await.ok();
    }
}

/// `PRAGMA synchronous` by name, as the start-up log and the mode line say it.
fn synchronous_name(level: i64) -> &'static str {
    match level {
        0 => "off",
        1 => "normal",
        2 => "full",
        3 => "extra",
        _ => "unknown",
    }
}

/// The file a `sqlite://path` or `sqlite:path` URL names: `sqlite:///var/lib/vigil.db` and
/// `sqlite:/var/lib/vigil.db` are absolute, `sqlite://vigil.db` is relative to the current
/// directory. URL parameters and in-memory databases are refused: the store's options are
/// fixed (WAL, `synchronous=FULL`), and an in-memory database would lose every acknowledged
/// event and is not shared between the writer and the readers.
pub fn sqlite_path(database_url: &str) -> Result<PathBuf, StoreError> {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::UnsupportedScheme {
            scheme: "(none)".to_owned(),
        })?;
    let reason = if path.is_empty() {
        "a sqlite url needs a file path: sqlite:///path/to/vigil.db"
    } else if path.contains('?') || path.contains('#') {
        "a sqlite url takes a file path only, no parameters"
    } else if path == ":memory:" || path.starts_with("file:") {
        "an in-memory sqlite database cannot keep acknowledged events: give a file path"
    } else {
        return Ok(PathBuf::from(path));
    };
    Err(StoreError::InvalidOptions { reason })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn urls_name_a_file_and_nothing_else() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/vigil/vigil.db").unwrap(),
            PathBuf::from("/var/lib/vigil/vigil.db")
        );
        assert_eq!(
            sqlite_path("sqlite:/tmp/v.db").unwrap(),
            PathBuf::from("/tmp/v.db")
        );
        assert_eq!(
            sqlite_path("sqlite://data/v.db").unwrap(),
            PathBuf::from("data/v.db")
        );
        for refused in [
            "sqlite://",
            "sqlite::memory:",
            "sqlite:///tmp/v.db?mode=ro",
            "sqlite:file:v.db",
        ] {
            assert!(
                matches!(sqlite_path(refused), Err(StoreError::InvalidOptions { .. })),
                "{refused}"
            );
        }
    }

    #[test]
    fn only_a_committing_statement_can_leave_the_outcome_unknown() {
        use crate::write::Writing;
        let timeout = || StatementFailure::TimedOut(Duration::from_secs(1));
        assert!(matches!(
            timeout().into_insert_error::<Sqlite>(Phase::Commit, Writing::Events),
            InsertError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            timeout().into_insert_error::<Sqlite>(Phase::BeforeCommit, Writing::Events),
            InsertError::NotCommitted(_)
        ));
        let crashed = StatementFailure::Driver(sqlx::Error::WorkerCrashed);
        assert!(matches!(
            crashed.into_insert_error::<Sqlite>(Phase::Commit, Writing::Events),
            InsertError::OutcomeUnknown(_)
        ));
        let refused = StatementFailure::Driver(sqlx::Error::Encode("bad value".into()));
        assert!(matches!(
            refused.into_insert_error::<Sqlite>(Phase::Commit, Writing::Events),
            InsertError::NotCommitted(_)
        ));
    }
}
