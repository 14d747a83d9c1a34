//! The store's errors: [`StoreError`] for what failed, [`InsertError`] for what a failed insert
//! means for the batch (certainly not committed, or unknown until [`crate::Store::resolve`]).
//!
//! Whether a failure is worth retrying is decided in one place, [`StoreError::is_retriable`],
//! so the batcher, the readiness probe and the HTTP edge agree. Messages are lowercase without
//! a final period and never contain the database URL (it may hold a password): they carry the
//! driver's message, which names error codes and ids but not credentials.

use std::path::PathBuf;
use std::time::Duration;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL's scheme names no backend this build has.
    #[error("unsupported database url scheme `{scheme}`: expected mysql:// or sqlite://")]
    UnsupportedScheme { scheme: String },
    /// The embedded database's directory could not be created.
    #[error("cannot create the database directory {}: {cause}", path.display())]
    DataDirectory {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Another process holds the embedded database (see [`crate::SoleWriterLock`]).
    #[error("{} is in use by another vigil process{}: stop it, or give this one another VIGIL_DATA_DIR", path.display(), holder_pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    DatabaseInUse {
        path: PathBuf,
        holder_pid: Option<u32>,
    },
    /// The URL could not be parsed; the message never repeats the URL.
    #[error("invalid database url: {cause}")]
    InvalidUrl { cause: sqlx::Error },
    /// [`crate::StoreOptions`] holds a value the store cannot work with.
    #[error("invalid store options: {reason}")]
    InvalidOptions { reason: &'static str },
    /// Opening a connection failed (refused, authentication, unknown database, TLS …).
    #[error("cannot connect to the database: {cause}")]
    Connect { cause: sqlx::Error },
    /// Running the embedded migrations failed.
    #[error("database migration failed: {cause}")]
    Migrate { cause: sqlx::migrate::MigrateError },
    /// A statement failed; `operation` says which of the store's operations it served.
    #[error("{operation} failed: {cause}")]
    Query {
        operation: &'static str,
        cause: sqlx::Error,
    },
    /// An operation exceeded its configured bound.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// The server refused an insert because rows with some of its ids exist (MySQL error 1062,
    /// SQLite `SQLITE_CONSTRAINT_PRIMARYKEY`). The
    /// statement committed nothing; if it retried an attempt whose outcome was unknown, that
    /// attempt committed — confirm with `resolve`.
    #[error("rows with some of these ids already exist: {cause}")]
    DuplicateIds { cause: sqlx::Error },
    /// An idempotency record for one of the batch's keys exists (MySQL error 1062, SQLite
    /// `SQLITE_CONSTRAINT_PRIMARYKEY` on `vigil_idempotency_keys`): another instance stored a
    /// request with that key first, or an expired record is not purged yet. The transaction
    /// was rolled back; nothing of the batch is stored.
    #[error("an idempotency key of the batch is already recorded: {cause}")]
    IdempotencyKeyTaken { cause: sqlx::Error },
    /// A row was refused before anything was sent.
    #[error("row {index} of the batch cannot be stored: {reason}")]
    InvalidRow { index: usize, reason: &'static str },
    /// `vigil_id_blocks` has no `events` row, so no ids can be reserved.
    #[error("the id counter row `events` is missing from vigil_id_blocks")]
    IdCounterMissing,
    /// Reserving more ids would reach 2^53.
    #[error("event ids are exhausted: the id counter would reach {next_id}, past 2^53")]
    IdsExhausted { next_id: u64 },
    /// The id counter moved backwards: someone changed `vigil_id_blocks` by hand.
    #[error(
        "the id counter went backwards: reserved {reserved_start}, but ids up to {previous_end} were handed out"
    )]
    IdCounterWentBackwards {
        reserved_start: u64,
        previous_end: u64,
    },
    /// `resolve` found some but not all of a batch's rows. Impossible for a batch Vigil wrote
    /// (each batch is all-or-nothing): the table was changed by something else, or the ids
    /// given to `resolve` were not one batch.
    #[error(
        "only {present} of the {expected} rows of an all-or-nothing batch are in the table: something other than vigil changed them, or the ids were not one batch"
    )]
    PartiallyPresent { present: u64, expected: u64 },
    /// A writer session that `resolve` killed is still listed by the server, so its last
    /// statement may still commit; `resolve` refuses to guess.
    #[error("the killed writer session {connection_id} is still running")]
    WriterStillRunning { connection_id: u64 },
    /// A writer session dropped with an unknown outcome is on another server than the one
    /// `resolve` reached (behind a proxy), so it cannot be killed from here; it may run a
    /// statement for `left` more, up to its server-side bound. `resolve` reads after that.
    #[error("writer session {connection_id} is on another server and may still run for {left:?}")]
    ForeignSessionMayRun { connection_id: u64, left: Duration },
    /// A row of `vigil_idempotency_keys` holds something Vigil never writes.
    #[error("an idempotency record cannot be read: {reason}")]
    CorruptIdempotencyRecord { reason: &'static str },
    /// A stored row holds a value the store cannot represent.
    #[error("stored event {id} cannot be read: {reason}")]
    CorruptRow { id: u64, reason: &'static str },
}

/// MySQL/MariaDB server error numbers that mean "try again": the server is busy, restarting,
/// failing over or cut a session, not that the statement was wrong.
const RETRIABLE_SERVER_ERRORS: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1047, // ER_UNKNOWN_COM_ERROR: a Galera node not ready yet
    1053, // ER_SERVER_SHUTDOWN
    1152, // ER_ABORTING_CONNECTION
    1158, // ER_NET_READ_ERROR
    1159, // ER_NET_READ_INTERRUPTED
    1160, // ER_NET_ERROR_ON_WRITE
    1161, // ER_NET_WRITE_INTERRUPTED
    1203, // ER_TOO_MANY_USER_CONNECTIONS
    1205, // ER_LOCK_WAIT_TIMEOUT
    1213, // ER_LOCK_DEADLOCK
    1290, // ER_OPTION_PREVENTS_STATEMENT: --read-only during a failover
    1317, // ER_QUERY_INTERRUPTED
    1792, // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    1927, // ER_CONNECTION_KILLED (MariaDB)
    1969, // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
    2006, // CR_SERVER_GONE_ERROR
    2013, // CR_SERVER_LOST
    3024, // ER_QUERY_TIMEOUT (MySQL max_execution_time)
    4031, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
];

/// Server error numbers after which a statement's effect is not certain: the session was cut
/// or the server stopped while the statement ran.
const SESSION_LOST_SERVER_ERRORS: &[u16] = &[1053, 1152, 1927, 2006, 2013];

/// ER_DUP_ENTRY.
pub(crate) const DUPLICATE_KEY: u16 = 1062;
/// ER_NO_SUCH_THREAD: `KILL` of a session that already ended.
pub(crate) const NO_SUCH_THREAD: u16 = 1094;

impl StoreError {
    /// Whether the database could not be reached at all (a connection could not be opened):
    /// nothing was sent, and until a connection opens, nothing can be stored.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            StoreError::Connect { .. }
                | StoreError::Timeout {
                    operation: "connect",
                    ..
                }
        )
    }

    /// Whether the failure comes from a setting (a URL, a directory, an option) that the user
    /// must change, or a process they must stop, before Vigil can start.
    pub fn is_bad_setting(&self) -> bool {
        matches!(
            self,
            StoreError::UnsupportedScheme { .. }
                | StoreError::InvalidUrl { .. }
                | StoreError::InvalidOptions { .. }
                | StoreError::DataDirectory { .. }
                | StoreError::DatabaseInUse { .. }
        )
    }

    /// Whether the same operation may succeed if tried again later: connection refused or
    /// reset, pool or statement timeout, I/O, deadlock, lock wait timeout, server gone or
    /// restarting, a killed session still ending. Everything else (bad URL, migration, a
    /// refused row, duplicate ids, a corrupt table) needs a human or a different request.
    pub fn is_retriable(&self) -> bool {
        match self {
            StoreError::Connect { cause } | StoreError::Query { cause, .. } => {
                sqlx_error_is_retriable(cause)
            }
            StoreError::Timeout { .. }
            | StoreError::WriterStillRunning { .. }
            | StoreError::ForeignSessionMayRun { .. } => true,
            StoreError::UnsupportedScheme { .. }
            | StoreError::InvalidUrl { .. }
            | StoreError::InvalidOptions { .. }
            | StoreError::DataDirectory { .. }
            | StoreError::DatabaseInUse { .. }
            | StoreError::Migrate { .. }
            | StoreError::DuplicateIds { .. }
            | StoreError::IdempotencyKeyTaken { .. }
            | StoreError::InvalidRow { .. }
            | StoreError::IdCounterMissing
            | StoreError::IdsExhausted { .. }
            | StoreError::IdCounterWentBackwards { .. }
            | StoreError::PartiallyPresent { .. }
            | StoreError::CorruptRow { .. }
            | StoreError::CorruptIdempotencyRecord { .. } => false,
        }
    }
}

/// The retriable/permanent split for driver errors, used by [`StoreError::is_retriable`] only.
fn sqlx_error_is_retriable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => {
            server_error_number(error)
                .is_some_and(|number| RETRIABLE_SERVER_ERRORS.contains(&number))
                || sqlite_result_code(error)
                    .is_some_and(|code| SQLITE_RETRIABLE_PRIMARY_CODES.contains(&(code & 0xff)))
        }
        _ => false,
    }
}

/// SQLite primary result codes that mean "try again": another connection (or process) holds
/// the lock past the busy timeout, or the disk failed or filled up, which an operator can fix.
const SQLITE_RETRIABLE_PRIMARY_CODES: &[i32] = &[
    5,  // SQLITE_BUSY
    6,  // SQLITE_LOCKED
    10, // SQLITE_IOERR
    13, // SQLITE_FULL
    15, // SQLITE_PROTOCOL: a WAL lock race, retried
];

/// SQLite's extended result code of a database error (its primary code is the low byte).
pub(crate) fn sqlite_result_code(error: &sqlx::Error) -> Option<i32> {
    let database_error = error.as_database_error()?;
    database_error.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    database_error.code()?.parse().ok()
}

/// The MySQL error number of a server error.
pub(crate) fn server_error_number(error: &sqlx::Error) -> Option<u16> {
    let database_error = error.as_database_error()?;
    let mysql_error = database_error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()?;
    Some(mysql_error.number())
}

/// Whether a failed statement certainly had no effect: the server answered with an error for
/// it and the session is intact. Anything else (I/O, protocol, a cut session) leaves its outcome
/// unknown.
pub(crate) fn server_refused(error: &sqlx::Error) -> bool {
    match server_error_number(error) {
        Some(number) => !SESSION_LOST_SERVER_ERRORS.contains(&number),
        None => matches!(
            error,
            sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_)
        ),
    }
}

/// An insert failed; the variant says what that means for the batch.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// Certainly not committed: nothing was sent, the server refused a statement that cannot
    /// have committed, or a split batch failed before its COMMIT was sent. Safe to answer 503.
    #[error("batch not committed: {0}")]
    NotCommitted(StoreError),
    /// The connection failed or a timeout fired after the batch (or its COMMIT) was sent: the
    /// rows may or may not be in the table. Call [`crate::Store::resolve`] with the batch's ids
    /// before answering anyone.
    #[error("batch outcome unknown: {0}")]
    OutcomeUnknown(StoreError),
    /// The server refused the batch because rows with some of its ids exist
    /// ([`StoreError::DuplicateIds`]). This statement committed nothing; when it retries a batch
    /// whose outcome was unknown, that earlier attempt committed. Confirm with `resolve`.
    #[error("batch refused: {0}")]
    DuplicateIds(StoreError),
    /// Certainly not committed: a record for one of the batch's idempotency keys exists
    /// ([`StoreError::IdempotencyKeyTaken`]). Look the keys up
    /// ([`crate::Store::idempotency_records`]), answer those requests from their records, and
    /// write the rest again.
    #[error("batch refused: {0}")]
    KeyTaken(StoreError),
}

impl InsertError {
    /// The underlying failure.
    pub fn store_error(&self) -> &StoreError {
        match self {
            InsertError::NotCommitted(error)
            | InsertError::OutcomeUnknown(error)
            | InsertError::DuplicateIds(error)
            | InsertError::KeyTaken(error) => error,
        }
    }

    /// Whether trying the insert again may succeed (see [`StoreError::is_retriable`]).
    pub fn is_retriable(&self) -> bool {
        self.store_error().is_retriable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_and_timeouts_are_retriable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(
            StoreError::Connect {
                cause: sqlx::Error::Io(refused)
            }
            .is_retriable()
        );
        assert!(
            StoreError::Query {
                operation: "select",
                cause: sqlx::Error::PoolTimedOut
            }
            .is_retriable()
        );
        assert!(
            StoreError::Timeout {
                operation: "insert",
                after: Duration::from_secs(1)
            }
            .is_retriable()
        );
        assert!(StoreError::WriterStillRunning { connection_id: 7 }.is_retriable());
    }

    #[test]
    fn sqlite_codes_are_read_from_the_error() {
        // Not a database error: no code.
        assert_eq!(sqlite_result_code(&sqlx::Error::PoolClosed), None);
        assert!(SQLITE_RETRIABLE_PRIMARY_CODES.contains(&5));
        assert!(
            !StoreError::DataDirectory {
                path: "/nonexistent".into(),
                cause: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            }
            .is_retriable()
        );
    }

    #[test]
    fn permanent_failures_are_not_retriable() {
        assert!(
            !StoreError::UnsupportedScheme {
                scheme: "postgres".into()
            }
            .is_retriable()
        );
        assert!(
            !StoreError::InvalidRow {
                index: 0,
                reason: "bad"
            }
            .is_retriable()
        );
        assert!(
            !StoreError::PartiallyPresent {
                present: 1,
                expected: 2
            }
            .is_retriable()
        );
        assert!(
            !StoreError::Query {
                operation: "select",
                cause: sqlx::Error::PoolClosed
            }
            .is_retriable()
        );
        assert!(!StoreError::IdsExhausted { next_id: 1 << 53 }.is_retriable());
    }

    #[test]
    fn messages_are_lowercase_without_a_period() {
        let errors = [
            StoreError::UnsupportedScheme {
                scheme: "postgres".into(),
            },
            StoreError::IdCounterMissing,
            StoreError::PartiallyPresent {
                present: 1,
                expected: 2,
            },
            StoreError::WriterStillRunning { connection_id: 3 },
        ];
        for error in errors {
            let text = error.to_string();
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
        let insert = InsertError::OutcomeUnknown(StoreError::Timeout {
            operation: "insert",
            after: Duration::from_millis(5),
        });
        assert_eq!(
            insert.to_string(),
            "batch outcome unknown: insert timed out after 5ms"
        );
        assert!(insert.is_retriable());
    }
}
