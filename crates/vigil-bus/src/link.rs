//! One connection to the Redis primary for one use (the cache's reads, the publisher), that
//! follows the primary.
//!
//! A [`Link`] holds a redis-rs `ConnectionManager` for the primary its [`RedisTarget`] knows
//! now; the manager reconnects by itself to that server (a restart, a dropped connection).
//! When the target learns of another primary (Sentinel named a new one), the link's next use
//! drops the manager and opens one to the new server. Every use is bounded as a whole, and a
//! failure asks the target to look the primary up again, so a link on a dead primary moves to
//! its successor within a command or two of the sentinels naming it.
//!
//! A link also says whether its connection is the first it opened or follows a switch of
//! primary ([`Connection::after_switch`]): writes the old primary acknowledged may not have
//! reached the new one (replication is asynchronous), which the cache must not trust blindly.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::BusError;
use crate::target::{Primary, RedisTarget};

/// How long one command (or one pipeline) may wait for Redis's answer on an open connection
/// before it fails. A publish round trip and a page read are far below a millisecond on a
/// healthy Redis; one second leaves room for a busy one and still lets a read fall back to the
/// database quickly.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one attempt to open a connection (TCP connect and handshake) may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// A reconnection tries this many times more after its first attempt, then fails the commands
/// waiting on it; the next command starts a new reconnection. Kept small so that commands fail
/// (and the caller falls back) instead of queueing behind long back-offs.
const RECONNECT_RETRIES: usize = 2;

/// Back-off between reconnection attempts: random, from this floor…
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);

/// …up to this ceiling.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);

/// A connection to the primary for one use. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(crate) struct Link {
    target: RedisTarget,
    state: Arc<Mutex<LinkState>>,
}

#[derive(Default)]
struct LinkState {
    /// The manager for the primary of this generation, once opened.
    open: Option<(u64, ConnectionManager)>,
    /// The generation whose switch the user has dealt with (see [`Link::settled`]); `None`
    /// until the first connection, whose generation needs nothing.
    settled: Option<u64>,
}

/// The link's connection for one use.
pub(crate) struct Connection {
    /// The connection (a clone of the link's manager).
    pub(crate) manager: ConnectionManager,
    /// Which primary it goes to.
    pub(crate) generation: u64,
    /// The link had a connection to an earlier primary and its user has not yet called
    /// [`Link::settled`] for this one.
    pub(crate) after_switch: bool,
}

impl Link {
    /// A link to `target`'s primary; nothing is opened until the first use.
    pub(crate) fn new(target: RedisTarget) -> Link {
        Link {
            target,
            state: Arc::default(),
        }
    }

    /// Runs `operation` on the link's connection, all of it (finding the primary included)
    /// within `deadline`. A failure makes the target look the primary up again.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        deadline: Duration,
        operation: F,
    ) -> Result<T, BusError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, BusError>>,
    {
        let attempt = async { operation(self.connection().await?).await };
        let result = match tokio::time::timeout(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Timeout(deadline)),
        };
        if result.is_err() {
            self.target.refresh_soon();
        }
        result
    }

    /// Records that the user dealt with the switch to `generation` (the cache marked the
    /// list's gap on the new primary): later connections to it are not `after_switch`.
    pub(crate) fn settled(&self, generation: u64) {
        let mut state = self.lock();
        if state.settled.is_none_or(|settled| settled < generation) {
            state.settled = Some(generation);
        }
    }

    /// The connection to the primary known now, opened (lazily) if the primary changed; asks
    /// the sentinels first when no primary has been found yet. The usual case (the primary
    /// unchanged) only clones the open connection's handle.
    async fn connection(&self) -> Result<Connection, BusError> {
        if let Some(generation) = self.target.known_generation() {
            let state = self.lock();
            if let Some((open, manager)) = &state.open
                && *open == generation
            {
                return Ok(Connection {
                    manager: manager.clone(),
                    generation,
                    after_switch: state.settled != Some(generation),
                });
            }
        }
        let primary = match self.target.known() {
            Some(primary) => primary,
            None => self.target.primary().await?,
        };
        let mut state = self.lock();
        // Another use may have opened one meanwhile, even to a newer primary: use it.
        let (generation, manager) = match &state.open {
            Some((open, manager)) if *open >= primary.generation => (*open, manager.clone()),
            _ => {
                let Primary { client, generation } = primary;
                let manager = ConnectionManager::new_lazy_with_config(client, manager_config())?;
                state.open = Some((generation, manager.clone()));
                (generation, manager)
            }
        };
        let settled = *state.settled.get_or_insert(generation);
        Ok(Connection {
            manager,
            generation,
            after_switch: settled != generation,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        // Nothing panics while holding the lock; if something did, the state is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY)
}
