//! The event model: what a producer sends once it has been validated ([`NewEvent`]) and the
//! bounds that validation applies ([`Limits`]).
//!
//! A `NewEvent` holds everything needed to store and print the event except what Vigil
//! itself assigns (id, `createdAt`, request id); see [`crate::encode`] for the printed form.

use std::fmt;
use std::str::FromStr;

use crate::time::UnixMillis;

/// Every event id is below this bound (2^53), so every JSON reader, JavaScript included,
/// reads ids exactly. The store never issues one at or above it; readers refuse such ids.
pub const MAX_ID_EXCLUSIVE: u64 = 1 << 53;

/// Severity of an event. Case-sensitive on the wire: `INFO`, `WARN`, `ERROR`, `CRITICAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Info,
    Warn,
    Error,
    Critical,
}

impl Level {
    /// Every level, in increasing severity.
    pub const ALL: [Level; 4] = [Level::Info, Level::Warn, Level::Error, Level::Critical];

    /// The wire (and database) spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

impl FromStr for Level {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "INFO" => Ok(Level::Info),
            "WARN" => Ok(Level::Warn),
            "ERROR" => Ok(Level::Error),
            "CRITICAL" => Ok(Level::Critical),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated event as a producer sent it, before Vigil assigns an id and `createdAt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Who sent it: 1–128 Unicode code points, no control characters.
    pub source: String,
    /// What happened: 1–64 ASCII letters, digits, `_ - . :`.
    pub event_type: String,
    pub level: Level,
    /// The payload object's JSON text exactly as sent minus insignificant whitespace;
    /// `None` when the producer sent none (or `null`).
    pub payload: Option<String>,
    /// When it happened, by the producer's clock; `None` when not given.
    pub occurred_at: Option<UnixMillis>,
}

impl NewEvent {
    /// Bytes this event adds to a batch (strings and payload), for the batcher's byte bound.
    pub fn approximate_size(&self) -> usize {
        self.source.len()
            + self.event_type.len()
            + self.payload.as_ref().map_or(0, String::len)
            + 48
    }
}

/// Bounds applied by validation. Defaults are the API's documented limits (the README's
/// *Limits*); the body and bulk limits are configuration (`VIGIL_MAX_BODY_BYTES`,
/// `VIGIL_MAX_BULK_EVENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum `source` length, in Unicode code points.
    pub max_source_chars: usize,
    /// Maximum `type` length, in bytes (it is ASCII).
    pub max_type_len: usize,
    /// Maximum payload size once insignificant whitespace is removed, in bytes.
    pub max_payload_bytes: usize,
    /// Maximum nesting of the payload; the payload object itself is level 1.
    pub max_payload_depth: usize,
    /// Maximum events in one bulk request (array or NDJSON).
    pub max_bulk_events: usize,
}

/// Default maximum `source` length in code points.
pub const DEFAULT_MAX_SOURCE_CHARS: usize = 128;
/// Default maximum `type` length.
pub const DEFAULT_MAX_TYPE_LEN: usize = 64;
/// Default maximum encoded payload: 16 KiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Default maximum payload nesting: 31 nested objects and arrays. MariaDB's `JSON_VALID`
/// (the payload column's CHECK) refuses 32, and a row the database refuses fails its whole
/// batch, other producers' requests included; so validation must refuse it first.
pub const DEFAULT_MAX_PAYLOAD_DEPTH: usize = 31;
/// Default maximum events per bulk request.
pub const DEFAULT_MAX_BULK_EVENTS: usize = 5_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_source_chars: DEFAULT_MAX_SOURCE_CHARS,
            max_type_len: DEFAULT_MAX_TYPE_LEN,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_payload_depth: DEFAULT_MAX_PAYLOAD_DEPTH,
            max_bulk_events: DEFAULT_MAX_BULK_EVENTS,
        }
    }
}

/// Whether `text` is a valid event `type`: 1–`max_len` ASCII letters, digits, `_ - . :`.
pub fn is_valid_type(text: &str, max_len: usize) -> bool {
    !text.is_empty()
        && text.len() <= max_len
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Why a `source` is refused, if it is.
pub fn source_problem(text: &str, max_chars: usize) -> Option<&'static str> {
    if text.is_empty() {
        return Some("must not be empty");
    }
    // Fast path: printable ASCII is one code point per byte and never a control character.
    if text.len() <= max_chars && text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let mut chars = 0usize;
    for c in text.chars() {
        chars += 1;
        if c.is_control() {
            return Some("must not contain control characters");
        }
    }
    if chars > max_chars {
        return Some("is too long");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_and_are_case_sensitive() {
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        }
        assert!("warn".parse::<Level>().is_err());
        assert!("Warn".parse::<Level>().is_err());
        assert!("".parse::<Level>().is_err());
    }

    #[test]
    fn type_accepts_only_its_alphabet() {
        assert!(is_valid_type("GAS", 64));
        assert!(is_valid_type("door.open:v2_a-b", 64));
        assert!(is_valid_type(&"A".repeat(64), 64));
        assert!(!is_valid_type(&"A".repeat(65), 64));
        assert!(!is_valid_type("", 64));
        assert!(!is_valid_type("GAS LEAK", 64));
        assert!(!is_valid_type("GAS/LEAK", 64));
        assert!(!is_valid_type("ГАЗ", 64));
    }

    #[test]
    fn source_counts_code_points_and_refuses_control_characters() {
        assert_eq!(source_problem("sensor-1", 128), None);
        assert_eq!(source_problem(&"é".repeat(128), 128), None);
        assert_eq!(source_problem(&"é".repeat(129), 128), Some("is too long"));
        assert_eq!(source_problem("", 128), Some("must not be empty"));
        assert!(source_problem("a\nb", 128).is_some());
        assert!(source_problem("a\u{7f}b", 128).is_some());
        assert!(source_problem("a\u{85}b", 128).is_some());
    }
}
