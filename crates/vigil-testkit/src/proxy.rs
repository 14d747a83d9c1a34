//! A fault-injecting TCP proxy, so tests can make MariaDB or Redis fail without touching the
//! machine's shared servers.
//!
//! Start a [`FaultProxy`] in front of the real service, point Vigil at [`FaultProxy::addr`]
//! instead of the service, and inject faults while the test runs:
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use std::time::Duration;
//! use vigil_testkit::proxy::FaultProxy;
//!
//! let proxy = FaultProxy::start("127.0.0.1:3306".parse().unwrap()).await?;
//! let url = format!("mysql://root@{}/test", proxy.addr());
//! // ... build Vigil with `url` ...
//! proxy.set_delay(Duration::from_millis(200)); // a slow database
//! proxy.cut_all(); // every open connection is reset
//! proxy.refuse_new(true); // reconnects fail
//! proxy.heal(); // back to normal
//! # Ok(())
//! # }
//! ```
//!
//! The proxy runs as tasks on the runtime that called [`FaultProxy::start`] and stops, resetting
//! every connection, when the handle is dropped. Faults apply to connections that are already
//! open as well as to new ones. Cuts are resets (`SO_LINGER` 0), the way a peer that vanished
//! looks to a client, not orderly closes. Orderly closes by either side are passed through as
//! half-closes, and a reset or error on one side resets the other.
//!
//! [`FaultProxy::cut_reply_after`] is the "connection lost right after COMMIT" fault: the request
//! reaches the server, the server answers, the client never sees the answer and its connection
//! is reset — it cannot know whether the transaction committed.

use std::collections::HashMap;
use std::future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Largest chunk read from one side before it is forwarded to the other.
const CHUNK_SIZE: usize = 16 * 1024;

/// After forwarding the request that triggered [`FaultProxy::cut_reply_after`], how long to wait
/// for the server's reply (which is discarded) before cutting the connection anyway. Waiting for
/// the reply means that, once the client sees the cut, the server has finished the request.
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// A TCP proxy on `127.0.0.1` in front of one upstream address, with faults that tests switch on
/// and off. Dropping it stops the proxy and resets every connection through it.
pub struct FaultProxy {
    /// Where clients connect: `127.0.0.1` and a port chosen by the kernel.
    addr: SocketAddr,
    /// State shared with the accept task and the connection tasks.
    shared: Arc<Shared>,
}

/// What the accept task and connection tasks share with the handle.
struct Shared {
    /// The service behind the proxy.
    upstream: SocketAddr,
    /// Cancelled when the handle is dropped; every connection's cut token is a child of it.
    shutdown: CancellationToken,
    /// Faults and open connections, under one lock so that a connection's decision to hold data
    /// and a heal that cuts the connections holding data cannot interleave.
    state: Mutex<State>,
}

/// The faults in force and the connections they apply to.
#[derive(Default)]
struct State {
    /// Pause before forwarding each chunk, in both directions.
    delay: Duration,
    /// New connections are reset as soon as they are accepted.
    refusing: bool,
    /// Data read from either side is held (discarded), nothing is forwarded.
    blackholed: bool,
    /// Armed by `cut_reply_after`; taken by the first connection whose request contains it.
    armed_pattern: Option<Arc<[u8]>>,
    /// What the armed pattern does: forward its chunk, then cut (`false`), or cut instead of
    /// forwarding it (`true`).
    armed_drops_request: bool,
    /// Open proxied connections by id.
    open: HashMap<u64, OpenConnection>,
    /// Id of the next accepted connection.
    next_id: u64,
    /// Connections accepted since start, including refused ones.
    accepted: u64,
}

/// The handle's view of one open connection.
struct OpenConnection {
    /// Cancelling it resets both sides of the connection.
    cut: CancellationToken,
    /// The connection has swallowed data (or an end of stream) while blackholed, so its streams
    /// are no longer intact; it is cut when the blackhole is lifted.
    holding: bool,
}

impl FaultProxy {
    /// Starts a proxy listening on `127.0.0.1:0` that forwards to `upstream`. It connects to
    /// `upstream` once per accepted connection; a failed upstream connect resets the client.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            shutdown: CancellationToken::new(),
            state: Mutex::new(State::default()),
        });
        tokio::spawn(accept_connections(listener, Arc::clone(&shared)));
        Ok(FaultProxy { addr, shared })
    }

    /// The address clients should connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Delays every forwarded chunk, in both directions, by `per_chunk`; zero turns it off.
    /// Applies to chunks read from now on, on open connections too.
    pub fn set_delay(&self, per_chunk: Duration) {
        self.shared.lock().delay = per_chunk;
    }

    /// Resets every open connection, on both sides, now. [`connections`](Self::connections)
    /// drops to zero at once; the sockets close as soon as the runtime runs their tasks.
    pub fn cut_all(&self) {
        let mut state = self.shared.lock();
        for (_, connection) in state.open.drain() {
            connection.cut.cancel();
        }
    }

    /// While on, connections are accepted and immediately reset, so connecting fails. Open
    /// connections are not affected.
    pub fn refuse_new(&self, on: bool) {
        self.shared.lock().refusing = on;
    }

    /// While on, connections are accepted (new ones too) and nothing is forwarded: whatever
    /// either side sends is held and never delivered, the way a hung server or a dropped network
    /// looks. Turning it off (or [`heal`](Self::heal)) discards what was held and cuts the
    /// connections that held anything, since their streams have lost bytes; connections that
    /// sent nothing while blackholed carry on.
    pub fn blackhole(&self, on: bool) {
        let mut state = self.shared.lock();
        state.blackholed = on;
        if !on {
            cut_holding_connections(&mut state);
        }
    }

    /// Arms a one-shot fault: the next client-to-server chunk, on any connection, that contains
    /// `pattern` (also when it straddles two chunks) is forwarded, and that connection is then
    /// cut without relaying anything more from the server. The proxy waits (up to a few seconds)
    /// for the server's reply before cutting, so that the server has acted on the request by
    /// the time the client sees the cut. An empty pattern matches the next chunk. Arming again
    /// replaces the pattern; [`heal`](Self::heal) disarms.
    pub fn cut_reply_after(&self, pattern: &[u8]) {
        let mut state = self.shared.lock();
        state.armed_pattern = Some(Arc::from(pattern));
        state.armed_drops_request = false;
    }

    /// Arms a one-shot fault like [`cut_reply_after`](Self::cut_reply_after), except that the
    /// chunk holding `pattern` is dropped instead of forwarded: the client has sent a request
    /// the server never receives, and loses the connection. (A `COMMIT` lost this way leaves
    /// the client not knowing whether its transaction committed; it did not.)
    pub fn cut_instead_of(&self, pattern: &[u8]) {
        let mut state = self.shared.lock();
        state.armed_pattern = Some(Arc::from(pattern));
        state.armed_drops_request = true;
    }

    /// Clears every fault: no delay, not refusing, not blackholed, nothing armed. Held
    /// blackhole data is discarded and the connections that held it are cut.
    pub fn heal(&self) {
        let mut state = self.shared.lock();
        state.delay = Duration::ZERO;
        state.refusing = false;
        state.blackholed = false;
        state.armed_pattern = None;
        cut_holding_connections(&mut state);
    }

    /// Proxied connections currently open (including those still connecting upstream).
    pub fn connections(&self) -> usize {
        self.shared.lock().open.len()
    }

    /// Connections accepted since the proxy started, including those reset by
    /// [`refuse_new`](Self::refuse_new).
    pub fn accepted(&self) -> u64 {
        self.shared.lock().accepted
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the armed pattern if it is still `pattern`; false if another connection took it or
    /// it was re-armed or disarmed meanwhile.
    fn disarm(&self, pattern: &Arc<[u8]>) -> bool {
        let mut state = self.lock();
        match &state.armed_pattern {
            Some(armed) if Arc::ptr_eq(armed, pattern) => {
                state.armed_pattern = None;
                true
            }
            _ => false,
        }
    }
}

fn cut_holding_connections(state: &mut State) {
    state.open.retain(|_, connection| {
        if connection.holding {
            connection.cut.cancel();
        }
        !connection.holding
    });
}

/// Resets `stream` when it is dropped: `SO_LINGER` 0 makes close send RST instead of FIN.
fn reset_on_drop(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn accept_connections(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(_) => {
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        let registered = {
            let mut state = shared.lock();
            state.accepted += 1;
            if state.refusing {
                None
            } else {
                let id = state.next_id;
                state.next_id += 1;
                let cut = shared.shutdown.child_token();
                let connection = OpenConnection {
                    cut: cut.clone(),
                    holding: false,
                };
                state.open.insert(id, connection);
                Some((id, cut))
            }
        };
        match registered {
            None => reset_on_drop(&client),
            Some((id, cut)) => {
                tokio::spawn(run_connection(client, id, cut, Arc::clone(&shared)));
            }
        }
    }
}

/// Removes a connection from the open set when its task ends, however it ends.
struct Registration {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock().open.remove(&self.id);
    }
}

async fn run_connection(
    mut client: TcpStream,
    id: u64,
    cut: CancellationToken,
    shared: Arc<Shared>,
) {
    let _registration = Registration {
        id,
        shared: Arc::clone(&shared),
    };
    let connected = tokio::select! {
        _ = cut.cancelled() => None,
        connected = TcpStream::connect(shared.upstream) => connected.ok(),
    };
    let Some(mut server) = connected else {
        reset_on_drop(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    let connection = Connection {
        id,
        cut: cut.clone(),
        shared,
        replies_suppressed: AtomicBool::new(false),
        reply_arrived: Notify::new(),
    };
    let closed_in_order = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        tokio::select! {
            _ = cut.cancelled() => false,
            pumped = async {
                tokio::try_join!(
                    connection.client_to_server(client_read, server_write),
                    connection.server_to_client(server_read, client_write),
                )
            } => pumped.is_ok(),
        }
    };
    if !closed_in_order {
        reset_on_drop(&client);
        reset_on_drop(&server);
    }
}

/// What a connection does with a chunk it has read.
enum Route {
    Forward,
    Hold,
}

/// One proxied connection, shared by its two pumps.
struct Connection {
    /// Key in the open set.
    id: u64,
    /// Cancelled to reset both sides.
    cut: CancellationToken,
    /// The proxy's faults.
    shared: Arc<Shared>,
    /// Set by the client-to-server pump just before it forwards the request that triggered
    /// `cut_reply_after`; from then on nothing from the server reaches the client.
    replies_suppressed: AtomicBool,
    /// Signalled by the server-to-client pump when the server answers a suppressed request.
    reply_arrived: Notify,
}

impl Connection {
    /// Waits out the configured delay, then decides whether the chunk just read may pass.
    async fn route(&self) -> Route {
        let delay = self.shared.lock().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.shared.lock();
        if !state.blackholed {
            return Route::Forward;
        }
        if let Some(open) = state.open.get_mut(&self.id) {
            open.holding = true;
        }
        Route::Hold
    }

    async fn client_to_server(
        &self,
        mut from: ReadHalf<'_>,
        mut to: WriteHalf<'_>,
    ) -> io::Result<()> {
        let mut buffer = vec![0; CHUNK_SIZE];
        let mut pattern_tail = Vec::new();
        loop {
            let read = from.read(&mut buffer).await?;
            if let Route::Hold = self.route().await {
                if read == 0 {
                    // Held end of stream: wait for the cut that lifting the blackhole brings.
                    future::pending::<()>().await;
                }
                continue;
            }
            if read == 0 {
                to.shutdown().await?;
                return Ok(());
            }
            let chunk = &buffer[..read];
            let armed_pattern = self.shared.lock().armed_pattern.clone();
            let Some(pattern) = armed_pattern else {
                pattern_tail.clear();
                to.write_all(chunk).await?;
                continue;
            };
            if !pattern_seen(&mut pattern_tail, chunk, &pattern) || !self.shared.disarm(&pattern) {
                to.write_all(chunk).await?;
                continue;
            }
            self.replies_suppressed.store(true, Ordering::SeqCst);
            if !self.shared.lock().armed_drops_request {
                to.write_all(chunk).await?;
                let _ = tokio::time::timeout(REPLY_WAIT, self.reply_arrived.notified()).await;
            }
            self.cut.cancel();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "cut after forwarding the armed request",
            ));
        }
    }

    async fn server_to_client(
        &self,
        mut from: ReadHalf<'_>,
        mut to: WriteHalf<'_>,
    ) -> io::Result<()> {
        let mut buffer = vec![0; CHUNK_SIZE];
        loop {
            let read = from.read(&mut buffer).await?;
            if self.replies_suppressed.load(Ordering::SeqCst) {
                // Read after the armed request went out: the reply, which the client never gets.
                self.reply_arrived.notify_one();
                if read == 0 {
                    future::pending::<()>().await;
                }
                continue;
            }
            let route = self.route().await;
            if self.replies_suppressed.load(Ordering::SeqCst) {
                // Read before the armed request went out, but relaying it now would put bytes on
                // the client's side after the request; the connection is about to be cut anyway.
                continue;
            }
            if let Route::Hold = route {
                if read == 0 {
                    future::pending::<()>().await;
                }
                continue;
            }
            if read == 0 {
                to.shutdown().await?;
                return Ok(());
            }
            to.write_all(&buffer[..read]).await?;
        }
    }
}

/// Whether `pattern` occurs in the stream whose previous bytes end with `tail` and whose next
/// bytes are `chunk`; keeps in `tail` the bytes needed to match across the next boundary.
fn pattern_seen(tail: &mut Vec<u8>, chunk: &[u8], pattern: &[u8]) -> bool {
    if pattern.is_empty() {
        tail.clear();
        return true;
    }
    tail.extend_from_slice(chunk);
    let seen = tail.windows(pattern.len()).any(|window| window == pattern);
    let keep = pattern.len() - 1;
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::pattern_seen;

    #[test]
    fn pattern_within_one_chunk_is_seen() {
        let mut tail = Vec::new();
        assert!(pattern_seen(&mut tail, b"xxCOMMITxx", b"COMMIT"));
    }

    #[test]
    fn pattern_split_across_chunks_is_seen() {
        let mut tail = Vec::new();
        assert!(!pattern_seen(&mut tail, b"....COM", b"COMMIT"));
        assert!(pattern_seen(&mut tail, b"MIT....", b"COMMIT"));
    }

    #[test]
    fn pattern_split_across_three_chunks_is_seen() {
        let mut tail = Vec::new();
        assert!(!pattern_seen(&mut tail, b"..CO", b"COMMIT"));
        assert!(!pattern_seen(&mut tail, b"M", b"COMMIT"));
        assert!(pattern_seen(&mut tail, b"MIT", b"COMMIT"));
    }

    #[test]
    fn tail_is_bounded_by_pattern_length() {
        let mut tail = Vec::new();
        assert!(!pattern_seen(&mut tail, &[b'.'; 1000], b"COMMIT"));
        assert_eq!(tail.len(), 5);
    }

    #[test]
    fn absent_pattern_is_not_seen() {
        let mut tail = Vec::new();
        assert!(!pattern_seen(&mut tail, b"COMMI", b"COMMIT"));
        assert!(!pattern_seen(&mut tail, b"t", b"COMMIT"));
    }

    #[test]
    fn empty_pattern_matches_any_chunk() {
        let mut tail = Vec::new();
        assert!(pattern_seen(&mut tail, b"x", b""));
    }
}
