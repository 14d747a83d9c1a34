//! Batches are all-or-nothing, also when the protocol forces them into several statements.

use vigil_store::{InsertError, StoreError};

use crate::helpers::{Backend, Batch, assert_is_row_for, count_rows, fresh_store};

on_each_backend!(
    a_batch_larger_than_one_statement_is_stored_whole,
    a_split_batch_with_one_refused_row_stores_nothing,
    a_single_statement_batch_with_a_duplicate_id_stores_nothing,
    retrying_a_committed_batch_is_refused_as_duplicate_and_resolves_committed,
);

/// More rows than two statements can carry on either backend (8191 rows each on MySQL, 4095
/// on SQLite).
const SPLIT_BATCH_ROWS: usize = 2 * 8191 + 100;

async fn a_batch_larger_than_one_statement_is_stored_whole(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let batch = Batch::for_ids(store.allocate_ids(SPLIT_BATCH_ROWS).await.unwrap());
    store.insert(&batch.rows()).await.expect("insert");
    assert_eq!(count_rows(database.url()).await, SPLIT_BATCH_ROWS as i64);
    let stored = store.latest(SPLIT_BATCH_ROWS).await.unwrap();
    assert_eq!(stored.len(), SPLIT_BATCH_ROWS);
    for (stored, &id) in stored.iter().zip(batch.ids.iter().rev()) {
        assert_eq!(stored.id, id);
        assert_is_row_for(stored, id);
    }
    store.close().await;
    database.drop_database().await;
}

async fn a_split_batch_with_one_refused_row_stores_nothing(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let existing = Batch::for_ids(store.allocate_ids(1).await.unwrap());
    store.insert(&existing.rows()).await.unwrap();

    // The last row, in a later statement of the batch than the first, repeats an id that is
    // already stored.
    let mut ids = store.allocate_ids(8191 + 50).await.unwrap();
    *ids.last_mut().unwrap() = existing.ids[0];
    let batch = Batch::for_ids(ids);
    let error = store.insert(&batch.rows()).await.unwrap_err();
    assert!(
        matches!(
            error,
            InsertError::DuplicateIds(StoreError::DuplicateIds { .. })
        ),
        "{error:?}"
    );
    assert_eq!(
        count_rows(database.url()).await,
        1,
        "nothing of the batch is in the table"
    );
    assert!(
        !store
            .resolve(&batch.ids[..batch.ids.len() - 1])
            .await
            .unwrap()
    );

    // The writer recovered: the same batch without the bad row goes in.
    let fixed = Batch::for_ids(batch.ids[..batch.ids.len() - 1].to_vec());
    store.insert(&fixed.rows()).await.unwrap();
    assert_eq!(count_rows(database.url()).await, 1 + 8191 + 49);
    store.close().await;
    database.drop_database().await;
}

async fn a_single_statement_batch_with_a_duplicate_id_stores_nothing(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let mut ids = store.allocate_ids(10).await.unwrap();
    ids[7] = ids[2];
    let batch = Batch::for_ids(ids);
    let error = store.insert(&batch.rows()).await.unwrap_err();
    assert!(matches!(error, InsertError::DuplicateIds(_)), "{error:?}");
    assert_eq!(count_rows(database.url()).await, 0);
    store.close().await;
    database.drop_database().await;
}

async fn retrying_a_committed_batch_is_refused_as_duplicate_and_resolves_committed(
    backend: Backend,
) {
    let (database, store) = fresh_store(backend).await;
    let batch = Batch::for_ids(store.allocate_ids(25).await.unwrap());
    store.insert(&batch.rows()).await.unwrap();
    let error = store.insert(&batch.rows()).await.unwrap_err();
    assert!(matches!(error, InsertError::DuplicateIds(_)), "{error:?}");
    assert!(store.resolve(&batch.ids).await.unwrap());
    assert_eq!(count_rows(database.url()).await, 25);
    store.close().await;
    database.drop_database().await;
}

on_each_backend!(
    a_batch_whose_turn_fails_is_rolled_back_and_its_writer_goes_on,
    a_batch_waits_for_its_turn_before_it_commits,
);

async fn a_batch_whose_turn_fails_is_rolled_back_and_its_writer_goes_on(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let refused = Batch::for_ids(store.allocate_ids(5).await.unwrap());
    let turn: vigil_store::CommitTurn<'_> = Box::pin(async {
        Err(StoreError::Timeout {
            operation: "wait for earlier batches to commit",
            after: std::time::Duration::from_millis(1),
        })
    });
    let error = store
        .insert_on_writer(0, &refused.rows(), &[], Some(turn))
        .await
        .unwrap_err();
    assert!(
        matches!(error, InsertError::NotCommitted(StoreError::Timeout { .. })),
        "{error:?}"
    );
    assert_eq!(count_rows(database.url()).await, 0, "rolled back");

    // The same writer, and the same ids, work afterwards: nothing of the batch lasted.
    store
        .insert(&refused.rows())
        .await
        .expect("insert after the rollback");
    assert_eq!(count_rows(database.url()).await, 5);
    store.close().await;
    database.drop_database().await;
}

async fn a_batch_waits_for_its_turn_before_it_commits(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let writer = store.writers() - 1;
    let batch = Batch::for_ids(store.allocate_ids(3).await.unwrap());
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    let turn: vigil_store::CommitTurn<'_> = Box::pin(async move {
        opened.await.expect("the test opens the turn");
        Ok(())
    });
    let rows = batch.rows();
    let insert = store.insert_on_writer(writer, &rows, &[], Some(turn));
    tokio::pin!(insert);
    // Inserted but not committed: another connection sees nothing while the turn is shut.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), &mut insert)
            .await
            .is_err()
    );
    assert_eq!(
        count_rows(database.url()).await,
        0,
        "not committed before its turn"
    );
    open.send(()).unwrap();
    insert.await.expect("committed in its turn");
    assert_eq!(count_rows(database.url()).await, 3);
    store.close().await;
    database.drop_database().await;
}
