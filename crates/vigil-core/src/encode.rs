//! The stored-event JSON: one encoding, byte-identical wherever an event is read.
//!
//! ```text
//! {"id":17,"source":"sensor-1","type":"GAS","level":"WARN","payload":{"ppm":120},
//!  "occurredAt":null,"createdAt":"2026-11-24T05:12:09.123Z","requestId":"…"}
//! ```
//!
//! Keys in this order, times as UTC milliseconds with `Z`, `occurredAt` and `payload` `null`
//! when absent, the payload's text as sent (minus insignificant whitespace). Vigil encodes an
//! event once, after its insert, and the same bytes serve the Redis cache entry, the pub/sub
//! message, every WebSocket frame and list responses; rows read back from the database go
//! through this same function, so every path prints the same bytes.

use crate::event::{Level, NewEvent};
use crate::time::UnixMillis;

/// Borrowed view of a stored event: everything its JSON needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEventRef<'a> {
    pub id: u64,
    pub source: &'a str,
    pub event_type: &'a str,
    pub level: Level,
    pub payload: Option<&'a str>,
    pub occurred_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub request_id: &'a str,
}

impl NewEvent {
    /// This event as stored under `id`, created at `created_at` by request `request_id`.
    pub fn as_stored<'a>(
        &'a self,
        id: u64,
        created_at: UnixMillis,
        request_id: &'a str,
    ) -> StoredEventRef<'a> {
        StoredEventRef {
            id,
            source: &self.source,
            event_type: &self.event_type,
            level: self.level,
            payload: self.payload.as_deref(),
            occurred_at: self.occurred_at,
            created_at,
            request_id,
        }
    }
}

impl StoredEventRef<'_> {
    /// Appends the event's JSON to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len_hint());
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.id).as_bytes());
        out.extend_from_slice(b",\"source\":");
        write_json_string(out, self.source);
        out.extend_from_slice(b",\"type\":");
        write_json_string(out, self.event_type);
        out.extend_from_slice(b",\"level\":\"");
        out.extend_from_slice(self.level.as_str().as_bytes());
        out.extend_from_slice(b"\",\"payload\":");
        match self.payload {
            Some(payload) => out.extend_from_slice(payload.as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"occurredAt\":");
        match self.occurred_at {
            Some(at) => {
                out.push(b'"');
                at.write_rfc3339(out);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"createdAt\":\"");
        self.created_at.write_rfc3339(out);
        out.extend_from_slice(b"\",\"requestId\":");
        write_json_string(out, self.request_id);
        out.push(b'}');
    }

    /// The event's JSON as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encoded_len_hint(&self) -> usize {
        // Fixed keys and punctuation, two timestamps, the variable strings.
        140 + self.source.len()
            + self.event_type.len()
            + self.payload.map_or(4, str::len)
            + self.request_id.len()
    }
}

/// Appends `text` as a JSON string literal. Escapes only what JSON requires (`"`, `\` and
/// control characters below U+0020), so the output is deterministic for a given string.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..index]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        clean_from = index + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_the_documented_key_order_and_format() {
        let event = NewEvent {
            source: "sensor-1".into(),
            event_type: "GAS".into(),
            level: Level::Warn,
            payload: Some(r#"{"ppm":120}"#.into()),
            occurred_at: None,
        };
        let created = UnixMillis::parse_rfc3339("2026-11-24T05:12:09.123Z").unwrap();
        let json = event.as_stored(17, created, "req-1").encode();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"id":17,"source":"sensor-1","type":"GAS","level":"WARN","payload":{"ppm":120},"occurredAt":null,"createdAt":"2026-11-24T05:12:09.123Z","requestId":"req-1"}"#
        );
    }

    #[test]
    fn encodes_absent_payload_and_present_occurred_at() {
        let occurred = UnixMillis::parse_rfc3339("2026-11-24T06:00:00+01:00").unwrap();
        let event = NewEvent {
            source: "gate \"north\" \\ é".into(),
            event_type: "DOOR".into(),
            level: Level::Critical,
            payload: None,
            occurred_at: Some(occurred),
        };
        let json = event.as_stored(1, UnixMillis(0), "r").encode();
        let text = std::str::from_utf8(&json).unwrap();
        assert_eq!(
            text,
            r#"{"id":1,"source":"gate \"north\" \\ é","type":"DOOR","level":"CRITICAL","payload":null,"occurredAt":"2026-11-24T05:00:00.000Z","createdAt":"1970-01-01T00:00:00.000Z","requestId":"r"}"#
        );
        let reparsed: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(reparsed["source"], "gate \"north\" \\ é");
    }

    #[test]
    fn string_escaping_matches_a_reference_decoder() {
        for text in [
            "",
            "plain",
            "tab\there",
            "nul\0",
            "\u{1f}x",
            "quote\"back\\",
            "ünï\u{2028}",
        ] {
            let mut out = Vec::new();
            write_json_string(&mut out, text);
            let decoded: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(decoded, text);
        }
    }
}
