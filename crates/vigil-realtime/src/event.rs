//! One event as the hub handles it: its WebSocket frame, built once, and the fields filters
//! look at, read from the JSON's prefix without a full parse.
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
    /// client it is sent to.
    pub frame: Bytes,
}

impl HubEvent {
    /// Reads the filter fields from `json`'s prefix and builds its frame; `None` if `json` is
    /// not an event in Vigil's encoding.
    pub fn from_json(json: &[u8]) -> Option<HubEvent> {
        HubEvent::with_id(entry_id(json)?, json)
    }

    /// [`HubEvent::from_json`] for a `json` whose id `entry_id` has already read.
    pub fn with_id(id: u64, json: &[u8]) -> Option<HubEvent> {
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
        })
    }
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
