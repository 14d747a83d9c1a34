//! Checking that cache entries are in id order, reading each id from its encoded JSON's prefix
//! ([`vigil_core::entry_id`]).
//!
//! Every entry in the recent list is an event encoded by vigil-core, whose first key is always
//! the id: `{"id":17,"source":…}`. The id is read from that prefix alone, so checking a page of
//! entries never parses the JSON. The Lua script in `merge.lua` reads ids the same way.

use bytes::Bytes;

pub use vigil_core::{MAX_ID_EXCLUSIVE, entry_id};

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
