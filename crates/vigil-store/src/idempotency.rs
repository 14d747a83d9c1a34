//! Idempotency records: what a request with an `Idempotency-Key` stored, kept so a retry of it
//! is answered with the same ids instead of storing its events twice.
//!
//! A record is written **in the same transaction as the request's events** (see
//! [`crate::Store::insert_with_keys`]): it exists exactly when the events do. A key claimed
//! before the write, as a separate step, would turn "the write failed, the producer retries"
//! into "the retry finds the key and is told its events are stored" — a silent loss. Here a
//! failed write leaves no record, and the retry writes.
//!
//! The key is never stored as sent: the server stores a SHA-256 of the key and its scope
//! (the token that sent it), and a SHA-256 of the request body to tell a true retry from a
//! different request reusing a key. Both travel as 64 lowercase hex digits, which both
//! backends store and compare as plain ASCII text.
//!
//! Ids are kept as ranges (`"101-600,4097-4596"`): a request's ids increase and are nearly
//! always consecutive, so a 5,000-event bulk usually needs a dozen bytes.

use std::fmt::Write as _;

use vigil_core::UnixMillis;

use crate::sql::Dialect;
use crate::sql::list::{Bind, Statement};

/// The table, in both backends' migrations.
pub const TABLE: &str = "vigil_idempotency_keys";

/// Bound values per record in the insert: key, body hash, request id, ids, created, expires.
pub const COLUMNS_PER_RECORD: usize = 6;

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`'s SHA-256 (32 bytes).
    pub fn from_sha256(bytes: &[u8; 32]) -> Digest {
        let mut text = String::with_capacity(64);
        for byte in bytes {
            let _ = write!(text, "{byte:02x}");
        }
        Digest(text)
    }

    /// Reads a stored digest back; `None` unless it is 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Digest> {
        (text.len() == 64
            && text
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)))
        .then(|| Digest(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What one keyed request stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 of the key and its scope.
    pub key: Digest,
    /// SHA-256 of the request body that stored the events.
    pub body: Digest,
    /// The request that stored them (the events' `requestId`).
    pub request_id: String,
    /// The ids answered, in the order of the request's events.
    pub ids: Vec<u64>,
    pub created_at: UnixMillis,
    /// After this the key is free again (`VIGIL_IDEMPOTENCY_TTL` after `created_at`).
    pub expires_at: UnixMillis,
}

/// `ids` (increasing) as ranges: `1-3,7,9-10`.
pub fn encode_ids(ids: &[u64]) -> String {
    let mut text = String::new();
    let mut index = 0;
    while index < ids.len() {
        let start = ids[index];
        let mut end = start;
        while index + 1 < ids.len() && ids[index + 1] == end + 1 {
            index += 1;
            end += 1;
        }
        if !text.is_empty() {
            text.push(',');
        }
        let _ = if start == end {
            write!(text, "{start}")
        } else {
            write!(text, "{start}-{end}")
        };
        index += 1;
    }
    text
}

/// The ids [`encode_ids`] wrote; `None` for anything else (or more than `max` ids, so a
/// corrupted row cannot make the server allocate without bound).
pub fn decode_ids(text: &str, max: usize) -> Option<Vec<u64>> {
    let mut ids = Vec::new();
    for part in text.split(',') {
        let (start, end) = match part.split_once('-') {
            Some((start, end)) => (start.parse::<u64>().ok()?, end.parse::<u64>().ok()?),
            None => {
                let id = part.parse::<u64>().ok()?;
                (id, id)
            }
        };
        if end < start || ids.last().is_some_and(|&last| start <= last) {
            return None;
        }
        let count = usize::try_from(end - start).ok()?.checked_add(1)?;
        if ids.len() + count > max {
            return None;
        }
        ids.extend(start..=end);
    }
    Some(ids)
}

/// The insert of `records` (one multi-row statement; a batch holds at most a few thousand
/// requests, far below either placeholder limit).
pub(crate) fn insert_statement(records: &[IdempotencyRecord]) -> Statement {
    let mut sql = format!(
        "INSERT INTO {TABLE} (key_hash, body_hash, request_id, ids, created_at, expires_at) VALUES "
    );
    let mut binds = Vec::with_capacity(records.len() * COLUMNS_PER_RECORD);
    for (position, record) in records.iter().enumerate() {
        if position > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?)");
        binds.extend([
            Bind::Text(record.key.0.clone()),
            Bind::Text(record.body.0.clone()),
            Bind::Text(record.request_id.clone()),
            Bind::Text(encode_ids(&record.ids)),
            Bind::Signed(record.created_at.0),
            Bind::Signed(record.expires_at.0),
        ]);
    }
    Statement { sql, binds }
}

/// The unexpired records among `keys` (at `now`).
pub(crate) fn select_statement(keys: &[Digest], now: UnixMillis) -> Statement {
    let mut sql = format!(
        "SELECT key_hash, body_hash, request_id, ids, created_at, expires_at FROM {TABLE} \
         WHERE expires_at > ? AND key_hash IN ("
    );
    push_placeholders(&mut sql, keys.len());
    sql.push(')');
    let mut binds = vec![Bind::Signed(now.0)];
    binds.extend(keys.iter().map(|key| Bind::Text(key.0.clone())));
    Statement { sql, binds }
}

/// Deletes the records among `keys` that expired by `now` (a new request may take the key).
pub(crate) fn delete_expired_keys_statement(keys: &[Digest], now: UnixMillis) -> Statement {
    let mut sql = format!("DELETE FROM {TABLE} WHERE expires_at <= ? AND key_hash IN (");
    push_placeholders(&mut sql, keys.len());
    sql.push(')');
    let mut binds = vec![Bind::Signed(now.0)];
    binds.extend(keys.iter().map(|key| Bind::Text(key.0.clone())));
    Statement { sql, binds }
}

/// Deletes at most `limit` records that expired by `now`, oldest first (the periodic purge).
pub(crate) fn purge_statement(dialect: Dialect, now: UnixMillis, limit: u64) -> Statement {
    let sql = match dialect {
        Dialect::MySql => {
            format!("DELETE FROM {TABLE} WHERE expires_at <= ? ORDER BY expires_at LIMIT ?")
        }
        Dialect::Sqlite => format!(
            "DELETE FROM {TABLE} WHERE key_hash IN (SELECT key_hash FROM {TABLE} \
             WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)"
        ),
    };
    Statement {
        sql,
        binds: vec![Bind::Signed(now.0), Bind::Unsigned(limit)],
    }
}

fn push_placeholders(sql: &mut String, count: usize) {
    for position in 0..count {
        sql.push_str(if position == 0 { "?" } else { ",?" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_kept_as_ranges() {
        assert_eq!(encode_ids(&[7]), "7");
        assert_eq!(encode_ids(&[1, 2, 3, 7, 9, 10]), "1-3,7,9-10");
        assert_eq!(encode_ids(&(101..=600).collect::<Vec<_>>()), "101-600");
        assert_eq!(decode_ids("1-3,7,9-10", 100), Some(vec![1, 2, 3, 7, 9, 10]));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in ["", "a", "3-1", "1,1", "5,2", "1-", "-1", "1--2", " 1"] {
            assert_eq!(decode_ids(text, 100), None, "{text:?}");
        }
        assert_eq!(decode_ids("1-1000000000000", 5000), None);
        assert_eq!(decode_ids("1-5000", 5000).map(|ids| ids.len()), Some(5000));
    }

    #[test]
    fn digests_are_lowercase_hex() {
        let digest = Digest::from_sha256(&[0xab; 32]);
        assert_eq!(digest.as_str(), "ab".repeat(32));
        assert_eq!(Digest::parse(digest.as_str()), Some(digest));
        assert_eq!(Digest::parse(&"AB".repeat(32)), None);
        assert_eq!(Digest::parse("ab"), None);
    }

    proptest! {
        #[test]
        fn any_increasing_ids_round_trip(mut ids in proptest::collection::vec(1u64..1 << 20, 1..300)) {
            ids.sort_unstable();
            ids.dedup();
            let text = encode_ids(&ids);
            prop_assert_eq!(decode_ids(&text, ids.len()), Some(ids));
        }
    }
}
