//! Reading a Server-Sent Events response (`GET /api/events/stream`) as the measurer reads
//! WebSocket frames: without allocating per message. The body arrives with HTTP/1.1 chunked
//! transfer encoding; [`SseBuffer`] takes the socket's bytes, removes the chunk framing into a
//! second buffer, and hands out whole messages (the blocks between blank lines) as ranges of
//! it, each classified by its first field.

use std::ops::Range;

/// What one message of the stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An event: the range of its `data:` JSON.
    Event(Range<usize>),
    /// A named message (`resume`, `close`): its name's and its data's ranges.
    Named(Range<usize>, Range<usize>),
    /// A comment (keep-alive) or a field-only message (`retry:`).
    Other,
}

/// The body's chunk framing is broken (a chunk size that is not hexadecimal, or data not
/// followed by CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked transfer encoding")]
pub struct MalformedChunk;

/// A chunked event stream being read.
pub struct SseBuffer {
    /// Bytes as read from the socket, `raw_start..raw_end` not yet de-chunked.
    raw: Vec<u8>,
    raw_start: usize,
    raw_end: usize,
    /// Bytes of the current chunk still to come; with `None`, a size line is next.
    chunk_left: Option<usize>,
    /// The CRLF that ends a chunk's data is next.
    chunk_crlf: bool,
    /// The last (empty) chunk arrived.
    ended: bool,
    /// The stream's text, `body_start..` not yet handed out.
    body: Vec<u8>,
    body_start: usize,
}

impl SseBuffer {
    pub fn new(read_buffer: usize) -> SseBuffer {
        SseBuffer {
            raw: vec![0; read_buffer.max(256)],
            raw_start: 0,
            raw_end: 0,
            chunk_left: None,
            chunk_crlf: false,
            ended: false,
            body: Vec::with_capacity(read_buffer.max(256)),
            body_start: 0,
        }
    }

    /// Where the next read goes.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.raw_end == self.raw.len() {
            if self.raw_start > 0 {
                self.raw.copy_within(self.raw_start..self.raw_end, 0);
                self.raw_end -= self.raw_start;
                self.raw_start = 0;
            } else {
                let grown = self.raw.len() * 2;
                self.raw.resize(grown, 0);
            }
        }
        &mut self.raw[self.raw_end..]
    }

    /// `count` bytes were read into [`SseBuffer::spare`].
    pub fn filled(&mut self, count: usize) -> Result<(), MalformedChunk> {
        self.raw_end += count;
        self.dechunk()
    }

    /// Takes bytes already read (those that came with the response head).
    pub fn extend(&mut self, bytes: &[u8]) -> Result<(), MalformedChunk> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = self.spare();
            let take = spare.len().min(rest.len());
            spare[..take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.filled(take)?;
        }
        Ok(())
    }

    /// Whether the stream's last chunk arrived.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn dechunk(&mut self) -> Result<(), MalformedChunk> {
        while self.raw_start < self.raw_end && !self.ended {
            let available = &self.raw[self.raw_start..self.raw_end];
            if self.chunk_crlf {
                if available.len() < 2 {
                    return Ok(());
                }
                if &available[..2] != b"\r\n" {
                    return Err(MalformedChunk);
                }
                self.raw_start += 2;
                self.chunk_crlf = false;
                continue;
            }
            match self.chunk_left {
                Some(left) => {
                    let take = left.min(available.len());
                    self.body.extend_from_slice(&available[..take]);
                    self.raw_start += take;
                    if take == left {
                        self.chunk_left = None;
                        self.chunk_crlf = true;
                    } else {
                        self.chunk_left = Some(left - take);
                    }
                }
                None => {
                    let Some(line_end) = memchr::memmem::find(available, b"\r\n") else {
                        return if available.len() > 64 {
                            Err(MalformedChunk)
                        } else {
                            Ok(())
                        };
                    };
                    let line = &available[..line_end];
                    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|text| usize::from_str_radix(text.trim(), 16).ok())
                        .ok_or(MalformedChunk)?;
                    self.raw_start += line_end + 2;
                    if size == 0 {
                        self.ended = true;
                    } else {
                        self.chunk_left = Some(size);
                    }
                }
            }
        }
        if self.raw_start == self.raw_end {
            self.raw_start = 0;
            self.raw_end = 0;
        }
        Ok(())
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Option<Message> {
        if self.body_start > 0 && self.body_start * 2 >= self.body.len() {
            self.body.drain(..self.body_start);
            self.body_start = 0;
        }
        let start = self.body_start;
        let end = start + memchr::memmem::find(&self.body[start..], b"\n\n")?;
        self.body_start = end + 2;
        let block = &self.body[start..end];
        let field = |name: &[u8]| -> Option<Range<usize>> {
            let mut at = 0;
            for line in block.split(|&b| b == b'\n') {
                if let Some(value) = line.strip_prefix(name) {
                    let from = start + at + name.len();
                    return Some(from..from + value.len());
                }
                at += line.len() + 1;
            }
            None
        };
        Some(match (field(b"event: "), field(b"data: ")) {
            (Some(name), Some(data)) => Message::Named(name, data),
            (None, Some(data)) => Message::Event(data),
            _ => Message::Other,
        })
    }

    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.body[range]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
        }
        out
    }

    #[test]
    fn messages_are_read_across_chunks_and_reads_of_any_size() {
        let stream = chunked(&[
            "retry: 1000\n\n",
            "id: 7\ndata: {\"id\":7}\n\nid: 8\nda",
            "ta: {\"id\":8}\n\n: keep-alive\n\nevent: resume\ndata: {\"since\":1}\n\n",
        ]);
        let mut wire = stream.clone();
        wire.extend_from_slice(b"0\r\n\r\n");
        for step in [1, 3, 7, 64, 4096] {
            let mut buffer = SseBuffer::new(16);
            let mut seen = Vec::new();
            for piece in wire.chunks(step) {
                buffer.extend(piece).unwrap();
                while let Some(message) = buffer.next_message() {
                    seen.push(match message {
                        Message::Event(data) => {
                            format!("event {}", String::from_utf8_lossy(buffer.bytes(data)))
                        }
                        Message::Named(name, data) => format!(
                            "{} {}",
                            String::from_utf8_lossy(buffer.bytes(name)),
                            String::from_utf8_lossy(buffer.bytes(data))
                        ),
                        Message::Other => "other".to_owned(),
                    });
                }
            }
            assert!(buffer.ended(), "step {step}");
            assert_eq!(
                seen,
                [
                    "other",
                    "event {\"id\":7}",
                    "event {\"id\":8}",
                    "other",
                    "resume {\"since\":1}"
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_malformed_chunk_size_is_an_error() {
        let mut buffer = SseBuffer::new(64);
        assert!(buffer.extend(b"zz\r\nabc\r\n").is_err());
    }
}
