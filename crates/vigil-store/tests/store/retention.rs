//! `Store::delete_created_before`, as the retention task drives it: small batches, oldest
//! first, until nothing older than the cutoff is left; newer rows untouched.

use vigil_core::UnixMillis;
use vigil_store::StoredEvent;

use crate::helpers::{Backend, fresh_store};
use crate::list::load_mix;

on_each_backend!(expired_events_go_in_small_batches_and_newer_ones_stay);

async fn expired_events_go_in_small_batches_and_newer_ones_stay(backend: Backend) {
    let (target, store) = fresh_store(backend).await;
    let all: Vec<StoredEvent> = load_mix(&store, 600, 20, 300).await;
    let mut created: Vec<UnixMillis> = all.iter().map(|event| event.created_at).collect();
    created.sort_unstable();
    let cutoff = created[250];
    let expired = all.iter().filter(|event| event.created_at < cutoff).count() as u64;
    assert!(expired >= 200, "{expired}");

    let mut deleted = 0;
    let mut calls = 0;
    loop {
        let gone = store.delete_created_before(cutoff, 64).await.unwrap();
        assert!(gone <= 64);
        deleted += gone;
        calls += 1;
        if gone == 0 {
            break;
        }
    }
    assert_eq!(deleted, expired);
    assert!(calls > 3, "deleted in small batches");
    for event in &all {
        let stored = store.get(event.id).await.unwrap();
        if event.created_at < cutoff {
            assert_eq!(stored, None, "{} should be gone", event.id);
        } else {
            assert_eq!(stored.as_ref(), Some(event));
        }
    }
    // Cutoffs before every storable time delete nothing.
    assert_eq!(
        store
            .delete_created_before(UnixMillis(i64::MIN), 10)
            .await
            .unwrap(),
        0
    );
    store.close().await;
    target.drop_database().await;
}
