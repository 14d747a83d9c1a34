//! Ids from `allocate_ids` are increasing, unique across stores, and each acknowledged id is
//! exactly its row.

use std::collections::HashSet;

use vigil_store::{Store, StoreOptions};

use crate::helpers::{Backend, Batch, assert_is_row_for, count_rows, fresh_store};

on_each_backend!(
    ids_are_unique_and_exact_across_two_stores_used_concurrently,
    blocks_are_reserved_once_per_4096_ids_and_large_requests_get_their_own,
);

/// Inserts `batches` batches of varying sizes through `store`; returns every acknowledged id.
pub async fn insert_batches(store: Store, task: u64, batches: u64) -> Vec<u64> {
    let mut acknowledged = Vec::new();
    for round in 0..batches {
        let size = 1 + ((task * 31 + round * 17) % 300) as usize;
        let ids = store.allocate_ids(size).await.expect("allocate ids");
        assert_eq!(ids.len(), size);
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "ids increase within a call"
        );
        if let Some(&last) = acknowledged.last() {
            assert!(ids[0] > last, "ids increase across calls of one task");
        }
        let batch = Batch::for_ids(ids);
        store.insert(&batch.rows()).await.expect("insert");
        acknowledged.extend(batch.ids);
    }
    acknowledged
}

/// Reads every row back and checks that the acknowledged ids are exactly the table's ids, each
/// holding the content it was acknowledged for.
pub async fn assert_every_acknowledged_id_is_its_row(
    store: &Store,
    url: &str,
    acknowledged: &[u64],
) {
    let unique: HashSet<u64> = acknowledged.iter().copied().collect();
    assert_eq!(
        unique.len(),
        acknowledged.len(),
        "no id was handed out twice"
    );
    assert!(acknowledged.iter().all(|&id| id > 0 && id < 1 << 53));
    assert_eq!(count_rows(url).await, acknowledged.len() as i64);
    let stored = store.latest(acknowledged.len() + 10).await.unwrap();
    assert_eq!(stored.len(), acknowledged.len());
    for row in &stored {
        assert!(
            unique.contains(&row.id),
            "row {} was never acknowledged",
            row.id
        );
        assert_is_row_for(row, row.id);
    }
}

async fn ids_are_unique_and_exact_across_two_stores_used_concurrently(backend: Backend) {
    let (database, first) = fresh_store(backend).await;
    let second = Store::connect(database.url(), &StoreOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..12u64 {
        let store = if task % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(insert_batches(store, task, 15)));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert_every_acknowledged_id_is_its_row(&first, database.url(), &acknowledged).await;
    first.close().await;
    second.close().await;
    database.drop_database().await;
}

async fn blocks_are_reserved_once_per_4096_ids_and_large_requests_get_their_own(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let small = store.allocate_ids(10).await.unwrap();
    assert_eq!(small, (1..=10).collect::<Vec<u64>>());
    let rest_of_block = store.allocate_ids(4086).await.unwrap();
    assert_eq!(rest_of_block.last(), Some(&4096));
    let large = store.allocate_ids(10_000).await.unwrap();
    assert_eq!(large.first(), Some(&4097));
    assert_eq!(large.last(), Some(&14_096));
    // A second store reserves above everything the first one holds.
    let other = Store::connect(database.url(), &StoreOptions::default())
        .await
        .unwrap();
    let theirs = other.allocate_ids(1).await.unwrap();
    assert_eq!(theirs, vec![14_097]);
    assert_eq!(store.allocate_ids(1).await.unwrap(), vec![14_097 + 4096]);
    assert!(store.allocate_ids(0).await.unwrap().is_empty());
    store.close().await;
    other.close().await;
    database.drop_database().await;
}
