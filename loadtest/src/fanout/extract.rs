//! Reading the measurer's stamp out of an event frame without parsing the JSON.
//!
//! At a million frames a second a full JSON parse would make the measurer the bottleneck. The
//! stored event's key order is fixed (`{"id":…,"source":…,"type":…,"level":…,"payload":{…},…}`)
//! and the payload is kept byte for byte as sent, so the stamp the poster wrote,
//! `{"t":<µs>,"seq":<n>,"run":<id>}`, is found by searching after `"payload":{` only: no string
//! before it (source, type, level) can be mistaken for it. The run id tells this run's events
//! from anybody else's on the same server.

use std::sync::LazyLock;

use memchr::memmem::Finder;

static PAYLOAD_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"payload\":{"));
static T_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"t\":"));
static SEQ_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"seq\":"));
static RUN_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"run\":"));

/// What the poster put in an event's payload, and the id the server gave the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The event id, the frame's first field.
    pub id: u64,
    /// When the POST carrying the event was sent, in µs since the measurer started.
    pub sent_us: u64,
    /// The event's sequence number in this run.
    pub seq: u64,
    /// The run that posted it.
    pub run: u64,
}

/// The stamp of a frame holding one of the measurer's events; `None` for any other frame.
pub fn event_stamp(frame: &[u8]) -> Option<Stamp> {
    let (id, _) = leading_u64(frame.strip_prefix(b"{\"id\":")?)?;
    let payload_at = PAYLOAD_KEY.find(frame)? + PAYLOAD_KEY.needle().len();
    let payload = &frame[payload_at..];
    let (sent_us, rest) = field(payload, b"\"t\":", &T_KEY)?;
    let (seq, rest) = field(rest, b"\"seq\":", &SEQ_KEY)?;
    let (run, _) = field(rest, b"\"run\":", &RUN_KEY)?;
    Some(Stamp {
        id,
        sent_us,
        seq,
        run,
    })
}

/// Whether a text frame is the control frame that ends a resume's replay.
pub fn is_resume_control(frame: &[u8]) -> bool {
    frame.starts_with(b"{\"resume\":")
}

/// The unsigned integer after `key` in `bytes`, and the bytes after it. Checks the position
/// the poster writes the key at first, then searches.
fn field<'a>(bytes: &'a [u8], key: &[u8], finder: &Finder<'_>) -> Option<(u64, &'a [u8])> {
    let value_at = if bytes.starts_with(key) {
        key.len()
    } else {
        finder.find(bytes)? + key.len()
    };
    let (value, digits) = leading_u64(&bytes[value_at..])?;
    Some((value, &bytes[value_at + digits..]))
}

/// The decimal number at the start of `bytes` and its length in digits.
fn leading_u64(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    let mut digits = 0;
    for &byte in bytes.iter().take(20) {
        if !byte.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some((value, digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: &[u8] = br#"{"id":17,"source":"sensor-1","type":"GAS","level":"WARN","payload":{"t":123456,"seq":42,"run":7},"occurredAt":null,"createdAt":"2026-11-24T05:12:09.123Z","requestId":"abc"}"#;

    #[test]
    fn stamps_are_read_from_the_payload() {
        assert_eq!(
            event_stamp(FRAME),
            Some(Stamp {
                id: 17,
                sent_us: 123_456,
                seq: 42,
                run: 7
            })
        );
    }

    #[test]
    fn strings_before_the_payload_cannot_fake_a_stamp() {
        let frame = br#"{"id":3,"source":"\"t\":1,\"seq\":2,\"run\":3","type":"GAS","level":"WARN","payload":{"t":9,"seq":8,"run":7},"occurredAt":null}"#;
        let stamp = event_stamp(frame).unwrap();
        assert_eq!((stamp.sent_us, stamp.seq, stamp.run), (9, 8, 7));
    }

    #[test]
    fn stamps_are_found_wherever_the_keys_sit_in_the_payload() {
        let frame = br#"{"id":5,"source":"s","type":"T","level":"INFO","payload":{"x":[1],"t":10,"y":"z","seq":11,"run":12}}"#;
        let stamp = event_stamp(frame).unwrap();
        assert_eq!(
            (stamp.id, stamp.sent_us, stamp.seq, stamp.run),
            (5, 10, 11, 12)
        );
    }

    #[test]
    fn other_frames_have_no_stamp() {
        for frame in [
            &br#"{"id":5,"source":"s","type":"T","level":"INFO","payload":{"ppm":120}}"#[..],
            br#"{"id":5,"source":"s","type":"T","level":"INFO","payload":{"t":"x","seq":1,"run":1}}"#,
            br#"{"id":5,"source":"s","type":"T","level":"INFO","payload":{"t":1,"seq":2}}"#,
            br#"{"resume":{"since":4,"replayed":0,"complete":true}}"#,
            br#"{"id":99999999999999999999999,"payload":{"t":1,"seq":2,"run":3}}"#,
            b"",
        ] {
            assert_eq!(event_stamp(frame), None, "{}", String::from_utf8_lossy(frame));
        }
        assert!(is_resume_control(
            br#"{"resume":{"since":4,"replayed":0,"complete":true}}"#
        ));
        assert!(!is_resume_control(FRAME));
    }

    #[test]
    fn numbers_stop_at_the_first_non_digit() {
        assert_eq!(leading_u64(b"123,"), Some((123, 3)));
        assert_eq!(leading_u64(b"18446744073709551615}"), Some((u64::MAX, 20)));
        assert_eq!(leading_u64(b"18446744073709551616"), None);
        assert_eq!(leading_u64(b"-1"), None);
    }
}
