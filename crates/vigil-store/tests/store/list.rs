//! `Store::list`: every filter, window, offset and cursor page against a brute-force filter of
//! everything inserted, and the rows the server examines for each query shape, which must
//! stay near the page size however large the table is.

use vigil_core::{EventFilter, EventQuery, Level, NewEvent, UnixMillis};
use vigil_store::{EventPage, EventRow, Store, StoredEvent};

use crate::helpers::{Backend, fresh_store, store_on_fresh_database};

on_each_backend!(
    pages_match_a_brute_force_filter_for_every_query_shape,
    offset_and_cursor_walks_visit_every_matching_row_once_newest_first,
    has_more_is_exact_at_the_edges_and_empty_results_are_empty,
);

/// Event types in the mix.
pub const TYPES: [&str; 10] = [
    "GAS",
    "SMOKE",
    "DOOR",
    "TEMP",
    "HUMIDITY",
    "CO2",
    "MOTION",
    "POWER",
    "WATER",
    "VIBRATION",
];

/// `created_at` of id 0; ids are 10 ms apart.
pub const BASE_MILLIS: i64 = 1_795_497_129_000;

/// Rows per `Store::insert` when loading.
const LOAD_BATCH: usize = 1000;

/// A well-mixed 64-bit hash of `n` (splitmix64), so the data is varied but reproducible.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A realistic mix: `sources` sources, ten types, levels skewed towards INFO (55% INFO,
/// 25% WARN, 15% ERROR, 5% CRITICAL), `createdAt` following the id 10 ms apart except for
/// 3% of rows that carry an id from an older block (another instance's), created up to 30 s
/// later than their id suggests.
pub fn mixed_event(id: u64, sources: u64) -> (NewEvent, UnixMillis) {
    let hash = mix(id);
    let level = match hash % 100 {
        0..55 => Level::Info,
        55..80 => Level::Warn,
        80..95 => Level::Error,
        _ => Level::Critical,
    };
    let lag = if (hash >> 40) % 100 < 3 {
        ((hash >> 20) % 30_000) as i64
    } else {
        0
    };
    let event = NewEvent {
        source: format!("site-{}/sensor", (hash >> 8) % sources),
        event_type: TYPES[((hash >> 16) % TYPES.len() as u64) as usize].to_owned(),
        level,
        payload: Some(format!(r#"{{"reading":{}}}"#, hash % 1000)),
        occurred_at: None,
    };
    (event, UnixMillis(BASE_MILLIS + id as i64 * 10 + lag))
}

/// Inserts `rows` events of the mix through `Store::insert` in batches of `batch` rows and
/// returns them as stored, in id order.
pub async fn load_mix(store: &Store, rows: usize, sources: u64, batch: usize) -> Vec<StoredEvent> {
    let mut stored = Vec::with_capacity(rows);
    let mut remaining = rows;
    while remaining > 0 {
        let count = remaining.min(batch);
        let ids = store.allocate_ids(count).await.unwrap();
        let events: Vec<(NewEvent, UnixMillis)> =
            ids.iter().map(|&id| mixed_event(id, sources)).collect();
        let request_ids: Vec<String> = ids.iter().map(|id| format!("req-{id}")).collect();
        let batch_rows: Vec<EventRow<'_>> = ids
            .iter()
            .zip(&events)
            .zip(&request_ids)
            .map(|((&id, (event, created_at)), request_id)| EventRow {
                id,
                event,
                created_at: *created_at,
                request_id,
            })
            .collect();
        store.insert(&batch_rows).await.unwrap();
        stored.extend(batch_rows.iter().map(|row| StoredEvent {
            id: row.id,
            source: row.event.source.clone(),
            event_type: row.event.event_type.clone(),
            level: row.event.level,
            payload: row.event.payload.clone(),
            occurred_at: row.event.occurred_at,
            created_at: row.created_at,
            request_id: row.request_id.to_owned(),
        }));
        remaining -= count;
    }
    stored
}

/// Every stored event `query` selects, ignoring paging: newest first.
fn brute_force(all: &[StoredEvent], query: &EventQuery) -> Vec<StoredEvent> {
    let mut matching: Vec<StoredEvent> = all
        .iter()
        .filter(|event| {
            query
                .filter
                .matches(&event.event_type, event.level, &event.source)
                && query.from.is_none_or(|from| event.created_at >= from)
                && query.to.is_none_or(|to| event.created_at < to)
                && query.before.is_none_or(|before| event.id < before)
        })
        .cloned()
        .collect();
    matching.sort_by_key(|event| std::cmp::Reverse(event.id));
    matching
}

/// The page `query` should return, by brute force.
fn expected_page(all: &[StoredEvent], query: &EventQuery) -> EventPage {
    let matching = brute_force(all, query);
    let offset = query.offset() as usize;
    let size = query.size as usize;
    EventPage {
        events: matching.iter().skip(offset).take(size).cloned().collect(),
        has_more: matching.len() > offset + size,
    }
}

fn parse(parameters: &str) -> EventQuery {
    EventQuery::parse(Some(parameters)).unwrap_or_else(|error| panic!("{parameters}: {error}"))
}

/// An RFC 3339 parameter for the instant `millis` after id 0's creation.
pub fn at(millis: i64) -> String {
    UnixMillis(BASE_MILLIS + millis).to_string()
}

/// The filter shapes every test runs: each filter alone, multi-value, combinations.
fn filter_shapes(all: &[StoredEvent]) -> Vec<String> {
    let source = &all[all.len() / 2].source;
    let other_source = &all[all.len() / 3].source;
    vec![
        String::new(),
        "type=GAS".into(),
        "level=CRITICAL".into(),
        format!("source={source}"),
        "type=GAS,SMOKE".into(),
        "level=WARN,CRITICAL".into(),
        format!("source={source},{other_source}"),
        "type=GAS&level=WARN".into(),
        "type=GAS,SMOKE&level=ERROR,CRITICAL".into(),
        format!("source={source}&type=GAS,DOOR,TEMP"),
        format!("source={source}&level=INFO"),
        format!("source={source},{other_source}&type=SMOKE&level=WARN,INFO"),
    ]
}

async fn pages_match_a_brute_force_filter_for_every_query_shape(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let all = load_mix(&store, 3000, 20, LOAD_BATCH).await;
    let last_millis = all.last().unwrap().created_at.0 - BASE_MILLIS;
    let cursor = all[all.len() * 2 / 3].id;
    let windows = [
        String::new(),
        format!("from={}", at(last_millis - 5_000)),
        format!("from={}&to={}", at(3_000), at(4_000)),
        format!("to={}", at(2_000)),
        format!("from={}&to={}", at(1_000), at(last_millis - 1_000)),
    ];
    let mut checked = 0;
    for filter in filter_shapes(&all) {
        for window in &windows {
            for paging in [
                "size=7",
                "size=5&page=3",
                &format!("size=6&before={cursor}"),
            ] {
                let parameters = format!("{filter}&{window}&{paging}");
                let query = parse(&parameters);
                let page = store.list(&query).await.unwrap();
                assert_eq!(page, expected_page(&all, &query), "{parameters}");
                checked += usize::from(!page.events.is_empty());
            }
        }
    }
    assert!(checked > 100, "most shapes select rows ({checked})");
    store.close().await;
    database.drop_database().await;
}

async fn offset_and_cursor_walks_visit_every_matching_row_once_newest_first(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let all = load_mix(&store, 2500, 12, LOAD_BATCH).await;
    let last_millis = all.last().unwrap().created_at.0 - BASE_MILLIS;
    let mut shapes = filter_shapes(&all);
    shapes.push(format!("type=GAS,DOOR&from={}", at(last_millis / 2)));
    shapes.push(format!("from={}&to={}", at(5_000), at(9_000)));
    for filter in shapes {
        let everything = brute_force(&all, &parse(&filter));
        let size = 9;

        let mut by_offset = Vec::new();
        for page in 1.. {
            let query = parse(&format!("{filter}&size={size}&page={page}"));
            let result = store.list(&query).await.unwrap();
            by_offset.extend(result.events);
            if !result.has_more {
                break;
            }
        }

        let mut by_cursor = Vec::new();
        let mut cursor: Option<u64> = None;
        loop {
            let before = cursor.map_or(String::new(), |id| format!("&before={id}"));
            let query = parse(&format!("{filter}&size={size}{before}"));
            let result = store.list(&query).await.unwrap();
            assert!(result.events.len() <= size);
            if result.has_more {
                assert_eq!(
                    result.events.len(),
                    size,
                    "{filter}: a full page before more"
                );
            }
            cursor = result.events.last().map(|event| event.id);
            by_cursor.extend(result.events);
            if !result.has_more {
                break;
            }
        }

        assert_eq!(by_offset, everything, "{filter}: offset walk");
        assert_eq!(by_cursor, everything, "{filter}: cursor walk");
    }
    store.close().await;
    database.drop_database().await;
}

async fn has_more_is_exact_at_the_edges_and_empty_results_are_empty(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let all = load_mix(&store, 400, 5, LOAD_BATCH).await;
    let gas = brute_force(&all, &parse("type=GAS"));
    let count = gas.len();
    assert!(count > 10, "the mix has GAS events");

    let exact = store
        .list(&parse(&format!("type=GAS&size={count}")))
        .await
        .unwrap();
    assert_eq!(exact.events, gas);
    assert!(!exact.has_more, "a page holding every match has no more");

    let one_short = store
        .list(&parse(&format!("type=GAS&size={}", count - 1)))
        .await
        .unwrap();
    assert_eq!(one_short.events, gas[..count - 1]);
    assert!(one_short.has_more, "one match beyond the page");

    let last_one = store
        .list(&parse(&format!(
            "type=GAS&size=1&before={}",
            gas[count - 2].id
        )))
        .await
        .unwrap();
    assert_eq!(last_one.events, gas[count - 1..]);
    assert!(!last_one.has_more);

    let past_the_end = store
        .list(&parse(&format!("type=GAS&size={count}&page=2")))
        .await
        .unwrap();
    assert_eq!(past_the_end, EventPage::default());

    for nothing in [
        "type=NOSUCHTYPE".to_owned(),
        "source=nobody".to_owned(),
        format!("before={}", all[0].id),
        format!("from={}&to={}", at(5_000), at(5_000)),
        format!("from={}", at(100_000_000)),
        format!("to={}", at(-1)),
        "type=GAS&source=nobody&level=WARN".to_owned(),
    ] {
        let page = store.list(&parse(&nothing)).await.unwrap();
        assert_eq!(page, EventPage::default(), "{nothing}");
    }

    let hand_built = EventQuery {
        filter: EventFilter {
            types: vec!["GAS".into(), "GAS".into()],
            ..EventFilter::default()
        },
        size: 3,
        ..EventQuery::default()
    };
    assert_eq!(
        store.list(&hand_built).await.unwrap().events,
        gas[..3],
        "a repeated value does not repeat rows"
    );

    for event in [&all[0], &all[all.len() / 2], all.last().unwrap()] {
        assert_eq!(store.get(event.id).await.unwrap().as_ref(), Some(event));
    }
    assert_eq!(store.get(all.last().unwrap().id + 1).await.unwrap(), None);
    store.close().await;
    database.drop_database().await;
}

/// Allowance per branch and per statement for key look-ups, the final page's primary-key
/// look-ups and the merge's temporary table.
const EXAMINED_SLACK: u64 = 16;

/// Rows a filtered page may examine: a few times the rows each branch fetches.
fn examined_bound(query: &EventQuery, branches: u64) -> u64 {
    4 * (query.offset() + u64::from(query.size) + 1) * branches + EXAMINED_SLACK * (branches + 1)
}

#[tokio::test]
async fn every_query_shape_examines_rows_near_the_page_size() {
    let (database, store) = store_on_fresh_database().await;
    let all = load_mix(&store, 20_000, 300, LOAD_BATCH).await;
    let source = &all[all.len() / 2].source;
    let other_source = &all[all.len() / 3].source;
    // (filter, branches of its plan): a cursor page and page 1 each read at most a few
    // pages' worth of index entries per branch, whatever the table size.
    let shapes: Vec<(String, u64)> = vec![
        (String::new(), 1),
        ("type=GAS".into(), 4),
        ("level=CRITICAL".into(), 1),
        (format!("source={source}"), 4),
        ("type=GAS,SMOKE".into(), 8),
        ("level=WARN,CRITICAL".into(), 2),
        (format!("source={source},{other_source}"), 8),
        ("type=GAS&level=WARN".into(), 1),
        ("type=GAS&level=CRITICAL".into(), 1),
        ("type=GAS,SMOKE&level=ERROR,CRITICAL".into(), 4),
        (format!("source={source}&type=GAS"), 1),
        (format!("source={source}&level=INFO"), 1),
        (format!("source={source}&type=GAS,DOOR&level=WARN"), 2),
        (format!("source={source},{other_source}&type=SMOKE,TEMP"), 4),
    ];
    let deep_cursor = all[all.len() / 5].id;
    let mut report = Vec::new();
    for (filter, branches) in &shapes {
        for paging in [
            "size=20".to_owned(),
            format!("size=20&before={deep_cursor}"),
            "size=100&page=3".to_owned(),
        ] {
            let parameters = format!("{filter}&{paging}");
            let query = parse(&parameters);
            let (page, examined) = store.list_with_rows_examined(&query).await.unwrap();
            assert_eq!(page, expected_page(&all, &query), "{parameters}");
            let bound = examined_bound(&query, *branches);
            assert!(
                examined <= bound,
                "{parameters}: examined {examined} rows, more than {bound}"
            );
            report.push(format!("{examined:>6} (≤ {bound:>5})  {parameters}"));
        }
    }

    // Time windows. The newest minute is large: read in id order after sizing the window.
    // A second of long ago is small (or, for small pages, large but with many newer rows):
    // read whole from (created_at, id) and sorted, not found by reading every newer row.
    let last_millis = all.last().unwrap().created_at.0 - BASE_MILLIS;
    let recent = format!("from={}", at(last_millis - 60_000));
    let old = format!("from={}&to={}", at(20_000), at(21_000));
    let old_rows = brute_force(&all, &parse(&old)).len() as u64;
    assert!(
        (50..200).contains(&old_rows),
        "{old_rows} rows in the old window"
    );
    for (parameters, branches, window_rows) in [
        (recent.clone(), 1, None),
        (format!("type=GAS&level=WARN&{recent}"), 1, None),
        (format!("type=GAS,SMOKE&{recent}"), 8, None),
        (
            format!("{recent}&before={}", all[all.len() - 300].id),
            1,
            None,
        ),
        (old.clone(), 1, Some(old_rows)),
        (format!("type=GAS&{old}"), 1, Some(old_rows)),
        (format!("level=CRITICAL&{old}&size=5"), 1, Some(old_rows)),
        (
            format!("{old}&size=10&before={}", all[2_050].id),
            1,
            Some(old_rows),
        ),
    ] {
        let query = parse(&parameters);
        let (page, examined) = store.list_with_rows_examined(&query).await.unwrap();
        assert_eq!(page, expected_page(&all, &query), "{parameters}");
        let probe = 10 * (query.offset() + u64::from(query.size) + 1);
        let bound = match window_rows {
            // Sizing the window (up to `probe` entries), then an id-ordered page.
            None => probe + examined_bound(&query, branches),
            // Sizing the window and the rows after it (up to `probe` entries each), then
            // reading the window whole and sorting what matches.
            Some(rows) => 2 * probe + 3 * rows + 2 * (u64::from(query.size) + 1) + EXAMINED_SLACK,
        };
        assert!(
            examined <= bound,
            "{parameters}: examined {examined} rows, more than {bound}"
        );
        report.push(format!("{examined:>6} (≤ {bound:>5})  {parameters}"));
    }
    println!("rows examined, 20,000 rows:\n{}", report.join("\n"));
    store.close().await;
    database.drop_database().await;
}
