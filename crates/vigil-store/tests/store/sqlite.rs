//! SQLite-only behaviour: files and directories, durability settings, reopening, the table's
//! own checks, lock waits, index-served list plans whose cost does not grow with the table,
//! and events byte-identical to the MySQL backend's.
//!
//! Two stores on one file allocating disjoint ids is `ids::ids_are_unique_and_exact_across_two_
//! stores_used_concurrently::sqlite`; the other backend-neutral behaviour runs on SQLite through
//! `on_each_backend!` in the other modules.

use std::time::Duration;

use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Executor, Row};
use vigil_core::{EventQuery, Level, NewEvent, UnixMillis};
use vigil_store::sql::Dialect;
use vigil_store::sql::list::{Bind, Drive, Statement, TimeBounds, list_statement, window_probe};
use vigil_store::{EventRow, InsertError, Store, StoreError, StoreOptions};

use crate::helpers::{
    Backend, Batch, assert_is_row_for, count_rows, fresh_store, fresh_store_with,
    options_with_statement_timeout,
};
use crate::list::{at, load_mix};

fn sqlite_store(store: &Store) -> &vigil_store::SqliteStore {
    match store {
        Store::Sqlite(store) => store,
        Store::MySql(_) => panic!("a sqlite store was expected"),
    }
}

#[tokio::test]
async fn a_url_creates_the_file_and_its_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/events.db");
    for url in [
        format!("sqlite://{}", nested.display()),
        format!("sqlite:{}", dir.path().join("c/other.db").display()),
    ] {
        let store = Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        assert_eq!(store.backend_name(), "sqlite");
        assert!(
            store.description().starts_with("sqlite /"),
            "{}",
            store.description()
        );
        store.ping().await.unwrap();
        store.close().await;
    }
    assert!(nested.is_file());
    assert!(dir.path().join("c/other.db").is_file());
}

#[tokio::test]
async fn the_embedded_store_keeps_vigil_db_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data/vigil");
    let store = Store::open_embedded(&data_dir, &StoreOptions::default())
        .await
        .unwrap();
    let batch = Batch::for_ids(store.allocate_ids(3).await.unwrap());
    store.insert(&batch.rows()).await.unwrap();
    assert_eq!(
        sqlite_store(&store).path(),
        data_dir.join("vigil.db").as_path()
    );
    store.close().await;
    let url = format!("sqlite://{}", data_dir.join("vigil.db").display());
    assert_eq!(count_rows(&url).await, 3);
}

#[tokio::test]
async fn a_second_store_on_the_same_data_directory_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let first = Store::open_embedded(&data_dir, &StoreOptions::default())
        .await
        .unwrap();
    let Err(error) = Store::open_embedded(&data_dir, &StoreOptions::default()).await else {
        panic!("a second store opened a data directory in use");
    };
    match &error {
        StoreError::DatabaseInUse { holder_pid, .. } => {
            assert_eq!(*holder_pid, Some(std::process::id()));
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("VIGIL_DATA_DIR"), "{error}");

    // A store opened by URL claims the file only when asked (the embedded mode asks).
    let url = format!("sqlite://{}", data_dir.join("vigil.db").display());
    let by_url = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        by_url.claim_sole_writer(),
        Err(StoreError::DatabaseInUse { .. })
    ));
    by_url.close().await;

    first.close().await;
    drop(first);
    let again = Store::open_embedded(&data_dir, &StoreOptions::default())
        .await
        .unwrap();
    again.close().await;
}

#[tokio::test]
async fn the_embedded_database_and_its_directory_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data/vigil");
    let store = Store::open_embedded(&data_dir, &StoreOptions::default())
        .await
        .unwrap();
    let batch = Batch::for_ids(store.allocate_ids(2).await.unwrap());
    store.insert(&batch.rows()).await.unwrap();
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(dir.path().join("data")), 0o700);
    assert_eq!(mode(data_dir.clone()), 0o700);
    for file in ["vigil.db", "vigil.db-wal", "vigil.db-shm", "vigil.db.lock"] {
        assert_eq!(mode(data_dir.join(file)), 0o600, "{file}");
    }
    store.close().await;
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let Err(error) = Store::open_embedded(&file.join("vigil"), &StoreOptions::default()).await
    else {
        panic!("a data directory under a file was accepted");
    };
    assert!(
        matches!(error, StoreError::DataDirectory { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("not-a-directory"), "{error}");
}

#[tokio::test]
async fn the_writer_runs_wal_with_synchronous_full() {
    let (target, store) = fresh_store(Backend::Sqlite).await;
    let settings = sqlite_store(&store).settings().await.unwrap();
    assert_eq!(settings.journal_mode, "wal");
    assert_eq!(settings.synchronous, 2, "2 is FULL");
    assert_eq!(
        settings.busy_timeout_ms, 5_000,
        "half the statement timeout"
    );
    // The journal mode is a property of the file: any connection sees it.
    let mut connection = SqliteConnection::connect(target.url()).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let _ = connection.close().await;
    store.close().await;
    target.drop_database().await;
}

#[tokio::test]
async fn events_survive_close_and_reopen_and_new_ids_lie_above_them() {
    let (target, store) = fresh_store(Backend::Sqlite).await;
    let batch = Batch::for_ids(store.allocate_ids(50).await.unwrap());
    store.insert(&batch.rows()).await.unwrap();
    store.close().await;

    let reopened = Store::connect(target.url(), &StoreOptions::default())
        .await
        .unwrap();
    let stored = reopened.latest(100).await.unwrap();
    assert_eq!(stored.len(), 50);
    for row in &stored {
        assert_is_row_for(row, row.id);
    }
    let next = reopened.allocate_ids(1).await.unwrap();
    assert!(
        next[0] > *batch.ids.last().unwrap(),
        "a reopened store reserves a new block above every id handed out"
    );
    reopened.close().await;
    target.drop_database().await;
}

#[tokio::test]
async fn the_table_itself_refuses_a_payload_that_is_not_json() {
    let (target, store) = fresh_store(Backend::Sqlite).await;
    let mut connection = SqliteConnection::connect(target.url()).await.unwrap();
    let insert = |id: i64, payload: &'static str| {
        sqlx::query(
            "INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id) \
             VALUES (?, 's', 'T', 'INFO', ?, NULL, 0, 'r')",
        )
        .bind(id)
        .bind(payload)
    };
    for not_json in ["{not json", "{a:1}", "[1,]", ""] {
        let error = insert(1, not_json)
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("CHECK constraint failed"),
            "{not_json}: {error}"
        );
    }
    insert(2, r#"{"b":1,"a":[1,2]}"#)
        .execute(&mut connection)
        .await
        .unwrap();
    let level = sqlx::query(
        "INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id) \
         VALUES (3, 's', 'T', 'DEBUG', NULL, NULL, 0, 'r')",
    )
    .execute(&mut connection)
    .await;
    assert!(level.is_err(), "only the four levels are stored");
    let _ = connection.close().await;
    assert_eq!(
        store.get(2).await.unwrap().unwrap().payload.as_deref(),
        Some(r#"{"b":1,"a":[1,2]}"#)
    );
    store.close().await;
    target.drop_database().await;
}

#[tokio::test]
async fn an_insert_that_waits_on_another_writer_past_the_busy_timeout_is_certainly_not_committed() {
    let options = options_with_statement_timeout(Duration::from_millis(800));
    let (target, store) = fresh_store_with(Backend::Sqlite, &options).await;
    let batch = Batch::for_ids(store.allocate_ids(5).await.unwrap());

    // Another connection (another process, as far as SQLite can tell) holds the write lock.
    let mut blocker = SqliteConnection::connect(target.url()).await.unwrap();
    blocker.execute("BEGIN IMMEDIATE").await.unwrap();
    let error = store.insert(&batch.rows()).await.unwrap_err();
    assert!(
        matches!(error, InsertError::NotCommitted(StoreError::Query { .. })),
        "{error:?}"
    );
    assert!(error.is_retriable(), "busy is worth retrying: {error}");
    blocker.execute("ROLLBACK").await.unwrap();

    assert!(!store.resolve(&batch.ids).await.unwrap());
    store.insert(&batch.rows()).await.unwrap();
    assert!(store.resolve(&batch.ids).await.unwrap());
    let _ = blocker.close().await;
    store.close().await;
    target.drop_database().await;
}

/// The `EXPLAIN QUERY PLAN` rows of `statement`: (id, parent, detail).
async fn query_plan(connection: &mut SqliteConnection, statement: &Statement) -> Vec<PlanLine> {
    let sql = format!("EXPLAIN QUERY PLAN {}", statement.sql);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for bind in &statement.binds {
        query = match bind {
            Bind::Unsigned(value) => query.bind(i64::try_from(*value).unwrap()),
            Bind::Signed(value) => query.bind(*value),
            Bind::Text(value) => query.bind(value.clone()),
        };
    }
    let rows = query.fetch_all(&mut *connection).await.unwrap();
    rows.iter()
        .map(|row| PlanLine {
            id: row.get(0),
            parent: row.get(1),
            detail: row.get(3),
        })
        .collect()
}

#[derive(Debug)]
struct PlanLine {
    id: i64,
    parent: i64,
    detail: String,
}

/// Panics unless every access to `events` in `plan` goes through `index` (or is the page's
/// look-up by id), and (for plans read in id order) nothing but a branch's own few rows is
/// sorted: the index order itself serves `ORDER BY id DESC`.
fn assert_index_served(plan: &[PlanLine], index: &str, sorted_window: bool, context: &str) {
    let render = || {
        plan.iter()
            .map(|line| format!("  {} {} {}", line.id, line.parent, line.detail))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut used = false;
    for line in plan {
        let detail = line.detail.as_str();
        if !(detail.starts_with("SCAN events") || detail.starts_with("SEARCH events")) {
            continue;
        }
        let through_index = [
            format!("SEARCH events USING INDEX {index} ("),
            format!("SEARCH events USING COVERING INDEX {index} ("),
        ]
        .iter()
        .any(|prefix| detail.starts_with(prefix.as_str()));
        let primary_key = detail.starts_with("SEARCH events USING INTEGER PRIMARY KEY (rowid");
        // The rowid table read newest first, stopping after the page: the primary-key plan.
        let rowid_walk = detail == "SCAN events" && index == "PRIMARY";
        assert!(
            through_index || primary_key || rowid_walk,
            "{context}: `{detail}` does not read {index}\n{}",
            render()
        );
        used |= through_index || (index == "PRIMARY" && (primary_key || rowid_walk));
    }
    assert!(used, "{context}: {index} is not read\n{}", render());
    if sorted_window {
        return;
    }
    for sort in plan
        .iter()
        .filter(|line| line.detail.starts_with("USE TEMP B-TREE FOR ORDER BY"))
    {
        let siblings: Vec<&str> = plan
            .iter()
            .filter(|line| line.parent == sort.parent && line.id != sort.id)
            .map(|line| line.detail.as_str())
            .collect();
        // A sort beside a branch's subquery orders that branch's few rows for the merge; a
        // sort beside a read of `events` would sort the rows of an index range.
        assert!(
            !siblings
                .iter()
                .any(|detail| detail.starts_with("SEARCH events")
                    || detail.starts_with("SCAN events")),
            "{context}: rows of an index are sorted instead of read in id order\n{}",
            render()
        );
    }
}

#[tokio::test]
async fn every_list_plan_reads_an_index_in_id_order_on_page_one_and_cursor_pages() {
    let (target, store) = fresh_store(Backend::Sqlite).await;
    load_mix(&store, 500, 5, 500).await;
    let mut connection = SqliteConnection::connect(target.url()).await.unwrap();
    // (filter, the index its id-ordered plan must read): the table in `sql::list`.
    let shapes = [
        ("", "PRIMARY"),
        ("type=GAS", "events_type_level_id"),
        ("level=CRITICAL", "events_level_id"),
        ("source=site-1/sensor", "events_source_level_id"),
        ("type=GAS,SMOKE", "events_type_level_id"),
        ("level=WARN,CRITICAL", "events_level_id"),
        (
            "source=site-1/sensor,site-2/sensor",
            "events_source_level_id",
        ),
        ("type=GAS&level=WARN", "events_type_level_id"),
        (
            "type=GAS,SMOKE&level=ERROR,CRITICAL",
            "events_type_level_id",
        ),
        (
            "source=site-1/sensor&type=GAS,DOOR",
            "events_source_level_id",
        ),
        ("source=site-1/sensor&level=INFO", "events_source_level_id"),
        (
            "source=site-1/sensor&type=SMOKE&level=WARN,INFO",
            "events_source_level_id",
        ),
    ];
    let windows = [
        String::new(),
        format!("from={}", at(3_000)),
        format!("to={}", at(2_000)),
        format!("from={}&to={}", at(1_000), at(3_000)),
    ];
    let mut checked = 0;
    for (filter, index) in shapes {
        for window in &windows {
            for paging in ["size=20", "size=20&before=250", "size=10&page=3"] {
                let parameters = format!("{filter}&{window}&{paging}");
                let query = EventQuery::parse(Some(&parameters)).unwrap();
                let bounds = TimeBounds::of(&query).unwrap();
                let by_id = list_statement(Dialect::Sqlite, &query, &bounds, Drive::ById);
                let plan = query_plan(&mut connection, &by_id).await;
                assert_index_served(&plan, index, false, &format!("{parameters} by id"));
                checked += 1;
                if bounds.is_open() {
                    continue;
                }
                let by_window = list_statement(Dialect::Sqlite, &query, &bounds, Drive::ByWindow);
                let plan = query_plan(&mut connection, &by_window).await;
                assert_index_served(
                    &plan,
                    "events_created_at_id",
                    true,
                    &format!("{parameters} by window"),
                );
                let probe = window_probe(Dialect::Sqlite, &query, &bounds).unwrap();
                let plan = query_plan(&mut connection, &probe).await;
                assert_index_served(
                    &plan,
                    "events_created_at_id",
                    false,
                    &format!("{parameters} probe"),
                );
            }
        }
    }
    assert_eq!(checked, 12 * 4 * 3);
    let _ = connection.close().await;
    store.close().await;
    target.drop_database().await;
}

/// The instructions each query costs on the table as loaded so far.
async fn list_costs(store: &Store, queries: &[String]) -> Vec<u64> {
    let mut costs = Vec::new();
    for parameters in queries {
        let query = EventQuery::parse(Some(parameters)).unwrap();
        let (page, instructions) = store.list_with_rows_examined(&query).await.unwrap();
        assert_eq!(page, store.list(&query).await.unwrap(), "{parameters}");
        assert!(
            instructions > 0,
            "{parameters}: the handler counted nothing"
        );
        costs.push(instructions);
    }
    costs
}

#[tokio::test]
async fn list_costs_stay_flat_when_the_table_grows_five_fold() {
    let (target, store) = fresh_store(Backend::Sqlite).await;
    load_mix(&store, 3_000, 5, 1_000).await;
    let cursor = 2_000;
    let queries: Vec<String> = [
        String::new(),
        "type=GAS".into(),
        "level=CRITICAL".into(),
        "source=site-1/sensor".into(),
        "type=GAS,SMOKE&level=ERROR,CRITICAL".into(),
        "source=site-1/sensor&type=GAS,DOOR".into(),
        format!("type=GAS&from={}&to={}", at(5_000), at(6_000)),
    ]
    .iter()
    .flat_map(|filter| {
        [
            format!("{filter}&size=20"),
            format!("{filter}&size=20&before={cursor}"),
            format!("{filter}&size=10&page=3"),
        ]
    })
    .collect();
    let small = list_costs(&store, &queries).await;
    load_mix(&store, 12_000, 5, 1_000).await;
    let large = list_costs(&store, &queries).await;
    let mut report = Vec::new();
    for ((parameters, small), large) in queries.iter().zip(&small).zip(&large) {
        report.push(format!("{small:>8} {large:>8}  {parameters}"));
        // A plan that read the table, or an index's whole range, would cost about five times
        // as much on the larger table.
        assert!(
            *large <= small * 3 / 2 + 2_000,
            "{parameters}: {small} instructions on 3,000 rows, {large} on 15,000"
        );
    }
    println!(
        "sqlite instructions, 3,000 vs 15,000 rows:\n{}",
        report.join("\n")
    );
    store.close().await;
    target.drop_database().await;
}

#[tokio::test]
async fn an_event_encodes_to_the_same_bytes_from_mysql_and_from_sqlite() {
    let (mysql_target, mysql) = fresh_store(Backend::MySql).await;
    let (sqlite_target, sqlite) = fresh_store(Backend::Sqlite).await;
    let events = [
        NewEvent {
            source: "датчик 7 🔥 \"north\" \\ 北".into(),
            event_type: "GAS.leak:v2_x-y".into(),
            level: Level::Critical,
            payload: Some(
                r#"{"z":1,"a":[1,2,{"é":"é\n\"q\""}],"n":null,"b":{"y":2,"x":1.50}}"#.into(),
            ),
            occurred_at: Some(UnixMillis(-1)),
        },
        NewEvent {
            source: "s".into(),
            event_type: "T".into(),
            level: Level::Info,
            payload: None,
            occurred_at: None,
        },
        NewEvent {
            source: "ÄÖÜ".into(),
            event_type: "DOOR".into(),
            level: Level::Warn,
            payload: Some("{}".into()),
            occurred_at: Some(vigil_core::time::MAX_TIMESTAMP),
        },
    ];
    let ids = mysql.allocate_ids(events.len()).await.unwrap();
    let created = [
        UnixMillis(1_795_497_129_123),
        vigil_core::time::MIN_TIMESTAMP,
        UnixMillis(0),
    ];
    let rows: Vec<EventRow<'_>> = events
        .iter()
        .zip(&ids)
        .zip(created)
        .map(|((event, &id), created_at)| EventRow {
            id,
            event,
            created_at,
            request_id: "same-request.1:a_b",
        })
        .collect();
    mysql.insert(&rows).await.unwrap();
    sqlite.insert(&rows).await.unwrap();
    for row in &rows {
        let encoded = |store: vigil_store::StoredEvent| {
            let mut out = Vec::new();
            store.as_ref().encode_into(&mut out);
            String::from_utf8(out).unwrap()
        };
        let from_mysql = encoded(mysql.get(row.id).await.unwrap().unwrap());
        let from_sqlite = encoded(sqlite.get(row.id).await.unwrap().unwrap());
        assert_eq!(from_mysql, from_sqlite);
        let at_ingest = row
            .event
            .as_stored(row.id, row.created_at, row.request_id)
            .encode();
        assert_eq!(from_sqlite.as_bytes(), at_ingest.as_slice());
    }
    let query = EventQuery::parse(Some("size=10")).unwrap();
    assert_eq!(
        mysql.list(&query).await.unwrap(),
        sqlite.list(&query).await.unwrap()
    );
    mysql.close().await;
    sqlite.close().await;
    mysql_target.drop_database().await;
    sqlite_target.drop_database().await;
}
