//! Request ids: the caller's `X-Request-Id` when it is a safe token, else a fresh UUID.
//!
//! The id is echoed on every response, written into every error body and stored with every
//! event, so a producer can find its request in Vigil's logs and rows. Only
//! `[A-Za-z0-9._:-]{1,128}` is accepted from callers: anything else could smuggle text into
//! logs or JSON, and is replaced rather than rejected so a bad header never loses an event.

use http::HeaderMap;

/// Longest caller-supplied request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

pub const HEADER: &str = "x-request-id";

/// The request id for a request with these headers.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .map(|value| value.as_bytes())
        .filter(|candidate| is_acceptable(candidate))
        // Acceptable ids are ASCII, so this conversion cannot fail.
        .and_then(|candidate| std::str::from_utf8(candidate).ok())
        .map_or_else(generate, str::to_owned)
}

fn is_acceptable(candidate: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&candidate.len())
        && candidate
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A new time-ordered UUID (v7), so ids sort by arrival in logs.
pub fn generate() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn id_for(value: &[u8]) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_bytes(value).unwrap());
        from_headers(&headers)
    }

    #[test]
    fn keeps_safe_caller_ids() {
        for id in ["abc", "req-1:2.3_4", &"a".repeat(128)] {
            assert_eq!(id_for(id.as_bytes()), id);
        }
    }

    #[test]
    fn replaces_unsafe_or_missing_ids_with_a_uuid() {
        for id in [
            &b"has space"[..],
            b"quote\"",
            b"slash/",
            &[b'a'; 129],
            b"\xc3\xa9",
        ] {
            let generated = id_for(id);
            assert_eq!(generated.len(), 36);
            assert!(uuid::Uuid::parse_str(&generated).is_ok());
        }
        assert_eq!(from_headers(&HeaderMap::new()).len(), 36);
        assert_ne!(generate(), generate());
    }
}
