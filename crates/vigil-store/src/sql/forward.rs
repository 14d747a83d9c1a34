//! The reads of realtime delivery, oldest first: a WebSocket resume replays the events after
//! the client's last id, and a backfill re-reads the events created in a time window. Both
//! walk one index in its own order and stop at a limit, so their cost is the rows returned
//! (plus, for a filtered resume, the non-matching rows skipped over in between).
//!
//! - after an id: the primary key from `id > ?` upward, filters checked on each row;
//! - by ids: primary-key lookups;
//! - created since: `(created_at, id)` from the window's start upward, with a keyset cursor
//!   `(created_at, id) > (?, ?)` spelt so that the index range starts at the cursor.

use vigil_core::time::{MAX_TIMESTAMP, MIN_TIMESTAMP};
use vigil_core::{EventFilter, UnixMillis};

use super::Dialect;
use super::list::{Bind, INDEX_CREATED_AT, INDEX_PRIMARY, Statement, push_index_hint, time_bind};

/// Events with `id > after_id` that pass `filter`, in increasing id order, at most `limit`.
pub fn after_id(dialect: Dialect, after_id: u64, filter: &EventFilter, limit: u64) -> Statement {
    let mut sql = String::with_capacity(256);
    sql.push_str(dialect.select_events());
    push_index_hint(&mut sql, dialect, INDEX_PRIMARY);
    sql.push_str(" WHERE id > ?");
    let mut binds = vec![Bind::Unsigned(after_id)];
    push_in(&mut sql, &mut binds, "type", &filter.types);
    let levels: Vec<String> = filter
        .levels
        .iter()
        .map(|level| level.as_str().to_owned())
        .collect();
    push_in(&mut sql, &mut binds, "level", &levels);
    push_in(&mut sql, &mut binds, "source", &filter.sources);
    sql.push_str(" ORDER BY id LIMIT ?");
    binds.push(Bind::Unsigned(limit));
    Statement { sql, binds }
}

/// The events with these ids (at least one), in increasing id order.
pub fn by_ids(dialect: Dialect, ids: &[u64]) -> Statement {
    debug_assert!(!ids.is_empty());
    let mut sql = String::with_capacity(256 + ids.len() * 2);
    sql.push_str(dialect.select_events());
    sql.push_str(" WHERE id IN (");
    push_placeholders(&mut sql, ids.len());
    sql.push_str(") ORDER BY id");
    Statement {
        sql,
        binds: ids.iter().map(|&id| Bind::Unsigned(id)).collect(),
    }
}

/// Events created at or after `from`, in `(created_at, id)` order, strictly after `cursor`
/// when given, at most `limit`. `None` when `from` is past every storable time.
pub fn created_since(
    dialect: Dialect,
    from: UnixMillis,
    cursor: Option<(UnixMillis, u64)>,
    limit: u64,
) -> Option<Statement> {
    if from > MAX_TIMESTAMP {
        return None;
    }
    let from = from.max(MIN_TIMESTAMP);
    let mut sql = String::with_capacity(400);
    sql.push_str(dialect.select_events());
    push_index_hint(&mut sql, dialect, INDEX_CREATED_AT);
    sql.push_str(" WHERE created_at >= ?");
    let mut binds = vec![time_bind(dialect, from)];
    // Stored times are in range, so a cursor from a stored row is too.
    if let Some((at, id)) = cursor
        && (MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&at)
    {
        // `(created_at, id) > (at, id)`, spelt so the optimizer sees the index range.
        sql.push_str(" AND created_at >= ? AND (created_at > ? OR id > ?)");
        binds.push(time_bind(dialect, at));
        binds.push(time_bind(dialect, at));
        binds.push(Bind::Unsigned(id));
    }
    sql.push_str(" ORDER BY created_at, id LIMIT ?");
    binds.push(Bind::Unsigned(limit));
    Some(Statement { sql, binds })
}

fn push_in(sql: &mut String, binds: &mut Vec<Bind>, column: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    sql.push_str(" AND ");
    sql.push_str(column);
    sql.push_str(" IN (");
    push_placeholders(sql, values.len());
    sql.push(')');
    binds.extend(values.iter().cloned().map(Bind::Text));
}

fn push_placeholders(sql: &mut String, count: usize) {
    for index in 0..count {
        if index > 0 {
            sql.push(',');
        }
        sql.push('?');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::Level;

    #[test]
    fn after_id_binds_the_filter_in_order() {
        let filter = EventFilter {
            types: vec!["GAS".into(), "SMOKE".into()],
            levels: vec![Level::Warn],
            sources: Vec::new(),
        };
        let statement = after_id(Dialect::MySql, 17, &filter, 101);
        assert!(
            statement
                .sql
                .ends_with("WHERE id > ? AND type IN (?,?) AND level IN (?) ORDER BY id LIMIT ?"),
            "{}",
            statement.sql
        );
        assert_eq!(
            statement.binds,
            [
                Bind::Unsigned(17),
                Bind::Text("GAS".into()),
                Bind::Text("SMOKE".into()),
                Bind::Text("WARN".into()),
                Bind::Unsigned(101),
            ]
        );
    }

    #[test]
    fn created_since_pages_by_a_keyset_cursor() {
        let first =
            created_since(Dialect::MySql, UnixMillis(1_700_000_000_000), None, 500).unwrap();
        assert_eq!(first.binds.len(), 2);
        assert!(first.sql.contains("FORCE INDEX (events_created_at_id)"));
        let sqlite = created_since(Dialect::Sqlite, UnixMillis(5), None, 1).unwrap();
        assert!(sqlite.sql.contains("INDEXED BY events_created_at_id"));
        assert_eq!(sqlite.binds[0], Bind::Signed(5));
        let next = created_since(
            Dialect::MySql,
            UnixMillis(1_700_000_000_000),
            Some((UnixMillis(1_700_000_000_005), 42)),
            500,
        )
        .unwrap();
        assert!(next.sql.contains("(created_at > ? OR id > ?)"));
        assert_eq!(next.binds.len(), 5);
        assert!(created_since(Dialect::MySql, UnixMillis(i64::MAX / 2), None, 1).is_none());
    }
}
