//! The fan-out floor: a bare server that does only what any WebSocket fan-out must do, writing
//! each event's frame to every connected client's socket, so that `scripts/bench-fanout.sh` can
//! set Vigil's many-client runs beside it, with the same measurer, in the same run.
//!
//! - `GET /ws` upgrades to a WebSocket; nothing the client sends is read after that.
//! - `POST /api/events` with one event object answers 201 at once and fans the event out as a
//!   text frame `{"id":N,` followed by the posted object's fields, which is what the measurer
//!   reads its stamp from. Nothing is validated, stored or cached.
//! - The clients are split into one shard per core. Each shard is a task that writes a frame to
//!   each of its clients with one non-blocking write. What a socket does not take at once
//!   waits in that client's buffer for the shard's next frame or its next flush tick, so the
//!   floor needs no queue per client, and no task but the one that reads (and ignores) what
//!   the client sends, to see it go. A client that went, whose buffer passes
//!   [`MAX_PENDING_BYTES`], or whose write fails, is dropped and its socket shut.
//!
//! It does not raise its open-files limit: `scripts/bench-fanout.sh` does, for the measurer
//! and both servers.
//!
//! Usage: `bare_fanout ADDR`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What one client's unwritten bytes may grow to before it is dropped.
const MAX_PENDING_BYTES: usize = 1 << 20;
/// How often a shard retries the clients with unwritten bytes when no frame comes.
const FLUSH_TICK: Duration = Duration::from_millis(5);

/// What a shard is handed: a new client, or a frame for all of its clients.
enum ShardWork {
    Join(Arc<Seat>),
    Frame(Bytes),
}

/// A client from its upgrade request on. It joins its shard before the upgrade is answered,
/// as a client joins Vigil's hub, since the measurer posts as soon as every upgrade is: frames
/// wait in its buffer until its socket is there.
#[derive(Default)]
struct Seat {
    stream: OnceLock<Arc<TcpStream>>,
    /// Set when the client went, or its upgrade failed.
    gone: AtomicBool,
}

/// One client of a shard.
struct Client {
    seat: Arc<Seat>,
    /// Bytes its socket has not taken yet.
    pending: Vec<u8>,
}

impl Client {
    /// Writes `frame` after whatever is pending, without waiting; `false` when the client must
    /// be dropped.
    fn send(&mut self, frame: &[u8]) -> bool {
        if self.seat.gone.load(Ordering::Relaxed) {
            return false;
        }
        match self.seat.stream.get() {
            Some(stream) if self.pending.is_empty() => match stream.try_write(frame) {
                Ok(written) => self.pending.extend_from_slice(&frame[written..]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    self.pending.extend_from_slice(frame);
                }
                Err(_) => return false,
            },
            _ => {
                self.pending.extend_from_slice(frame);
                if !self.flush() {
                    return false;
                }
            }
        }
        self.pending.len() <= MAX_PENDING_BYTES
    }

    /// Writes what is pending, without waiting; `false` when the client must be dropped.
    fn flush(&mut self) -> bool {
        if self.seat.gone.load(Ordering::Relaxed) {
            return false;
        }
        let Some(stream) = self.seat.stream.get() else {
            return true;
        };
        if self.pending.is_empty() {
            return true;
        }
        match stream.try_write(&self.pending) {
            Ok(written) => {
                self.pending.drain(..written);
                true
            }
            Err(error) => error.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

impl Drop for Client {
    /// Shuts the socket, so that the client's reader sees it end and lets go of it.
    fn drop(&mut self) {
        self.seat.gone.store(true, Ordering::Relaxed);
        if let Some(stream) = self.seat.stream.get() {
            let _ = socket2::SockRef::from(&**stream).shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Runs one shard: its clients, each frame written to each of them.
async fn run_shard(mut work: mpsc::UnboundedReceiver<ShardWork>, connected: Arc<AtomicUsize>) {
    let mut clients: Vec<Client> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let before = clients.len();
        tokio::select! {
            next = work.recv() => match next {
                Some(ShardWork::Join(seat)) => clients.push(Client {
                    seat,
                    pending: Vec::new(),
                }),
                Some(ShardWork::Frame(frame)) => clients.retain_mut(|client| client.send(&frame)),
                None => return,
            },
            _ = tick.tick() => clients.retain_mut(Client::flush),
        }
        if clients.len() < before {
            connected.fetch_sub(before - clients.len(), Ordering::Relaxed);
        }
    }
}

/// The shards, and which one the next client joins.
struct Fanout {
    shards: Vec<mpsc::UnboundedSender<ShardWork>>,
    next_shard: AtomicUsize,
    next_id: AtomicU64,
    connected: Arc<AtomicUsize>,
}

impl Fanout {
    /// Gives a new client a seat in a shard.
    fn join(&self) -> Arc<Seat> {
        let seat = Arc::new(Seat::default());
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.connected.fetch_add(1, Ordering::Relaxed);
        let _ = self.shards[shard].send(ShardWork::Join(Arc::clone(&seat)));
        seat
    }

    /// Gives the event object `body` an id and hands its frame to every shard; the id.
    fn publish(&self, body: &[u8]) -> Option<u64> {
        let fields = body.trim_ascii().strip_prefix(b"{")?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut text = format!("{{\"id\":{id},").into_bytes();
        text.extend_from_slice(fields);
        let frame = text_frame(&text);
        for shard in &self.shards {
            let _ = shard.send(ShardWork::Frame(frame.clone()));
        }
        Some(id)
    }
}

/// Seats the upgraded socket, then reads (and ignores) what the client sends until it goes
/// or its shard drops it.
async fn seat_client(seat: Arc<Seat>, stream: TcpStream) {
    let stream = Arc::new(stream);
    let _ = seat.stream.set(Arc::clone(&stream));
    let mut ignored = [0u8; 256];
    while !seat.gone.load(Ordering::Relaxed) {
        if stream.readable().await.is_err() {
            break;
        }
        match stream.try_read(&mut ignored) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    seat.gone.store(true, Ordering::Relaxed);
}

/// An unmasked WebSocket text frame holding `payload`.
fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    frame.put_u8(0x81);
    match payload.len() {
        length @ 0..=125 => frame.put_u8(length as u8),
        length @ 126..=65_535 => {
            frame.put_u8(126);
            frame.put_u16(length as u16);
        }
        length => {
            frame.put_u8(127);
            frame.put_u64(length as u64);
        }
    }
    frame.put_slice(payload);
    frame.freeze()
}

type Answer = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
}

async fn serve(fanout: Arc<Fanout>, mut request: Request<Incoming>) -> Answer {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/ws") => {
            let (response, upgrading) = match fastwebsockets::upgrade::upgrade(&mut request) {
                Ok(upgrade) => upgrade,
                Err(error) => return answer(StatusCode::BAD_REQUEST, error.to_string()),
            };
            let seat = fanout.join();
            tokio::spawn(async move {
                let upgraded = match upgrading.await {
                    Ok(socket) => socket.into_inner().into_inner(),
                    Err(_) => {
                        seat.gone.store(true, Ordering::Relaxed);
                        return;
                    }
                };
                match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => seat_client(seat, parts.io.into_inner()).await,
                    Err(_) => seat.gone.store(true, Ordering::Relaxed),
                }
            });
            response.map(|body: Empty<Bytes>| body.boxed())
        }
        (&Method::POST, "/api/events") => {
            let Ok(body) = request.into_body().collect().await else {
                return answer(StatusCode::BAD_REQUEST, "unreadable body");
            };
            match fanout.publish(&body.to_bytes()) {
                Some(id) => answer(StatusCode::CREATED, format!("{{\"id\":{id}}}")),
                None => answer(StatusCode::BAD_REQUEST, "one event object, please"),
            }
        }
        (&Method::GET, "/api/health") => answer(
            StatusCode::OK,
            format!(
                "{{\"status\":\"ok\",\"clients\":{}}}",
                fanout.connected.load(Ordering::Relaxed)
            ),
        ),
        _ => answer(StatusCode::NOT_FOUND, ""),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(addr) = std::env::args().nth(1) else {
        bail!("usage: bare_fanout ADDR");
    };
    let addr: SocketAddr = addr.parse().context("ADDR")?;
    let connected = Arc::new(AtomicUsize::new(0));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = (0..cores)
        .map(|_| {
            let (sender, work) = mpsc::unbounded_channel();
            tokio::spawn(run_shard(work, Arc::clone(&connected)));
            sender
        })
        .collect();
    let fanout = Arc::new(Fanout {
        shards,
        next_shard: AtomicUsize::new(0),
        next_id: AtomicU64::new(1),
        connected,
    });

    let listener = TcpListener::bind(addr).await.context("bind")?;
    eprintln!("bare_fanout listening on {addr}");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, or a connection reset before it was taken: not fatal.
                eprintln!("accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let fanout = Arc::clone(&fanout);
        let service = service_fn(move |request| {
            let fanout = Arc::clone(&fanout);
            async move { Ok::<_, Infallible>(serve(fanout, request).await) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
