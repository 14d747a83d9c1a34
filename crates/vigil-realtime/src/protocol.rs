//! The RFC 6455 rules for client frames that fastwebsockets leaves to its caller.
//!
//! fastwebsockets checks reserved bits, fragmented control frames, the size of a Ping and the
//! UTF-8 of a whole text frame. It unmasks client frames without saying whether they were
//! masked, and it does not follow messages across fragments when its reader is used without
//! the fragment collector (which would buffer whole messages that Vigil only discards). This
//! module adds the rest:
//!
//! - [`MaskedFramesOnly`] watches the bytes under the frame reader and fails the read at an
//!   unmasked client frame (§5.1: the server must close the connection);
//! - [`MessageRules`] follows fragmented messages: a continuation needs a message to continue,
//!   a new data frame may not start inside one, text stays valid UTF-8 across fragments, a
//!   whole message stays under the client message limit, and control frames carry at most
//!   125 bytes (§5.5).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use fastwebsockets::{Frame, OpCode};
use tokio::io::{AsyncRead, ReadBuf};

/// Most payload bytes of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Why a client broke the protocol: the close code and reason it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

const PROTOCOL_ERROR: u16 = 1002;
const INVALID_PAYLOAD: u16 = 1007;
const MESSAGE_TOO_BIG: u16 = 1009;

impl Violation {
    /// An unmasked client frame.
    pub const UNMASKED: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "unmasked frame",
    };
    const CONTROL_TOO_LONG: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "control frame over 125 bytes",
    };
    const NOTHING_TO_CONTINUE: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "continuation without a message",
    };
    const DATA_INSIDE_MESSAGE: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "new message inside a fragmented one",
    };
    const INVALID_UTF8: Violation = Violation {
        code: INVALID_PAYLOAD,
        reason: "invalid utf-8",
    };
    const TOO_BIG: Violation = Violation {
        code: MESSAGE_TOO_BIG,
        reason: "message too big",
    };
}

/// The error [`MaskedFramesOnly`] fails a read with.
#[derive(Debug)]
struct UnmaskedFrame;

impl std::fmt::Display for UnmaskedFrame {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("unmasked client frame")
    }
}

impl std::error::Error for UnmaskedFrame {}

/// Whether an I/O error is [`MaskedFramesOnly`]'s refusal of an unmasked frame.
pub fn is_unmasked_frame(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<UnmaskedFrame>())
}

/// Longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// A reader of client frames that fails at the first unmasked one. It reads frame headers as
/// they pass (the mask bit and the length) and skips payloads, so it costs a few comparisons
/// per frame.
pub struct MaskedFramesOnly<R> {
    inner: R,
    /// The header being read, and how much of it has arrived.
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: u64,
}

impl<R> MaskedFramesOnly<R> {
    pub fn new(inner: R) -> Self {
        MaskedFramesOnly {
            inner,
            header: [0; MAX_HEADER],
            header_len: 0,
            payload_left: 0,
        }
    }

    /// Follows frame boundaries through `bytes`; fails at an unmasked header.
    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skipped = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                bytes = &bytes[skipped..];
                self.payload_left -= skipped as u64;
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if self.header_len < 2 {
                continue;
            }
            if self.header[1] & 0x80 == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, UnmaskedFrame));
            }
            let length_code = self.header[1] & 0x7f;
            let extended = match length_code {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            if self.header_len < 2 + extended + 4 {
                continue;
            }
            let length = &self.header[2..2 + extended];
            self.payload_left = match extended {
                0 => u64::from(length_code),
                _ => length
                    .iter()
                    .fold(0u64, |total, byte| (total << 8) | u64::from(*byte)),
            };
            self.header_len = 0;
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for MaskedFramesOnly<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buffer.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(context, buffer))?;
        Poll::Ready(this.follow(&buffer.filled()[before..]))
    }
}

/// What a fragmented message has been so far.
#[derive(Debug, Default)]
pub struct MessageRules {
    /// The message being continued: `Some(true)` for text.
    open_message_is_text: Option<bool>,
    /// Bytes of the open message so far.
    message_bytes: usize,
    /// The start of a UTF-8 sequence that the next fragment completes.
    utf8_carry: Vec<u8>,
    /// Largest whole message.
    max_message_bytes: usize,
}

impl MessageRules {
    pub fn new(max_message_bytes: usize) -> Self {
        MessageRules {
            max_message_bytes,
            ..MessageRules::default()
        }
    }

    /// Checks one client frame as it arrives (after fastwebsockets' own checks).
    pub fn check(&mut self, frame: &Frame<'_>) -> Result<(), Violation> {
        match frame.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => check_control(&frame.payload),
            OpCode::Text | OpCode::Binary => {
                if self.open_message_is_text.is_some() {
                    return Err(Violation::DATA_INSIDE_MESSAGE);
                }
                if frame.fin {
                    // A whole text frame: fastwebsockets checked its UTF-8.
                    return Ok(());
                }
                let is_text = frame.opcode == OpCode::Text;
                self.open_message_is_text = Some(is_text);
                self.message_bytes = 0;
                self.utf8_carry.clear();
                self.continue_message(frame)
            }
            OpCode::Continuation => {
                if self.open_message_is_text.is_none() {
                    return Err(Violation::NOTHING_TO_CONTINUE);
                }
                self.continue_message(frame)
            }
        }
    }

    fn continue_message(&mut self, frame: &Frame<'_>) -> Result<(), Violation> {
        self.message_bytes = self.message_bytes.saturating_add(frame.payload.len());
        if self.message_bytes >= self.max_message_bytes {
            return Err(Violation::TOO_BIG);
        }
        if self.open_message_is_text == Some(true) {
            self.follow_utf8(&frame.payload)?;
        }
        if frame.fin {
            let incomplete = !self.utf8_carry.is_empty();
            self.open_message_is_text = None;
            self.utf8_carry.clear();
            if incomplete {
                return Err(Violation::INVALID_UTF8);
            }
        }
        Ok(())
    }

    /// Validates the next piece of a text message, keeping an unfinished last character for
    /// the next fragment.
    fn follow_utf8(&mut self, piece: &[u8]) -> Result<(), Violation> {
        let joined;
        let bytes = if self.utf8_carry.is_empty() {
            piece
        } else {
            joined = [self.utf8_carry.as_slice(), piece].concat();
            joined.as_slice()
        };
        let carry = match std::str::from_utf8(bytes) {
            Ok(_) => &[][..],
            // Cut inside a character: the rest comes with the next fragment.
            Err(error) if error.error_len().is_none() => &bytes[error.valid_up_to()..],
            Err(_) => return Err(Violation::INVALID_UTF8),
        };
        self.utf8_carry = carry.to_vec();
        Ok(())
    }
}

/// A Close, Ping or Pong: at most 125 payload bytes.
pub fn check_control(payload: &[u8]) -> Result<(), Violation> {
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(Violation::CONTROL_TOO_LONG);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use fastwebsockets::Payload;

    use super::*;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Frame<'static> {
        Frame::new(fin, opcode, None, Payload::Owned(payload.to_vec()))
    }

    #[test]
    fn fragments_must_continue_a_message_and_not_interleave() {
        let mut rules = MessageRules::new(1024);
        assert_eq!(
            rules.check(&frame(true, OpCode::Continuation, b"x")),
            Err(Violation::NOTHING_TO_CONTINUE)
        );
        let mut rules = MessageRules::new(1024);
        rules.check(&frame(false, OpCode::Text, b"a")).unwrap();
        rules.check(&frame(true, OpCode::Ping, b"")).unwrap();
        assert_eq!(
            rules.check(&frame(true, OpCode::Text, b"b")),
            Err(Violation::DATA_INSIDE_MESSAGE)
        );
        let mut rules = MessageRules::new(1024);
        rules.check(&frame(false, OpCode::Binary, b"a")).unwrap();
        rules
            .check(&frame(false, OpCode::Continuation, b"b"))
            .unwrap();
        rules
            .check(&frame(true, OpCode::Continuation, b"c"))
            .unwrap();
        rules.check(&frame(true, OpCode::Text, b"next")).unwrap();
    }

    #[test]
    fn utf8_is_checked_across_fragments() {
        let euro = "€".as_bytes();
        let mut rules = MessageRules::new(1024);
        rules
            .check(&frame(false, OpCode::Text, &euro[..2]))
            .unwrap();
        rules
            .check(&frame(true, OpCode::Continuation, &euro[2..]))
            .unwrap();

        let mut rules = MessageRules::new(1024);
        rules
            .check(&frame(false, OpCode::Text, &euro[..2]))
            .unwrap();
        assert_eq!(
            rules.check(&frame(true, OpCode::Continuation, b"(")),
            Err(Violation::INVALID_UTF8)
        );

        let mut rules = MessageRules::new(1024);
        rules
            .check(&frame(false, OpCode::Text, &euro[..1]))
            .unwrap();
        assert_eq!(
            rules.check(&frame(true, OpCode::Continuation, b"")),
            Err(Violation::INVALID_UTF8)
        );
    }

    #[test]
    fn a_fragmented_message_is_bounded_as_a_whole() {
        let mut rules = MessageRules::new(10);
        rules.check(&frame(false, OpCode::Binary, &[0; 6])).unwrap();
        assert_eq!(
            rules.check(&frame(true, OpCode::Continuation, &[0; 6])),
            Err(Violation::TOO_BIG)
        );
    }

    #[test]
    fn control_frames_carry_at_most_125_bytes() {
        let mut rules = MessageRules::new(1024);
        rules.check(&frame(true, OpCode::Pong, &[0; 125])).unwrap();
        assert_eq!(
            rules.check(&frame(true, OpCode::Pong, &[0; 126])),
            Err(Violation::CONTROL_TOO_LONG)
        );
    }

    #[test]
    fn the_byte_watcher_follows_frames_and_refuses_an_unmasked_one() {
        let mut watcher = MaskedFramesOnly::new(());
        // Masked text "hi", split anywhere, then a masked 300-byte binary frame.
        let mut bytes = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        bytes.extend([0x82, 0xFE, 0x01, 0x2C, 9, 9, 9, 9]);
        bytes.extend([0u8; 300]);
        for piece in bytes.chunks(3) {
            watcher.follow(piece).unwrap();
        }
        assert_eq!(watcher.header_len, 0);
        assert_eq!(watcher.payload_left, 0);
        // Unmasked text.
        let error = watcher.follow(&[0x81, 0x02, b'h', b'i']).unwrap_err();
        assert!(is_unmasked_frame(&error));
    }
}
