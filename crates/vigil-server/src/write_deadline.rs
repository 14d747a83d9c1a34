//! A bound on how long a connection may take to take what Vigil writes to it.
//!
//! A client that sends requests and never reads the answers (pipelined GETs into a small
//! receive window) would hold its connection, and one of `VIGIL_MAX_CONNECTIONS` slots, for as
//! long as it likes: hyper waits for the socket to accept the response. [`WriteDeadline`] sits
//! between hyper and the socket: from the moment a write cannot be taken at once, everything
//! written so far must be taken (a flush completes) within the limit, or the connection fails
//! and closes. A client that reads a few bytes now and then does not reset the clock; one
//! that keeps up never starts it. What a connection may have queued meanwhile is hyper's write
//! buffer and the socket's send buffer, both bounded.
//!
//! The same bound applies to upgraded WebSocket connections, beneath the hub's own
//! slow-consumer policy (which closes a client whose queue fills first).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream whose writes must drain within `limit` once they stall.
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Fires `limit` after the first write that had to wait, until a flush completes. Made
    /// at the first stall: most connections never stall, and an idle WebSocket keeps none.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// The inner stream could not take the write: start the clock if it is not running, and
    /// fail once it has run out.
    fn stalled<T>(&mut self, context: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = Instant::now() + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(context) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not take the response in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(context, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(context, buffer) {
            Poll::Pending => this.stalled(context),
            done => done,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(context, buffers) {
            Poll::Pending => this.stalled(context),
            done => done,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(context) {
            Poll::Ready(Ok(())) => {
                // Everything written so far is taken: the clock stops.
                this.armed = false;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.stalled(context),
            failed => failed,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(context) {
            Poll::Pending => this.stalled(context),
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_takes_fails_at_the_limit_and_one_that_drains_does_not() {
        // A pipe whose reader never reads: 64 bytes fit, then writes wait.
        let (_reader, writer) = tokio::io::duplex(64);
        let mut stream = WriteDeadline::new(writer, Duration::from_secs(5));
        let started = Instant::now();
        let error = stream.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        // A reader that keeps up: no stall lasts, nothing fails.
        let (mut reader, writer) = tokio::io::duplex(64);
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut sink)
                .await
                .unwrap();
            sink.len()
        });
        let mut stream = WriteDeadline::new(writer, Duration::from_secs(5));
        for _ in 0..100 {
            stream.write_all(&[1u8; 1024]).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        stream.shutdown().await.unwrap();
        drop(stream);
        assert_eq!(drain.await.unwrap(), 100 * 1024);
    }
}
