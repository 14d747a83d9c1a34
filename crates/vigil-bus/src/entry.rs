//! Reading an event's id from its encoded JSON, and checking that cache entries are in id order.
//!
//! Every entry in the recent list is an event encoded by vigil-core, whose first key is always
//! the id: `{"id":17,"source":…}`. The id is read from that prefix alone, so checking a page of
//! entries never parses the JSON. The Lua script in `merge.lua` reads ids the same way.

use bytes::Bytes;

/// What every encoded event starts with, up to the id's digits.
const ID_PREFIX: &[u8] = b"{\"id\":";

/// Ids are below 2^53 (so JavaScript reads them exactly), hence at most 16 decimal digits.
const MAX_ID_DIGITS: usize = 16;

pub use vigil_core::MAX_ID_EXCLUSIVE;

/// The id of an encoded event, read from its `{"id":<digits>,` prefix; `None` if the entry does
/// not start that way or the id is not below 2^53.
pub fn entry_id(entry: &[u8]) -> Option<u64> {
    let rest = entry.strip_prefix(ID_PREFIX)?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_ID_DIGITS || rest.get(digits) != Some(&b',') {
        return None;
    }
    let id = rest[..digits]
        .iter()
        .fold(0u64, |id, digit| id * 10 + u64::from(digit - b'0'));
    (id < MAX_ID_EXCLUSIVE).then_some(id)
}

/// Why entries read from the list cannot be served as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListProblem {
    /// An entry does not start with a readable id.
    Unreadable,
    /// The ids are not strictly decreasing: the list was not written by Vigil's merge script
    /// (which keeps it in order), so entries further down may be newer than these.
    OutOfOrder,
}

/// Checks that `entries`, read from the head of the list, are newest first: each has a readable
/// id and each id is smaller than the one before (so each id appears once).
pub fn check_newest_first(entries: &[Bytes]) -> Result<(), ListProblem> {
    let mut previous: Option<u64> = None;
    for entry in entries {
        let id = entry_id(entry).ok_or(ListProblem::Unreadable)?;
        if previous.is_some_and(|newer| newer <= id) {
            return Err(ListProblem::OutOfOrder);
        }
        previous = Some(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> Bytes {
        Bytes::from(format!("{{\"id\":{id},\"source\":\"s-{id}\"}}"))
    }

    fn entries(ids: impl IntoIterator<Item = u64>) -> Vec<Bytes> {
        ids.into_iter().map(entry).collect()
    }

    #[test]
    fn id_is_read_from_the_prefix() {
        assert_eq!(entry_id(br#"{"id":17,"source":"a"}"#), Some(17));
        assert_eq!(entry_id(br#"{"id":0,"x":1}"#), Some(0));
        assert_eq!(entry_id(br#"{"id":1,"#), Some(1));
    }

    #[test]
    fn largest_id_below_two_to_the_53_is_read() {
        let text = format!("{{\"id\":{},\"a\":1}}", MAX_ID_EXCLUSIVE - 1);
        assert_eq!(entry_id(text.as_bytes()), Some(MAX_ID_EXCLUSIVE - 1));
    }

    #[test]
    fn ids_at_or_above_two_to_the_53_are_rejected() {
        let at_bound = format!("{{\"id\":{MAX_ID_EXCLUSIVE},\"a\":1}}");
        assert_eq!(entry_id(at_bound.as_bytes()), None);
        assert_eq!(entry_id(br#"{"id":99999999999999999,"a":1}"#), None);
        assert_eq!(entry_id(br#"{"id":184467440737095516150,"a":1}"#), None);
    }

    #[test]
    fn entries_without_an_id_prefix_are_rejected() {
        for text in [
            &br#""#[..],
            br#"{"id":}"#,
            br#"{"id":,"a":1}"#,
            br#"{"id":17}"#,
            br#"{"id":17"#,
            br#"{"id":-1,"a":1}"#,
            br#"{"id":1.5,"a":1}"#,
            br#"{"id":"17","a":1}"#,
            br#"{ "id":17,"a":1}"#,
            br#"{"source":"a","id":17}"#,
            br#"[17]"#,
        ] {
            assert_eq!(entry_id(text), None, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn entries_newest_first_pass() {
        assert_eq!(check_newest_first(&entries([9, 5, 2])), Ok(()));
        assert_eq!(check_newest_first(&entries([9])), Ok(()));
        assert_eq!(check_newest_first(&[]), Ok(()));
    }

    #[test]
    fn interleaved_pushes_are_out_of_order() {
        // Two writers pushed their own id blocks with plain LPUSHes.
        let read = entries([103, 102, 9, 8, 101]);
        assert_eq!(check_newest_first(&read), Err(ListProblem::OutOfOrder));
    }

    #[test]
    fn repeated_ids_are_out_of_order() {
        assert_eq!(
            check_newest_first(&entries([9, 9, 8])),
            Err(ListProblem::OutOfOrder)
        );
    }

    #[test]
    fn an_unreadable_entry_is_reported() {
        let read = vec![entry(9), Bytes::from_static(b"junk"), entry(7)];
        assert_eq!(check_newest_first(&read), Err(ListProblem::Unreadable));
    }
}
