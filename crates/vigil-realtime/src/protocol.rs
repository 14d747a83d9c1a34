//! The RFC 6455 rules for what client frames say across frames, and the close codes.
//!
//! [`crate::reader`] checks each frame's framing; this module follows messages across
//! fragments and reads Close payloads:
//!
//! - [`MessageRules`] follows fragmented messages: a continuation needs a message to continue,
//!   a new data frame may not start inside one, text is valid UTF-8 (across fragments too), a
//!   whole message stays under the client message limit, and control frames carry at most
//!   125 bytes (§5.5);
//! - [`close_code`] reads a Close frame's status code and checks it and its reason (§5.5.1,
//!   §7.4).
//!
//! Every violation is a [`Violation`]: the close code and reason the client is sent.

use fastwebsockets::OpCode;

use crate::reader::ClientFrame;

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
    pub const RESERVED_BITS: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "reserved bits set",
    };
    pub const UNKNOWN_OPCODE: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "unknown opcode",
    };
    pub const FRAGMENTED_CONTROL: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "fragmented control frame",
    };
    pub const BAD_CLOSE: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "invalid close frame",
    };
    pub const CONTROL_TOO_LONG: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "control frame over 125 bytes",
    };
    pub const NOTHING_TO_CONTINUE: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "continuation without a message",
    };
    pub const DATA_INSIDE_MESSAGE: Violation = Violation {
        code: PROTOCOL_ERROR,
        reason: "new message inside a fragmented one",
    };
    pub const INVALID_UTF8: Violation = Violation {
        code: INVALID_PAYLOAD,
        reason: "invalid utf-8",
    };
    pub const TOO_BIG: Violation = Violation {
        code: MESSAGE_TOO_BIG,
        reason: "message too big",
    };
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

    /// Checks one client frame as it arrives (after the reader's framing checks).
    pub fn check(&mut self, frame: &ClientFrame) -> Result<(), Violation> {
        match frame.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => check_control(&frame.payload),
            OpCode::Text | OpCode::Binary => {
                if self.open_message_is_text.is_some() {
                    return Err(Violation::DATA_INSIDE_MESSAGE);
                }
                if frame.fin {
                    // A whole message in one frame.
                    return match frame.opcode {
                        OpCode::Text if std::str::from_utf8(&frame.payload).is_err() => {
                            Err(Violation::INVALID_UTF8)
                        }
                        _ => Ok(()),
                    };
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

    fn continue_message(&mut self, frame: &ClientFrame) -> Result<(), Violation> {
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

/// The status code of a Close frame's payload (none when it is empty), once the payload is
/// checked: a code alone in one byte, a code no endpoint may send (RFC 6455 §7.4: below
/// 1000, 1004-1006, 1015, unregistered ones below 3000, 5000 and up) or a reason that is not
/// UTF-8 is a violation.
pub fn close_code(payload: &[u8]) -> Result<Option<u16>, Violation> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload.len() {
            0 => Ok(None),
            _ => Err(Violation::BAD_CLOSE),
        };
    };
    let code = u16::from_be_bytes(*code);
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(Violation::BAD_CLOSE);
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(Violation::INVALID_UTF8);
    }
    Ok(Some(code))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> ClientFrame {
        ClientFrame {
            fin,
            opcode,
            payload: BytesMut::from(payload),
        }
    }

    #[test]
    fn text_in_one_frame_is_valid_utf8() {
        let mut rules = MessageRules::new(1024);
        rules
            .check(&frame(true, OpCode::Text, "€".as_bytes()))
            .unwrap();
        rules.check(&frame(true, OpCode::Binary, &[0xFF])).unwrap();
        assert_eq!(
            rules.check(&frame(true, OpCode::Text, &[0xFF])),
            Err(Violation::INVALID_UTF8)
        );
    }

    #[test]
    fn close_payloads_are_a_sendable_code_and_a_utf8_reason() {
        let close = |code: u16, reason: &[u8]| [&code.to_be_bytes()[..], reason].concat();
        assert_eq!(close_code(b""), Ok(None));
        assert_eq!(close_code(&close(1000, b"bye")), Ok(Some(1000)));
        for code in [1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert_eq!(close_code(&close(code, b"")), Ok(Some(code)), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                close_code(&close(code, b"")),
                Err(Violation::BAD_CLOSE),
                "{code}"
            );
        }
        assert_eq!(close_code(&[0x03]), Err(Violation::BAD_CLOSE));
        assert_eq!(
            close_code(&close(1000, &[0xFF])),
            Err(Violation::INVALID_UTF8)
        );
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
}
