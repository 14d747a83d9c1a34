//! The body of every response: a complete buffer, or an event stream that lasts as long as its
//! client (`GET /api/events/stream`).
//!
//! One type for both keeps the service's signature simple and the usual path as it was: a
//! buffered body still tells hyper its exact length (so it sends `Content-Length`), and only
//! a stream is sent chunked.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};
use vigil_realtime::sse::SseStream;

/// A response body.
pub enum Body {
    /// The whole body, known up front.
    Full(Full<Bytes>),
    /// Server-Sent Events, until the stream ends or the client goes.
    Events(Box<SseStream>),
}

impl Body {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body::Full(Full::new(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body::full(Bytes::new())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(full) => Pin::new(full).poll_frame(context),
            Body::Events(stream) => stream
                .poll_chunk(context)
                .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::Events(_) => SizeHint::default(),
        }
    }
}
