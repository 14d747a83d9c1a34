//! Shared setup: a store on a fresh database, events whose content is derived from their id
//! (so any row can be checked against the id it was acknowledged with), row checks.

use std::time::Duration;

use vigil_core::{Level, NewEvent, UnixMillis};
use vigil_store::{EventRow, Store, StoreOptions, StoredEvent};
use vigil_testkit::database::TestDatabase;

/// A fresh database and a store connected to it.
pub async fn store_on_fresh_database() -> (TestDatabase, Store) {
    let database = TestDatabase::create().await;
    let store = Store::connect(database.url(), &StoreOptions::default())
        .await
        .expect("connect the store");
    (database, store)
}

/// Options with a short statement timeout, for tests that make statements hang.
pub fn options_with_statement_timeout(timeout: Duration) -> StoreOptions {
    StoreOptions {
        statement_timeout: timeout,
        ..StoreOptions::default()
    }
}

/// An event whose every field is a function of `tag`, so a row can be checked against it.
pub fn event_for(tag: u64) -> NewEvent {
    NewEvent {
        source: format!("sensor-{tag}-é"),
        event_type: format!("T{}", tag % 7),
        level: Level::ALL[(tag % 4) as usize],
        payload: (!tag.is_multiple_of(3))
            .then(|| format!(r#"{{"tag":{tag},"z":[1,{{"b":2,"a":1}}]}}"#)),
        occurred_at: tag
            .is_multiple_of(2)
            .then_some(UnixMillis(1_700_000_000_000 + tag as i64)),
    }
}

/// The request id used for `tag`'s event.
pub fn request_id_for(tag: u64) -> String {
    format!("req-{tag}")
}

/// A creation time with milliseconds that differ per row.
pub fn created_at_for(tag: u64) -> UnixMillis {
    UnixMillis(1_795_497_129_000 + (tag % 1000) as i64)
}

/// Owned data for a batch whose content is derived from the ids.
pub struct Batch {
    pub ids: Vec<u64>,
    pub events: Vec<NewEvent>,
    pub request_ids: Vec<String>,
}

impl Batch {
    pub fn for_ids(ids: Vec<u64>) -> Batch {
        let events = ids.iter().map(|&id| event_for(id)).collect();
        let request_ids = ids.iter().map(|&id| request_id_for(id)).collect();
        Batch {
            ids,
            events,
            request_ids,
        }
    }

    pub fn rows(&self) -> Vec<EventRow<'_>> {
        self.ids
            .iter()
            .zip(&self.events)
            .zip(&self.request_ids)
            .map(|((&id, event), request_id)| EventRow {
                id,
                event,
                created_at: created_at_for(id),
                request_id,
            })
            .collect()
    }
}

/// Panics unless `stored` is exactly the row that `id`'s derived event would be.
pub fn assert_is_row_for(stored: &StoredEvent, id: u64) {
    let event = event_for(id);
    let request_id = request_id_for(id);
    let expected = event
        .as_stored(id, created_at_for(id), &request_id)
        .encode();
    assert_eq!(
        String::from_utf8(stored.as_ref().encode()).unwrap(),
        String::from_utf8(expected).unwrap(),
        "row {id} differs from what was acknowledged"
    );
}

/// How many rows the events table holds, read with a plain query.
pub async fn count_rows(url: &str) -> i64 {
    use sqlx::Connection;
    let mut connection = sqlx::mysql::MySqlConnection::connect(url).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let _ = connection.close().await;
    count
}
