//! What goes in comes out: every field, to the byte and the millisecond.

use vigil_core::time::{MAX_TIMESTAMP, MIN_TIMESTAMP};
use vigil_core::{BodyFormat, EventParser, Level, Limits, NewEvent, UnixMillis};
use vigil_store::{EventRow, InsertError, StoreError};

use crate::helpers::{Backend, Batch, assert_is_row_for, count_rows, fresh_store};

on_each_backend!(
    insert_then_get_returns_every_field_exactly,
    times_at_the_edges_of_the_accepted_range_round_trip,
    latest_is_newest_first_and_get_misses_unknown_ids,
    a_payload_that_is_not_json_is_refused_by_the_table_and_nothing_is_stored,
    rows_that_cannot_be_stored_are_refused_before_sending,
);

const ODD_BODY: &str = r#"[
  {"source":"датчик 7 🔥 \"north\" \\ 北","type":"GAS.leak:v2_x-y","level":"CRITICAL",
   "payload":{ "z" : 1 , "a":[ 1,2 , {"é":"\u00e9\n\"q\""} ],  "n":null, "b":{"y":2,"x":1} },
   "occurredAt":"2026-11-24T06:12:09.123+01:00"},
  {"source":"s","type":"T","level":"INFO"},
  {"source":"ÄÖÜ","type":"DOOR","level":"WARN","payload":{},"occurredAt":"1969-12-31T23:59:59.999Z"}
]"#;

async fn insert_then_get_returns_every_field_exactly(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let mut parser = EventParser::new(Limits::default());
    let mut events = parser
        .parse(ODD_BODY.as_bytes(), BodyFormat::Json)
        .expect("the body is valid")
        .events;
    events.push(NewEvent {
        source: "🔥".repeat(128),
        event_type: "X".repeat(64),
        level: Level::Error,
        payload: Some(format!(r#"{{"big":"{}"}}"#, "x".repeat(16 * 1024 - 10))),
        occurred_at: Some(UnixMillis(1)),
    });
    let ids = store.allocate_ids(events.len()).await.unwrap();
    let request_ids: Vec<String> = (0..events.len())
        .map(|index| format!("req.{index}:a-b_c"))
        .collect();
    let created = [
        UnixMillis::parse_rfc3339("2026-11-24T05:12:09.123Z").unwrap(),
        UnixMillis(0),
        UnixMillis(1_795_497_129_999),
        UnixMillis(1_795_497_129_001),
    ];
    let rows: Vec<EventRow<'_>> = (0..events.len())
        .map(|index| EventRow {
            id: ids[index],
            event: &events[index],
            created_at: created[index],
            request_id: &request_ids[index],
        })
        .collect();
    store.insert(&rows).await.expect("insert");

    for row in &rows {
        let stored = store.get(row.id).await.unwrap().expect("the row is there");
        assert_eq!(stored.id, row.id);
        assert_eq!(stored.source, row.event.source);
        assert_eq!(stored.event_type, row.event.event_type);
        assert_eq!(stored.level, row.event.level);
        assert_eq!(stored.payload, row.event.payload);
        assert_eq!(stored.occurred_at, row.event.occurred_at);
        assert_eq!(stored.created_at, row.created_at);
        assert_eq!(stored.request_id, row.request_id);
        assert_eq!(
            stored.as_ref().encode(),
            row.event
                .as_stored(row.id, row.created_at, row.request_id)
                .encode(),
            "the database's JSON is byte-identical to the JSON encoded at ingest"
        );
    }
    // The payload's key order survived (binary JSON would have sorted it).
    let first = store.get(ids[0]).await.unwrap().unwrap();
    assert!(first.payload.unwrap().starts_with(r#"{"z":1,"a":[1,2,"#));
    assert_eq!(
        first.occurred_at,
        Some(UnixMillis::parse_rfc3339("2026-11-24T05:12:09.123Z").unwrap())
    );
    store.close().await;
    database.drop_database().await;
}

async fn times_at_the_edges_of_the_accepted_range_round_trip(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let instants = [
        MIN_TIMESTAMP,
        UnixMillis(-1),
        UnixMillis(0),
        UnixMillis(999),
        MAX_TIMESTAMP,
    ];
    let events: Vec<NewEvent> = instants
        .iter()
        .map(|&at| NewEvent {
            source: "clock".into(),
            event_type: "EDGE".into(),
            level: Level::Info,
            payload: None,
            occurred_at: Some(at),
        })
        .collect();
    let ids = store.allocate_ids(events.len()).await.unwrap();
    let rows: Vec<EventRow<'_>> = events
        .iter()
        .zip(&ids)
        .zip(instants.iter().rev())
        .map(|((event, &id), &created_at)| EventRow {
            id,
            event,
            created_at,
            request_id: "edges",
        })
        .collect();
    store.insert(&rows).await.unwrap();
    for row in &rows {
        let stored = store.get(row.id).await.unwrap().unwrap();
        assert_eq!(stored.occurred_at, row.event.occurred_at);
        assert_eq!(stored.created_at, row.created_at);
    }
    store.close().await;
    database.drop_database().await;
}

async fn latest_is_newest_first_and_get_misses_unknown_ids(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    for _ in 0..3 {
        let batch = Batch::for_ids(store.allocate_ids(4).await.unwrap());
        store.insert(&batch.rows()).await.unwrap();
    }
    let latest = store.latest(5).await.unwrap();
    assert_eq!(latest.len(), 5);
    assert!(latest.windows(2).all(|pair| pair[0].id > pair[1].id));
    for stored in &latest {
        assert_is_row_for(stored, stored.id);
    }
    let all = store.latest(100).await.unwrap();
    assert_eq!(all.len(), 12);
    assert_eq!(all[0].id, latest[0].id);
    assert!(store.latest(0).await.unwrap().is_empty());
    assert_eq!(store.get(all[0].id + 1_000_000).await.unwrap(), None);
    store.ping().await.unwrap();
    store.close().await;
    database.drop_database().await;
}

async fn a_payload_that_is_not_json_is_refused_by_the_table_and_nothing_is_stored(
    backend: Backend,
) {
    let (database, store) = fresh_store(backend).await;
    let mut batch = Batch::for_ids(store.allocate_ids(3).await.unwrap());
    batch.events[2].payload = Some("{not json".into());
    let error = store.insert(&batch.rows()).await.unwrap_err();
    assert!(
        matches!(error, InsertError::NotCommitted(StoreError::Query { .. })),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    assert_eq!(count_rows(database.url()).await, 0);
    // The writer is still usable.
    let good = Batch::for_ids(store.allocate_ids(2).await.unwrap());
    store.insert(&good.rows()).await.unwrap();
    assert_eq!(count_rows(database.url()).await, 2);
    store.close().await;
    database.drop_database().await;
}

async fn rows_that_cannot_be_stored_are_refused_before_sending(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let batch = Batch::for_ids(store.allocate_ids(2).await.unwrap());
    let mut rows = batch.rows();
    rows[1].created_at = UnixMillis(MAX_TIMESTAMP.0 + 1);
    let error = store.insert(&rows).await.unwrap_err();
    assert!(
        matches!(
            error,
            InsertError::NotCommitted(StoreError::InvalidRow { index: 1, .. })
        ),
        "{error:?}"
    );
    assert_eq!(count_rows(database.url()).await, 0);
    store.close().await;
    database.drop_database().await;
}
