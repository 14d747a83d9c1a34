//! One WebSocket client's task: a reader and a writer over the upgraded connection.
//!
//! The reader ([`crate::reader`], which holds no buffer while the client is quiet) is never
//! raced against anything per frame: it runs on its own, telling the writer what it must send
//! (a pong, the close reply, a protocol-error close) through a one-slot signal (a `watch`: the
//! latest pong is enough, and the ending is the reader's last word), and it never ends the
//! connection itself. The writer owns every decision to end it. It drains the client's frame
//! queue, writing up to [`MAX_FRAMES_PER_WRITE`] queued frames with one vectored write and one
//! flush; the frames are the hub's shared bytes, written as they are. It also pings every
//! interval and closes a client silent for [`IDLE_INTERVALS`] intervals.
//!
//! Endings, and the close code the client sees:
//! - client Close → echoed (its status code), then the connection closes;
//! - slow consumer (the hub dropped the client) → 1008 "slow consumer";
//! - server shutdown → queued frames are flushed, then 1001 "server shutting down";
//! - silent for three ping intervals → 1001 "idle timeout";
//! - a client frame or fragmented message over [`MAX_CLIENT_MESSAGE_BYTES`] → 1009; invalid
//!   UTF-8, also across fragments → 1007; any other protocol error (an unmasked frame, a
//!   control frame over 125 bytes, a continuation with nothing to continue, a new message
//!   inside a fragmented one: [`crate::protocol`]) → 1002.
//!
//! A client Ping is answered with a Pong carrying its payload (RFC 6455 §5.5.2).
//!
//! A resuming client (`/ws?since=`) is first replayed what it missed (see [`Resume`]), then
//! sent one control frame `{"resume":{"since":N,"replayed":n,"complete":bool}}`, then live
//! frames, skipping any it was just replayed: no gap and no duplicate at the seam.
//!
//! Text and binary frames from clients are read and ignored: the stream is one-way, and
//! ignoring keeps clients that send keep-alive messages of their own working.
//!
//! A write that cannot finish (the client stopped reading) is bounded: by the idle limit
//! normally, and by [`CLOSE_GRACE`] once the client is being closed.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fastwebsockets::OpCode;
use fastwebsockets::upgrade::UpgradeFut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event::{Wire, put_length, text_frame};
use crate::hub::{Hub, HubEnding, Registration};
use crate::protocol::{self, MessageRules, Violation};
use crate::queue::FrameReceiver;
use crate::reader::{FrameReader, ReadError};
use crate::resume::{ReplayOutcome, ReplaySeam, Resume};

/// Largest frame a client may send; larger closes the connection with 1009.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;
/// Most queued frames written by one vectored write.
pub const MAX_FRAMES_PER_WRITE: usize = 64;
/// A client silent (no frame, no pong) for this many ping intervals is closed.
pub const IDLE_INTERVALS: u32 = 3;
/// Once a client is being closed, how long its write in progress and its Close frame may take.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a server-initiated close waits for the client's Close reply.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);

/// A server ping with an empty payload.
const PING_FRAME: [u8; 2] = [0x89, 0x00];
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PONG: u8 = 0xA;

/// What the reader asks the writer to do.
#[derive(Clone)]
enum Control {
    /// Answer a client ping.
    Pong(Bytes),
    /// The client sent Close with this status code (none if it gave none): reply and end.
    ClientClosed(Option<u16>),
    /// The client broke the protocol: close with this code and reason.
    Refuse(u16, &'static str),
    /// The connection is gone (EOF or an I/O error).
    Gone,
}

/// Why the writer stopped.
enum Ending {
    ClientClosed(Option<u16>),
    Refused(u16, &'static str),
    SlowConsumer,
    Shutdown,
    Idle,
    /// The connection failed, or a write could not finish in time.
    Broken,
}

/// The control frame that ends a replay.
fn resume_frame(outcome: &ReplayOutcome) -> Bytes {
    text_frame(format!(r#"{{"resume":{}}}"#, outcome.json()).as_bytes())
}

/// Serves an upgraded socket on a task `hub` tracks (so shutdown closes it with 1001, and
/// waits for it); `guard` (e.g. a per-address slot) is dropped when the socket ends.
pub fn spawn(
    hub: &Hub,
    upgrade: UpgradeFut,
    registration: Registration,
    resume: Option<Resume>,
    guard: impl Send + 'static,
) {
    let served = serve(upgrade, registration, resume, hub.settings().ping_interval);
    hub.spawn(async move {
        served.await;
        drop(guard);
    });
}

/// Serves one client from the completed upgrade until the connection ends.
async fn serve(
    upgrade: UpgradeFut,
    mut registration: Registration,
    resume: Option<Resume>,
    ping_interval: Duration,
) {
    let socket = match upgrade.await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::debug!(%error, "websocket upgrade did not complete");
            return;
        }
    };
    let (read, write) = tokio::io::split(socket.into_inner());
    let mut reader = FrameReader::new(read, MAX_CLIENT_MESSAGE_BYTES);

    let (control, control_signal) = watch::channel(None);
    let started = Instant::now();
    let last_heard_ms = AtomicU64::new(0);
    let reading = async {
        read_frames(&mut reader, &control, &last_heard_ms, started).await;
        // The writer decides when the connection ends.
        std::future::pending::<()>().await;
    };
    let mut writer = Writer {
        sink: write,
        control: control_signal,
        kick: registration.kick.clone(),
        ping_interval,
        last_heard_ms: &last_heard_ms,
        started,
        seam: ReplaySeam::default(),
    };
    let client = registration.id();
    let hub = registration.hub();
    let writing = async {
        // Boxed: only resuming clients replay, and inline its state would weigh on every
        // connection's task.
        if let Some(resume) = resume
            && Box::pin(writer.replay(resume, hub.stats())).await.is_err()
        {
            return;
        }
        writer.run(&mut registration).await;
    };
    tokio::select! {
        () = reading => {}
        () = writing => {}
    }
    tracing::debug!(client, "websocket client gone");
}

/// Reads client frames until Close, an error or EOF, forwarding what must be answered.
async fn read_frames<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    control: &watch::Sender<Option<Control>>,
    last_heard_ms: &AtomicU64,
    started: Instant,
) {
    let mut rules = MessageRules::new(MAX_CLIENT_MESSAGE_BYTES);
    let ending = loop {
        let frame = match reader.next_frame().await {
            Ok(frame) => frame,
            Err(ReadError::Gone) => break Control::Gone,
            Err(ReadError::Violation(violation)) => break refuse(violation),
        };
        last_heard_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match frame.opcode {
            OpCode::Ping => {
                // Under a ping flood, answering the latest ping is enough (RFC 6455 §5.5.3).
                control.send_replace(Some(Control::Pong(frame.payload.freeze())));
            }
            OpCode::Close => {
                break match protocol::close_code(&frame.payload) {
                    Ok(code) => Control::ClientClosed(code),
                    Err(violation) => refuse(violation),
                };
            }
            // Data, continuations and pongs: heard, nothing more to do unless they break
            // the rules of messages.
            _ => {
                if let Err(violation) = rules.check(&frame) {
                    break refuse(violation);
                }
            }
        }
    };
    control.send_replace(Some(ending));
}

fn refuse(violation: Violation) -> Control {
    Control::Refuse(violation.code, violation.reason)
}

/// The writing side of one client.
struct Writer<'a, W> {
    sink: W,
    control: watch::Receiver<Option<Control>>,
    /// The hub's one signal to go: slow consumer or shutdown ([`Registration::ending`]).
    kick: CancellationToken,
    ping_interval: Duration,
    last_heard_ms: &'a AtomicU64,
    started: Instant,
    /// What a resuming client was just replayed, whose live copies are skipped.
    seam: ReplaySeam,
}

impl<W: AsyncWrite + Unpin> Writer<'_, W> {
    /// Replays what a resuming client missed, then the control frame. Live frames queue up
    /// meanwhile (the client was registered first). A store that cannot answer makes an empty
    /// replay with `complete:false`: the client keeps its live feed and may resume again.
    async fn replay(&mut self, resume: Resume, stats: &crate::hub::HubStats) -> Result<(), ()> {
        let (events, outcome) = resume.replay(stats).await;
        let limit = self.ping_interval * IDLE_INTERVALS;
        let mut frames: Vec<Bytes> = Vec::with_capacity(MAX_FRAMES_PER_WRITE);
        for chunk in events.chunks(MAX_FRAMES_PER_WRITE) {
            frames.clear();
            frames.extend(
                chunk
                    .iter()
                    .map(|event| text_frame(&event.as_ref().encode())),
            );
            self.write_bounded(&frames, limit).await?;
        }
        self.seam = ReplaySeam::after(&events, &outcome);
        self.write_bounded(&[resume_frame(&outcome)], limit).await
    }

    /// Drops from `batch` the live frames of events just replayed.
    fn skip_replayed(&mut self, batch: &mut Vec<Bytes>) {
        self.seam.skip_replayed(Wire::WebSocket, batch);
    }

    async fn run(&mut self, registration: &mut Registration) {
        let idle_limit = self.ping_interval * IDLE_INTERVALS;
        // Allocated at the first frame to send: an idle client holds no batch.
        let mut batch: Vec<Bytes> = Vec::new();
        let mut ping =
            tokio::time::interval_at(Instant::now() + self.ping_interval, self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Waited on across iterations: registered with its token once, not once per wake-up.
        let kicked = self.kick.clone().cancelled_owned();
        tokio::pin!(kicked);
        let ending = loop {
            tokio::select! {
                biased;
                () = &mut kicked => match registration.ending() {
                    Some(HubEnding::Shutdown) => {
                        // Deliver what was already queued, then say goodbye.
                        break match self.flush_queued(&mut registration.frames, &mut batch).await {
                            Ok(()) => Ending::Shutdown,
                            Err(()) => Ending::Broken,
                        };
                    }
                    Some(HubEnding::SlowConsumer) | None => break Ending::SlowConsumer,
                },
                changed = self.control.changed() => match changed.ok().and_then(|()| self.control.borrow_and_update().clone()) {
                    Some(Control::Pong(payload)) => {
                        let frame = control_frame(OPCODE_PONG, &payload);
                        if self.write_bounded(&[frame], idle_limit).await.is_err() {
                            break Ending::Broken;
                        }
                    }
                    Some(Control::ClientClosed(code)) => break Ending::ClientClosed(code),
                    Some(Control::Refuse(code, reason)) => break Ending::Refused(code, reason),
                    Some(Control::Gone) | None => break Ending::Broken,
                },
                received = registration.frames.recv_many(&mut batch, MAX_FRAMES_PER_WRITE) => {
                    if received == 0 {
                        // The hub let go of this client: it was dropped as too slow.
                        break Ending::SlowConsumer;
                    }
                    self.skip_replayed(&mut batch);
                    let written = self.write_bounded(&batch, idle_limit).await;
                    batch.clear();
                    if written.is_err() {
                        break Ending::Broken;
                    }
                }
                _ = ping.tick() => {
                    let heard = Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed));
                    if self.started.elapsed().saturating_sub(heard) >= idle_limit {
                        break Ending::Idle;
                    }
                    let frame = Bytes::from_static(&PING_FRAME);
                    if self.write_bounded(&[frame], idle_limit).await.is_err() {
                        break Ending::Broken;
                    }
                }
            }
        };
        // Boxed for the same reason as the writes: it runs once, at the end.
        Box::pin(self.finish(ending)).await;
    }

    /// Writes every frame still queued (bounded by [`CLOSE_GRACE`] per write).
    async fn flush_queued(
        &mut self,
        frames: &mut FrameReceiver,
        batch: &mut Vec<Bytes>,
    ) -> Result<(), ()> {
        loop {
            while batch.len() < MAX_FRAMES_PER_WRITE {
                match frames.try_recv() {
                    Some(frame) => batch.push(frame),
                    None => break,
                }
            }
            if batch.is_empty() {
                return Ok(());
            }
            self.skip_replayed(batch);
            let written = self.write_bounded(batch, CLOSE_GRACE).await;
            batch.clear();
            written?;
        }
    }

    /// Sends the close frame the ending calls for, waits for the client's reply when the
    /// server started the close, and shuts the connection.
    async fn finish(&mut self, ending: Ending) {
        let (close, wait_for_reply) = match ending {
            Ending::ClientClosed(code) => (Some(close_frame(code, "")), false),
            Ending::Refused(code, reason) => (Some(close_frame(Some(code), reason)), true),
            Ending::SlowConsumer => (Some(close_frame(Some(1008), "slow consumer")), true),
            Ending::Shutdown => (Some(close_frame(Some(1001), "server shutting down")), true),
            Ending::Idle => (Some(close_frame(Some(1001), "idle timeout")), true),
            Ending::Broken => (None, false),
        };
        if let Some(close) = close {
            let sent = tokio::time::timeout(CLOSE_GRACE, write_frames(&mut self.sink, &[close]))
                .await
                .is_ok_and(|written| written.is_ok());
            if sent && wait_for_reply {
                let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
                    while self.control.changed().await.is_ok() {
                        let control = self.control.borrow_and_update().clone();
                        if matches!(control, Some(Control::ClientClosed(_) | Control::Gone)) {
                            return;
                        }
                    }
                })
                .await;
            }
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.sink.shutdown()).await;
    }

    /// Writes `frames` within `limit`; once the client is being closed (slow consumer or
    /// shutdown), within [`CLOSE_GRACE`] from then. A write is never abandoned half-way and
    /// then followed by another frame: an `Err` ends the connection.
    ///
    /// A client that keeps up has room in its socket buffer, so its frames usually go out at
    /// once: that write is made here, with no timer and no allocation. Only the rest of a write
    /// the socket could not take at once waits, under the deadline.
    async fn write_bounded(&mut self, frames: &[Bytes], limit: Duration) -> Result<(), ()> {
        let mut progress = WriteProgress::default();
        let at_once = std::future::poll_fn(|cx| {
            Poll::Ready(poll_write_frames(&mut self.sink, frames, &mut progress, cx))
        })
        .await;
        match at_once {
            Poll::Ready(written) => written.map_err(|_| ()),
            // Boxed: a waiting write's state (its timers) exists only while it waits,
            // instead of sizing every client's task, idle ones included.
            Poll::Pending => Box::pin(self.finish_within(frames, progress, limit)).await,
        }
    }

    /// Writes what is left of `frames` after `progress` within `limit` (see
    /// [`Writer::write_bounded`]).
    async fn finish_within(
        &mut self,
        frames: &[Bytes],
        mut progress: WriteProgress,
        limit: Duration,
    ) -> Result<(), ()> {
        let mut deadline = Instant::now() + limit;
        let closing = self.kick.cancelled();
        let sink = &mut self.sink;
        let write =
            std::future::poll_fn(|cx| poll_write_frames(&mut *sink, frames, &mut progress, cx));
        tokio::pin!(closing, write);
        let mut grace_started = false;
        loop {
            tokio::select! {
                written = &mut write => return written.map_err(|_| ()),
                () = &mut closing, if !grace_started => {
                    grace_started = true;
                    deadline = deadline.min(Instant::now() + CLOSE_GRACE);
                }
                () = tokio::time::sleep_until(deadline) => return Err(()),
            }
        }
    }
}

/// How far a write of frames got: the frames written whole, then the bytes written of the next.
#[derive(Debug, Default, Clone, Copy)]
struct WriteProgress {
    index: usize,
    offset: usize,
}

/// Writes whole frames with vectored writes, then flushes, resuming from `progress`.
fn poll_write_frames<W: AsyncWrite + Unpin>(
    sink: &mut W,
    frames: &[Bytes],
    progress: &mut WriteProgress,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    while progress.index < frames.len() {
        let mut slices = [IoSlice::new(&[]); MAX_FRAMES_PER_WRITE];
        let mut count = 0;
        for (position, frame) in frames[progress.index..]
            .iter()
            .take(MAX_FRAMES_PER_WRITE)
            .enumerate()
        {
            let start = if position == 0 { progress.offset } else { 0 };
            slices[count] = IoSlice::new(&frame[start..]);
            count += 1;
        }
        let mut written = ready!(Pin::new(&mut *sink).poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        while written > 0 {
            let left = frames[progress.index].len() - progress.offset;
            if written >= left {
                written -= left;
                progress.index += 1;
                progress.offset = 0;
            } else {
                progress.offset += written;
                written = 0;
            }
        }
    }
    Pin::new(sink).poll_flush(cx)
}

/// Writes whole frames with vectored writes, then flushes.
async fn write_frames<W: AsyncWrite + Unpin>(
    sink: &mut W,
    frames: &[Bytes],
) -> std::io::Result<()> {
    let mut progress = WriteProgress::default();
    std::future::poll_fn(|cx| poll_write_frames(sink, frames, &mut progress, cx)).await
}

/// An unmasked control frame (payload at most 125 bytes).
fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(125)];
    let mut frame = BytesMut::with_capacity(2 + payload.len());
    frame.put_u8(0x80 | opcode);
    put_length(&mut frame, payload.len());
    frame.put_slice(payload);
    frame.freeze()
}

/// A Close frame with `code` and `reason` (no code: an empty Close).
fn close_frame(code: Option<u16>, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
    }
    control_frame(OPCODE_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_frames_and_event_ids_read_back() {
        let frame = resume_frame(&ReplayOutcome {
            since: 17,
            replayed: 3,
            complete: false,
            from_log: true,
        });
        assert_eq!(
            &frame[2..],
            br#"{"resume":{"since":17,"replayed":3,"complete":false}}"#
        );
        let frame_event_id = |frame: &[u8]| Wire::WebSocket.event_id(frame);
        assert_eq!(frame_event_id(&frame), None);
        let short = text_frame(br#"{"id":42,"source":"s"}"#);
        assert_eq!(frame_event_id(&short), Some(42));
        let mut long = br#"{"id":9007199254740991,"source":""#.to_vec();
        long.extend(std::iter::repeat_n(b'x', 70_000));
        long.extend_from_slice(br#""}"#);
        assert_eq!(
            frame_event_id(&text_frame(&long)),
            Some(9_007_199_254_740_991)
        );
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let frame = close_frame(Some(1008), "slow consumer");
        assert_eq!(frame[0], 0x88);
        assert_eq!(frame[1] as usize, 2 + "slow consumer".len());
        assert_eq!(&frame[2..4], &1008u16.to_be_bytes());
        assert_eq!(&frame[4..], b"slow consumer");
        assert_eq!(&close_frame(None, "")[..], &[0x88, 0]);
    }

    #[tokio::test]
    async fn frames_are_written_whole_and_in_order_across_partial_writes() {
        let frames: Vec<Bytes> = (0..200u8)
            .map(|n| Bytes::from(vec![n; 1 + usize::from(n) * 7]))
            .collect();
        // A pipe far smaller than the frames forces partial writes.
        let (mut near, mut far) = tokio::io::duplex(97);
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut received)
                .await
                .unwrap();
            received
        });
        write_frames(&mut near, &frames).await.unwrap();
        drop(near);
        assert_eq!(reader.await.unwrap(), expected);
    }
}
