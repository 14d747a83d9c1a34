//! SQL text and batch planning for the MySQL backend, with no I/O so it is unit-tested alone.
//!
//! A batch becomes as few multi-row `INSERT … VALUES (…),(…)` statements as the protocol
//! allows: one, unless the 65,535-placeholder limit of a prepared statement or the server's
//! `max_allowed_packet` forces a split. Row sizes are estimated from above so a planned
//! statement never exceeds the packet limit. Times travel as `YYYY-MM-DD HH:MM:SS.sss` text
//! (exact for `DATETIME(3)`, independent of time zones) and come back as whole microseconds
//! since the epoch computed by the server (`TIMESTAMPDIFF`), so no rounding happens anywhere.
//!
//! The reads of `GET /api/events` are planned in [`list`].

pub mod list;

use std::ops::Range;

use vigil_core::UnixMillis;
use vigil_core::time::{MAX_TIMESTAMP, MIN_TIMESTAMP};

use crate::EventRow;

/// Placeholders one prepared statement may hold (the protocol counts them in a `u16`).
pub const MAX_PLACEHOLDERS: usize = 65_535;

/// Bound values per events row: id, source, type, level, payload, occurred_at, created_at,
/// request_id.
pub const COLUMNS_PER_ROW: usize = 8;

/// Most rows one INSERT can carry: 8191 (65,528 placeholders).
pub const MAX_ROWS_PER_STATEMENT: usize = MAX_PLACEHOLDERS / COLUMNS_PER_ROW;

/// Bytes of a row's encoded parameters beyond its strings: the id, two 23-byte times, eight
/// 2-byte type codes, length prefixes (at most 9 bytes each) and a null-bitmap bit, rounded up.
pub const ROW_FIXED_BYTES: usize = 8 + 2 * 24 + 8 * 2 + 8 * 9 + 1;

/// Room kept free in every packet for the statement header and null bitmap rounding.
pub const PACKET_HEADROOM_BYTES: usize = 16 * 1024;

/// The smallest packet budget used even if the server reports something tinier: the first
/// row of a statement is always sent, and the server decides.
pub const MIN_STATEMENT_BYTES: usize = 4 * 1024;

/// Length of a `DATETIME(3)` literal, `YYYY-MM-DD HH:MM:SS.sss`.
pub const DATETIME_LEN: usize = 23;

const INSERT_PREFIX: &str = "INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id) VALUES ";
const ROW_PLACEHOLDERS: &str = "(?,?,?,?,?,?,?,?)";

/// The columns every read selects, in [`crate::mysql`]'s decoding order. Times come back as
/// microseconds since the epoch: exact integers computed by the server, whatever the
/// session's time zone.
macro_rules! select_events {
    () => {
        "SELECT id, source, type, level, payload, \
         TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', occurred_at), \
         TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', created_at), request_id FROM events"
    };
}

/// The columns every read selects, up to and including `FROM events`.
pub const SELECT_EVENTS: &str = select_events!();

/// One event by id.
pub const SELECT_BY_ID: &str = concat!(select_events!(), " WHERE id = ?");

/// The newest events, newest first.
pub const SELECT_LATEST: &str = concat!(select_events!(), " ORDER BY id DESC LIMIT ?");

/// Bound in place of an absent `occurred_at` so every row's times sit at fixed offsets in one
/// buffer; never sent (the bind is `NULL`).
pub const DATETIME_FILLER: &str = "0000-00-00 00:00:00.000";

/// The INSERT statement for `rows` rows.
pub fn insert_sql(rows: usize) -> String {
    debug_assert!((1..=MAX_ROWS_PER_STATEMENT).contains(&rows));
    let mut sql = String::with_capacity(INSERT_PREFIX.len() + rows * (ROW_PLACEHOLDERS.len() + 1));
    sql.push_str(INSERT_PREFIX);
    for index in 0..rows {
        if index > 0 {
            sql.push(',');
        }
        sql.push_str(ROW_PLACEHOLDERS);
    }
    sql
}

/// Bytes a row adds to an INSERT's execute packet, from above.
pub fn estimated_row_bytes(row: &EventRow<'_>) -> usize {
    ROW_FIXED_BYTES
        + row.event.source.len()
        + row.event.event_type.len()
        + row.event.payload.as_ref().map_or(0, String::len)
        + row.request_id.len()
}

/// The parameter bytes one statement may carry given the server's `max_allowed_packet`.
pub fn statement_budget(max_allowed_packet: u64) -> usize {
    let packet = usize::try_from(max_allowed_packet).unwrap_or(usize::MAX);
    packet
        .saturating_sub(PACKET_HEADROOM_BYTES)
        .max(MIN_STATEMENT_BYTES)
}

/// Splits rows (given their estimated sizes) into consecutive statements of at most `max_rows`
/// rows and `max_bytes` estimated bytes each. The first row of a statement always goes in it,
/// even if alone it is larger than `max_bytes` (the server then refuses it, whole).
pub fn plan_statements(
    row_bytes: impl IntoIterator<Item = usize>,
    max_rows: usize,
    max_bytes: usize,
) -> Vec<Range<usize>> {
    debug_assert!(max_rows >= 1);
    let mut statements = Vec::new();
    let mut start = 0;
    let mut rows_in_statement = 0;
    let mut bytes_in_statement = 0usize;
    let mut index = 0;
    for bytes in row_bytes {
        let full = rows_in_statement == max_rows
            || (rows_in_statement > 0 && bytes_in_statement.saturating_add(bytes) > max_bytes);
        if full {
            statements.push(start..index);
            start = index;
            rows_in_statement = 0;
            bytes_in_statement = 0;
        }
        rows_in_statement += 1;
        bytes_in_statement = bytes_in_statement.saturating_add(bytes);
        index += 1;
    }
    if rows_in_statement > 0 {
        statements.push(start..index);
    }
    statements
}

/// Appends `at` as a `DATETIME(3)` literal (`YYYY-MM-DD HH:MM:SS.sss`, UTC) to `out`.
/// Returns `false` (appending nothing) when `at` is outside years 1000–9999.
pub fn push_datetime(out: &mut String, at: UnixMillis) -> bool {
    if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&at) {
        return false;
    }
    let mut rfc3339 = Vec::with_capacity(24);
    at.write_rfc3339(&mut rfc3339);
    // `YYYY-MM-DDTHH:MM:SS.sssZ`: all ASCII; MySQL wants a space and no zone letter.
    for (index, &byte) in rfc3339[..DATETIME_LEN].iter().enumerate() {
        out.push(if index == 10 { ' ' } else { char::from(byte) });
    }
    true
}

/// Milliseconds since the epoch from the microseconds the server computed with `TIMESTAMPDIFF`.
pub fn millis_from_micros(micros: i64) -> UnixMillis {
    debug_assert_eq!(
        micros.rem_euclid(1000),
        0,
        "DATETIME(3) holds whole milliseconds"
    );
    UnixMillis(micros.div_euclid(1000))
}

/// Why a row cannot be sent, checked before anything reaches the server so that a refusal is
/// certain and names the row.
pub fn row_problem(row: &EventRow<'_>) -> Option<&'static str> {
    if row.id == 0 || row.id >= crate::ids::MAX_ID_EXCLUSIVE {
        return Some("id must be between 1 and 2^53 - 1");
    }
    if row.request_id.is_empty() || row.request_id.len() > 128 || !row.request_id.is_ascii() {
        return Some("request id must be 1-128 ascii characters");
    }
    if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&row.created_at) {
        return Some("created_at must fall between years 1000 and 9999");
    }
    if let Some(at) = row.event.occurred_at
        && !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&at)
    {
        return Some("occurred_at must fall between years 1000 and 9999");
    }
    None
}

/// `SELECT COUNT(*) … WHERE id IN (?,…) LOCK IN SHARE MODE` for `count` ids: a locking read,
/// so it waits for any transaction still holding those rows and then sees the committed truth.
pub fn locking_count_sql(count: usize) -> String {
    debug_assert!(count >= 1);
    let mut sql = String::with_capacity(64 + count * 2);
    sql.push_str("SELECT COUNT(*) FROM events WHERE id IN (");
    for index in 0..count {
        if index > 0 {
            sql.push(',');
        }
        sql.push('?');
    }
    sql.push_str(") LOCK IN SHARE MODE");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::{Level, NewEvent};

    fn placeholders(sql: &str) -> usize {
        sql.bytes().filter(|&byte| byte == b'?').count()
    }

    #[test]
    fn insert_sql_has_eight_placeholders_per_row() {
        assert_eq!(
            insert_sql(1),
            "INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id) VALUES (?,?,?,?,?,?,?,?)"
        );
        assert_eq!(placeholders(&insert_sql(3)), 24);
        assert!(insert_sql(2).ends_with("(?,?,?,?,?,?,?,?),(?,?,?,?,?,?,?,?)"));
        let largest = insert_sql(MAX_ROWS_PER_STATEMENT);
        assert_eq!(placeholders(&largest), 65_528);
        assert!(placeholders(&largest) <= MAX_PLACEHOLDERS);
        assert!(placeholders(&largest) + COLUMNS_PER_ROW > MAX_PLACEHOLDERS);
    }

    #[test]
    fn a_batch_within_limits_is_one_statement() {
        assert_eq!(
            plan_statements([100; 1000], MAX_ROWS_PER_STATEMENT, 1 << 20),
            vec![0..1000]
        );
        assert_eq!(
            plan_statements([100; 1], MAX_ROWS_PER_STATEMENT, 1 << 20),
            vec![0..1]
        );
        assert!(plan_statements([0usize; 0], MAX_ROWS_PER_STATEMENT, 1 << 20).is_empty());
    }

    #[test]
    fn splits_at_the_placeholder_limit() {
        let rows = MAX_ROWS_PER_STATEMENT * 2 + 5;
        let plan = plan_statements(vec![10; rows], MAX_ROWS_PER_STATEMENT, usize::MAX);
        assert_eq!(
            plan,
            vec![0..8191, 8191..16_382, 16_382..16_387],
            "8191 rows fill 65,528 placeholders"
        );
        for range in &plan {
            assert!(placeholders(&insert_sql(range.len())) <= MAX_PLACEHOLDERS);
        }
    }

    #[test]
    fn splits_at_the_packet_budget_and_always_sends_the_first_row() {
        assert_eq!(
            plan_statements([40, 40, 40, 40], 100, 100),
            vec![0..2, 2..4]
        );
        assert_eq!(plan_statements([40, 60, 1], 100, 100), vec![0..2, 2..3]);
        // A row larger than the budget goes alone; the server refuses it whole.
        assert_eq!(
            plan_statements([10, 500, 10], 100, 100),
            vec![0..1, 1..2, 2..3]
        );
    }

    #[test]
    fn plans_cover_every_row_once_in_order() {
        let sizes: Vec<usize> = (0..5000).map(|index| (index * 7919) % 3000).collect();
        let plan = plan_statements(sizes.iter().copied(), 700, 50_000);
        let mut next = 0;
        for range in &plan {
            assert_eq!(range.start, next);
            assert!(!range.is_empty() && range.len() <= 700);
            let bytes: usize = sizes[range.clone()].iter().sum();
            assert!(range.len() == 1 || bytes <= 50_000);
            next = range.end;
        }
        assert_eq!(next, sizes.len());
    }

    #[test]
    fn budget_leaves_headroom_below_max_allowed_packet() {
        assert_eq!(
            statement_budget(16 * 1024 * 1024),
            16 * 1024 * 1024 - PACKET_HEADROOM_BYTES
        );
        assert_eq!(statement_budget(1024), MIN_STATEMENT_BYTES);
    }

    #[test]
    fn row_estimate_is_above_the_strings_it_carries() {
        let event = NewEvent {
            source: "sensor-é".into(),
            event_type: "GAS".into(),
            level: Level::Warn,
            payload: Some(r#"{"ppm":120}"#.into()),
            occurred_at: None,
        };
        let row = EventRow {
            id: 1,
            event: &event,
            created_at: UnixMillis(0),
            request_id: "req",
        };
        assert_eq!(estimated_row_bytes(&row), ROW_FIXED_BYTES + 9 + 3 + 11 + 3);
    }

    #[test]
    fn datetimes_are_exact_milliseconds_in_utc() {
        let mut out = String::new();
        assert!(push_datetime(&mut out, UnixMillis(1_795_497_129_123)));
        assert_eq!(out, "2026-11-24 05:12:09.123");
        out.clear();
        assert!(push_datetime(&mut out, UnixMillis(-1)));
        assert_eq!(out, "1969-12-31 23:59:59.999");
        out.clear();
        assert!(push_datetime(&mut out, MIN_TIMESTAMP));
        assert_eq!(out, "1000-01-01 00:00:00.000");
        out.clear();
        assert!(push_datetime(&mut out, MAX_TIMESTAMP));
        assert_eq!(out, "9999-12-31 23:59:59.999");
        assert_eq!(out.len(), DATETIME_LEN);
        out.clear();
        assert!(!push_datetime(&mut out, UnixMillis(MAX_TIMESTAMP.0 + 1)));
        assert!(out.is_empty());
        assert_eq!(millis_from_micros(-1000), UnixMillis(-1));
        assert_eq!(
            millis_from_micros(1_795_497_129_123_000),
            UnixMillis(1_795_497_129_123)
        );
    }

    #[test]
    fn rows_with_unstorable_fields_are_named_before_sending() {
        let event = NewEvent {
            source: "s".into(),
            event_type: "T".into(),
            level: Level::Info,
            payload: None,
            occurred_at: Some(UnixMillis(MIN_TIMESTAMP.0 - 1)),
        };
        let mut row = EventRow {
            id: 1,
            event: &event,
            created_at: UnixMillis(0),
            request_id: "r",
        };
        assert!(row_problem(&row).unwrap().contains("occurred_at"));
        let fine = NewEvent {
            occurred_at: None,
            ..event.clone()
        };
        row.event = &fine;
        assert_eq!(row_problem(&row), None);
        row.id = 0;
        assert!(row_problem(&row).is_some());
        row.id = 1;
        row.request_id = "é";
        assert!(row_problem(&row).is_some());
    }

    #[test]
    fn selects_read_the_columns_in_decoding_order() {
        assert!(SELECT_BY_ID.starts_with("SELECT id, source, type, level, payload, TIMESTAMPDIFF"));
        assert!(SELECT_BY_ID.ends_with("request_id FROM events WHERE id = ?"));
        assert!(SELECT_LATEST.ends_with("FROM events ORDER BY id DESC LIMIT ?"));
        assert_eq!(DATETIME_FILLER.len(), DATETIME_LEN);
    }

    #[test]
    fn locking_count_names_each_id() {
        assert_eq!(
            locking_count_sql(3),
            "SELECT COUNT(*) FROM events WHERE id IN (?,?,?) LOCK IN SHARE MODE"
        );
    }
}
