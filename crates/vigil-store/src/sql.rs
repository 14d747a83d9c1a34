//! SQL text and batch planning for both backends, with no I/O so it is unit-tested alone.
//!
//! The two backends run the same statements wherever they can; what differs is isolated in
//! [`Dialect`]: how times are stored (MySQL `DATETIME(3)`, SQLite integer milliseconds), how a
//! read names its index (`FORCE INDEX` / `INDEXED BY`), how a `UNION ALL` of ordered, limited
//! branches is spelled, how many placeholders one statement may hold, and whether resolve's
//! count must lock.
//!
//! A batch becomes as few multi-row `INSERT … VALUES (…),(…)` statements as the protocol
//! allows: one, unless the placeholder limit (MySQL 65,535, SQLite 32,766) or the server's
//! `max_allowed_packet` (MySQL) forces a split. Row sizes are estimated from above so a planned
//! statement never exceeds the packet limit. On MySQL, times travel as
//! `YYYY-MM-DD HH:MM:SS.sss` text (exact for `DATETIME(3)`, independent of time zones) and come
//! back as whole microseconds since the epoch computed by the server (`TIMESTAMPDIFF`); on
//! SQLite they are the milliseconds themselves. No rounding happens anywhere.
//!
//! The reads of `GET /api/events` are planned in [`list`].

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use vigil_core::UnixMillis;
use vigil_core::time::{MAX_TIMESTAMP, MIN_TIMESTAMP};

use crate::EventRow;

/// Placeholders one MySQL prepared statement may hold (the protocol counts them in a `u16`).
pub const MAX_PLACEHOLDERS: usize = 65_535;

/// Placeholders one SQLite statement may hold: `SQLITE_MAX_VARIABLE_NUMBER`, 32,766 by default
/// since SQLite 3.32 (the bundled library is built with the default).
pub const SQLITE_MAX_PLACEHOLDERS: usize = 32_766;

/// Bound values per events row: id, source, type, level, payload, occurred_at, created_at,
/// request_id.
pub const COLUMNS_PER_ROW: usize = 8;

/// Most rows one MySQL INSERT can carry: 8191 (65,528 placeholders).
pub const MAX_ROWS_PER_STATEMENT: usize = MAX_PLACEHOLDERS / COLUMNS_PER_ROW;

/// Most rows one SQLite INSERT can carry: 4095 (32,760 placeholders).
pub const SQLITE_MAX_ROWS_PER_STATEMENT: usize = SQLITE_MAX_PLACEHOLDERS / COLUMNS_PER_ROW;

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

/// The columns every MySQL read selects, in [`crate::row`]'s decoding order. Times come back
/// as microseconds since the epoch: exact integers computed by the server, whatever the
/// session's time zone.
macro_rules! mysql_columns {
    () => {
        "SELECT id, source, type, level, payload, \
         TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', occurred_at), \
         TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', created_at), request_id"
    };
}

/// The columns every SQLite read selects, in the same order. Times are stored as milliseconds.
macro_rules! sqlite_columns {
    () => {
        "SELECT id, source, type, level, payload, occurred_at, created_at, request_id"
    };
}

// After the column macros, which `list` spells its unions with.
pub mod forward;
pub mod list;

/// The columns every MySQL read selects, up to and including `FROM events`.
pub const SELECT_EVENTS: &str = concat!(mysql_columns!(), " FROM events");

/// One event by id (MySQL).
pub const SELECT_BY_ID: &str = concat!(mysql_columns!(), " FROM events WHERE id = ?");

/// The newest events, newest first (MySQL).
pub const SELECT_LATEST: &str = concat!(mysql_columns!(), " FROM events ORDER BY id DESC LIMIT ?");

/// The SQL spellings that differ between the backends. Everything else (statement shapes,
/// plans, placeholders `?`) is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    MySql,
    Sqlite,
}

impl Dialect {
    /// `SELECT <columns>`, in [`crate::row`]'s decoding order.
    pub fn columns(self) -> &'static str {
        match self {
            Dialect::MySql => mysql_columns!(),
            Dialect::Sqlite => sqlite_columns!(),
        }
    }

    /// The columns every read selects, up to and including `FROM events`.
    pub fn select_events(self) -> &'static str {
        match self {
            Dialect::MySql => SELECT_EVENTS,
            Dialect::Sqlite => concat!(sqlite_columns!(), " FROM events"),
        }
    }

    /// One event by id.
    pub fn select_by_id(self) -> &'static str {
        match self {
            Dialect::MySql => SELECT_BY_ID,
            Dialect::Sqlite => concat!(sqlite_columns!(), " FROM events WHERE id = ?"),
        }
    }

    /// The newest events, newest first.
    pub fn select_latest(self) -> &'static str {
        match self {
            Dialect::MySql => SELECT_LATEST,
            Dialect::Sqlite => concat!(sqlite_columns!(), " FROM events ORDER BY id DESC LIMIT ?"),
        }
    }

    /// Most rows one INSERT may carry (the placeholder limit over eight columns).
    pub fn max_rows_per_statement(self) -> usize {
        match self {
            Dialect::MySql => MAX_ROWS_PER_STATEMENT,
            Dialect::Sqlite => SQLITE_MAX_ROWS_PER_STATEMENT,
        }
    }

    /// `SELECT COUNT(*) … WHERE id IN (?,…)` for `count` ids, as `resolve` runs it. On MySQL a
    /// locking read (`LOCK IN SHARE MODE`), so it waits for any transaction still holding
    /// those rows and then sees the committed truth; SQLite has one writer, which `resolve`
    /// settles before counting, and readers always see the last commit.
    pub fn count_ids_sql(self, count: usize) -> String {
        debug_assert!(count >= 1);
        let mut sql = String::with_capacity(64 + count * 2);
        sql.push_str("SELECT COUNT(*) FROM events WHERE id IN (");
        for index in 0..count {
            if index > 0 {
                sql.push(',');
            }
            sql.push('?');
        }
        sql.push(')');
        if self == Dialect::MySql {
            sql.push_str(" LOCK IN SHARE MODE");
        }
        sql
    }
}

/// Retention: deletes at most `?` (second bind) of the events created before `?` (first bind),
/// oldest first, walking the `(created_at, id)` index so one call touches only the rows it
/// deletes. SQLite's `DELETE … LIMIT` is a compile-time option, hence the subquery there.
pub fn delete_expired_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::MySql => "DELETE FROM events WHERE created_at < ? ORDER BY created_at, id LIMIT ?",
        Dialect::Sqlite => {
            "DELETE FROM events WHERE id IN (SELECT id FROM events INDEXED BY events_created_at_id \
             WHERE created_at < ? ORDER BY created_at, id LIMIT ?)"
        }
    }
}

/// Ids per count in `resolve`, well below either placeholder limit.
pub const RESOLVE_IDS_PER_QUERY: usize = 8192;

/// What `resolve` concludes from `present` of a batch's `expected` rows: all → committed,
/// none → not committed, some → an error (impossible for an all-or-nothing batch by Vigil).
pub fn resolution(present: u64, expected: u64) -> Result<bool, crate::StoreError> {
    match present {
        0 => Ok(false),
        _ if present == expected => Ok(true),
        _ => Err(crate::StoreError::PartiallyPresent { present, expected }),
    }
}

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

/// INSERT texts by row count, kept by a writer. The same `Arc<str>` goes to sqlx each time,
/// which finds its prepared statement by that text, so a repeated batch size costs no prepare.
#[derive(Debug, Default)]
pub struct InsertSqlCache {
    texts: HashMap<usize, Arc<str>>,
}

/// Most INSERT texts an [`InsertSqlCache`] keeps before it starts over.
pub const MAX_CACHED_INSERT_SQL: usize = 512;

impl InsertSqlCache {
    /// The INSERT text for `rows` rows.
    pub fn for_rows(&mut self, rows: usize) -> Arc<str> {
        if self.texts.len() >= MAX_CACHED_INSERT_SQL && !self.texts.contains_key(&rows) {
            self.texts.clear();
        }
        Arc::clone(
            self.texts
                .entry(rows)
                .or_insert_with(|| Arc::from(insert_sql(rows))),
        )
    }
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
    fn resolve_counts_name_each_id_and_lock_on_mysql_only() {
        assert_eq!(
            Dialect::MySql.count_ids_sql(3),
            "SELECT COUNT(*) FROM events WHERE id IN (?,?,?) LOCK IN SHARE MODE"
        );
        assert_eq!(
            Dialect::Sqlite.count_ids_sql(2),
            "SELECT COUNT(*) FROM events WHERE id IN (?,?)"
        );
        const { assert!(RESOLVE_IDS_PER_QUERY <= SQLITE_MAX_PLACEHOLDERS) };
    }

    #[test]
    fn resolution_is_all_or_nothing() {
        assert!(!resolution(0, 5).unwrap());
        assert!(resolution(5, 5).unwrap());
        assert!(matches!(
            resolution(3, 5),
            Err(crate::StoreError::PartiallyPresent {
                present: 3,
                expected: 5
            })
        ));
    }

    #[test]
    fn sqlite_selects_read_the_same_columns_in_the_same_order() {
        assert_eq!(
            Dialect::Sqlite.select_by_id(),
            "SELECT id, source, type, level, payload, occurred_at, created_at, request_id FROM events WHERE id = ?"
        );
        assert!(
            Dialect::Sqlite
                .select_latest()
                .ends_with("FROM events ORDER BY id DESC LIMIT ?")
        );
        assert_eq!(Dialect::MySql.select_by_id(), SELECT_BY_ID);
        assert_eq!(SQLITE_MAX_ROWS_PER_STATEMENT, 4095);
        assert!(
            placeholders(&insert_sql(SQLITE_MAX_ROWS_PER_STATEMENT)) <= SQLITE_MAX_PLACEHOLDERS
        );
    }
}
