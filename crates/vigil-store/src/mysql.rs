//! The MySQL/MariaDB backend: a read pool, one dedicated writer connection, id blocks.
//!
//! Writes go through a single writer connection held behind an async mutex, not through the
//! pool, so the server-side session that ran a batch is always known (`CONNECTION_ID()`, read
//! when the connection opens). That is what makes an unknown outcome resolvable: if the
//! connection fails or a timeout fires after a batch was sent, the store drops the connection
//! and remembers its session id; [`MySqlStore::resolve`] then kills that session on a fresh
//! connection, waits until the server no longer lists it (its transaction is then committed
//! or rolled back, for good) and counts the batch's rows with a locking read. One writer also
//! means ids, which the batcher takes in order, are committed in increasing order.
//!
//! Every connection runs with `time_zone = '+00:00'`; times are sent as exact `DATETIME(3)`
//! literals and read back as microseconds computed by the server (see [`crate::sql`]).

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use sqlx::mysql::{
    MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, MySql};
use tracing::{debug, info, warn};
use vigil_core::EventQuery;

use crate::common::{self, bounded, insert_timeout, query_error, validate_options};
use crate::error::{DUPLICATE_KEY, NO_SUCH_THREAD, server_error_number, server_refused};
use crate::idempotency::{self, IdempotencyRecord};
use crate::ids::{self, IdBlock};
use crate::mysql_session::{self, ServerIdentity, Suspect, SuspectFate};
use crate::sql::list::{Bind, Statement, TimeBounds};
use crate::sql::{self, Dialect};
use crate::{EventPage, EventRow, InsertError, StoreError, StoreOptions, StoredEvent};

/// The embedded migrations (`migrations/mysql` at the workspace root), run at connect.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/mysql");

/// A writer idle longer than this is pinged before a batch is sent on it, so that a session
/// the server closed while idle (`wait_timeout`, a restart, a network cut) fails before the
/// batch is sent (a certain "not committed", then a reconnect) rather than after (an unknown
/// outcome, whose requests must wait until the database can say). Under load the writer is
/// never idle this long, so the ping costs nothing there.
const WRITER_IDLE_PING_AFTER: Duration = Duration::from_secs(1);

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
    /// Reads, pings and id reservations. Never used for inserts.
    pool: MySqlPool,
    /// How to open the writer and `resolve`'s fresh connections: the caller's URL with the
    /// session time zone pinned to UTC.
    connect_options: MySqlConnectOptions,
    /// Timeouts and pool size as configured.
    options: StoreOptions,
    /// The one connection inserts run on, with what the store keeps beside it.
    writer: tokio::sync::Mutex<Writer>,
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
                pool,
                connect_options,
                options: options.clone(),
                writer: tokio::sync::Mutex::new(Writer::default()),
                suspect_sessions: StdMutex::new(Vec::new()),
                ids: tokio::sync::Mutex::new(IdBlock::default()),
            }),
        };

        let mut connection = store.open_connection().await?;
        bounded(
            "migrate",
            options.statement_timeout.max(Duration::from_secs(60)),
            async {
                MIGRATOR
                    .run(&mut connection)
                    .await
                    .map_err(|cause| StoreError::Migrate { cause })
            },
        )
        .await?;
        let _ = connection.close().await;

        let session = store.open_writer().await?;
        info!(
            writer_connection_id = session.connection_id,
            statement_budget = session.statement_budget,
            "mysql store connected"
        );
        store.inner.writer.lock().await.session = Some(session);
        Ok(store)
    }

    /// `count` fresh ids, increasing, from the cached block; reserves a new block of
    /// `max(missing, 4096)` ids when the cached one runs out.
    pub async fn allocate_ids(&self, count: usize) -> Result<Vec<u64>, StoreError> {
        let mut block = self.inner.ids.lock().await;
        ids::allocate(&mut block, count, self).await
    }

    /// Stores the batch with one INSERT (or, when limits force a split, several in one
    /// transaction) on the writer connection; with idempotency `keys`, their records go in the
    /// same transaction, after the events.
    /// `rows` are non-empty and valid: [`crate::Store::insert_with_keys`] checks them.
    pub(crate) async fn insert(
        &self,
        rows: &[EventRow<'_>],
        keys: &[IdempotencyRecord],
    ) -> Result<(), InsertError> {
        debug_assert!(!rows.is_empty(), "Store::insert_with_keys checks the rows");

        let mut writer = self.inner.writer.lock().await;
        let mut session = self
            .ready_writer(&mut writer)
            .await
            .map_err(InsertError::NotCommitted)?;
        let plan = sql::plan_statements(
            rows.iter().map(sql::estimated_row_bytes),
            sql::MAX_ROWS_PER_STATEMENT,
            session.statement_budget,
        );
        let timeout = self.inner.options.statement_timeout;
        let result = if plan.len() == 1 && keys.is_empty() {
            self.insert_autocommit(&mut writer, &mut session, rows, timeout)
                .await
        } else {
            self.insert_transaction(&mut writer, &mut session, rows, &plan, keys, timeout)
                .await
        };
        match result {
            Ok(()) => {
                session.last_used = Instant::now();
                writer.session = Some(session);
                Ok(())
            }
            Err(Failure {
                error,
                session_usable,
            }) => {
                if session_usable {
                    session.last_used = Instant::now();
                    writer.session = Some(session);
                } else {
                    self.discard_writer(session, &error);
                }
                Err(error)
            }
        }
    }

    /// One statement, autocommit: one round trip.
    async fn insert_autocommit(
        &self,
        writer: &mut Writer,
        session: &mut WriterSession,
        rows: &[EventRow<'_>],
        timeout: Duration,
    ) -> Result<(), Failure> {
        match run_insert(writer, &mut session.connection, rows, timeout).await {
            Ok(()) => Ok(()),
            Err(StatementFailure::TimedOut) => Err(Failure::unknown(insert_timeout(timeout))),
            Err(StatementFailure::Driver(cause)) => Err(classify_sent_statement(cause)),
        }
    }

    /// Several statements in one transaction: anything that fails before COMMIT is sent is
    /// certainly not committed; only COMMIT itself can leave the outcome unknown.
    async fn insert_transaction(
        &self,
        writer: &mut Writer,
        session: &mut WriterSession,
        rows: &[EventRow<'_>],
        plan: &[std::ops::Range<usize>],
        keys: &[IdempotencyRecord],
        timeout: Duration,
    ) -> Result<(), Failure> {
        let connection = &mut session.connection;
        match tokio::time::timeout(timeout, connection.execute("START TRANSACTION")).await {
            Ok(Ok(_)) => {}
            Ok(Err(cause)) => {
                let session_usable = server_refused(&cause);
                return Err(Failure::not_committed(
                    query_error("begin insert", cause),
                    session_usable,
                ));
            }
            Err(_) => return Err(Failure::not_committed(insert_timeout(timeout), false)),
        }
        for range in plan {
            let inserted = run_insert(writer, connection, &rows[range.clone()], timeout).await;
            abandon_on_failure(connection, inserted, timeout, |cause| {
                InsertError::DuplicateIds(StoreError::DuplicateIds { cause })
            })
            .await?;
        }
        if !keys.is_empty() {
            let statement = idempotency::insert_statement(keys);
            let recorded = match tokio::time::timeout(
                timeout,
                bound_query(statement).execute(&mut *connection),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(cause)) => Err(StatementFailure::Driver(cause)),
                Err(_) => Err(StatementFailure::TimedOut),
            };
            abandon_on_failure(connection, recorded, timeout, |cause| {
                InsertError::KeyTaken(StoreError::IdempotencyKeyTaken { cause })
            })
            .await?;
        }
        match tokio::time::timeout(timeout, connection.execute("COMMIT")).await {
            Ok(Ok(_)) => Ok(()),
            // A refused COMMIT normally means a rollback, but "normally" is not certain enough
            // to answer 503: let resolve decide.
            Ok(Err(cause)) => Err(Failure::unknown(query_error("commit insert", cause))),
            Err(_) => Err(Failure::unknown(StoreError::Timeout {
                operation: "commit insert",
                after: timeout,
            })),
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
    pub async fn check_writer(&self) -> Result<(), StoreError> {
        let mut writer = self.inner.writer.lock().await;
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
    pub async fn resolve(&self, ids: &[u64]) -> Result<bool, StoreError> {
        let mut wanted = ids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(true);
        }
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

        let mut present = 0u64;
        for chunk in wanted.chunks(sql::RESOLVE_IDS_PER_QUERY) {
            let sql = Dialect::MySql.count_ids_sql(chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for &id in chunk {
                query = query.bind(id);
            }
            let row = self
                .bounded_query("resolve batch", query.fetch_one(&mut connection))
                .await?;
            let count: i64 = decode(&row, 0, "resolve batch")?;
            present += u64::try_from(count).unwrap_or(0);
        }
        let _ = connection.close().await;

        sql::resolution(present, wanted.len() as u64)
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
            .bounded_query(
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
                .bounded_query(
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

    /// The event with this id.
    pub async fn get(&self, id: u64) -> Result<Option<StoredEvent>, StoreError> {
        let row = self
            .bounded_query(
                "get event",
                sqlx::query(sql::SELECT_BY_ID)
                    .bind(id)
                    .fetch_optional(&self.inner.pool),
            )
            .await?;
        row.as_ref().map(stored_event_from_row).transpose()
    }

    /// The `limit` newest events, newest first.
    pub async fn latest(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .bounded_query(
                "list latest events",
                sqlx::query(sql::SELECT_LATEST)
                    .bind(limit as u64)
                    .fetch_all(&self.inner.pool),
            )
            .await?;
        rows.iter().map(stored_event_from_row).collect()
    }

    /// One page of the events `query` selects, newest first by id (plans in
    /// [`sql::list`]): on one pooled connection, a count of the time window when the query
    /// has one, then the page itself.
    pub async fn list(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        let Some(bounds) = TimeBounds::of(query) else {
            return Ok(EventPage::default());
        };
        let mut connection = self
            .bounded_query("list events", self.inner.pool.acquire())
            .await?;
        self.list_on(&mut connection, query, &bounds).await
    }

    /// [`MySqlStore::list`] and the rows the server examined for it: the session's
    /// `Handler_read_*` counters read before and after `list`'s own statements on the same
    /// connection, less what reading the counters itself costs (measured on the spot).
    pub async fn list_with_rows_examined(
        &self,
        query: &EventQuery,
    ) -> Result<(EventPage, u64), StoreError> {
        let mut connection = self
            .bounded_query("list events", self.inner.pool.acquire())
            .await?;
        let first = self.handler_reads(&mut connection).await?;
        let second = self.handler_reads(&mut connection).await?;
        let page = match TimeBounds::of(query) {
            Some(bounds) => self.list_on(&mut connection, query, &bounds).await?,
            None => EventPage::default(),
        };
        let third = self.handler_reads(&mut connection).await?;
        let counting_cost = second.saturating_sub(first);
        let examined = third.saturating_sub(second).saturating_sub(counting_cost);
        Ok((page, examined))
    }

    async fn list_on(
        &self,
        connection: &mut MySqlConnection,
        query: &EventQuery,
        bounds: &TimeBounds,
    ) -> Result<EventPage, StoreError> {
        let mut reads = ReadsOn {
            store: self,
            connection,
        };
        common::list_page(
            Dialect::MySql,
            query,
            bounds,
            sql::millis_from_micros,
            &mut reads,
        )
        .await
    }

    /// Runs a short write that is not an insert batch (retention) on a pooled connection,
    /// autocommit; the rows it changed.
    pub(crate) async fn execute_write(
        &self,
        operation: &'static str,
        statement: Statement,
    ) -> Result<u64, StoreError> {
        let result = self
            .bounded_query(operation, bound_query(statement).execute(&self.inner.pool))
            .await?;
        Ok(result.rows_affected())
    }

    /// Runs a read on a pooled connection; the store decodes the rows (events: the
    /// [`crate::sql::forward`] reads; idempotency records).
    pub(crate) async fn fetch_rows(
        &self,
        operation: &'static str,
        statement: Statement,
    ) -> Result<Vec<MySqlRow>, StoreError> {
        self.bounded_query(
            operation,
            bound_query(statement).fetch_all(&self.inner.pool),
        )
        .await
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
            .bounded_query(
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

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded_query("ping", sqlx::query("SELECT 1").execute(&self.inner.pool))
            .await?;
        Ok(())
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
        let session = self.inner.writer.lock().await.session.take();
        if let Some(session) = session {
            let _ = tokio::time::timeout(
                self.inner.options.connect_timeout,
                session.connection.close(),
            )
            .await;
        }
        self.inner.pool.close().await;
    }

    /// A new connection outside the pool, bounded by the connect timeout.
    async fn open_connection(&self) -> Result<MySqlConnection, StoreError> {
        let timeout = self.inner.options.connect_timeout;
        match tokio::time::timeout(timeout, self.inner.connect_options.connect()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(cause)) => Err(StoreError::Connect { cause }),
            Err(_) => Err(StoreError::Timeout {
                operation: "connect",
                after: timeout,
            }),
        }
    }

    /// Runs a statement under the statement timeout, naming `operation` in any error.
    async fn bounded_query<T>(
        &self,
        operation: &'static str,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        common::bounded_query(operation, self.inner.options.statement_timeout, query).await
    }
}

impl ids::ReserveBlock for MySqlStore {
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
            .bounded_query(
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

/// A store's reads on one connection, for [`common::list_page`].
struct ReadsOn<'a> {
    store: &'a MySqlStore,
    connection: &'a mut MySqlConnection,
}

impl common::RunStatement for ReadsOn<'_> {
    type Row = MySqlRow;

    async fn fetch_all(
        &mut self,
        operation: &'static str,
        statement: Statement,
    ) -> Result<Vec<Self::Row>, StoreError> {
        let connection = &mut *self.connection;
        self.store
            .bounded_query(operation, bound_query(statement).fetch_all(connection))
            .await
    }
}

/// Why an insert failed, and whether its session can be kept.
struct Failure {
    error: InsertError,
    /// The session answered and holds no transaction: keep it.
    session_usable: bool,
}

impl Failure {
    fn unknown(error: StoreError) -> Self {
        Failure {
            error: InsertError::OutcomeUnknown(error),
            session_usable: false,
        }
    }

    fn not_committed(error: StoreError, session_usable: bool) -> Self {
        Failure {
            error: InsertError::NotCommitted(error),
            session_usable,
        }
    }
}

/// How one INSERT statement failed.
enum StatementFailure {
    /// The statement timeout fired; the statement may have been sent.
    TimedOut,
    Driver(sqlx::Error),
}

/// A statement inside the insert transaction failed: nothing commits without the COMMIT, which
/// is not sent. A server refusal is rolled back on the spot (the session stays usable) and a
/// duplicate key is named by `duplicate`; anything else drops the session, whose transaction
/// the server rolls back when it sees the close.
async fn abandon_on_failure(
    connection: &mut MySqlConnection,
    statement: Result<(), StatementFailure>,
    timeout: Duration,
    duplicate: impl FnOnce(sqlx::Error) -> InsertError,
) -> Result<(), Failure> {
    let failure = match statement {
        Ok(()) => return Ok(()),
        Err(StatementFailure::TimedOut) => {
            return Err(Failure::not_committed(insert_timeout(timeout), false));
        }
        Err(StatementFailure::Driver(cause)) => cause,
    };
    if !server_refused(&failure) {
        return Err(Failure::not_committed(
            query_error("insert", failure),
            false,
        ));
    }
    let rolled_back = matches!(
        tokio::time::timeout(timeout, connection.execute("ROLLBACK")).await,
        Ok(Ok(_))
    );
    let error = if server_error_number(&failure) == Some(DUPLICATE_KEY) {
        duplicate(failure)
    } else {
        InsertError::NotCommitted(query_error("insert", failure))
    };
    Err(Failure {
        error,
        session_usable: rolled_back,
    })
}

/// What a failed autocommit INSERT means: a server refusal on an intact session committed
/// nothing; anything else (I/O, protocol, a cut session) may have committed.
fn classify_sent_statement(cause: sqlx::Error) -> Failure {
    if !server_refused(&cause) {
        return Failure::unknown(query_error("insert", cause));
    }
    if server_error_number(&cause) == Some(DUPLICATE_KEY) {
        return Failure {
            error: InsertError::DuplicateIds(StoreError::DuplicateIds { cause }),
            session_usable: true,
        };
    }
    Failure::not_committed(query_error("insert", cause), true)
}

/// Binds `rows` into one INSERT and runs it on `connection`.
async fn run_insert(
    writer: &mut Writer,
    connection: &mut MySqlConnection,
    rows: &[EventRow<'_>],
    timeout: Duration,
) -> Result<(), StatementFailure> {
    debug_assert!((1..=sql::MAX_ROWS_PER_STATEMENT).contains(&rows.len()));
    let statement = writer.insert_sql.for_rows(rows.len());
    let query = bound_insert(statement, rows, &mut writer.datetimes);
    match tokio::time::timeout(timeout, query.execute(&mut *connection)).await {
        Ok(Ok(result)) => {
            debug_assert_eq!(result.rows_affected(), rows.len() as u64);
            Ok(())
        }
        Ok(Err(cause)) => Err(StatementFailure::Driver(cause)),
        Err(_) => Err(StatementFailure::TimedOut),
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

/// A planned read with its values bound.
fn bound_query(
    statement: sql::list::Statement,
) -> sqlx::query::Query<'static, MySql, MySqlArguments> {
    let mut query = sqlx::query(AssertSqlSafe(statement.sql));
    for bind in statement.binds {
        query = match bind {
            Bind::Unsigned(value) => query.bind(value),
            Bind::Signed(value) => query.bind(value),
            Bind::Text(value) => query.bind(value),
        };
    }
    query
}

fn decode<'r, T>(row: &'r MySqlRow, index: usize, operation: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
{
    common::decode(row, index, operation)
}

/// Decodes a row selected with [`Dialect::columns`]: times come as microseconds.
pub(crate) fn stored_event_from_row(row: &MySqlRow) -> Result<StoredEvent, StoreError> {
    common::stored_event_from_row(row, sql::millis_from_micros)
}
