//! One Server-Sent Events client (`GET /api/events/stream`): the stream of chunks that is its
//! response body.
//!
//! An SSE client is a hub client like a WebSocket one ([`Wire::Sse`]): same filters, same
//! bounded queue and slow-consumer policy, same resume. What differs is the framing and who
//! writes. The server's HTTP layer writes the body, pulling chunks from [`SseStream`] as the
//! connection takes them; a client that stops reading stops the pulling, its queue fills and
//! the hub drops it, and the connection's write deadline closes the socket.
//!
//! The stream, in order:
//! - `retry: <ms>`: how soon a browser's `EventSource` reconnects;
//! - for a resuming client (`Last-Event-ID` or `?since=`), the events it missed, then
//!   `event: resume` with `{"since":N,"replayed":n,"complete":bool}`;
//! - every matching event as `id: <id>` and `data: <the stored event JSON>`, skipping any it
//!   was just replayed; a comment (`: keep-alive`) at a ping interval's tick when nothing else
//!   went out since the last tick;
//! - at the end, `event: close` with `{"reason":"slow consumer"}` or
//!   `{"reason":"server shutting down"}` (events queued before a shutdown are sent first).
//!
//! Events carry ids and nothing else does, so the `Last-Event-ID` a browser sends when it
//! reconnects is always the last event it got.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use vigil_store::StoredEvent;

use crate::event::{Wire, sse_message, sse_named};
use crate::hub::{Hub, HubEnding, Registration};
use crate::resume::{ReplayOutcome, ReplaySeam, Resume};

/// How long a browser waits before reconnecting after the stream ends (the `retry:` field).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Most events in one chunk of the body.
const EVENTS_PER_CHUNK: usize = 64;
/// The comment sent after a ping interval without anything else.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

type Replaying = Pin<Box<dyn Future<Output = (Vec<StoredEvent>, ReplayOutcome)> + Send>>;

/// The body of one SSE response: poll it with [`SseStream::poll_chunk`].
pub struct SseStream {
    registration: Registration,
    /// The replay in progress, for a resuming client.
    replaying: Option<Replaying>,
    seam: ReplaySeam,
    /// Chunks ready to hand out, in order.
    ready: VecDeque<Bytes>,
    /// Frames taken from the queue (allocated at the first: an idle client holds none).
    batch: Vec<Bytes>,
    /// Fires every ping interval; the keep-alive goes out if nothing else did since the last.
    keep_alive: Pin<Box<Sleep>>,
    keep_alive_every: Duration,
    /// Nothing was sent since the keep-alive timer last fired.
    quiet: bool,
    /// The hub's one signal to go: slow consumer or shutdown (`Registration::ending`).
    kicked: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set once the closing message is queued: nothing follows it.
    ended: bool,
    /// Held while the stream lives (e.g. the client address's connection slot).
    _guard: Box<dyn Send + Sync>,
}

impl SseStream {
    /// The stream of the client `registration` (with `resume` when it resumes); `guard` is
    /// dropped when the stream is.
    pub fn new(
        hub: &Hub,
        registration: Registration,
        resume: Option<Resume>,
        guard: impl Send + Sync + 'static,
    ) -> SseStream {
        let keep_alive_every = hub.settings().ping_interval;
        let replaying = resume.map(|resume| {
            let hub = hub.clone();
            Box::pin(async move { resume.replay(hub.stats()).await }) as Replaying
        });
        let retry = format!("retry: {}\n\n", RECONNECT_AFTER.as_millis());
        SseStream {
            kicked: Box::pin(registration.kick.clone().cancelled_owned()),
            registration,
            replaying,
            seam: ReplaySeam::default(),
            ready: VecDeque::from([Bytes::from(retry)]),
            batch: Vec::new(),
            keep_alive: Box::pin(tokio::time::sleep(keep_alive_every)),
            keep_alive_every,
            quiet: true,
            ended: false,
            _guard: Box::new(guard),
        }
    }

    /// The next chunk of the body; `None` once the stream has ended.
    pub fn poll_chunk(&mut self, context: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Poll::Ready(Some(chunk));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            if self.kicked.as_mut().poll(context).is_ready() {
                if self.registration.ending() != Some(HubEnding::Shutdown) {
                    self.close("slow consumer");
                    continue;
                }
                if self.replaying.take().is_none() {
                    // Deliver what was already queued, then say goodbye.
                    while let Some(frame) = self.registration.frames.try_recv() {
                        self.batch.push(frame);
                    }
                    self.queue_batch();
                }
                self.close("server shutting down");
                continue;
            }
            if let Some(replaying) = &mut self.replaying {
                let (events, outcome) = std::task::ready!(replaying.as_mut().poll(context));
                self.replaying = None;
                self.queue_replay(&events, &outcome);
                continue;
            }
            match self.registration.frames.poll_recv_many(
                context,
                &mut self.batch,
                EVENTS_PER_CHUNK,
            ) {
                // The hub let go of this client: it was dropped as too slow.
                Poll::Ready(0) => self.close("slow consumer"),
                Poll::Ready(_) => {
                    self.seam.skip_replayed(Wire::Sse, &mut self.batch);
                    self.queue_batch();
                }
                Poll::Pending => {
                    std::task::ready!(self.keep_alive.as_mut().poll(context));
                    if self.quiet {
                        self.ready.push_back(Bytes::from_static(KEEP_ALIVE));
                    }
                    self.quiet = true;
                    let next = Instant::now() + self.keep_alive_every;
                    self.keep_alive.as_mut().reset(next);
                }
            }
        }
    }

    /// Queues the frames taken from the client's queue as one chunk.
    fn queue_batch(&mut self) {
        let chunk = match self.batch.len() {
            0 => return,
            1 => self.batch.pop().unwrap_or_default(),
            _ => {
                let length = self.batch.iter().map(Bytes::len).sum();
                let mut chunk = BytesMut::with_capacity(length);
                for frame in self.batch.drain(..) {
                    chunk.extend_from_slice(&frame);
                }
                chunk.freeze()
            }
        };
        self.ready.push_back(chunk);
        self.sent_something();
    }

    /// Queues a replay and the `resume` message that ends it.
    fn queue_replay(&mut self, events: &[StoredEvent], outcome: &ReplayOutcome) {
        for group in events.chunks(EVENTS_PER_CHUNK) {
            let mut chunk = BytesMut::new();
            for event in group {
                chunk.extend_from_slice(&sse_message(event.id, &event.as_ref().encode()));
            }
            self.ready.push_back(chunk.freeze());
        }
        self.ready.push_back(sse_named("resume", &outcome.json()));
        self.seam = ReplaySeam::after(events, outcome);
        self.sent_something();
    }

    /// Queues the closing message; the stream ends after it.
    fn close(&mut self, reason: &str) {
        self.ready
            .push_back(sse_named("close", &format!(r#"{{"reason":"{reason}"}}"#)));
        self.ended = true;
    }

    /// Something is on its way: no keep-alive is due at the next tick. (A flag, not a timer
    /// reset per chunk: resetting touches the runtime's timer wheel, once per chunk per client.)
    fn sent_something(&mut self) {
        self.quiet = false;
    }
}
