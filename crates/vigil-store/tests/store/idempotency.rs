//! Idempotency records written with their batch: in one transaction with the events, found by
//! key until they expire, a taken key failing the whole batch with nothing stored, and the
//! purge.

use vigil_core::UnixMillis;
use vigil_store::{Digest, IdempotencyRecord, InsertError};

use crate::helpers::{Backend, Batch, fresh_store};

on_each_backend!(records_commit_with_their_events_and_a_taken_key_stores_nothing);
on_each_backend!(expired_records_are_invisible_and_purged_oldest_first);

fn digest(tag: u8) -> Digest {
    Digest::from_sha256(&[tag; 32])
}

fn record_for(key: u8, ids: &[u64], expires_at: i64) -> IdempotencyRecord {
    IdempotencyRecord {
        key: digest(key),
        body: digest(key.wrapping_add(100)),
        request_id: format!("request-{key}"),
        ids: ids.to_vec(),
        created_at: UnixMillis(1_000),
        expires_at: UnixMillis(expires_at),
    }
}

async fn records_commit_with_their_events_and_a_taken_key_stores_nothing(backend: Backend) {
    let (target, store) = fresh_store(backend).await;
    let now = UnixMillis(10_000);
    let later = 1_000_000;

    let ids = store.allocate_ids(3).await.unwrap();
    let batch = Batch::for_ids(ids.clone());
    let first = record_for(1, &ids[..2], later);
    let second = record_for(2, &ids[2..], later);
    store
        .insert_with_keys(&batch.rows(), &[first.clone(), second.clone()])
        .await
        .unwrap();
    let mut found = store
        .idempotency_records(&[digest(2), digest(1), digest(3)], now)
        .await
        .unwrap();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(found, [first.clone(), second]);

    // A batch carrying a recorded key is refused whole: neither its events nor its other
    // record are stored, and the writer goes on working.
    let more = store.allocate_ids(2).await.unwrap();
    let refused = Batch::for_ids(more.clone());
    let error = store
        .insert_with_keys(
            &refused.rows(),
            &[
                record_for(3, &more[..1], later),
                record_for(1, &more[1..], later),
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(error, InsertError::KeyTaken(_)), "{error}");
    assert!(!error.is_retriable());
    for id in &more {
        assert_eq!(store.get(*id).await.unwrap(), None);
    }
    assert!(
        store
            .idempotency_records(&[digest(3)], now)
            .await
            .unwrap()
            .is_empty()
    );
    store.insert(&refused.rows()).await.unwrap();
    assert!(store.get(more[0]).await.unwrap().is_some());
    store.close().await;
    target.drop_database().await;
}

async fn expired_records_are_invisible_and_purged_oldest_first(backend: Backend) {
    let (target, store) = fresh_store(backend).await;
    let ids = store.allocate_ids(5).await.unwrap();
    let batch = Batch::for_ids(ids.clone());
    let records: Vec<IdempotencyRecord> = (0..5u8)
        .map(|index| record_for(index, &ids[index as usize..][..1], 100 + i64::from(index)))
        .collect();
    store
        .insert_with_keys(&batch.rows(), &records)
        .await
        .unwrap();
    let keys: Vec<Digest> = records.iter().map(|record| record.key.clone()).collect();

    // At 102, the records expiring at 100, 101 and 102 are gone for lookups.
    let live = store
        .idempotency_records(&keys, UnixMillis(102))
        .await
        .unwrap();
    assert_eq!(live.len(), 2);
    assert!(
        live.iter()
            .all(|record| record.expires_at > UnixMillis(102))
    );

    // A taken-but-expired key can be freed on its own.
    assert_eq!(
        store
            .delete_expired_idempotency_keys(&keys[..1], UnixMillis(102))
            .await
            .unwrap(),
        1
    );
    // The purge goes in bounded steps and leaves unexpired records.
    assert_eq!(
        store
            .purge_idempotency_records(UnixMillis(102), 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .purge_idempotency_records(UnixMillis(102), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .purge_idempotency_records(UnixMillis(102), 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .idempotency_records(&keys, UnixMillis(0))
            .await
            .unwrap()
            .len(),
        2
    );
    // The events themselves are untouched by any of it.
    for id in &ids {
        assert!(store.get(*id).await.unwrap().is_some());
    }
    store.close().await;
    target.drop_database().await;
}
