//! Reading a client's frames with no buffer held between them.
//!
//! Vigil's stream is one-way: a client sends a pong every ping interval, maybe a keep-alive
//! of its own, and a Close. A frame reader that keeps a read buffer per connection (8 KiB in
//! fastwebsockets') makes that buffer most of what an idle connection costs. This one keeps
//! bytes only while a frame is incomplete: it reads what the socket has, returns each whole
//! frame, and gives the allocation back once nothing is left over. An idle client holds no
//! buffer at all; one that is sending holds at most one frame (under
//! [`crate::client::MAX_CLIENT_MESSAGE_BYTES`]) and its next header.
//!
//! It checks the framing itself (RFC 6455 §5.2): reserved bits, known opcodes, the client
//! mask (§5.1), unfragmented control frames of at most 125 bytes, and the frame size limit.
//! What spans frames (fragmented messages, UTF-8, Close payloads) is [`crate::protocol`]'s.

use bytes::{Buf, BytesMut};
use fastwebsockets::OpCode;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::{MAX_CONTROL_PAYLOAD, Violation};

/// The least room offered to one read: a few small frames, not a page per connection.
const MIN_READ: usize = 256;

/// One unmasked client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: BytesMut,
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The connection ended: EOF or an I/O error.
    Gone,
    /// The client broke the framing rules: close with this.
    Violation(Violation),
}

/// Reads client frames from `inner`.
pub struct FrameReader<R> {
    inner: R,
    /// Bytes read and not yet returned as a frame; unallocated when empty.
    pending: BytesMut,
    /// Largest frame payload accepted; this size or larger is [`Violation::TOO_BIG`].
    max_payload: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_payload: usize) -> Self {
        FrameReader {
            inner,
            pending: BytesMut::new(),
            max_payload,
        }
    }

    /// The next whole frame.
    ///
    /// Not cancel-safe only in the sense that a frame half-read stays in the reader: calling
    /// again continues it.
    pub async fn next_frame(&mut self) -> Result<ClientFrame, ReadError> {
        loop {
            let wanted = match parse(&mut self.pending, self.max_payload)? {
                Parsed::Frame(frame) => {
                    if self.pending.is_empty() {
                        // Give the allocation back: an idle connection keeps none.
                        self.pending = BytesMut::new();
                    }
                    return Ok(frame);
                }
                Parsed::Needs(total) => total,
            };
            let room = (wanted - self.pending.len()).max(MIN_READ);
            self.pending.reserve(room);
            match self.inner.read_buf(&mut self.pending).await {
                Ok(0) | Err(_) => return Err(ReadError::Gone),
                Ok(_) => {}
            }
        }
    }
}

/// What the buffered bytes hold.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Frame(ClientFrame),
    /// Not a whole frame yet: this many bytes, at least, make the next step.
    Needs(usize),
}

/// Takes the first frame off `pending` if it is whole, checking its header as soon as the
/// header is.
fn parse(pending: &mut BytesMut, max_payload: usize) -> Result<Parsed, ReadError> {
    let violation = |violation| Err(ReadError::Violation(violation));
    if pending.len() < 2 {
        return Ok(Parsed::Needs(2));
    }
    let (first, second) = (pending[0], pending[1]);
    if first & 0x70 != 0 {
        return violation(Violation::RESERVED_BITS);
    }
    let Ok(opcode) = OpCode::try_from(first & 0x0F) else {
        return violation(Violation::UNKNOWN_OPCODE);
    };
    if second & 0x80 == 0 {
        return violation(Violation::UNMASKED);
    }
    let fin = first & 0x80 != 0;
    let length_code = second & 0x7F;
    let extended = match length_code {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + extended + 4;
    if pending.len() < header_len {
        return Ok(Parsed::Needs(header_len));
    }
    let length = match extended {
        0 => u64::from(length_code),
        _ => pending[2..2 + extended]
            .iter()
            .fold(0u64, |total, byte| (total << 8) | u64::from(*byte)),
    };
    let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if control && !fin {
        return violation(Violation::FRAGMENTED_CONTROL);
    }
    if control && length > MAX_CONTROL_PAYLOAD as u64 {
        return violation(Violation::CONTROL_TOO_LONG);
    }
    if length >= max_payload as u64 {
        return violation(Violation::TOO_BIG);
    }
    // Below max_payload, so it fits a usize.
    let total = header_len + length as usize;
    if pending.len() < total {
        return Ok(Parsed::Needs(total));
    }
    let mask: [u8; 4] = pending[header_len - 4..header_len]
        .try_into()
        .expect("four mask bytes");
    pending.advance(header_len);
    let mut payload = pending.split_to(length as usize);
    for (index, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[index % 4];
    }
    Ok(Parsed::Frame(ClientFrame {
        fin,
        opcode,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: `first` is FIN/RSV/opcode, the payload masked with a fixed key.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut bytes = vec![first];
        match payload.len() {
            length @ 0..=125 => bytes.push(0x80 | length as u8),
            length @ 126..=0xFFFF => {
                bytes.push(0x80 | 126);
                bytes.extend((length as u16).to_be_bytes());
            }
            length => {
                bytes.push(0x80 | 127);
                bytes.extend((length as u64).to_be_bytes());
            }
        }
        bytes.extend(mask);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        bytes
    }

    fn read_all(bytes: &[u8], max_payload: usize) -> Vec<Result<ClientFrame, ReadError>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut reader = FrameReader::new(bytes, max_payload);
            let mut out = Vec::new();
            loop {
                let next = reader.next_frame().await;
                let end = next.is_err();
                out.push(next);
                if end {
                    return out;
                }
            }
        })
    }

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Result<ClientFrame, ReadError> {
        Ok(ClientFrame {
            fin,
            opcode,
            payload: BytesMut::from(payload),
        })
    }

    #[test]
    fn frames_are_unmasked_whatever_their_length_encoding() {
        let long = vec![b'x'; 300];
        let mut bytes = masked(0x81, b"hello");
        bytes.extend(masked(0x02, &long));
        bytes.extend(masked(0x80, b""));
        bytes.extend(masked(0x89, b"ping"));
        assert_eq!(
            read_all(&bytes, 1 << 20),
            vec![
                frame(true, OpCode::Text, b"hello"),
                frame(false, OpCode::Binary, &long),
                frame(true, OpCode::Continuation, b""),
                frame(true, OpCode::Ping, b"ping"),
                Err(ReadError::Gone),
            ]
        );
        let huge = vec![7u8; 70_000];
        assert_eq!(
            read_all(&masked(0x82, &huge), 1 << 20)[0],
            frame(true, OpCode::Binary, &huge)
        );
    }

    #[test]
    fn a_frame_split_anywhere_is_read_whole_and_the_buffer_is_given_back() {
        let bytes = [masked(0x81, b"one"), masked(0x8A, b"")].concat();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // A byte at a time.
            let (mut client, server) = tokio::io::duplex(1);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                client.write_all(&bytes).await.unwrap();
            });
            let mut reader = FrameReader::new(server, 1024);
            assert_eq!(reader.next_frame().await, frame(true, OpCode::Text, b"one"));
            assert_eq!(reader.next_frame().await, frame(true, OpCode::Pong, b""));
            assert_eq!(reader.pending.capacity(), 0, "nothing held between frames");
            writer.await.unwrap();
            assert_eq!(reader.next_frame().await, Err(ReadError::Gone));
        });
    }

    #[test]
    fn framing_violations_are_named() {
        let cases: [(Vec<u8>, Violation); 6] = [
            (masked(0xC1, b"x"), Violation::RESERVED_BITS),
            (masked(0x83, b"x"), Violation::UNKNOWN_OPCODE),
            (vec![0x81, 0x01, b'x'], Violation::UNMASKED),
            (masked(0x09, b"x"), Violation::FRAGMENTED_CONTROL),
            (masked(0x88, &[b'x'; 126]), Violation::CONTROL_TOO_LONG),
            (masked(0x82, &[0; 64]), Violation::TOO_BIG),
        ];
        for (bytes, violation) in cases {
            assert_eq!(
                read_all(&bytes, 64),
                vec![Err(ReadError::Violation(violation))],
                "{violation:?}"
            );
        }
        // A header is judged as soon as it is whole, before its payload arrives.
        let header_only = &masked(0x82, &[0; 100])[..8];
        assert_eq!(
            read_all(header_only, 64),
            vec![Err(ReadError::Violation(Violation::TOO_BIG))]
        );
    }
}
