//! Query parameters of `GET /api/events` (and the filter syntax `/ws` shares).
//!
//! Parsed and validated here, once, into an [`EventQuery`]: a bad value is a 400
//! `invalid_query` naming the parameter, never a database error. Unknown parameters are
//! ignored (clients of the original service send extras); multi-value filters are
//! comma-separated (`type=GAS,SMOKE`, at most [`MAX_FILTER_VALUES`]); a repeated parameter
//! adds its values to the same filter.

use crate::event::{
    DEFAULT_MAX_SOURCE_CHARS, DEFAULT_MAX_TYPE_LEN, Level, MAX_ID_EXCLUSIVE, is_valid_type,
    source_problem,
};
use crate::time::UnixMillis;

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Most rows skipped by offset paging (`(page - 1) * size`); deeper pages use `before=`.
pub const MAX_OFFSET: u64 = 10_000;
/// Most values in one multi-value filter.
pub const MAX_FILTER_VALUES: usize = 20;
/// Largest page size answered from the Redis recent list.
pub const MAX_CACHED_PAGE_SIZE: u32 = 50;

/// A refused query parameter. The message names it and is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {message}")]
pub struct QueryError {
    pub parameter: &'static str,
    pub message: String,
}

fn refuse(parameter: &'static str, message: impl Into<String>) -> QueryError {
    QueryError {
        parameter,
        message: message.into(),
    }
}

/// Which events to deliver: each non-empty list must contain the event's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub types: Vec<String>,
    pub levels: Vec<Level>,
    pub sources: Vec<String>,
}

impl EventFilter {
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.levels.is_empty() && self.sources.is_empty()
    }

    /// Whether an event with these fields passes the filter.
    pub fn matches(&self, event_type: &str, level: Level, source: &str) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && (self.levels.is_empty() || self.levels.contains(&level))
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
    }

    /// Reads `type`, `level` and `source` from decoded query pairs; other keys are ignored.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<EventFilter, QueryError> {
        let mut filter = EventFilter::default();
        for (key, value) in pairs {
            filter.take(key, value)?;
        }
        Ok(filter)
    }

    /// Absorbs one parameter if it is a filter; returns whether it was.
    fn take(&mut self, key: &str, value: &str) -> Result<bool, QueryError> {
        match key {
            "type" => {
                for item in split_values("type", value, self.types.len())? {
                    if !is_valid_type(item, DEFAULT_MAX_TYPE_LEN) {
                        return Err(refuse(
                            "type",
                            format!("{item:?} is not a valid event type"),
                        ));
                    }
                    push_unique(&mut self.types, item.to_owned());
                }
            }
            "level" => {
                for item in split_values("level", value, self.levels.len())? {
                    let level = item.parse::<Level>().map_err(|()| {
                        refuse(
                            "level",
                            format!("{item:?} is not one of INFO, WARN, ERROR, CRITICAL"),
                        )
                    })?;
                    push_unique(&mut self.levels, level);
                }
            }
            "source" => {
                for item in split_values("source", value, self.sources.len())? {
                    if let Some(problem) = source_problem(item, DEFAULT_MAX_SOURCE_CHARS) {
                        return Err(refuse("source", format!("a source {problem}")));
                    }
                    push_unique(&mut self.sources, item.to_owned());
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn push_unique<T: PartialEq>(values: &mut Vec<T>, value: T) {
    if !values.contains(&value) {
        values.push(value);
    }
}

/// The comma-separated values of one filter parameter. Empty values are skipped wherever
/// they are, so `type=`, `type=,` and `type=GAS,` read as no filter, no filter and `GAS`:
/// clients of the original service send an empty parameter for "any", and a list built with
/// a stray comma means what its values say.
fn split_values<'v>(
    parameter: &'static str,
    value: &'v str,
    already: usize,
) -> Result<Vec<&'v str>, QueryError> {
    let items: Vec<&str> = value.split(',').filter(|item| !item.is_empty()).collect();
    if already + items.len() > MAX_FILTER_VALUES {
        return Err(refuse(
            parameter,
            format!("takes at most {MAX_FILTER_VALUES} values"),
        ));
    }
    Ok(items)
}

/// A validated `GET /api/events` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    /// 1-based page for offset paging; 1 when a cursor is used.
    pub page: u32,
    pub size: u32,
    pub filter: EventFilter,
    /// `createdAt >= from`.
    pub from: Option<UnixMillis>,
    /// `createdAt < to`.
    pub to: Option<UnixMillis>,
    /// Keyset cursor: only ids below this one.
    pub before: Option<u64>,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            page: 1,
            size: DEFAULT_PAGE_SIZE,
            filter: EventFilter::default(),
            from: None,
            to: None,
            before: None,
        }
    }
}

impl EventQuery {
    /// Parses a raw (percent-encoded) query string, e.g. `page=2&size=50&type=GAS,SMOKE`.
    pub fn parse(raw_query: Option<&str>) -> Result<EventQuery, QueryError> {
        let mut query = EventQuery::default();
        let mut page_given = false;
        let pairs = decode_pairs(raw_query, &LIST_PARAMETERS)?;
        for (key, value) in &pairs {
            if query.filter.take(key, value)? {
                continue;
            }
            match key.as_str() {
                "page" => {
                    query.page = parse_number("page", value, 1, u32::MAX as u64)? as u32;
                    page_given = true;
                }
                "size" => {
                    query.size = parse_number("size", value, 1, MAX_PAGE_SIZE as u64)? as u32;
                }
                "before" => query.before = Some(parse_number("before", value, 1, u64::MAX)?),
                "from" => query.from = Some(parse_time("from", value)?),
                "to" => query.to = Some(parse_time("to", value)?),
                _ => {}
            }
        }
        if page_given && query.before.is_some() {
            return Err(refuse("page", "cannot be combined with before (a cursor)"));
        }
        if let (Some(from), Some(to)) = (query.from, query.to)
            && from > to
        {
            return Err(refuse("from", "must not be after to"));
        }
        if query.offset() > MAX_OFFSET {
            return Err(refuse(
                "page",
                format!(
                    "skips more than {MAX_OFFSET} events; page deeper with before=<id> instead"
                ),
            ));
        }
        Ok(query)
    }

    /// Rows skipped before this page.
    pub fn offset(&self) -> u64 {
        u64::from(self.page.saturating_sub(1)) * u64::from(self.size)
    }

    /// The cache rule (docs/architecture.md): page 1, size ≤ 50, no filter, no cursor.
    pub fn is_cacheable(&self) -> bool {
        self.page == 1
            && self.size <= MAX_CACHED_PAGE_SIZE
            && self.filter.is_empty()
            && self.from.is_none()
            && self.to.is_none()
            && self.before.is_none()
    }
}

/// The parameters `GET /api/events` reads.
const LIST_PARAMETERS: [&str; 8] = [
    "type", "level", "source", "page", "size", "before", "from", "to",
];
/// The parameters `/ws` reads.
const SUBSCRIBE_PARAMETERS: [&str; 4] = ["type", "level", "source", "since"];

/// Decodes an `application/x-www-form-urlencoded` query string into pairs, as
/// `form_urlencoded::parse` does (`+` is a space, `%XX` a byte, a malformed `%` stays as it
/// is), except that a value of one of `known` parameters that is not UTF-8 once decoded is
/// refused instead of being silently turned into U+FFFD (which would make a filter match
/// nothing, or something else than asked). Pairs of other keys are kept lossily: they are
/// ignored anyway.
fn decode_pairs(
    raw_query: Option<&str>,
    known: &[&'static str],
) -> Result<Vec<(String, String)>, QueryError> {
    let mut pairs = Vec::new();
    for piece in raw_query.unwrap_or("").split('&') {
        if piece.is_empty() {
            continue;
        }
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        let key = String::from_utf8_lossy(&percent_decode(key)).into_owned();
        let value = match String::from_utf8(percent_decode(value)) {
            Ok(value) => value,
            Err(error) => match known.iter().find(|name| **name == key) {
                Some(name) => return Err(refuse(name, "is not UTF-8 once percent-decoded")),
                None => String::from_utf8_lossy(error.as_bytes()).into_owned(),
            },
        };
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match byte {
            b'+' => out.push(b' '),
            b'%' => match (hex(index + 1), hex(index + 2)) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    index += 2;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(byte),
        }
        index += 1;
    }
    out
}

/// A validated `/ws` query: the filters (the list API's syntax) and `since`, the last event
/// id a resuming client saw (an integer from 0 to 2^53 - 1, given at most once).
pub fn parse_subscribe_query(
    raw_query: Option<&str>,
) -> Result<(EventFilter, Option<u64>), QueryError> {
    let pairs = decode_pairs(raw_query, &SUBSCRIBE_PARAMETERS)?;
    let filter = EventFilter::from_pairs(
        pairs
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    )?;
    let mut since = None;
    for (key, value) in &pairs {
        if key != "since" {
            continue;
        }
        if since.is_some() {
            return Err(refuse("since", "give it once"));
        }
        match parse_event_id(value) {
            Some(id) => since = Some(id),
            None => {
                return Err(refuse(
                    "since",
                    format!("{value:?} is not an event id (an integer from 0 to 2^53 - 1)"),
                ));
            }
        }
    }
    Ok((filter, since))
}

/// An event id as a client names the last one it saw (`since=`, `Last-Event-ID`): plain
/// decimal digits, from 0 to 2^53 - 1.
pub fn parse_event_id(value: &str) -> Option<u64> {
    let valid = !value.is_empty() && value.len() <= 16 && value.bytes().all(|b| b.is_ascii_digit());
    value
        .parse::<u64>()
        .ok()
        .filter(|&id| valid && id < MAX_ID_EXCLUSIVE)
}

fn parse_number(
    parameter: &'static str,
    value: &str,
    min: u64,
    max: u64,
) -> Result<u64, QueryError> {
    let digits_only =
        !value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit());
    let number = digits_only.then(|| value.parse::<u64>().ok()).flatten();
    match number {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) if max == u64::MAX => Err(refuse(parameter, format!("must be at least {min}"))),
        _ if max == u64::MAX => Err(refuse(
            parameter,
            format!("must be an integer of at least {min}"),
        )),
        _ => Err(refuse(
            parameter,
            format!("must be an integer from {min} to {max}"),
        )),
    }
}

fn parse_time(parameter: &'static str, value: &str) -> Result<UnixMillis, QueryError> {
    UnixMillis::parse_rfc3339(value).map_err(|error| refuse(parameter, error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_matches_form_urlencoded_on_utf8_and_refuses_invalid_utf8_for_known_keys() {
        for raw in [
            "a=b&c=d",
            "x=%ZZ&y=%&z=%4",
            "a+b=c+d%2B",
            "&&=&a",
            "k=%C3%A9",
            "%00=%00",
        ] {
            let ours = decode_pairs(Some(raw), &[]).unwrap();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(ours, theirs, "{raw}");
        }
        assert_eq!(parse("source=%C3%28").unwrap_err().parameter, "source");
        assert_eq!(parse("type=%FF").unwrap_err().parameter, "type");
        assert!(parse("other=%FF").is_ok());
        assert_eq!(
            parse_subscribe_query(Some("source=%FF"))
                .unwrap_err()
                .parameter,
            "source"
        );
    }

    fn parse(query: &str) -> Result<EventQuery, QueryError> {
        EventQuery::parse(Some(query))
    }

    #[test]
    fn defaults_and_cache_rule() {
        let query = EventQuery::parse(None).unwrap();
        assert_eq!((query.page, query.size), (1, 20));
        assert!(query.is_cacheable());
        assert!(parse("page=1&size=50").unwrap().is_cacheable());
        for not_cached in [
            "size=51",
            "page=2",
            "type=GAS",
            "level=WARN",
            "source=s",
            "before=9",
            "from=2026-01-01T00:00:00Z",
            "to=2026-01-01T00:00:00Z",
        ] {
            assert!(!parse(not_cached).unwrap().is_cacheable(), "{not_cached}");
        }
        assert!(
            parse("size=20&foo=bar&type=").unwrap().is_cacheable(),
            "unknown and empty parameters are ignored"
        );
    }

    #[test]
    fn empty_filter_values_are_skipped_wherever_they_are() {
        for (query, types) in [
            ("type=", &[][..]),
            ("type=,", &[][..]),
            ("type=GAS,", &["GAS"][..]),
            ("type=,GAS", &["GAS"][..]),
            ("type=GAS,,SMOKE", &["GAS", "SMOKE"][..]),
        ] {
            assert_eq!(parse(query).unwrap().filter.types, types, "{query}");
        }
        assert!(parse("type=GAS,").unwrap().filter == parse("type=GAS").unwrap().filter);
    }

    #[test]
    fn parses_filters_and_ranges() {
        let query = parse("page=3&size=50&type=GAS,SMOKE&level=WARN,CRITICAL&source=site%2F1,a+b&type=DOOR&from=2026-11-24T00:00:00Z&to=2026-11-25T00:00:00%2B01:00").unwrap();
        assert_eq!(query.page, 3);
        assert_eq!(query.size, 50);
        assert_eq!(query.filter.types, ["GAS", "SMOKE", "DOOR"]);
        assert_eq!(query.filter.levels, [Level::Warn, Level::Critical]);
        assert_eq!(query.filter.sources, ["site/1", "a b"]);
        assert_eq!(query.from.unwrap().to_string(), "2026-11-24T00:00:00.000Z");
        assert_eq!(query.to.unwrap().to_string(), "2026-11-24T23:00:00.000Z");
        assert_eq!(query.offset(), 100);
        assert!(query.filter.matches("GAS", Level::Warn, "a b"));
        assert!(!query.filter.matches("GAS", Level::Info, "a b"));
        assert_eq!(parse("before=123&size=5").unwrap().before, Some(123));
    }

    #[test]
    fn refuses_bad_values_naming_the_parameter() {
        let cases = [
            ("size=0", "size"),
            ("size=1000", "size"),
            ("size=abc", "size"),
            ("size=-1", "size"),
            ("size=1.5", "size"),
            ("page=0", "page"),
            ("page=-1", "page"),
            ("page=1.5", "page"),
            ("page=99999999999999999999999", "page"),
            ("page=102&size=100", "page"),
            ("level=LOUD", "level"),
            ("level=warn", "level"),
            ("type=GAS%20LEAK", "type"),
            ("source=a%00b", "source"),
            ("before=abc", "before"),
            ("before=0", "before"),
            ("before=5&page=1", "page"),
            ("from=yesterday", "from"),
            ("to=2026-13-01T00:00:00Z", "to"),
            ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ];
        for (query, parameter) in cases {
            let error = parse(query).expect_err(query);
            assert_eq!(error.parameter, parameter, "{query}: {error}");
        }
        let many = (0..21)
            .map(|n| format!("T{n}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            parse(&format!("type={many}")).unwrap_err().parameter,
            "type"
        );
    }

    #[test]
    fn the_deepest_offset_page_is_accepted() {
        assert!(parse("page=101&size=100").is_ok());
        assert!(parse("page=501&size=20").is_ok());
        assert!(parse("page=502&size=20").is_err());
    }
}
