//! A client's frame queue: bounded, filled by the hub, drained by the client's socket task (or
//! its SSE stream).
//!
//! Every frame of every delivery passes through one of these, so it is built for that one
//! shape instead of being a general channel:
//! - **One lock per run and client.** The hub queues all of a run's frames for a client under
//!   one lock, and the task takes up to a write's worth under one lock. A general channel pays
//!   per frame on both sides (tokio's bounded `mpsc`: a semaphore permit, a slot and a wake-up
//!   check to send; a slot and a permit released under the semaphore's lock to receive), and
//!   both sides touch the same cache lines from different workers.
//! - **One wake-up per wait.** The task's waker is taken when it is woken, so a run of frames
//!   queued while the task is already awake costs no wake-up at all.
//! - **Nothing held while idle.** The frames live in a `VecDeque` that allocates at the first
//!   frame (tokio's `mpsc` allocates a block of 32 slots when it is created): an idle client
//!   holds the queue's small header only, and one that emptied a burst gives its slots back.
//!
//! Either side going away is seen by the other: the hub dropping its sender (the client left
//! the hub) makes the receiver return 0 once it has taken what was queued; a receiver dropped
//! makes every later push return [`Pushed::Closed`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// Slots an emptied queue keeps for the next frames: a busy client's usual backlog. More were
/// grown by a burst, and are let go.
const KEPT_SLOTS: usize = 64;

/// A new queue holding at most `capacity` frames (at least one).
pub(crate) fn frame_queue(capacity: usize) -> (FrameSender, FrameReceiver) {
    let shared = Arc::new(Shared {
        capacity: capacity.max(1),
        state: Mutex::new(State {
            frames: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
            waiting: None,
        }),
    });
    (FrameSender(shared.clone()), FrameReceiver(shared))
}

struct Shared {
    capacity: usize,
    state: Mutex<State>,
}

struct State {
    frames: VecDeque<Bytes>,
    sender_gone: bool,
    receiver_gone: bool,
    /// The receiver's waker while it waits for a frame; taken by the push that wakes it.
    waiting: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the queue is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Every frame was queued; this many.
    All(usize),
    /// The queue filled after this many frames; the rest were not queued.
    Full(usize),
    /// The receiver is gone; nothing was queued.
    Closed,
}

/// The hub's side of a client's queue.
pub(crate) struct FrameSender(Arc<Shared>);

impl FrameSender {
    /// Queues `frames` in order, up to the queue's capacity, and wakes the receiver if it waits.
    pub(crate) fn push(&self, frames: impl IntoIterator<Item = Bytes>) -> Pushed {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Pushed::Closed;
        }
        let mut queued = 0;
        let mut full = false;
        for frame in frames {
            if state.frames.len() >= self.0.capacity {
                full = true;
                break;
            }
            state.frames.push_back(frame);
            queued += 1;
        }
        let wake = if queued > 0 {
            state.waiting.take()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
        if full {
            Pushed::Full(queued)
        } else {
            Pushed::All(queued)
        }
    }

    /// Free slots in the queue now.
    pub(crate) fn room(&self) -> usize {
        self.0.capacity.saturating_sub(self.0.lock().frames.len())
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.sender_gone = true;
        let waiting = state.waiting.take();
        drop(state);
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

/// The client's side of its queue.
pub(crate) struct FrameReceiver(Arc<Shared>);

impl FrameReceiver {
    /// Moves up to `limit` queued frames into `buffer`, in order: their number, or 0 once the
    /// sender is gone and nothing is left. Pending (and woken by the next push) while the
    /// queue is empty.
    pub(crate) fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut Vec<Bytes>,
        limit: usize,
    ) -> Poll<usize> {
        let mut state = self.0.lock();
        let taken = state.frames.len().min(limit);
        if taken > 0 {
            buffer.extend(state.frames.drain(..taken));
            if state.frames.is_empty() && state.frames.capacity() > KEPT_SLOTS {
                // A burst grew it: give the memory back rather than hold a full queue's worth
                // for every client that once had a backlog.
                state.frames = VecDeque::new();
            }
            return Poll::Ready(taken);
        }
        if state.sender_gone {
            return Poll::Ready(0);
        }
        match &mut state.waiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waiting => *waiting = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// [`FrameReceiver::poll_recv_many`] as a future.
    pub(crate) async fn recv_many(&mut self, buffer: &mut Vec<Bytes>, limit: usize) -> usize {
        std::future::poll_fn(|cx| self.poll_recv_many(cx, buffer, limit)).await
    }

    /// The next queued frame, if there is one, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Bytes> {
        self.0.lock().frames.pop_front()
    }
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        // The frames are the hub's shared bytes: let them go now, not with the sender.
        state.frames = VecDeque::new();
        state.waiting = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn frames_come_out_in_order_up_to_the_limit_and_a_full_queue_refuses_the_rest() {
        let (sender, mut receiver) = frame_queue(3);
        assert_eq!(sender.push([frame(1), frame(2)]), Pushed::All(2));
        assert_eq!(sender.push([frame(3), frame(4), frame(5)]), Pushed::Full(1));
        assert_eq!(sender.room(), 0);
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut buffer = Vec::new();
        assert_eq!(
            receiver.poll_recv_many(&mut cx, &mut buffer, 2),
            Poll::Ready(2)
        );
        assert_eq!(sender.room(), 2);
        assert_eq!(receiver.try_recv(), Some(frame(3)));
        assert_eq!(receiver.try_recv(), None);
        assert_eq!(buffer, vec![frame(1), frame(2)]);
    }

    #[test]
    fn a_waiting_receiver_is_woken_once_by_the_pushes_that_follow() {
        let (sender, mut receiver) = frame_queue(8);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut buffer = Vec::new();
        assert!(
            receiver
                .poll_recv_many(&mut cx, &mut buffer, 8)
                .is_pending()
        );
        assert_eq!(sender.push([frame(1)]), Pushed::All(1));
        assert_eq!(sender.push([frame(2)]), Pushed::All(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            receiver.poll_recv_many(&mut cx, &mut buffer, 8),
            Poll::Ready(2)
        );
        // An empty push wakes nobody.
        assert!(
            receiver
                .poll_recv_many(&mut cx, &mut buffer, 8)
                .is_pending()
        );
        assert_eq!(sender.push(std::iter::empty()), Pushed::All(0));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_receiver_drains_what_is_left_then_sees_the_sender_gone() {
        let (sender, mut receiver) = frame_queue(8);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut buffer = Vec::new();
        assert_eq!(sender.push([frame(1)]), Pushed::All(1));
        drop(sender);
        assert_eq!(
            receiver.poll_recv_many(&mut cx, &mut buffer, 8),
            Poll::Ready(1)
        );
        assert_eq!(
            receiver.poll_recv_many(&mut cx, &mut buffer, 8),
            Poll::Ready(0)
        );

        // A receiver waiting when the sender goes is woken.
        let (sender, mut receiver) = frame_queue(8);
        assert!(
            receiver
                .poll_recv_many(&mut cx, &mut buffer, 8)
                .is_pending()
        );
        drop(sender);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            receiver.poll_recv_many(&mut cx, &mut buffer, 8),
            Poll::Ready(0)
        );
    }

    #[test]
    fn pushes_after_the_receiver_went_are_refused() {
        let (sender, receiver) = frame_queue(8);
        drop(receiver);
        assert_eq!(sender.push([frame(1)]), Pushed::Closed);
    }
}
