//! The JSON of a list page, `{"items":[…],"page":p,"size":s,"hasMore":b}`, whichever side
//! answers: the database's rows or the recent list's entries, which are already encoded.
//!
//! One module below both the list handler (`http/list.rs`) and the cache (`cache.rs`), so the
//! two build byte-identical pages from one encoding and the cache does not depend on the
//! HTTP layer that uses it.

use bytes::Bytes;
use vigil_core::EventQuery;
use vigil_store::EventPage;

/// `{"items":[…],"page":p,"size":s,"hasMore":b}`, plus `"nextBefore"` for cursor queries.
pub fn page_body(query: &EventQuery, page: &EventPage) -> Bytes {
    let mut out = Vec::with_capacity(64 + page.events.len() * 256);
    out.extend_from_slice(b"{\"items\":[");
    for (position, event) in page.events.iter().enumerate() {
        if position > 0 {
            out.push(b',');
        }
        event.as_ref().encode_into(&mut out);
    }
    out.push(b']');
    let next_before = page
        .has_more
        .then(|| page.events.last().map(|event| event.id))
        .flatten();
    finish_page(
        &mut out,
        query,
        page.has_more,
        query.before.map(|_| next_before),
    );
    Bytes::from(out)
}

/// Appends the page fields after the items array, and closes the object.
fn finish_page(
    out: &mut Vec<u8>,
    query: &EventQuery,
    has_more: bool,
    next_before: Option<Option<u64>>,
) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b",\"page\":");
    out.extend_from_slice(number.format(query.page).as_bytes());
    out.extend_from_slice(b",\"size\":");
    out.extend_from_slice(number.format(query.size).as_bytes());
    out.extend_from_slice(if has_more {
        b",\"hasMore\":true"
    } else {
        b",\"hasMore\":false"
    });
    if let Some(next_before) = next_before {
        out.extend_from_slice(b",\"nextBefore\":");
        match next_before {
            Some(id) => out.extend_from_slice(number.format(id).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

/// `{"items":[…],"page":p,"size":s,"hasMore":b}` from entries already encoded.
pub fn page_from_entries(query: &EventQuery, newest_first: &[Bytes], has_more: bool) -> Bytes {
    let length: usize = newest_first.iter().map(Bytes::len).sum();
    let mut out = Vec::with_capacity(64 + length + newest_first.len());
    out.extend_from_slice(b"{\"items\":[");
    for (position, entry) in newest_first.iter().enumerate() {
        if position > 0 {
            out.push(b',');
        }
        out.extend_from_slice(entry);
    }
    out.push(b']');
    finish_page(&mut out, query, has_more, None);
    Bytes::from(out)
}
