//! One measuring WebSocket client: its own HTTP/1.1 upgrade over a raw TCP stream, then a read
//! loop over a [`FrameBuffer`].
//!
//! Per frame the loop does no allocation and no JSON parse: it reads the event's stamp
//! ([`event_stamp`]), records the latency from the POST to this read into the client's
//! histogram and the sequence number into its [`SeqSet`] (a second copy is a duplicate). The
//! clock is read once per socket read, not per frame: frames that arrive together are
//! received together. Pings are answered with masked pongs (the server closes a client silent
//! for three ping intervals); a server Close is answered and recorded with its code.
//!
//! With `reconnect`, a client the server closed or dropped during the run connects again with
//! `since=<last event id>`, so the server replays what it missed; the replay ends with the
//! `{"resume":…}` control frame, which is counted and otherwise ignored.
//!
//! The Sec-WebSocket-Accept header is not verified: the measurer talks to its own server and
//! checking the 101 status is enough to know the upgrade happened.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::extract::{event_stamp, is_resume_control};
use super::frame::{
    CONTROL_FRAME_CAPACITY, FrameBuffer, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT,
    close_code, masked_control_frame,
};
use super::seqset::{Insert, SeqSet};
use super::sse::{Message, SseBuffer};

/// Largest latency the histograms hold (larger values are recorded as this): one minute.
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant digits the latency histograms keep: 1 % precision, about 20 KiB per client.
const LATENCY_PRECISION: u8 = 2;
/// Longest HTTP response to an upgrade request the client reads.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// How long one connection attempt (TCP connect and upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at the first connection before the client gives up.
const CONNECT_ATTEMPTS: u32 = 3;
/// Reconnections one client may make during a run (with `reconnect`).
const MAX_RECONNECTS: u64 = 5;
/// Pause before a retry or a reconnection.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Close code the measurer sends when a run ends.
const NORMAL_CLOSURE: u16 = 1000;

/// How the clients receive events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// `/ws`: a WebSocket, one text frame per event.
    Ws,
    /// `/api/events/stream`: Server-Sent Events, one message per event.
    Sse,
}

impl Wire {
    /// The route the clients open.
    pub fn route(self) -> &'static str {
        match self {
            Wire::Ws => "/ws",
            Wire::Sse => "/api/events/stream",
        }
    }
}

/// What every client of a run shares.
pub struct ClientSettings {
    pub target: super::system::Target,
    pub wire: Wire,
    /// The wire's route with the filter's query, without `since`.
    pub path: String,
    /// Bytes each client reads into at a time.
    pub read_buffer: usize,
    /// The run id stamped in this run's payloads.
    pub run: u64,
    /// The measurer's time origin: payload stamps are µs since this.
    pub started: Instant,
    /// Sequence numbers of this run are below this.
    pub seq_bound: u64,
    /// Reconnect (resuming) when the server ends a connection during the run.
    pub reconnect: bool,
}

/// Live counters across a run's clients, and the signal that ends the run.
#[derive(Default)]
pub struct Shared {
    /// Clients whose first connection is up.
    pub connected: AtomicU64,
    /// Clients that could not connect at all.
    pub failed: AtomicU64,
    /// First deliveries of this run's events, all clients together.
    pub delivered: AtomicU64,
    /// Cancelled when the clients must close.
    pub stop: CancellationToken,
}

/// How one of a client's connections ended before the run stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server sent Close, with this code if it gave one.
    ServerClose(Option<u16>),
    /// The connection ended without a Close frame.
    Eof,
    /// A read or write failed.
    Io(std::io::ErrorKind),
    /// The server sent something that is not a readable WebSocket frame.
    Protocol,
}

impl Ending {
    /// The key this ending is counted under in reports.
    pub fn label(&self) -> String {
        match self {
            Ending::ServerClose(Some(code)) => code.to_string(),
            Ending::ServerClose(None) => "close without code".to_owned(),
            Ending::Eof => "eof".to_owned(),
            Ending::Io(kind) => format!("io error: {kind}"),
            Ending::Protocol => "protocol error".to_owned(),
        }
    }
}

/// What one client saw over the run.
pub struct ClientOutcome {
    /// The first connection came up.
    pub connected: bool,
    /// Why it did not, when it did not.
    pub connect_error: Option<String>,
    /// POST-to-frame latency of first deliveries, in µs; `None` until the first one.
    pub latency_us: Option<Histogram<u64>>,
    /// Sequence numbers of this run's events received.
    pub received: SeqSet,
    pub duplicates: u64,
    /// Text frames that are not this run's events (another producer's, or out of range).
    pub foreign_frames: u64,
    /// `{"resume":…}` control frames.
    pub control_frames: u64,
    /// Binary and fragmented frames, which Vigil does not send.
    pub unexpected_frames: u64,
    pub pings: u64,
    pub reconnects: u64,
    /// Connections that ended before the run stopped them.
    pub endings: Vec<Ending>,
    /// When the last first delivery was read, in µs since the measurer started.
    pub last_delivery_us: u64,
}

/// Why an attempt to connect failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("upgrade refused: {0}")]
    Refused(String),
    #[error("timed out")]
    Timeout,
}

/// Runs one client: connects (at most `connect_slots` clients connect at a time), reads until
/// `shared.stop`, then closes with 1000.
pub async fn run(
    index: u64,
    settings: Arc<ClientSettings>,
    shared: Arc<Shared>,
    connect_slots: Arc<Semaphore>,
) -> ClientOutcome {
    let mut client = Client {
        settings: settings.clone(),
        shared: shared.clone(),
        mask_state: 0x9e37_79b9_7f4a_7c15
            ^ (index.wrapping_add(1)).wrapping_mul(0xbf58_476d_1ce4_e5b9),
        last_event_id: None,
        outcome: ClientOutcome {
            connected: false,
            connect_error: None,
            latency_us: None,
            received: SeqSet::new(settings.seq_bound),
            duplicates: 0,
            foreign_frames: 0,
            control_frames: 0,
            unexpected_frames: 0,
            pings: 0,
            reconnects: 0,
            endings: Vec::new(),
            last_delivery_us: 0,
        },
    };
    let mut stopped = Box::pin(shared.stop.clone().cancelled_owned());

    let mut attempt = 0;
    let first = loop {
        attempt += 1;
        let opened = {
            let _slot = connect_slots.acquire().await;
            client.open(None).await
        };
        match opened {
            Ok(connection) => break connection,
            Err(error) if attempt >= CONNECT_ATTEMPTS || shared.stop.is_cancelled() => {
                client.outcome.connect_error = Some(error.to_string());
                shared.failed.fetch_add(1, Ordering::Relaxed);
                return client.outcome;
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    };
    client.outcome.connected = true;
    shared.connected.fetch_add(1, Ordering::Relaxed);

    let (mut stream, mut reader) = first;
    loop {
        let Some(ending) = client.read(&mut stream, &mut reader, &mut stopped).await else {
            return client.outcome;
        };
        client.outcome.endings.push(ending);
        if !settings.reconnect
            || client.outcome.reconnects >= MAX_RECONNECTS
            || shared.stop.is_cancelled()
        {
            return client.outcome;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        client.outcome.reconnects += 1;
        match client.open(client.last_event_id).await {
            Ok((next_stream, next_reader)) => {
                stream = next_stream;
                reader = next_reader;
            }
            Err(error) => {
                client.outcome.connect_error = Some(format!("reconnecting: {error}"));
                return client.outcome;
            }
        }
    }
}

/// The bytes of one connection as they are taken apart.
enum Reader {
    Ws(FrameBuffer),
    Sse(SseBuffer),
}

struct Client {
    settings: Arc<ClientSettings>,
    shared: Arc<Shared>,
    /// xorshift state for masks and keys.
    mask_state: u64,
    /// The id of the last of this run's events received, for `since` on reconnection.
    last_event_id: Option<u64>,
    outcome: ClientOutcome,
}

impl Client {
    fn next_random(&mut self) -> u64 {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        x
    }

    /// Connects (and upgrades, for a WebSocket), resuming after `since` when given; returns
    /// the stream and a reader holding any bytes that came with the response head.
    async fn open(&mut self, since: Option<u64>) -> Result<(TcpStream, Reader), ConnectError> {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.next_random().to_le_bytes());
        key[8..].copy_from_slice(&self.next_random().to_le_bytes());
        let wire = self.settings.wire;
        let request = match wire {
            Wire::Ws => upgrade_request(&self.settings, since, &key),
            Wire::Sse => stream_request(&self.settings, since),
        };
        let read_buffer = self.settings.read_buffer;
        let addr = self.settings.target.addr;
        let attempt = async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            stream.write_all(request.as_bytes()).await?;
            let mut head = Vec::with_capacity(1024);
            let mut scratch = [0u8; 4096];
            let head_len = loop {
                if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
                    break end + 4;
                }
                if head.len() > MAX_RESPONSE_HEAD {
                    return Err(ConnectError::Refused("response head too long".to_owned()));
                }
                let read = stream.read(&mut scratch).await?;
                if read == 0 {
                    return Err(ConnectError::Refused("connection closed".to_owned()));
                }
                head.extend_from_slice(&scratch[..read]);
            };
            let status_line = head.split(|&byte| byte == b'\r').next().unwrap_or_default();
            let expected: &[u8] = match wire {
                Wire::Ws => b"HTTP/1.1 101",
                Wire::Sse => b"HTTP/1.1 200",
            };
            if !status_line.starts_with(expected) {
                return Err(ConnectError::Refused(
                    String::from_utf8_lossy(status_line).into_owned(),
                ));
            }
            let rest = &head[head_len..];
            let reader = match wire {
                Wire::Ws => {
                    let mut buffer = FrameBuffer::new(read_buffer.max(rest.len()));
                    buffer.spare()[..rest.len()].copy_from_slice(rest);
                    buffer.filled(rest.len());
                    Reader::Ws(buffer)
                }
                Wire::Sse => {
                    let mut buffer = SseBuffer::new(read_buffer);
                    buffer
                        .extend(rest)
                        .map_err(|error| ConnectError::Refused(error.to_string()))?;
                    Reader::Sse(buffer)
                }
            };
            Ok((stream, reader))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    /// Reads frames until the connection ends (its ending) or the run stops (`None`, after
    /// sending Close 1000).
    async fn read(
        &mut self,
        stream: &mut TcpStream,
        reader: &mut Reader,
        stopped: &mut Pin<Box<WaitForCancellationFutureOwned>>,
    ) -> Option<Ending> {
        loop {
            // Bytes that came with the response head are parsed before the first read.
            let ending = match reader {
                Reader::Ws(buffer) => self.take_frames(stream, buffer).await,
                Reader::Sse(buffer) => self.take_messages(buffer),
            };
            if ending.is_some() {
                return ending;
            }
            let spare = match reader {
                Reader::Ws(buffer) => buffer.spare(),
                Reader::Sse(buffer) => buffer.spare(),
            };
            let read = tokio::select! {
                biased;
                () = stopped.as_mut() => None,
                read = stream.read(spare) => Some(read),
            };
            match read {
                None => {
                    // A stream client just goes; a WebSocket says goodbye first.
                    if let Reader::Ws(_) = reader {
                        self.send_control(stream, OPCODE_CLOSE, &NORMAL_CLOSURE.to_be_bytes())
                            .await
                            .ok();
                    }
                    return None;
                }
                Some(Ok(0)) => return Some(Ending::Eof),
                Some(Ok(count)) => match reader {
                    Reader::Ws(buffer) => buffer.filled(count),
                    Reader::Sse(buffer) => {
                        if buffer.filled(count).is_err() {
                            return Some(Ending::Protocol);
                        }
                    }
                },
                Some(Err(error)) => return Some(Ending::Io(error.kind())),
            }
        }
    }

    /// Handles every whole message of an event stream; an ending when the stream ended.
    fn take_messages(&mut self, buffer: &mut SseBuffer) -> Option<Ending> {
        let now_us = self.settings.started.elapsed().as_micros() as u64;
        let mut delivered = 0;
        let ending = loop {
            match buffer.next_message() {
                None => break buffer.ended().then_some(Ending::Eof),
                Some(Message::Event(data)) => {
                    if self.take_event(buffer.bytes(data), now_us) {
                        delivered += 1;
                    }
                }
                Some(Message::Named(name, data)) => match buffer.bytes(name) {
                    b"resume" => self.outcome.control_frames += 1,
                    // Counted under the close code a WebSocket client would have seen.
                    b"close" => {
                        let slow = memchr::memmem::find(buffer.bytes(data), b"slow consumer");
                        let code = if slow.is_some() { 1008 } else { 1001 };
                        break Some(Ending::ServerClose(Some(code)));
                    }
                    _ => self.outcome.unexpected_frames += 1,
                },
                // Keep-alive comments (the stream's pings) and the retry field.
                Some(Message::Other) => self.outcome.pings += 1,
            }
        };
        if delivered > 0 {
            self.outcome.last_delivery_us = now_us;
            self.shared
                .delivered
                .fetch_add(delivered, Ordering::Relaxed);
        }
        ending
    }

    /// Handles every complete frame in the buffer; an ending when one of them ended the
    /// connection.
    async fn take_frames(
        &mut self,
        stream: &mut TcpStream,
        buffer: &mut FrameBuffer,
    ) -> Option<Ending> {
        let now_us = self.settings.started.elapsed().as_micros() as u64;
        let mut delivered = 0;
        let ending = loop {
            let frame = match buffer.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break None,
                Err(_) => break Some(Ending::Protocol),
            };
            let payload = buffer.bytes(frame.payload);
            match frame.opcode {
                OPCODE_TEXT if frame.fin => {
                    if self.take_event(payload, now_us) {
                        delivered += 1;
                    }
                }
                OPCODE_PING => {
                    self.outcome.pings += 1;
                    let mut ping = [0u8; CONTROL_FRAME_CAPACITY];
                    let len = payload.len();
                    ping[..len].copy_from_slice(payload);
                    if let Err(error) = self.send_control(stream, OPCODE_PONG, &ping[..len]).await {
                        break Some(Ending::Io(error.kind()));
                    }
                }
                OPCODE_PONG => {}
                OPCODE_CLOSE => {
                    let code = close_code(payload);
                    let reply = code.unwrap_or(NORMAL_CLOSURE).to_be_bytes();
                    self.send_control(stream, OPCODE_CLOSE, &reply).await.ok();
                    break Some(Ending::ServerClose(code));
                }
                _ => self.outcome.unexpected_frames += 1,
            }
        };
        if delivered > 0 {
            self.outcome.last_delivery_us = now_us;
            self.shared
                .delivered
                .fetch_add(delivered, Ordering::Relaxed);
        }
        ending
    }

    /// Counts one text frame; true when it is a first delivery of one of this run's events.
    fn take_event(&mut self, payload: &[u8], now_us: u64) -> bool {
        let Some(stamp) = event_stamp(payload) else {
            if is_resume_control(payload) {
                self.outcome.control_frames += 1;
            } else {
                self.outcome.foreign_frames += 1;
            }
            return false;
        };
        if stamp.run != self.settings.run {
            self.outcome.foreign_frames += 1;
            return false;
        }
        self.last_event_id = Some(stamp.id);
        match self.outcome.received.insert(stamp.seq) {
            Insert::New => {
                let latency = now_us
                    .saturating_sub(stamp.sent_us)
                    .clamp(1, MAX_LATENCY_US);
                self.outcome
                    .latency_us
                    .get_or_insert_with(new_latency_histogram)
                    .saturating_record(latency);
                true
            }
            Insert::Duplicate => {
                self.outcome.duplicates += 1;
                false
            }
            Insert::OutOfRange => {
                self.outcome.foreign_frames += 1;
                false
            }
        }
    }

    async fn send_control(
        &mut self,
        stream: &mut TcpStream,
        opcode: u8,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mask = (self.next_random() as u32).to_le_bytes();
        let mut frame = [0u8; CONTROL_FRAME_CAPACITY];
        let len = masked_control_frame(opcode, payload, mask, &mut frame);
        stream.write_all(&frame[..len]).await
    }
}

/// An empty latency histogram in µs, from 1 µs to [`MAX_LATENCY_US`].
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, LATENCY_PRECISION)
        .expect("the latency histogram bounds are valid")
}

/// The upgrade request for `/ws` (with the filter, and `since` when resuming).
fn upgrade_request(settings: &ClientSettings, since: Option<u64>, key: &[u8; 16]) -> String {
    let mut path = settings.path.clone();
    if let Some(since) = since {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&format!("since={since}"));
    }
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        settings.target.authority,
        base64_key(key)
    )
}

/// The request for an event stream (with the filter, and `Last-Event-ID` when resuming, as a
/// browser's `EventSource` sends it).
fn stream_request(settings: &ClientSettings, since: Option<u64>) -> String {
    let resume = since
        .map(|since| format!("Last-Event-ID: {since}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{resume}\r\n",
        settings.path, settings.target.authority
    )
}

/// Standard base64 of a 16-byte key: 22 characters and `==`.
fn base64_key(key: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(24);
    for chunk in key.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let bits = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for index in 0..=chunk.len() {
            out.push(ALPHABET[((bits >> (18 - 6 * index)) & 0x3f) as usize] as char);
        }
    }
    out.push_str("==");
    out
}

/// Close endings counted by label, for reports.
pub fn count_endings<'a>(endings: impl Iterator<Item = &'a Ending>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for ending in endings {
        *counts.entry(ending.label()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_bytes_of_base64() {
        // RFC 6455's example key.
        assert_eq!(base64_key(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(base64_key(&[0xff; 16]), "/////////////////////w==");
    }

    #[test]
    fn resuming_requests_carry_since_after_the_filter() {
        let settings = ClientSettings {
            target: super::super::system::Target::parse("http://127.0.0.1:1").unwrap(),
            wire: Wire::Ws,
            path: "/ws?type=GAS".to_owned(),
            read_buffer: 1024,
            run: 1,
            started: Instant::now(),
            seq_bound: 10,
            reconnect: true,
        };
        let request = upgrade_request(&settings, Some(42), &[0; 16]);
        assert!(request.starts_with("GET /ws?type=GAS&since=42 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(request.ends_with("Sec-WebSocket-Version: 13\r\n\r\n"));
    }

    #[test]
    fn endings_are_counted_by_close_code() {
        let endings = [
            Ending::ServerClose(Some(1008)),
            Ending::ServerClose(Some(1008)),
            Ending::ServerClose(None),
            Ending::Eof,
        ];
        let counts = count_endings(endings.iter());
        assert_eq!(counts["1008"], 2);
        assert_eq!(counts["close without code"], 1);
        assert_eq!(counts["eof"], 1);
    }
}
