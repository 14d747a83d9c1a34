//! The SQL of `GET /api/events`: a validated [`EventQuery`] becomes statement text plus the
//! values to bind, with no I/O, so every plan is unit-tested alone.
//!
//! The rule is that every list is read from an index *in id order*, so the server stops after
//! the page (`size + 1` rows, the extra one answering `has_more`) instead of sorting every
//! matching row. An index `(a, b, id)` yields rows in id order only once `a` and `b` are fixed
//! to single values, so a filter becomes one *branch* per combination of the values that
//! drive the chosen index, each `ORDER BY id DESC LIMIT k`, merged by a `UNION ALL` with an
//! outer `ORDER BY id DESC LIMIT k`: at most `branches × k` index entries are read. `level`
//! has only four values, so an index with `level` second serves a filter that leaves `level`
//! open by enumerating all four (that is what lets `(type, level, id)` replace `(type, id)`).
//!
//! Which index drives (indexes from `migrations/mysql/0002_list_indexes.sql`):
//!
//! | filter              | index                       | branches                | filtered after |
//! | ------------------- | --------------------------- | ----------------------- | -------------- |
//! | none                | `PRIMARY`                   | 1                       |                |
//! | level               | `(level, id)`               | levels                  |                |
//! | type [+ level]      | `(type, level, id)`         | types × (levels or 4)   |                |
//! | source [+ level]    | `(source, level, id)`       | sources × (levels or 4) |                |
//! | source + type [+ l] | `(source, level, id)`       | sources × (levels or 4) | type           |
//!
//! There is no `(source, type, id)` index: it would read source+type pages exactly, but a
//! fifth secondary index cost ingest about 7% (see the migration). Every branch names its
//! index (MySQL `FORCE INDEX`, SQLite `INDEXED BY`, or `NOT INDEXED` for SQLite's rowid, which
//! is the primary key), so the plan does not depend on the optimizer's statistics.
//!
//! # Dialects
//!
//! SQLite (`migrations/sqlite`) has the same indexes under the same names, so both backends
//! run the same plans; [`Dialect`] spells the differences: the index hint, times bound as
//! integer milliseconds instead of `DATETIME(3)` text, and the union, because SQLite allows
//! neither parentheses around compound members nor `ORDER BY … LIMIT` on one, so each branch
//! is wrapped as `SELECT id FROM (…)`, and the page is joined to `events` with `CROSS JOIN`,
//! which makes SQLite read the page first and look each row up by id.
//!
//! # Time ranges
//!
//! `from`/`to` bound `created_at`, and ids only roughly follow `created_at` (across instances
//! a later row can carry a smaller id), so no id range can stand in for a time range. Two
//! plans are exact, and each is cheap in a different case:
//!
//! - **by id** (the table above, with the time range filtered after): cheap when the window
//!   holds many rows near the top of the id order, e.g. "since an hour ago" on a busy table;
//!   it stops after one page. In a small window it would read on to the end of the index.
//! - **by window**: the `(created_at, id)` index reads exactly the window, which is then sorted
//!   by id: cheap when the window is small, wherever it lies in time.
//!
//! [`window_probe`] asks the `(created_at, id)` index whether the window, and the rows after
//! its end, hold [`window_sort_limit`] rows each (a few pages' worth; index-only, reading no
//! further), and [`drive_for`] picks: small windows are read whole, large windows that reach
//! (nearly) to the present are read in id order.
//!
//! The trade-offs left, each still served by an index but not bounded by the page size:
//! a large window far back in time that has both ends is read whole and sorted (as many rows
//! as the window holds); one with only an end reads the rows newer than the window before
//! its first page (cursor pages that start inside it are cheap again); and a large recent
//! window whose rows rarely match the filter reads the filter's index past the window,
//! because a row with an older id may still have been created inside it. Bounding those
//! would take composite `(filter, created_at)` indexes, each a further cost on every insert.

use vigil_core::time::{MAX_TIMESTAMP, MIN_TIMESTAMP};
use vigil_core::{EventQuery, Level, UnixMillis};

use super::{Dialect, push_datetime};

/// Most `UNION ALL` branches one list statement may have: 20 values (the API's most per
/// filter) × 4 levels. Larger products fall back to a plan with fewer branches.
pub const MAX_BRANCHES: usize = 80;

/// A window smaller than this many pages' worth of rows (`offset + size + 1` each) is read
/// whole from the `(created_at, id)` index and sorted; a larger one is read in id order.
pub const WINDOW_SORT_FACTOR: u64 = 10;

/// The primary key: every other index ends in `id`, so it orders ties too.
pub const INDEX_PRIMARY: &str = "PRIMARY";
/// `(level, id)`.
pub const INDEX_LEVEL: &str = "events_level_id";
/// `(type, level, id)`.
pub const INDEX_TYPE_LEVEL: &str = "events_type_level_id";
/// `(source, level, id)`.
pub const INDEX_SOURCE_LEVEL: &str = "events_source_level_id";
/// `(created_at, id)`.
pub const INDEX_CREATED_AT: &str = "events_created_at_id";

/// A value bound to a placeholder of a read statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Unsigned(u64),
    /// A time as SQLite stores it, milliseconds since the epoch.
    Signed(i64),
    Text(String),
}

/// Statement text and the values for its placeholders, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// Which index family reads a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// In id order from the filter's index (or the primary key); see the module table.
    ById,
    /// The whole time window from `(created_at, id)`, then sorted by id.
    ByWindow,
}

/// The query's `created_at` bounds, or `None` when no row can match (an empty or
/// out-of-range window). Bounds that every storable row satisfies are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeBounds {
    /// `created_at >= from`.
    pub from: Option<UnixMillis>,
    /// `created_at < to`.
    pub to: Option<UnixMillis>,
}

impl TimeBounds {
    pub fn of(query: &EventQuery) -> Option<TimeBounds> {
        if let (Some(from), Some(to)) = (query.from, query.to)
            && from >= to
        {
            return None;
        }
        let from = match query.from {
            Some(from) if from > MAX_TIMESTAMP => return None,
            Some(from) if from > MIN_TIMESTAMP => Some(from),
            _ => None,
        };
        let to = match query.to {
            Some(to) if to <= MIN_TIMESTAMP => return None,
            Some(to) if to <= MAX_TIMESTAMP => Some(to),
            _ => None,
        };
        Some(TimeBounds { from, to })
    }

    pub fn is_open(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }
}

/// A time bound as `dialect` compares it with `created_at`.
pub(crate) fn time_bind(dialect: Dialect, at: UnixMillis) -> Bind {
    match dialect {
        Dialect::MySql => {
            let mut out = String::with_capacity(super::DATETIME_LEN);
            let in_range = push_datetime(&mut out, at);
            debug_assert!(in_range, "TimeBounds::of checks the range first");
            Bind::Text(out)
        }
        Dialect::Sqlite => Bind::Signed(at.0),
    }
}

/// The index hint for `index`: MySQL `FORCE INDEX (…)`; SQLite `INDEXED BY …`, or
/// `NOT INDEXED` for the primary key (SQLite's rowid, which `INDEXED BY` cannot name and
/// `NOT INDEXED` still reads by rowid, in id order).
pub(crate) fn push_index_hint(sql: &mut String, dialect: Dialect, index: &str) {
    match dialect {
        Dialect::MySql => {
            sql.push_str(" FORCE INDEX (");
            sql.push_str(index);
            sql.push(')');
        }
        Dialect::Sqlite if index == INDEX_PRIMARY => sql.push_str(" NOT INDEXED"),
        Dialect::Sqlite => {
            sql.push_str(" INDEXED BY ");
            sql.push_str(index);
        }
    }
}

/// Rows skipped before the page; saturating, so a hand-built query cannot overflow.
pub fn offset_of(query: &EventQuery) -> u64 {
    u64::from(query.page.saturating_sub(1)).saturating_mul(u64::from(query.size))
}

/// Rows each branch, and the whole statement, fetch: the offset, the page and one more
/// (whose presence is `has_more`).
pub fn fetch_limit(query: &EventQuery) -> u64 {
    offset_of(query)
        .saturating_add(u64::from(query.size))
        .saturating_add(1)
}

/// Window rows up to which the window plan is used; the probe counts no further.
pub fn window_sort_limit(query: &EventQuery) -> u64 {
    fetch_limit(query).saturating_mul(WINDOW_SORT_FACTOR)
}

/// What [`window_probe`] found: whether the window, and (when it has an end) the rows
/// created at or after its end, each hold at least [`window_sort_limit`] rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    pub window_is_large: bool,
    /// `None` when the window has no end.
    pub newer_is_large: Option<bool>,
}

/// The statement that sizes the time window, or `None` when the query has none (then
/// [`Drive::ById`] is the plan). It returns one row: a non-`NULL` first column when the window
/// holds at least [`window_sort_limit`] rows and, when the window has an end, a non-`NULL`
/// second column when at least that many rows were created at or after the end. Each part
/// reads at most that many entries of `(created_at, id)`, index-only.
pub fn window_probe(
    dialect: Dialect,
    query: &EventQuery,
    bounds: &TimeBounds,
) -> Option<Statement> {
    if bounds.is_open() {
        return None;
    }
    let skip = Bind::Unsigned(window_sort_limit(query).saturating_sub(1));
    let mut sql = String::from("SELECT (SELECT 1 FROM events");
    push_index_hint(&mut sql, dialect, INDEX_CREATED_AT);
    let mut binds = Vec::new();
    push_time_conditions(&mut sql, &mut binds, dialect, bounds, " WHERE ");
    sql.push_str(" LIMIT 1 OFFSET ?)");
    binds.push(skip.clone());
    if let Some(to) = bounds.to {
        sql.push_str(", (SELECT 1 FROM events");
        push_index_hint(&mut sql, dialect, INDEX_CREATED_AT);
        sql.push_str(" WHERE created_at >= ? LIMIT 1 OFFSET ?)");
        binds.push(time_bind(dialect, to));
        binds.push(skip);
    }
    Some(Statement { sql, binds })
}

/// The plan, given what [`window_probe`] found (`None`: no probe ran).
///
/// - A small window is read whole ([`Drive::ByWindow`]): at most a few pages of rows.
/// - A large window that reaches the present, or ends before only a few newer rows, is read in
///   id order ([`Drive::ById`]): its newest rows are near the top of every index.
/// - A large window with many rows after its end: reading in id order would first pass all
///   those newer rows, reading the window would sort all of it, and neither count is known.
///   A window with both ends is read whole (its cost is the range the caller asked for); a
///   window with only an end (all history before it) is read in id order (its cost is the
///   rows since that end).
pub fn drive_for(bounds: &TimeBounds, size: Option<WindowSize>) -> Drive {
    let Some(size) = size else {
        return Drive::ById;
    };
    match (size.window_is_large, size.newer_is_large) {
        (false, _) => Drive::ByWindow,
        (true, None | Some(false)) => Drive::ById,
        (true, Some(true)) if bounds.from.is_some() => Drive::ByWindow,
        (true, Some(true)) => Drive::ById,
    }
}

/// One equality or membership test.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    column: &'static str,
    values: Vec<String>,
}

/// How a list is read: the index, one key per branch (values for the index's leading
/// columns, in order), and what is filtered after.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Access {
    index: &'static str,
    key_columns: Vec<&'static str>,
    keys: Vec<Vec<String>>,
    filtered_after: Vec<Condition>,
}

/// The filter's values, deduplicated (a hand-built query may repeat one, which would
/// otherwise repeat rows across branches) in a stable order.
struct Values {
    types: Vec<String>,
    sources: Vec<String>,
    levels: Vec<String>,
}

impl Values {
    fn of(query: &EventQuery) -> Values {
        let mut types = query.filter.types.clone();
        types.sort_unstable();
        types.dedup();
        let mut sources = query.filter.sources.clone();
        sources.sort_unstable();
        sources.dedup();
        let levels = Level::ALL
            .iter()
            .filter(|level| query.filter.levels.contains(level))
            .map(|level| level.as_str().to_owned())
            .collect();
        Values {
            types,
            sources,
            levels,
        }
    }

    /// The levels a branch enumerates: those asked for, or all four.
    fn levels_or_all(&self) -> Vec<String> {
        if self.levels.is_empty() {
            Level::ALL
                .iter()
                .map(|level| level.as_str().to_owned())
                .collect()
        } else {
            self.levels.clone()
        }
    }
}

fn condition(column: &'static str, values: &[String]) -> Option<Condition> {
    (!values.is_empty()).then(|| Condition {
        column,
        values: values.to_vec(),
    })
}

/// Every combination of one value per column, in order.
fn product(columns: &[Vec<String>]) -> Vec<Vec<String>> {
    columns.iter().fold(vec![Vec::new()], |keys, values| {
        keys.iter()
            .flat_map(|key| {
                values.iter().map(move |value| {
                    let mut longer = key.clone();
                    longer.push(value.clone());
                    longer
                })
            })
            .collect()
    })
}

/// The id-ordered access for the filter (the module table).
fn id_ordered_access(values: &Values) -> Access {
    let Values {
        types,
        sources,
        levels,
    } = values;
    let access = |index, key_columns: Vec<&'static str>, keys: Vec<Vec<String>>, after| Access {
        index,
        key_columns,
        keys: product(&keys),
        filtered_after: after,
    };
    if !sources.is_empty() {
        return access(
            INDEX_SOURCE_LEVEL,
            vec!["source", "level"],
            vec![sources.clone(), values.levels_or_all()],
            condition("type", types).into_iter().collect(),
        );
    }
    if !types.is_empty() {
        return access(
            INDEX_TYPE_LEVEL,
            vec!["type", "level"],
            vec![types.clone(), values.levels_or_all()],
            Vec::new(),
        );
    }
    if !levels.is_empty() {
        return access(INDEX_LEVEL, vec!["level"], vec![levels.clone()], Vec::new());
    }
    access(INDEX_PRIMARY, Vec::new(), Vec::new(), Vec::new())
}

/// The window access: one branch over `(created_at, id)`, every filter applied after.
fn window_access(values: &Values) -> Access {
    Access {
        index: INDEX_CREATED_AT,
        key_columns: Vec::new(),
        keys: vec![Vec::new()],
        filtered_after: [
            condition("source", &values.sources),
            condition("type", &values.types),
            condition("level", &values.levels),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

/// The list statement for `query` read the `drive` way. Its rows are the page plus at most
/// one more, newest first, in [`Dialect::select_by_id`]'s column order.
pub fn list_statement(
    dialect: Dialect,
    query: &EventQuery,
    bounds: &TimeBounds,
    drive: Drive,
) -> Statement {
    debug_assert!(
        drive == Drive::ById || !bounds.is_open(),
        "a window plan needs a window"
    );
    let values = Values::of(query);
    let access = match drive {
        Drive::ById => id_ordered_access(&values),
        Drive::ByWindow => window_access(&values),
    };
    debug_assert!(!access.keys.is_empty() && access.keys.len() <= MAX_BRANCHES);
    let offset = offset_of(query);
    let mut sql = String::with_capacity(512 + access.keys.len() * 160);
    let mut binds = Vec::new();
    let branch = BranchContext {
        dialect,
        access: &access,
        query,
        bounds,
    };
    if let [key] = access.keys.as_slice() {
        sql.push_str(dialect.select_events());
        push_branch_body(&mut sql, &mut binds, &branch, key);
        push_page_limit(&mut sql, &mut binds, query, offset);
        return Statement { sql, binds };
    }
    let union = UnionSpelling::of(dialect);
    sql.push_str(union.open);
    for (index, key) in access.keys.iter().enumerate() {
        if index > 0 {
            sql.push_str(" UNION ALL ");
        }
        sql.push_str(union.branch_open);
        push_branch_body(&mut sql, &mut binds, &branch, key);
        sql.push_str(" LIMIT ?)");
        binds.push(Bind::Unsigned(fetch_limit(query)));
    }
    sql.push_str(" ORDER BY id DESC");
    push_page_limit(&mut sql, &mut binds, query, offset);
    sql.push_str(union.close);
    Statement { sql, binds }
}

/// How a dialect spells the merge of several ordered, limited branches into one page, joined
/// back to `events` for the page's columns.
struct UnionSpelling {
    /// The columns and everything before the first branch.
    open: &'static str,
    /// Before each branch's ` INDEX-HINT WHERE … ORDER BY id DESC LIMIT ?)`.
    branch_open: &'static str,
    /// After the merged page's `ORDER BY id DESC LIMIT ?`.
    close: &'static str,
}

impl UnionSpelling {
    fn of(dialect: Dialect) -> UnionSpelling {
        match dialect {
            Dialect::MySql => UnionSpelling {
                open: concat!(mysql_columns!(), " FROM events JOIN ("),
                branch_open: "(SELECT id FROM events",
                close: ") AS page USING (id) ORDER BY id DESC",
            },
            Dialect::Sqlite => UnionSpelling {
                open: concat!(sqlite_columns!(), " FROM ("),
                branch_open: "SELECT id FROM (SELECT id FROM events",
                close: ") AS page CROSS JOIN events USING (id) ORDER BY id DESC",
            },
        }
    }
}

/// What every branch of one statement shares.
struct BranchContext<'a> {
    dialect: Dialect,
    access: &'a Access,
    query: &'a EventQuery,
    bounds: &'a TimeBounds,
}

/// ` INDEX-HINT WHERE … ORDER BY id DESC` for one branch.
fn push_branch_body(
    sql: &mut String,
    binds: &mut Vec<Bind>,
    branch: &BranchContext,
    key: &[String],
) {
    let BranchContext {
        dialect,
        access,
        query,
        bounds,
    } = *branch;
    push_index_hint(sql, dialect, access.index);
    let mut joiner = " WHERE ";
    for (column, value) in access.key_columns.iter().zip(key) {
        sql.push_str(joiner);
        sql.push_str(column);
        sql.push_str(" = ?");
        binds.push(Bind::Text(value.clone()));
        joiner = " AND ";
    }
    for condition in &access.filtered_after {
        sql.push_str(joiner);
        push_membership(sql, binds, condition);
        joiner = " AND ";
    }
    if push_time_conditions(sql, binds, dialect, bounds, joiner) {
        joiner = " AND ";
    }
    if let Some(before) = query.before {
        sql.push_str(joiner);
        sql.push_str("id < ?");
        binds.push(Bind::Unsigned(before));
    }
    sql.push_str(" ORDER BY id DESC");
}

/// `column = ?` or `column IN (?,…)`.
fn push_membership(sql: &mut String, binds: &mut Vec<Bind>, condition: &Condition) {
    sql.push_str(condition.column);
    if let [value] = condition.values.as_slice() {
        sql.push_str(" = ?");
        binds.push(Bind::Text(value.clone()));
        return;
    }
    sql.push_str(" IN (");
    for (index, value) in condition.values.iter().enumerate() {
        if index > 0 {
            sql.push(',');
        }
        sql.push('?');
        binds.push(Bind::Text(value.clone()));
    }
    sql.push(')');
}

/// `created_at >= ?` and/or `created_at < ?`; returns whether anything was written.
fn push_time_conditions(
    sql: &mut String,
    binds: &mut Vec<Bind>,
    dialect: Dialect,
    bounds: &TimeBounds,
    mut joiner: &str,
) -> bool {
    let mut wrote = false;
    for (bound, comparison) in [
        (bounds.from, "created_at >= ?"),
        (bounds.to, "created_at < ?"),
    ] {
        if let Some(at) = bound {
            sql.push_str(joiner);
            sql.push_str(comparison);
            binds.push(time_bind(dialect, at));
            joiner = " AND ";
            wrote = true;
        }
    }
    wrote
}

/// ` LIMIT ?` (page plus one) and ` OFFSET ?` when paging by offset.
fn push_page_limit(sql: &mut String, binds: &mut Vec<Bind>, query: &EventQuery, offset: u64) {
    sql.push_str(" LIMIT ?");
    binds.push(Bind::Unsigned(u64::from(query.size).saturating_add(1)));
    if offset > 0 {
        sql.push_str(" OFFSET ?");
        binds.push(Bind::Unsigned(offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::EventFilter;

    fn query(parameters: &str) -> EventQuery {
        EventQuery::parse(Some(parameters)).expect("a valid query")
    }

    fn plan(query: &EventQuery) -> Statement {
        let bounds = TimeBounds::of(query).expect("a possible window");
        list_statement(Dialect::MySql, query, &bounds, Drive::ById)
    }

    fn text(value: &str) -> Bind {
        Bind::Text(value.to_owned())
    }

    fn placeholders(sql: &str) -> usize {
        sql.bytes().filter(|&byte| byte == b'?').count()
    }

    /// The text after the selected columns.
    fn tail(statement: &Statement) -> &str {
        assert!(statement.sql.starts_with(super::super::SELECT_EVENTS));
        assert_eq!(placeholders(&statement.sql), statement.binds.len());
        &statement.sql[super::super::SELECT_EVENTS.len()..]
    }

    #[test]
    fn no_filter_reads_the_primary_key_newest_first() {
        let statement = plan(&query(""));
        assert_eq!(
            tail(&statement),
            " FORCE INDEX (PRIMARY) ORDER BY id DESC LIMIT ?"
        );
        assert_eq!(statement.binds, [Bind::Unsigned(21)]);
    }

    #[test]
    fn a_cursor_is_an_id_bound_without_offset() {
        let statement = plan(&query("before=500&size=10"));
        assert_eq!(
            tail(&statement),
            " FORCE INDEX (PRIMARY) WHERE id < ? ORDER BY id DESC LIMIT ?"
        );
        assert_eq!(statement.binds, [Bind::Unsigned(500), Bind::Unsigned(11)]);
    }

    #[test]
    fn offset_pages_skip_whole_pages() {
        let statement = plan(&query("page=3&size=50"));
        assert_eq!(
            tail(&statement),
            " FORCE INDEX (PRIMARY) ORDER BY id DESC LIMIT ? OFFSET ?"
        );
        assert_eq!(statement.binds, [Bind::Unsigned(51), Bind::Unsigned(100)]);
    }

    #[test]
    fn one_type_and_one_level_is_one_exact_branch() {
        let statement = plan(&query("type=GAS&level=WARN&before=9"));
        assert_eq!(
            tail(&statement),
            " FORCE INDEX (events_type_level_id) WHERE type = ? AND level = ? AND id < ? ORDER BY id DESC LIMIT ?"
        );
        assert_eq!(
            statement.binds,
            [
                text("GAS"),
                text("WARN"),
                Bind::Unsigned(9),
                Bind::Unsigned(21)
            ]
        );
    }

    #[test]
    fn a_type_alone_enumerates_the_four_levels() {
        let statement = plan(&query("type=GAS&size=5"));
        let tail = tail(&statement);
        assert!(tail.starts_with(" JOIN ((SELECT id FROM events FORCE INDEX (events_type_level_id) WHERE type = ? AND level = ? ORDER BY id DESC LIMIT ?) UNION ALL ("));
        assert!(tail.ends_with(") ORDER BY id DESC LIMIT ?) AS page USING (id) ORDER BY id DESC"));
        assert_eq!(tail.matches("UNION ALL").count(), 3);
        let levels: Vec<&Bind> = statement.binds.iter().skip(1).step_by(3).collect();
        assert_eq!(
            levels,
            [
                &text("INFO"),
                &text("WARN"),
                &text("ERROR"),
                &text("CRITICAL")
            ]
        );
        assert!(
            statement.binds[..12]
                .iter()
                .step_by(3)
                .all(|bind| *bind == text("GAS"))
        );
        assert_eq!(statement.binds.last(), Some(&Bind::Unsigned(6)));
    }

    #[test]
    fn multi_value_filters_become_one_branch_per_combination() {
        let statement = plan(&query("type=SMOKE,GAS&level=CRITICAL,WARN"));
        let tail = tail(&statement);
        assert_eq!(tail.matches("(SELECT id FROM events FORCE INDEX (events_type_level_id) WHERE type = ? AND level = ? ORDER BY id DESC LIMIT ?)").count(), 4);
        let keys: Vec<(&Bind, &Bind)> = statement
            .binds
            .chunks(3)
            .filter(|chunk| chunk.len() == 3)
            .map(|chunk| (&chunk[0], &chunk[1]))
            .collect();
        assert_eq!(
            keys,
            [
                (&text("GAS"), &text("WARN")),
                (&text("GAS"), &text("CRITICAL")),
                (&text("SMOKE"), &text("WARN")),
                (&text("SMOKE"), &text("CRITICAL")),
            ],
            "values sorted, levels in severity order"
        );
    }

    #[test]
    fn levels_alone_use_the_level_index() {
        let statement = plan(&query("level=ERROR,INFO"));
        let tail = tail(&statement);
        assert_eq!(
            tail.matches("FORCE INDEX (events_level_id) WHERE level = ?")
                .count(),
            2
        );
        assert_eq!(statement.binds[0], text("INFO"));
        assert_eq!(statement.binds[2], text("ERROR"));
    }

    #[test]
    fn sources_drive_with_levels_and_types_are_filtered_after() {
        let sources = plan(&query("source=s1&level=WARN"));
        assert_eq!(
            tail(&sources),
            " FORCE INDEX (events_source_level_id) WHERE source = ? AND level = ? ORDER BY id DESC LIMIT ?"
        );
        let alone = plan(&query("source=s1"));
        assert_eq!(tail(&alone).matches("events_source_level_id").count(), 4);
        let pair = plan(&query("source=s1&type=GAS&level=WARN"));
        assert_eq!(
            tail(&pair),
            " FORCE INDEX (events_source_level_id) WHERE source = ? AND level = ? AND type = ? ORDER BY id DESC LIMIT ?"
        );
        assert_eq!(
            pair.binds,
            [text("s1"), text("WARN"), text("GAS"), Bind::Unsigned(21)]
        );
    }

    #[test]
    fn many_sources_and_types_stay_one_branch_per_source_and_level() {
        let many = |prefix: &str| {
            (0..10)
                .map(|n| format!("{prefix}{n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let statement = plan(&query(&format!("source={}&type={}", many("s"), many("T"))));
        let rest = tail(&statement);
        assert_eq!(rest.matches("UNION ALL").count(), 10 * 4 - 1);
        assert_eq!(
            rest.matches("FORCE INDEX (events_source_level_id) WHERE source = ? AND level = ? AND type IN (?,?,?,?,?,?,?,?,?,?) ORDER BY id DESC LIMIT ?").count(),
            40
        );
    }

    #[test]
    fn the_largest_filters_stay_within_the_branch_limit() {
        let twenty = |prefix: &str| {
            (0..20)
                .map(|n| format!("{prefix}{n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        for parameters in [
            format!("type={}", twenty("T")),
            format!("source={}", twenty("s")),
            format!("type={}&level=INFO,WARN,ERROR,CRITICAL", twenty("T")),
            format!("source={}&type={}&level=WARN", twenty("s"), twenty("T")),
        ] {
            let statement = plan(&query(&parameters));
            let branches = tail(&statement).matches("(SELECT id FROM events").count();
            assert!(
                (2..=MAX_BRANCHES).contains(&branches),
                "{parameters}: {branches}"
            );
        }
    }

    #[test]
    fn offset_pages_fetch_the_skipped_rows_in_every_branch() {
        let statement = plan(&query("type=GAS,SMOKE&level=WARN&page=3&size=10"));
        let tail = tail(&statement);
        assert!(
            tail.ends_with(
                "ORDER BY id DESC LIMIT ? OFFSET ?) AS page USING (id) ORDER BY id DESC"
            )
        );
        assert_eq!(
            statement.binds,
            [
                text("GAS"),
                text("WARN"),
                Bind::Unsigned(31),
                text("SMOKE"),
                text("WARN"),
                Bind::Unsigned(31),
                Bind::Unsigned(11),
                Bind::Unsigned(20),
            ]
        );
    }

    #[test]
    fn duplicate_values_do_not_duplicate_branches() {
        let query = EventQuery {
            filter: EventFilter {
                types: vec!["GAS".into(), "GAS".into()],
                levels: vec![Level::Warn, Level::Warn],
                sources: Vec::new(),
            },
            ..EventQuery::default()
        };
        assert!(!tail(&plan(&query)).contains("UNION"));
    }

    #[test]
    fn time_bounds_are_exact_and_filtered_in_every_branch() {
        let query =
            query("type=GAS&level=WARN,ERROR&from=2026-11-24T00:00:00Z&to=2026-11-24T01:00:00.5Z");
        let statement = plan(&query);
        assert_eq!(
            tail(&statement)
                .matches("WHERE type = ? AND level = ? AND created_at >= ? AND created_at < ? ORDER BY id DESC")
                .count(),
            2
        );
        assert_eq!(statement.binds[2], text("2026-11-24 00:00:00.000"));
        assert_eq!(statement.binds[3], text("2026-11-24 01:00:00.500"));
    }

    #[test]
    fn the_window_plan_reads_created_at_and_filters_everything_after() {
        let query =
            query("type=GAS,SMOKE&level=WARN&source=s1&to=2026-11-24T01:00:00Z&before=77&size=5");
        let bounds = TimeBounds::of(&query).unwrap();
        let statement = list_statement(Dialect::MySql, &query, &bounds, Drive::ByWindow);
        assert_eq!(
            tail(&statement),
            " FORCE INDEX (events_created_at_id) WHERE source = ? AND type IN (?,?) AND level = ? AND created_at < ? AND id < ? ORDER BY id DESC LIMIT ?"
        );
        assert_eq!(
            statement.binds,
            [
                text("s1"),
                text("GAS"),
                text("SMOKE"),
                text("WARN"),
                text("2026-11-24 01:00:00.000"),
                Bind::Unsigned(77),
                Bind::Unsigned(6),
            ]
        );
    }

    #[test]
    fn the_probe_sizes_the_window_up_to_a_few_pages() {
        let no_window = query("type=GAS");
        let bounds = TimeBounds::of(&no_window).unwrap();
        assert_eq!(window_probe(Dialect::MySql, &no_window, &bounds), None);
        assert_eq!(drive_for(&bounds, None), Drive::ById);

        let since = query("from=2026-11-24T00:00:00Z&size=20&page=2");
        let bounds = TimeBounds::of(&since).unwrap();
        let probe = window_probe(Dialect::MySql, &since, &bounds).unwrap();
        assert_eq!(
            probe.sql,
            "SELECT (SELECT 1 FROM events FORCE INDEX (events_created_at_id) WHERE created_at >= ? LIMIT 1 OFFSET ?)"
        );
        assert_eq!(window_sort_limit(&since), 410);
        assert_eq!(
            probe.binds,
            [text("2026-11-24 00:00:00.000"), Bind::Unsigned(409)],
            "a row at offset 409 means 410 rows or more"
        );

        let between = query("from=2026-11-24T00:00:00Z&to=2026-11-24T01:00:00Z&size=9");
        let bounds = TimeBounds::of(&between).unwrap();
        let probe = window_probe(Dialect::MySql, &between, &bounds).unwrap();
        assert_eq!(
            probe.sql,
            "SELECT (SELECT 1 FROM events FORCE INDEX (events_created_at_id) WHERE created_at >= ? AND created_at < ? LIMIT 1 OFFSET ?), (SELECT 1 FROM events FORCE INDEX (events_created_at_id) WHERE created_at >= ? LIMIT 1 OFFSET ?)"
        );
        assert_eq!(
            probe.binds,
            [
                text("2026-11-24 00:00:00.000"),
                text("2026-11-24 01:00:00.000"),
                Bind::Unsigned(99),
                text("2026-11-24 01:00:00.000"),
                Bind::Unsigned(99),
            ]
        );
    }

    #[test]
    fn small_windows_are_sorted_and_recent_large_ones_read_by_id() {
        let size = |window_is_large, newer_is_large| {
            Some(WindowSize {
                window_is_large,
                newer_is_large,
            })
        };
        let since = TimeBounds::of(&query("from=2026-11-24T00:00:00Z")).unwrap();
        assert_eq!(drive_for(&since, size(false, None)), Drive::ByWindow);
        assert_eq!(drive_for(&since, size(true, None)), Drive::ById);
        let between =
            TimeBounds::of(&query("from=2026-11-24T00:00:00Z&to=2026-11-24T01:00:00Z")).unwrap();
        assert_eq!(
            drive_for(&between, size(false, Some(true))),
            Drive::ByWindow
        );
        assert_eq!(drive_for(&between, size(true, Some(false))), Drive::ById);
        assert_eq!(drive_for(&between, size(true, Some(true))), Drive::ByWindow);
        let until = TimeBounds::of(&query("to=2026-11-24T01:00:00Z")).unwrap();
        assert_eq!(drive_for(&until, size(false, Some(true))), Drive::ByWindow);
        assert_eq!(drive_for(&until, size(true, Some(false))), Drive::ById);
        assert_eq!(drive_for(&until, size(true, Some(true))), Drive::ById);
    }

    fn sqlite_plan(parameters: &str) -> Statement {
        let query = query(parameters);
        let bounds = TimeBounds::of(&query).expect("a possible window");
        list_statement(Dialect::Sqlite, &query, &bounds, Drive::ById)
    }

    #[test]
    fn sqlite_names_indexes_with_indexed_by_and_reads_the_rowid_unindexed() {
        let columns = Dialect::Sqlite.select_events();
        let none = sqlite_plan("before=500&size=10");
        assert_eq!(
            none.sql,
            format!("{columns} NOT INDEXED WHERE id < ? ORDER BY id DESC LIMIT ?")
        );
        let exact = sqlite_plan("type=GAS&level=WARN&from=2026-11-24T00:00:00.5Z");
        assert_eq!(
            exact.sql,
            format!(
                "{columns} INDEXED BY events_type_level_id WHERE type = ? AND level = ? AND created_at >= ? ORDER BY id DESC LIMIT ?"
            )
        );
        assert_eq!(
            exact.binds,
            [
                text("GAS"),
                text("WARN"),
                Bind::Signed(1_795_478_400_500),
                Bind::Unsigned(21)
            ],
            "times are bound as the milliseconds SQLite stores"
        );
    }

    #[test]
    fn sqlite_unions_wrap_each_branch_and_read_the_page_first() {
        let statement = sqlite_plan("level=ERROR,INFO&page=2&size=5");
        assert_eq!(
            statement.sql,
            format!(
                "{} FROM (SELECT id FROM (SELECT id FROM events INDEXED BY events_level_id WHERE level = ? ORDER BY id DESC LIMIT ?) UNION ALL SELECT id FROM (SELECT id FROM events INDEXED BY events_level_id WHERE level = ? ORDER BY id DESC LIMIT ?) ORDER BY id DESC LIMIT ? OFFSET ?) AS page CROSS JOIN events USING (id) ORDER BY id DESC",
                Dialect::Sqlite.columns()
            )
        );
        assert_eq!(placeholders(&statement.sql), statement.binds.len());
        let probe = {
            let query = query("from=2026-11-24T00:00:00Z&to=2026-11-24T01:00:00Z");
            let bounds = TimeBounds::of(&query).unwrap();
            window_probe(Dialect::Sqlite, &query, &bounds).unwrap()
        };
        assert_eq!(
            probe.sql,
            "SELECT (SELECT 1 FROM events INDEXED BY events_created_at_id WHERE created_at >= ? AND created_at < ? LIMIT 1 OFFSET ?), (SELECT 1 FROM events INDEXED BY events_created_at_id WHERE created_at >= ? LIMIT 1 OFFSET ?)"
        );
    }

    #[test]
    fn impossible_windows_are_known_without_asking() {
        let empty = query("from=2026-11-24T00:00:00Z&to=2026-11-24T00:00:00Z");
        assert_eq!(TimeBounds::of(&empty), None);
        let hand_built = |from: Option<i64>, to: Option<i64>| EventQuery {
            from: from.map(UnixMillis),
            to: to.map(UnixMillis),
            ..EventQuery::default()
        };
        assert_eq!(
            TimeBounds::of(&hand_built(Some(MAX_TIMESTAMP.0 + 1), None)),
            None
        );
        assert_eq!(
            TimeBounds::of(&hand_built(None, Some(MIN_TIMESTAMP.0))),
            None
        );
        let everything = TimeBounds::of(&hand_built(
            Some(MIN_TIMESTAMP.0),
            Some(MAX_TIMESTAMP.0 + 1),
        ))
        .unwrap();
        assert!(everything.is_open(), "bounds every row meets are dropped");
    }

    #[test]
    fn limits_saturate_for_hand_built_queries() {
        let query = EventQuery {
            page: u32::MAX,
            size: u32::MAX,
            ..EventQuery::default()
        };
        let offset = u64::from(u32::MAX - 1) * u64::from(u32::MAX);
        assert_eq!(fetch_limit(&query), offset + u64::from(u32::MAX) + 1);
        assert_eq!(window_sort_limit(&query), u64::MAX);
        let zero = EventQuery {
            page: 0,
            ..EventQuery::default()
        };
        assert_eq!(offset_of(&zero), 0);
    }
}
