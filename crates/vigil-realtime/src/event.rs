//! One event as the hub handles it: its frame for each wire, built once, and the fields
//! filters look at, read from the JSON's prefix without a full parse.
//!
//! A [`Wire`] is how a client receives events: a WebSocket text frame, or a Server-Sent
//! Events message (`id: <id>` and `data: <json>`). The hub builds an event's SSE message only
//! while an SSE client is connected, so the second wire costs nothing when nobody uses it.
//!
//! Every event on the channel (or from the in-process feed) is Vigil's own encoding
//! (`vigil_core::StoredEventRef::encode_into`), whose first four keys are always, in this order:
//! `{"id":17,"source":"…","type":"…","level":"WARN",…`. The reader here walks exactly that prefix;
//! anything else is refused (`None`) and counted by the caller instead of being sent to clients
//! as if it were an event. `type` and `level` never hold escapes (their alphabets exclude `"`
//! and `\`); `source` may hold `\"`, `\\` and, from other encoders, any JSON escape, which is
//! decoded.

use bytes::{BufMut, Bytes, BytesMut};
use vigil_bus::entry_id;
use vigil_core::Level;

/// The WebSocket frame header's first byte for a complete text message (FIN + opcode 1).
const TEXT_FRAME_FIRST_BYTE: u8 = 0x81;

/// An event ready for fan-out.
#[derive(Debug, Clone)]
pub struct HubEvent {
    /// The event's id.
    pub id: u64,
    /// The event's `source`, unescaped.
    pub source: String,
    /// The event's `type`.
    pub event_type: String,
    /// The event's `level`.
    pub level: Level,
    /// The whole server-to-client text frame (header and the event JSON), shared by every
    /// WebSocket client it is sent to.
    pub frame: Bytes,
    /// The event's Server-Sent Events message, shared by every SSE client it is sent to;
    /// `None` when no SSE client was connected as the event was taken in.
    pub sse: Option<Bytes>,
}

/// How a client receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `GET /ws`: one text frame per event.
    WebSocket,
    /// `GET /api/events/stream`: one `text/event-stream` message per event.
    Sse,
}

impl Wire {
    /// The event id in one of this wire's event frames; `None` for anything else (a control
    /// frame, a comment).
    pub fn event_id(self, frame: &[u8]) -> Option<u64> {
        match self {
            Wire::WebSocket => {
                let header = match frame.get(1)? & 0x7f {
                    126 => 4,
                    127 => 10,
                    _ => 2,
                };
                entry_id(frame.get(header..)?)
            }
            Wire::Sse => {
                let digits = frame.strip_prefix(b"id: ")?;
                let length = digits.iter().take_while(|b| b.is_ascii_digit()).count();
                if length == 0 || digits.get(length) != Some(&b'\n') {
                    return None;
                }
                std::str::from_utf8(&digits[..length]).ok()?.parse().ok()
            }
        }
    }

    /// This wire's frame for the event `id` whose stored JSON is `json`.
    pub fn event_frame(self, id: u64, json: &[u8]) -> Bytes {
        match self {
            Wire::WebSocket => text_frame(json),
            Wire::Sse => sse_message(id, json),
        }
    }
}

impl HubEvent {
    /// Reads the filter fields from `json`'s prefix and builds its frame; `None` if `json` is
    /// not an event in Vigil's encoding.
    pub fn from_json(json: &[u8]) -> Option<HubEvent> {
        HubEvent::with_id(entry_id(json)?, json)
    }

    /// [`HubEvent::from_json`] for a `json` whose id `entry_id` has already read.
    pub fn with_id(id: u64, json: &[u8]) -> Option<HubEvent> {
        HubEvent::for_wires(id, json, false)
    }

    /// [`HubEvent::with_id`], with the SSE message built too when `sse` is set.
    pub fn for_wires(id: u64, json: &[u8], sse: bool) -> Option<HubEvent> {
        debug_assert_eq!(entry_id(json), Some(id));
        // `entry_id` checked the `{"id":<digits>,` prefix.
        let digits = json[6..].iter().take_while(|b| b.is_ascii_digit()).count();
        let rest = &json[6 + digits + 1..];
        let rest = rest.strip_prefix(b"\"source\":")?;
        let (source, rest) = read_string(rest)?;
        let rest = rest.strip_prefix(b",\"type\":")?;
        let (event_type, rest) = read_string(rest)?;
        let rest = rest.strip_prefix(b",\"level\":")?;
        let (level, _) = read_string(rest)?;
        let level = level.parse::<Level>().ok()?;
        Some(HubEvent {
            id,
            source,
            event_type,
            level,
            frame: text_frame(json),
            sse: sse.then(|| sse_message(id, json)),
        })
    }

    /// The frame a client on `wire` is sent; `None` when the event came in before that wire
    /// had a client (so there is none to send).
    pub fn frame_for(&self, wire: Wire) -> Option<&Bytes> {
        match wire {
            Wire::WebSocket => Some(&self.frame),
            Wire::Sse => self.sse.as_ref(),
        }
    }
}

/// One Server-Sent Events message: `id: <id>`, `data: <json>`, and the blank line that ends
/// it. Vigil's JSON holds no line breaks (strings escape them); a foreign encoder's
/// insignificant whitespace may, and a line break would end the `data:` line, so any is sent
/// as a space, which leaves the JSON value the same.
pub fn sse_message(id: u64, json: &[u8]) -> Bytes {
    let mut message = BytesMut::with_capacity(json.len() + 32);
    message.put_slice(b"id: ");
    message.put_slice(itoa::Buffer::new().format(id).as_bytes());
    message.put_slice(b"\ndata: ");
    let start = message.len();
    message.put_slice(json);
    for byte in &mut message[start..] {
        if *byte == b'\n' || *byte == b'\r' {
            *byte = b' ';
        }
    }
    message.put_slice(b"\n\n");
    message.freeze()
}

/// A named Server-Sent Events message without an id (`resume`, `close`): clients keep the
/// id of the last event they got, so a reconnect resumes from an event.
pub fn sse_named(name: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// A complete, unmasked server text frame holding `payload`.
pub fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    frame.put_u8(TEXT_FRAME_FIRST_BYTE);
    put_length(&mut frame, payload.len());
    frame.put_slice(payload);
    frame.freeze()
}

/// The payload length in the frame header's 7, 7+16 or 7+64 bit form (never masked).
pub fn put_length(frame: &mut BytesMut, length: usize) {
    if length < 126 {
        frame.put_u8(length as u8);
    } else if let Ok(length) = u16::try_from(length) {
        frame.put_u8(126);
        frame.put_u16(length);
    } else {
        frame.put_u8(127);
        frame.put_u64(length as u64);
    }
}

/// Reads one JSON string at the start of `input`; returns it unescaped and what follows it.
fn read_string(input: &[u8]) -> Option<(String, &[u8])> {
    let body = input.strip_prefix(b"\"")?;
    let end = find_quote_or_backslash(body)?;
    if body[end] == b'"' {
        // The common case: no escapes.
        let text = std::str::from_utf8(&body[..end]).ok()?;
        return Some((text.to_owned(), &body[end + 1..]));
    }
    let mut out: Vec<u8> = Vec::with_capacity(end + 16);
    let mut position = 0;
    loop {
        let next = position + find_quote_or_backslash(&body[position..])?;
        out.extend_from_slice(&body[position..next]);
        if body[next] == b'"' {
            let text = String::from_utf8(out).ok()?;
            return Some((text, &body[next + 1..]));
        }
        let escape = *body.get(next + 1)?;
        position = next + 2;
        let simple = match escape {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = hex4(body.get(position..position + 4)?)?;
                position += 4;
                let code = if (0xd800..0xdc00).contains(&unit) {
                    let low = body.get(position..position + 6)?;
                    if &low[..2] != b"\\u" {
                        return None;
                    }
                    let low = hex4(&low[2..])?;
                    if !(0xdc00..0xe000).contains(&low) {
                        return None;
                    }
                    position += 6;
                    0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                } else {
                    unit
                };
                let character = char::from_u32(code)?;
                let mut buffer = [0u8; 4];
                out.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
                continue;
            }
            _ => return None,
        };
        out.push(simple);
    }
}

fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'"' || b == b'\\')
}

fn hex4(digits: &[u8]) -> Option<u32> {
    if digits.len() != 4 {
        return None;
    }
    digits.iter().try_fold(0u32, |value, &digit| {
        let nibble = (digit as char).to_digit(16)?;
        Some(value * 16 + nibble)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::{NewEvent, UnixMillis};

    fn encoded(source: &str, event_type: &str, level: Level) -> Vec<u8> {
        let event = NewEvent {
            source: source.into(),
            event_type: event_type.into(),
            level,
            payload: Some(r#"{"ppm":120,"source":"x"}"#.into()),
            occurred_at: None,
        };
        event
            .as_stored(42, UnixMillis(1_700_000_000_000), "req-1")
            .encode()
    }

    #[test]
    fn fields_of_vigils_encoding_are_read() {
        let json = encoded("sensor-1", "GAS", Level::Warn);
        let event = HubEvent::from_json(&json).unwrap();
        assert_eq!(event.id, 42);
        assert_eq!(event.source, "sensor-1");
        assert_eq!(event.event_type, "GAS");
        assert_eq!(event.level, Level::Warn);
    }

    #[test]
    fn escaped_sources_are_unescaped() {
        for source in ["a\"b", "back\\slash", "ünïcødé ☃", "\"\\\"", "emoji 🚨 end"] {
            let json = encoded(source, "T.1", Level::Critical);
            let event = HubEvent::from_json(&json).unwrap();
            assert_eq!(event.source, source);
            assert_eq!(event.level, Level::Critical);
        }
    }

    #[test]
    fn json_escapes_from_other_encoders_are_decoded() {
        let json = br#"{"id":7,"source":"a\u00e9\ud83d\udea8\/\n","type":"X","level":"INFO","payload":null}"#;
        let event = HubEvent::from_json(json).unwrap();
        assert_eq!(event.source, "aé🚨/\n");
    }

    #[test]
    fn other_shapes_are_refused() {
        for text in [
            &br#"{"id":7,"type":"X","source":"s","level":"INFO"}"#[..],
            br#"{"id":7,"source":"s","type":"X","level":"LOUD"}"#,
            br#"{"id":7,"source":"s","type":"X"}"#,
            br#"{"id":7,"source":"s\x","type":"X","level":"INFO"}"#,
            br#"{"id":7,"source":"s\ud83d","type":"X","level":"INFO"}"#,
            br#"{"id":7,"source":"unterminated"#,
            br#"hello"#,
        ] {
            assert!(
                HubEvent::from_json(text).is_none(),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn sse_messages_carry_the_id_and_the_json_on_one_data_line() {
        let json = encoded("sensor-1", "GAS", Level::Warn);
        let message = sse_message(42, &json);
        let text = std::str::from_utf8(&message).unwrap();
        assert_eq!(
            text,
            format!("id: 42\ndata: {}\n\n", std::str::from_utf8(&json).unwrap())
        );
        assert_eq!(Wire::Sse.event_id(&message), Some(42));
        assert_eq!(Wire::WebSocket.event_id(&text_frame(&json)), Some(42));
        assert_eq!(Wire::Sse.event_id(b": heartbeat\n\n"), None);
        assert_eq!(Wire::Sse.event_id(b"event: resume\ndata: {}\n\n"), None);
        let spaced = b"{\"id\":7,\r\n\"source\":\"s\"}";
        assert_eq!(
            &sse_message(7, spaced)[..],
            b"id: 7\ndata: {\"id\":7,  \"source\":\"s\"}\n\n"
        );
        let event = HubEvent::for_wires(42, &json, true).unwrap();
        assert_eq!(event.frame_for(Wire::Sse), Some(&message));
        assert!(HubEvent::with_id(42, &json).unwrap().sse.is_none());
    }

    #[test]
    fn frames_use_the_shortest_length_form() {
        for (length, header) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
        ] {
            let payload = vec![b'x'; length];
            let frame = text_frame(&payload);
            assert_eq!(frame.len(), header + length, "{length}");
            assert_eq!(frame[0], 0x81);
            assert_eq!(&frame[header..], &payload[..]);
        }
        let frame = text_frame(&[b'x'; 300]);
        assert_eq!(&frame[1..4], &[126, 1, 44]);
    }
}
