//! The forward reads of realtime delivery (resume and backfill), on both backends, against a
//! brute-force filter of everything inserted: ids after a point with filters, ids by value,
//! and the `(createdAt, id)` walk from a moment, page by page.

use vigil_core::{EventFilter, Level, UnixMillis};
use vigil_store::StoredEvent;

use crate::helpers::{Backend, fresh_store};
use crate::list::load_mix;

on_each_backend!(
    events_after_an_id_are_oldest_first_filtered_and_limited,
    events_by_ids_return_the_stored_ones_in_id_order,
    a_created_since_walk_visits_every_later_event_once_in_created_order,
);

const ROWS: usize = 1500;

fn ids(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|event| event.id).collect()
}

async fn events_after_an_id_are_oldest_first_filtered_and_limited(backend: Backend) {
    let (target, store) = fresh_store(backend).await;
    let all = load_mix(&store, ROWS, 40, 500).await;
    let mut by_id = all.clone();
    by_id.sort_by_key(|event| event.id);
    let since = by_id[700].id;
    let filters = [
        EventFilter::default(),
        EventFilter {
            types: vec!["GAS".into(), "DOOR".into()],
            levels: vec![Level::Warn, Level::Critical],
            sources: Vec::new(),
        },
        EventFilter {
            types: Vec::new(),
            levels: Vec::new(),
            sources: vec![by_id[900].source.clone()],
        },
    ];
    for filter in &filters {
        let expected: Vec<u64> = by_id
            .iter()
            .filter(|event| event.id > since)
            .filter(|event| filter.matches(&event.event_type, event.level, &event.source))
            .map(|event| event.id)
            .collect();
        assert!(!expected.is_empty());
        let got = store.events_after(since, filter, ROWS).await.unwrap();
        assert_eq!(ids(&got), expected, "{filter:?}");
        let first_three = store.events_after(since, filter, 3).await.unwrap();
        assert_eq!(ids(&first_three), expected[..expected.len().min(3)]);
        // Rows come back whole.
        for event in &got {
            assert_eq!(all.iter().find(|e| e.id == event.id), Some(event));
        }
    }
    let last = by_id.last().unwrap().id;
    assert!(
        store
            .events_after(last, &EventFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
    target.drop_database().await;
}

async fn events_by_ids_return_the_stored_ones_in_id_order(backend: Backend) {
    let (target, store) = fresh_store(backend).await;
    let all = load_mix(&store, 200, 10, 200).await;
    let mut wanted: Vec<u64> = all.iter().step_by(7).map(|event| event.id).collect();
    wanted.reverse();
    wanted.push(9_000_000_000_000); // not stored
    let got = store.events_by_ids(&wanted).await.unwrap();
    let mut expected: Vec<u64> = all.iter().step_by(7).map(|event| event.id).collect();
    expected.sort_unstable();
    assert_eq!(ids(&got), expected);
    assert!(store.events_by_ids(&[]).await.unwrap().is_empty());
    store.close().await;
    target.drop_database().await;
}

async fn a_created_since_walk_visits_every_later_event_once_in_created_order(backend: Backend) {
    let (target, store) = fresh_store(backend).await;
    let all = load_mix(&store, ROWS, 40, 500).await;
    let mut by_created = all.clone();
    by_created.sort_by_key(|event| (event.created_at, event.id));
    let from: UnixMillis = by_created[1000].created_at;
    let expected: Vec<u64> = by_created
        .iter()
        .filter(|event| event.created_at >= from)
        .map(|event| event.id)
        .collect();
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.events_created_since(from, cursor, 37).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some((last.created_at, last.id));
        walked.extend(ids(&page));
    }
    assert_eq!(walked, expected);
    // A moment past every storable time reads nothing rather than failing.
    assert!(
        store
            .events_created_since(UnixMillis(i64::MAX / 4), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
    target.drop_database().await;
}
