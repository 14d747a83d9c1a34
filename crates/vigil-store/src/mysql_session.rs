//! Which server process a MySQL session lives on, and what settling an unknown outcome may do
//! about a session the store dropped.
//!
//! Settling a batch whose outcome is unknown means making sure the session that sent it can
//! commit nothing more, then reading. On the server that holds the session, `KILL` does that.
//! But the fresh connection `resolve` opens may reach another server than the dropped session
//! did: behind a proxy (HAProxy in front of a Galera cluster, a MySQL primary behind a
//! failover proxy) the reconnect lands on whichever node is active now, and after a restart
//! the same address is a new process whose session ids start again from 1. A `KILL` by the old
//! id there ends nothing of ours, or ends somebody else's session. So every session's server
//! is recorded when it opens ([`ServerIdentity`]) and `resolve` decides per dropped session
//! ([`SuspectFate`]):
//!
//! - **the same process**: `KILL` it and wait until the server no longer lists it;
//! - **the same address, a later start**: the process that held the session is gone, and its
//!   open transaction with it (crash recovery rolls back what was not committed);
//! - **another server**: it cannot be reached from here. The writer session runs with a
//!   server-side bound on every statement (`max_statement_time` on MariaDB, and on both
//!   engines `innodb_lock_wait_timeout`; see [`session_bounds`]) just above the store's
//!   statement timeout, so once that long has passed since the store dropped it, no statement
//!   of that session is still running, and a session whose client has gone never starts
//!   another. `resolve` waits that long before it reads; on Galera the read also waits until
//!   the node has applied every write set certified before it (`wsrep_sync_wait`), so a batch
//!   committed through another node is seen.

use std::time::{Duration, Instant};

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Executor};

use crate::StoreError;
use crate::common::{bounded_query, decode};
use crate::error::server_error_number;

/// ER_UNKNOWN_SYSTEM_VARIABLE: MySQL has no `max_statement_time`, and no `wsrep_*` variables.
const UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

/// Two readings of a server's start time (now − uptime, in whole seconds taken at different
/// moments) may differ by rounding; a real restart is further apart than this.
const START_TIME_TOLERANCE_S: i64 = 2;

/// Added to the statement bound before a session on another server is taken as finished:
/// covers the time between the server aborting a statement and its transaction rolling back.
pub(crate) const FOREIGN_SESSION_MARGIN: Duration = Duration::from_secs(1);

/// The server process a session was opened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerIdentity {
    /// `@@hostname`.
    pub host: String,
    /// `@@port`.
    pub port: u64,
    /// `@@server_id`.
    pub server_id: u64,
    /// When the server process started, in Unix seconds by its own clock.
    pub started_at_s: i64,
    /// Whether the server is a Galera node with replication on (`wsrep_on`).
    pub galera: bool,
}

/// What to do about a dropped session before reading a batch's rows, seen from a connection
/// to `here`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SuspectFate {
    /// The session's own server process: `KILL` it.
    Kill,
    /// Its server restarted since: the session is gone.
    Gone,
    /// Another server: wait until its statements are past their server-side bound.
    WaitOut,
}

impl ServerIdentity {
    /// How a session opened on `self` can be ended from a connection to `here`.
    pub fn fate_seen_from(&self, here: &ServerIdentity) -> SuspectFate {
        let same_address = self.host == here.host && self.port == here.port;
        if !same_address || self.server_id != here.server_id {
            return SuspectFate::WaitOut;
        }
        if (self.started_at_s - here.started_at_s).abs() <= START_TIME_TOLERANCE_S {
            SuspectFate::Kill
        } else {
            SuspectFate::Gone
        }
    }
}

/// A writer session dropped without knowing what its last statement did.
#[derive(Debug, Clone)]
pub(crate) struct Suspect {
    /// The server's `CONNECTION_ID()` for it.
    pub connection_id: u64,
    /// The server it ran on.
    pub server: ServerIdentity,
    /// When the store dropped it.
    pub dropped_at: Instant,
}

impl Suspect {
    /// How long, from now, a session on another server may still run a statement, given the
    /// store's (client-side) statement timeout.
    pub fn may_run_for(&self, statement_timeout: Duration) -> Duration {
        (server_bound(statement_timeout) + FOREIGN_SESSION_MARGIN)
            .saturating_sub(self.dropped_at.elapsed())
    }
}

/// The server-side bound on the writer's statements for a client-side `statement_timeout`:
/// whole seconds (what the server takes), and a second longer, so that the client's timeout
/// fires first and the server's is only the backstop for a session the client has left.
pub(crate) fn server_bound(statement_timeout: Duration) -> Duration {
    let whole_seconds =
        statement_timeout.as_secs() + u64::from(statement_timeout.subsec_nanos() > 0);
    Duration::from_secs(whole_seconds + 1)
}

/// The session's id and packet limit, and the server it is on.
pub(crate) struct SessionFacts {
    pub connection_id: u64,
    pub max_allowed_packet: u64,
    pub server: ServerIdentity,
}

/// Reads what the store keeps about a freshly opened session.
pub(crate) async fn session_facts(
    connection: &mut MySqlConnection,
    timeout: Duration,
) -> Result<SessionFacts, StoreError> {
    const OPERATION: &str = "identify the server";
    let row = bounded_query(
        OPERATION,
        timeout,
        sqlx::query(
            "SELECT CONNECTION_ID(), CAST(@@max_allowed_packet AS UNSIGNED), \
             CAST(@@hostname AS CHAR), CAST(@@port AS UNSIGNED), CAST(@@server_id AS UNSIGNED), \
             CAST(UNIX_TIMESTAMP() AS SIGNED)",
        )
        .fetch_one(&mut *connection),
    )
    .await?;
    let connection_id: u64 = decode(&row, 0, OPERATION)?;
    let max_allowed_packet: u64 = decode(&row, 1, OPERATION)?;
    let host: String = decode(&row, 2, OPERATION)?;
    let port: u64 = decode(&row, 3, OPERATION)?;
    let server_id: u64 = decode(&row, 4, OPERATION)?;
    let now_s: i64 = decode(&row, 5, OPERATION)?;
    let uptime_s = show_value(connection, "SHOW GLOBAL STATUS LIKE 'Uptime'", timeout)
        .await?
        .and_then(|value| value.parse::<i64>().ok())
        .unwrap_or(0);
    let galera = show_value(connection, "SHOW VARIABLES LIKE 'wsrep_on'", timeout)
        .await?
        .is_some_and(|value| value.eq_ignore_ascii_case("ON"));
    Ok(SessionFacts {
        connection_id,
        max_allowed_packet,
        server: ServerIdentity {
            host,
            port,
            server_id,
            started_at_s: now_s - uptime_s,
            galera,
        },
    })
}

/// The `Value` column of a one-row `SHOW … LIKE` answer, if there is a row.
async fn show_value(
    connection: &mut MySqlConnection,
    statement: &'static str,
    timeout: Duration,
) -> Result<Option<String>, StoreError> {
    const OPERATION: &str = "read a server variable";
    let rows = bounded_query(OPERATION, timeout, connection.fetch_all(statement)).await?;
    rows.first()
        .map(|row| decode::<_, String>(row, 1, OPERATION))
        .transpose()
}

/// Bounds every statement of the writer session on the server side as well
/// ([`server_bound`]): a lock wait (both engines) and for any statement (MariaDB's `max_statement_time`; MySQL has
/// no such bound for writes, and says so with error 1193, which is ignored). This is what lets
/// `resolve` reason about a session it can no longer reach.
pub(crate) async fn session_bounds(
    connection: &mut MySqlConnection,
    statement_timeout: Duration,
) -> Result<(), StoreError> {
    let timeout = statement_timeout;
    let seconds = server_bound(statement_timeout).as_secs();
    let lock_wait = format!("SET SESSION innodb_lock_wait_timeout = {seconds}");
    bounded_query(
        "bound lock waits",
        timeout,
        connection.execute(AssertSqlSafe(lock_wait)),
    )
    .await?;
    let statement = format!("SET SESSION max_statement_time = {seconds}");
    set_if_known(connection, statement, "bound statements", timeout).await
}

/// On a Galera node, makes the session's reads wait until the node has applied every write set
/// the cluster certified before them (`wsrep_sync_wait = 1`), so a read sees what other nodes
/// committed. Nothing to do elsewhere.
pub(crate) async fn causal_reads(
    connection: &mut MySqlConnection,
    server: &ServerIdentity,
    timeout: Duration,
) -> Result<(), StoreError> {
    if !server.galera {
        return Ok(());
    }
    set_if_known(
        connection,
        "SET SESSION wsrep_sync_wait = 1".to_owned(),
        "wait for causal reads",
        timeout,
    )
    .await
}

/// Runs a `SET SESSION` that some engines do not know; an unknown variable is not an error.
async fn set_if_known(
    connection: &mut MySqlConnection,
    statement: String,
    operation: &'static str,
    timeout: Duration,
) -> Result<(), StoreError> {
    // Statements we formatted from integers and constants: nothing to inject.
    match bounded_query(
        operation,
        timeout,
        connection.execute(AssertSqlSafe(statement)),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::Query { cause, .. })
            if server_error_number(&cause) == Some(UNKNOWN_SYSTEM_VARIABLE) =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, port: u64, server_id: u64, started_at_s: i64) -> ServerIdentity {
        ServerIdentity {
            host: host.to_owned(),
            port,
            server_id,
            started_at_s,
            galera: false,
        }
    }

    #[test]
    fn a_session_is_killed_only_on_its_own_server_process() {
        let node = server("db-1", 3306, 1, 1_000);
        assert_eq!(node.fate_seen_from(&node), SuspectFate::Kill);
        // Start time read twice rounds differently by a second.
        assert_eq!(
            node.fate_seen_from(&server("db-1", 3306, 1, 1_001)),
            SuspectFate::Kill
        );
        // The same address started again later: the session died with the old process.
        assert_eq!(
            node.fate_seen_from(&server("db-1", 3306, 1, 5_000)),
            SuspectFate::Gone
        );
        // Another node behind the same proxy: never KILL by an id that is not its own.
        for other in [
            server("db-2", 3306, 1, 1_000),
            server("db-1", 3307, 1, 1_000),
            server("db-1", 3306, 2, 1_000),
        ] {
            assert_eq!(node.fate_seen_from(&other), SuspectFate::WaitOut);
        }
    }

    #[test]
    fn a_foreign_session_is_waited_out_for_its_bound_and_a_margin() {
        let suspect = Suspect {
            connection_id: 7,
            server: server("db-1", 3306, 1, 0),
            dropped_at: Instant::now(),
        };
        // A 5 s statement timeout: the server stops the statement at 6 s, plus the margin.
        let left = suspect.may_run_for(Duration::from_secs(5));
        assert!(left > Duration::from_secs(6) && left <= Duration::from_secs(7));
        let long_ago = Suspect {
            dropped_at: Instant::now() - Duration::from_secs(10),
            ..suspect
        };
        assert_eq!(long_ago.may_run_for(Duration::from_secs(5)), Duration::ZERO);
    }

    #[test]
    fn the_server_side_bound_is_whole_seconds_above_the_client_timeout() {
        assert_eq!(server_bound(Duration::from_secs(5)), Duration::from_secs(6));
        assert_eq!(
            server_bound(Duration::from_millis(1500)),
            Duration::from_secs(3)
        );
        assert_eq!(
            server_bound(Duration::from_millis(200)),
            Duration::from_secs(2)
        );
    }
}
