//! The MySQL/MariaDB backend: a read pool, dedicated writer connections, id blocks.
//!
//! Writes go through a writer connection held behind an async mutex, not through the
//! pool, so the server-side session that ran a batch is always known (`CONNECTION_ID()`, read
//! when the connection opens). That is what makes an unknown outcome resolvable: if the
//! connection fails or a timeout fires after a batch was sent, the store drops the connection
//! and remembers its session id; [`MySqlStore::resolve`] then kills that session on a fresh
//! connection, waits until the server no longer lists it (its transaction is then committed
//! or rolled back, for good) and counts the batch's rows with a locking read.
//!
//! There are [`MYSQL_WRITERS`] such connections, each used by one batcher thread, so that one
//! batch's INSERT runs while the previous one commits. Commits stay in id order: a batch that
//! is not the oldest one in flight runs as a transaction whose COMMIT waits for its turn
//! (see [`crate::Store::insert_on_writer`]).
//!
//! Every connection runs with `time_zone = '+00:00'`; times are sent as exact `DATETIME(3)`
//! literals and read back as microseconds computed by the server (see [`crate::sql`]).

use std::str::FromStr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use sqlx::mysql::{
    MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlPoolOptions, MySqlQueryResult,
};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Connection, Executor, MySql};
use tracing::{debug, info, warn};
use vigil_core::{EventQuery, UnixMillis};

use crate::backend::{Backend, Phase, bound_query};
use crate::common::{self, decode, validate_options};
use crate::error::{DUPLICATE_KEY, NO_SUCH_THREAD, server_error_number, server_refused};
use crate::ids::{self, IdBlock};
use crate::mysql_session::{self, ServerIdentity, Suspect, SuspectFate};
use crate::reads::Reads;
use crate::sql::list::{Statement, TimeBounds};
use crate::sql::{self, Dialect};
use crate::write::{self, Batch, BatchSession, StatementFailure, timed};
use crate::{EventPage, EventRow, InsertError, StoreError, StoreOptions};

/// The embedded migrations (`migrations/mysql` at the workspace root), run at connect.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/mysql");

/// A writer idle longer than this is pinged before a batch is sent on it, so that a session
/// the server closed while idle (`wait_timeout`, a restart, a network cut) fails before the
/// batch is sent (a certain "not committed", then a reconnect) rather than after (an unknown
/// outcome, whose requests must wait until the database can say). Under load the writer is
/// never idle this long, so the ping costs nothing there.
const WRITER_IDLE_PING_AFTER: Duration = Duration::from_secs(1);

/// Writer connections. Two let the server run one batch's INSERT while the previous batch
/// commits, so a stream of large batches keeps more than one of its cores busy even though
/// commits stay in order (`raw_insert <url> 1000 10 2` against `… 1000 10 1` shows the gain
/// on a given server); a third overlaps little more, since each COMMIT still waits for the
/// one before.
pub const MYSQL_WRITERS: usize = 2;

/// Prepared INSERTs the writer keeps; one per distinct row count in recent batches.
const WRITER_STATEMENT_CACHE: usize = 256;

/// How often `resolve` looks for a killed session in the process list.
const KILLED_SESSION_POLL: Duration = Duration::from_millis(20);

/// The MySQL/MariaDB store. Cheap to clone.
#[derive(Clone)]
pub struct MySqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Reads, pings and short writes (retention). Never used for inserts.
    reads: Reads<MySql>,
    /// How to open the writer and `resolve`'s fresh connections: the caller's URL with the
    /// session time zone pinned to UTC.
    connect_options: MySqlConnectOptions,
    /// Timeouts and pool size as configured.
    options: StoreOptions,
    /// The connections inserts run on, with what the store keeps beside each.
    writers: Box<[tokio::sync::Mutex<Writer>]>,
    /// Writer sessions dropped after a batch was sent without an answer. `resolve` ends them
    /// (or waits them out) before reading, so none of them can still commit.
    suspect_sessions: StdMutex<Vec<Suspect>>,
    /// The reserved id range not yet handed out; the lock is held across a reservation so
    /// concurrent callers wait for one round trip instead of each reserving a block.
    ids: tokio::sync::Mutex<IdBlock>,
}

/// The writer connection's state, behind `Inner::writer`.
#[derive(Default)]
struct Writer {
    /// The open writer session; `None` after a failure, reopened by the next insert.
    session: Option<WriterSession>,
    /// INSERT texts by row count.
    insert_sql: sql::InsertSqlCache,
    /// Reused buffer for the `DATETIME(3)` literals of the statement being bound.
    datetimes: String,
}

/// An open writer connection.
struct WriterSession {
    connection: MySqlConnection,
    /// The server's `CONNECTION_ID()` for this session: what `resolve` kills.
    connection_id: u64,
    /// The server process the session is on: `resolve` kills by id only there.
    server: ServerIdentity,
    /// Parameter bytes one INSERT may carry, from this session's `max_allowed_packet`.
    statement_budget: usize,
    /// When the session last finished a statement.
    last_used: Instant,
}

impl MySqlStore {
    /// Connects, runs migrations and opens the writer.
    pub async fn connect(database_url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        validate_options(options)?;
        let connect_options = MySqlConnectOptions::from_str(database_url)
            .map_err(|cause| StoreError::InvalidUrl { cause })?
            .timezone(Some(String::from("+00:00")))
            .charset("utf8mb4")
            .statement_cache_capacity(WRITER_STATEMENT_CACHE);

        let pool = MySqlPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(connect_options.clone());
        let store = MySqlStore {
            inner: Arc::new(Inner {
                reads: Reads::new(pool, options.statement_timeout),
                connect_options,
                options: options.clone(),
                writers: (0..MYSQL_WRITERS)
                    .map(|_| tokio::sync::Mutex::new(Writer::default()))
                    .collect(),
                suspect_sessions: StdMutex::new(Vec::new()),
                ids: tokio::sync::Mutex::new(IdBlock::default()),
            }),
        };

        let mut connection = store.open_connection().await?;
        common::migrate(options.statement_timeout, MIGRATOR.run(&mut connection)).await?;
        let _ = connection.close().await;

        let session = store.open_writer().await?;
        info!(
            writer_connection_id = session.connection_id,
            statement_budget = session.statement_budget,
            "mysql store connected"
        );
        // The first writer now, so a server that cannot take writes fails start-up; the
        // others open with their first batch.
        store.inner.writers[0].lock().await.session = Some(session);
        Ok(store)
    }

    /// How many writer connections inserts spread over.
    pub fn writers(&self) -> usize {
        self.inner.writers.len()
    }

    fn writer(&self, index: usize) -> &tokio::sync::Mutex<Writer> {
        &self.inner.writers[index % self.inner.writers.len()]
    }

    /// Stores the batch with one INSERT (or, when limits force a split, several in one
    /// transaction) on the writer connection; with idempotency `keys`, their records go in the
    /// same transaction, after the events (see [`write::write_batch`]).
    pub(crate) async fn insert(&self, writer: usize, batch: Batch<'_>) -> Result<(), InsertError> {
        let mut writer = self.writer(writer).lock().await;
        let mut session = self
            .ready_writer(&mut writer)
            .await
            .map_err(InsertError::NotCommitted)?;
        let statement_budget = session.statement_budget;
        let Writer {
            insert_sql,
            datetimes,
            ..
        } = &mut *writer;
        let mut on_writer = BatchOnWriter {
            session: &mut session,
            insert_sql,
            datetimes,
            timeout: self.inner.options.statement_timeout,
            keep_session: true,
        };
        let result = write::write_batch(&mut on_writer, batch, statement_budget).await;
        let keep_session = on_writer.keep_session;
        match result {
            Err(error) if !keep_session => {
                self.discard_writer(session, &error);
                Err(error)
            }
            result => {
                session.last_used = Instant::now();
                writer.session = Some(session);
                result
            }
        }
    }

    /// Returns the writer session, opening one if there is none and pinging one that sat idle.
    async fn ready_writer(&self, writer: &mut Writer) -> Result<WriterSession, StoreError> {
        if let Some(mut session) = writer.session.take() {
            if session.last_used.elapsed() < WRITER_IDLE_PING_AFTER {
                return Ok(session);
            }
            let timeout = self.inner.options.statement_timeout;
            match tokio::time::timeout(timeout, session.connection.ping()).await {
                Ok(Ok(())) => return Ok(session),
                _ => debug!(
                    connection_id = session.connection_id,
                    "idle mysql writer did not answer a ping, reconnecting"
                ),
            }
        }
        self.open_writer().await
    }

    /// Opens the writer connection, learns its session id, packet limit and server, and bounds
    /// its statements on the server side too (see [`mysql_session::session_bounds`]).
    async fn open_writer(&self) -> Result<WriterSession, StoreError> {
        let mut connection = self.open_connection().await?;
        let timeout = self.inner.options.statement_timeout;
        let facts = mysql_session::session_facts(&mut connection, timeout).await?;
        mysql_session::session_bounds(&mut connection, timeout).await?;
        Ok(WriterSession {
            connection,
            connection_id: facts.connection_id,
            server: facts.server,
            statement_budget: sql::statement_budget(facts.max_allowed_packet),
            last_used: Instant::now(),
        })
    }

    /// Makes sure the writer connection is open and answering, opening it if need be: how
    /// the batcher learns, without sending a batch, that a database it could not reach is
    /// back.
    pub async fn check_writer(&self, writer: usize) -> Result<(), StoreError> {
        let mut writer = self.writer(writer).lock().await;
        if let Some(mut session) = writer.session.take() {
            let timeout = self.inner.options.statement_timeout;
            if let Ok(Ok(())) = tokio::time::timeout(timeout, session.connection.ping()).await {
                session.last_used = Instant::now();
                writer.session = Some(session);
                return Ok(());
            }
        }
        let mut session = self.open_writer().await?;
        session.last_used = Instant::now();
        writer.session = Some(session);
        Ok(())
    }

    /// Drops a writer connection after a failure. When the batch's outcome is unknown, its
    /// session id is remembered for `resolve` to kill.
    fn discard_writer(&self, session: WriterSession, error: &InsertError) {
        match error {
            InsertError::OutcomeUnknown(cause) => warn!(
                connection_id = session.connection_id,
                error = %cause,
                "mysql insert outcome unknown, writer connection dropped"
            ),
            // Certainly not committed, but the server may keep the session (and the batch's
            // row locks) until it notices the close; resolve kills it too.
            _ => warn!(
                connection_id = session.connection_id,
                error = %error,
                "mysql insert failed, writer connection dropped"
            ),
        }
        self.remember_suspect(Suspect {
            connection_id: session.connection_id,
            server: session.server.clone(),
            dropped_at: Instant::now(),
        });
        drop(session);
    }

    fn remember_suspect(&self, suspect: Suspect) {
        let mut suspects = self
            .inner
            .suspect_sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !suspects.iter().any(|known| {
            known.connection_id == suspect.connection_id && known.server == suspect.server
        }) {
            suspects.push(suspect);
        }
    }

    /// Decides for certain whether the batch with these ids is in the table.
    ///
    /// On a fresh connection: ends every writer session dropped with an unknown outcome (kills
    /// it when this connection reached the same server process, and waits until the server no
    /// longer lists it; a session on a restarted server is gone; one on another server is
    /// waited out, see [`mysql_session`]), so nothing more can run in it, then counts the ids
    /// with a locking read, which also waits for any other transaction still holding those
    /// rows (on Galera, after the node has applied everything certified before it).
    /// `wanted` is sorted, distinct and not empty ([`crate::Store::resolve`] sees to it).
    pub(crate) async fn resolve(&self, wanted: &[u64]) -> Result<bool, StoreError> {
        let timeout = self.inner.options.statement_timeout;
        let mut connection = self.open_connection().await?;
        let here = mysql_session::session_facts(&mut connection, timeout)
            .await?
            .server;
        let suspects = self
            .inner
            .suspect_sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for suspect in &suspects {
            match suspect.server.fate_seen_from(&here) {
                SuspectFate::Kill => {
                    self.end_session(&mut connection, suspect.connection_id)
                        .await?
                }
                SuspectFate::Gone => debug!(
                    connection_id = suspect.connection_id,
                    "the server restarted since the writer session was dropped"
                ),
                SuspectFate::WaitOut => {
                    let left = suspect.may_run_for(timeout);
                    if !left.is_zero() {
                        return Err(StoreError::ForeignSessionMayRun {
                            connection_id: suspect.connection_id,
                            left,
                        });
                    }
                }
            }
            self.inner
                .suspect_sessions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .retain(|known| {
                    known.connection_id != suspect.connection_id || known.server != suspect.server
                });
        }
        mysql_session::causal_reads(&mut connection, &here, timeout).await?;

        let all_present = self
            .inner
            .reads
            .all_present(&mut connection, wanted)
            .await?;
        let _ = connection.close().await;
        Ok(all_present)
    }

    /// `KILL`s a session and waits until the server no longer lists it.
    async fn end_session(
        &self,
        connection: &mut MySqlConnection,
        connection_id: u64,
    ) -> Result<(), StoreError> {
        // An integer we formatted ourselves: nothing to inject.
        let kill = format!("KILL CONNECTION {connection_id}");
        match self
            .inner
            .reads
            .bounded(
                "kill writer session",
                connection.execute(AssertSqlSafe(kill)),
            )
            .await
        {
            Ok(_) => debug!(connection_id, "killed mysql writer session"),
            Err(StoreError::Query { cause, .. })
                if server_error_number(&cause) == Some(NO_SUCH_THREAD) => {}
            Err(error) => return Err(error),
        }
        let deadline = Instant::now() + self.inner.options.statement_timeout;
        loop {
            let row = self
                .inner
                .reads
                .bounded(
                    "wait for killed session",
                    sqlx::query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?")
                        .bind(connection_id)
                        .fetch_one(&mut *connection),
                )
                .await?;
            let listed: i64 = decode(&row, 0, "wait for killed session")?;
            if listed == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StoreError::WriterStillRunning { connection_id });
            }
            tokio::time::sleep(KILLED_SESSION_POLL).await;
        }
    }

    /// The reads both backends run, on this store's pool.
    pub(crate) fn reads(&self) -> &Reads<MySql> {
        &self.inner.reads
    }

    /// [`crate::Store::list`] and the rows the server examined for it: the session's
    /// `Handler_read_*` counters read before and after `list`'s own statements on the same
    /// connection, less what reading the counters itself costs (measured on the spot).
    pub async fn list_with_rows_examined(
        &self,
        query: &EventQuery,
    ) -> Result<(EventPage, u64), StoreError> {
        let reads = &self.inner.reads;
        let mut connection = reads.acquire("list events").await?;
        let first = self.handler_reads(&mut connection).await?;
        let second = self.handler_reads(&mut connection).await?;
        let page = match TimeBounds::of(query) {
            Some(bounds) => reads.list_on(&mut connection, query, &bounds).await?,
            None => EventPage::default(),
        };
        let third = self.handler_reads(&mut connection).await?;
        let counting_cost = second.saturating_sub(first);
        let examined = third.saturating_sub(second).saturating_sub(counting_cost);
        Ok((page, examined))
    }

    /// Runs a short write that is not an insert batch (retention) on a pooled connection,
    /// autocommit; the rows it changed.
    pub(crate) async fn execute_write(
        &self,
        operation: &'static str,
        statement: Statement,
    ) -> Result<u64, StoreError> {
        self.inner.reads.execute(operation, statement).await
    }

    /// The session's index and table reads so far: the sum of the `Handler_read_*` counters
    /// that count rows (`SHOW SESSION STATUS`, which MySQL 8 and MariaDB both answer).
    async fn handler_reads(&self, connection: &mut MySqlConnection) -> Result<u64, StoreError> {
        const OPERATION: &str = "read handler counters";
        const COUNTED: [&str; 7] = [
            "Handler_read_first",
            "Handler_read_key",
            "Handler_read_last",
            "Handler_read_next",
            "Handler_read_prev",
            "Handler_read_rnd",
            "Handler_read_rnd_next",
        ];
        let rows = self
            .inner
            .reads
            .bounded(
                OPERATION,
                connection.fetch_all("SHOW SESSION STATUS LIKE 'Handler_read%'"),
            )
            .await?;
        let mut total = 0u64;
        for row in &rows {
            let name: String = decode(row, 0, OPERATION)?;
            if !COUNTED
                .iter()
                .any(|counted| name.eq_ignore_ascii_case(counted))
            {
                continue;
            }
            let value: String = decode(row, 1, OPERATION)?;
            total = total.saturating_add(value.trim().parse().unwrap_or(0));
        }
        Ok(total)
    }

    /// `host:port/database`, for the start-up log: never the user or password.
    pub fn location(&self) -> String {
        let options = &self.inner.connect_options;
        format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        )
    }

    /// Closes the writer and the pool.
    pub async fn close(&self) {
        for writer in &self.inner.writers {
            let session = writer.lock().await.session.take();
            if let Some(session) = session {
                let _ = tokio::time::timeout(
                    self.inner.options.connect_timeout,
                    session.connection.close(),
                )
                .await;
            }
        }
        self.inner.reads.close().await;
    }

    /// A new connection outside the pool, bounded by the connect timeout.
    async fn open_connection(&self) -> Result<MySqlConnection, StoreError> {
        common::connect(
            &self.inner.connect_options,
            self.inner.options.connect_timeout,
        )
        .await
    }
}

impl ids::ReserveBlock for MySqlStore {
    fn id_block(&self) -> &tokio::sync::Mutex<IdBlock> {
        &self.inner.ids
    }

    /// Moves the database counter forward by `size` in one autocommit statement and returns
    /// the new `next_id`, which the server reports as this statement's `LAST_INSERT_ID`.
    ///
    /// Runs on a connection of its own, opened for the purpose (once per block of thousands
    /// of ids), not on the read pool: the write path (`allocate_ids`, `insert`, `resolve`)
    /// never touches the pool, so the batcher can drive it from its own runtime without
    /// pool connections becoming tied to that runtime.
    async fn reserve_block(&self, size: u64) -> Result<u64, StoreError> {
        let mut connection = self.open_connection().await?;
        let result = self
            .inner
            .reads
            .bounded(
                "reserve ids",
                sqlx::query(ids::RESERVE_SQL)
                    .bind(size)
                    .execute(&mut connection),
            )
            .await;
        let _ = tokio::time::timeout(self.inner.options.connect_timeout, connection.close()).await;
        let result = result?;
        if result.rows_affected() == 0 {
            return Err(StoreError::IdCounterMissing);
        }
        Ok(result.last_insert_id())
    }
}

impl Backend for MySql {
    const DIALECT: Dialect = Dialect::MySql;
    const BEGIN_WRITE: &'static str = "START TRANSACTION";

    fn millis(stored: i64) -> UnixMillis {
        sql::millis_from_micros(stored)
    }

    fn bind_unsigned(
        query: Query<'static, MySql, MySqlArguments>,
        value: u64,
    ) -> Query<'static, MySql, MySqlArguments> {
        query.bind(value)
    }

    fn rows_affected(result: &MySqlQueryResult) -> u64 {
        result.rows_affected()
    }

    fn is_duplicate_key(cause: &sqlx::Error) -> bool {
        server_error_number(cause) == Some(DUPLICATE_KEY)
    }

    /// A server refusal on an intact session committed nothing; anything else (I/O, protocol,
    /// a cut session) may have. A refused COMMIT normally means a rollback, but "normally" is
    /// not certain enough to answer 503: `resolve` decides.
    fn may_have_committed(cause: &sqlx::Error, phase: Phase) -> bool {
        phase == Phase::Commit || !server_refused(cause)
    }
}

/// The writer session lent to [`write::write_batch`] for one batch.
struct BatchOnWriter<'a> {
    session: &'a mut WriterSession,
    insert_sql: &'a mut sql::InsertSqlCache,
    datetimes: &'a mut String,
    timeout: Duration,
    /// Cleared when a failure leaves the session unfit: it is then dropped, and remembered for
    /// `resolve` to end.
    keep_session: bool,
}

impl BatchSession for BatchOnWriter<'_> {
    type Db = MySql;

    async fn insert_rows(&mut self, rows: &[EventRow<'_>]) -> Result<(), StatementFailure> {
        debug_assert!((1..=sql::MAX_ROWS_PER_STATEMENT).contains(&rows.len()));
        let statement = self.insert_sql.for_rows(rows.len());
        let query = bound_insert(statement, rows, self.datetimes);
        let result = timed(self.timeout, query.execute(&mut self.session.connection)).await?;
        debug_assert_eq!(result.rows_affected(), rows.len() as u64);
        Ok(())
    }

    async fn insert_records(&mut self, statement: Statement) -> Result<(), StatementFailure> {
        let query = bound_query::<MySql>(statement);
        timed(self.timeout, query.execute(&mut self.session.connection))
            .await
            .map(drop)
    }

    async fn execute_plain(&mut self, sql: &'static str) -> Result<(), StatementFailure> {
        timed(self.timeout, self.session.connection.execute(sql))
            .await
            .map(drop)
    }

    /// A statement the server refused leaves the session intact: an autocommit INSERT left
    /// nothing open, and a transaction is rolled back on the spot. Anything else (a timeout,
    /// I/O, a failed COMMIT) drops the session; the server rolls back what it held when it sees
    /// the close, and `resolve` ends it first if the outcome is unknown.
    async fn recover(&mut self, failure: &StatementFailure, phase: Phase) {
        let refused = matches!(failure, StatementFailure::Driver(cause) if server_refused(cause));
        self.keep_session = match phase {
            Phase::Autocommit => refused,
            Phase::BeforeCommit => {
                refused
                    && timed(self.timeout, self.session.connection.execute("ROLLBACK"))
                        .await
                        .is_ok()
            }
            Phase::Commit => false,
        };
    }
}

/// The INSERT of `rows` with all its values bound, as the writer sends it: each row's two times
/// formatted side by side into `datetimes` (cleared first), then eight binds per row (sqlx
/// encodes each into the argument buffer as it is added). Public for the INSERT-building
/// bench (`benches/benches/insert_sql.rs`).
pub fn bound_insert<'q>(
    statement: Arc<str>,
    rows: &'q [EventRow<'q>],
    datetimes: &'q mut String,
) -> sqlx::query::Query<'q, MySql, MySqlArguments> {
    // Each row's two times side by side: created_at, then occurred_at (or filler when absent).
    datetimes.clear();
    for row in rows {
        let created_ok = sql::push_datetime(datetimes, row.created_at);
        let occurred_ok = match row.event.occurred_at {
            Some(at) => sql::push_datetime(datetimes, at),
            None => {
                datetimes.push_str(sql::DATETIME_FILLER);
                true
            }
        };
        debug_assert!(
            created_ok && occurred_ok,
            "row_problem checks the time range first"
        );
    }
    let datetimes: &'q String = datetimes;

    let mut query = sqlx::query(AssertSqlSafe(statement));
    for (index, row) in rows.iter().enumerate() {
        let created_at = &datetimes[index * 2 * sql::DATETIME_LEN..][..sql::DATETIME_LEN];
        let occurred_at = row
            .event
            .occurred_at
            .map(|_| &datetimes[(index * 2 + 1) * sql::DATETIME_LEN..][..sql::DATETIME_LEN]);
        query = query
            .bind(row.id)
            .bind(row.event.source.as_str())
            .bind(row.event.event_type.as_str())
            .bind(row.event.level.as_str())
            .bind(row.event.payload.as_deref())
            .bind(occurred_at)
            .bind(created_at)
            .bind(row.request_id);
    }
    query
}
