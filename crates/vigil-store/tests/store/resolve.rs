//! After an unknown outcome, `resolve` finds out for certain, and a session that was cut off
//! can never commit the batch later.

use std::time::Duration;

use sqlx::{Connection, Executor};
use vigil_store::{InsertError, Store, StoreError};
use vigil_testkit::database::TestDatabase;
use vigil_testkit::proxy::FaultProxy;

use crate::helpers::{Backend, Batch, count_rows, fresh_store, options_with_statement_timeout};

on_each_backend!(
    resolve_answers_true_for_a_stored_batch_and_false_for_ids_never_inserted,
    resolve_refuses_to_guess_about_a_partially_present_batch,
);

async fn resolve_answers_true_for_a_stored_batch_and_false_for_ids_never_inserted(
    backend: Backend,
) {
    let (database, store) = fresh_store(backend).await;
    let stored = Batch::for_ids(store.allocate_ids(40).await.unwrap());
    store.insert(&stored.rows()).await.unwrap();
    let never = store.allocate_ids(40).await.unwrap();
    assert!(store.resolve(&stored.ids).await.unwrap());
    assert!(!store.resolve(&never).await.unwrap());
    assert!(store.resolve(&[]).await.unwrap());
    store.close().await;
    database.drop_database().await;
}

async fn resolve_refuses_to_guess_about_a_partially_present_batch(backend: Backend) {
    let (database, store) = fresh_store(backend).await;
    let stored = Batch::for_ids(store.allocate_ids(3).await.unwrap());
    store.insert(&stored.rows()).await.unwrap();
    let mut mixed = stored.ids.clone();
    mixed.extend(store.allocate_ids(2).await.unwrap());
    let error = store.resolve(&mixed).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::PartiallyPresent {
                present: 3,
                expected: 5
            }
        ),
        "{error:?}"
    );
    store.close().await;
    database.drop_database().await;
}

/// The dangerous case: the writer's INSERT is stuck behind another transaction's lock when the
/// timeout fires. Without the KILL in `resolve`, that session would insert the batch as soon
/// as the lock is released — after Vigil had answered "not committed".
#[tokio::test]
async fn resolve_kills_a_timed_out_writer_so_its_blocked_insert_never_lands() {
    let database = TestDatabase::create().await;
    let options = options_with_statement_timeout(Duration::from_millis(1500));
    let store = Store::connect(database.url(), &options).await.unwrap();
    let batch = Batch::for_ids(store.allocate_ids(5).await.unwrap());

    // Another transaction holds the first id's row (uncommitted), so the batch waits for it.
    let mut blocker = sqlx::mysql::MySqlConnection::connect(database.url())
        .await
        .unwrap();
    blocker.execute("START TRANSACTION").await.unwrap();
    sqlx::query(
        "INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id) \
         VALUES (?, 'blocker', 'B', 'INFO', NULL, NULL, '2026-01-01 00:00:00.000', 'blocker')",
    )
    .bind(batch.ids[0])
    .execute(&mut blocker)
    .await
    .unwrap();

    let error = store.insert(&batch.rows()).await.unwrap_err();
    assert!(
        matches!(
            error,
            InsertError::OutcomeUnknown(StoreError::Timeout { .. })
        ),
        "{error:?}"
    );
    assert!(error.is_retriable());

    // resolve kills the stuck session, then its locking read waits for the blocker.
    let resolving = tokio::spawn({
        let store = store.clone();
        let ids = batch.ids.clone();
        async move { store.resolve(&ids).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.execute("ROLLBACK").await.unwrap();
    assert!(
        !resolving.await.unwrap().unwrap(),
        "the batch is certainly not committed"
    );

    // Had the stuck session survived, it would have inserted the batch by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_rows(database.url()).await, 0);

    // The next insert reconnects by itself.
    store.insert(&batch.rows()).await.unwrap();
    assert!(store.resolve(&batch.ids).await.unwrap());
    let _ = blocker.close().await;
    store.close().await;
    database.drop_database().await;
}

fn url_through(proxy: &FaultProxy, database: &TestDatabase) -> String {
    format!("mysql://root@{}/{}", proxy.addr(), database.name())
}

#[tokio::test]
async fn an_insert_whose_reply_is_lost_after_commit_resolves_to_committed() {
    let database = TestDatabase::create().await;
    let proxy = FaultProxy::start("127.0.0.1:3306".parse().unwrap())
        .await
        .unwrap();
    let store = Store::connect(
        &url_through(&proxy, &database),
        &options_with_statement_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let mut batch = Batch::for_ids(store.allocate_ids(3).await.unwrap());
    batch.request_ids[1] = "cut-after-this-request-id".into();

    // The execute packet carries the bound values: the server runs (and commits) the INSERT,
    // then the connection is cut before its answer arrives.
    proxy.cut_reply_after(b"cut-after-this-request-id");
    let error = store.insert(&batch.rows()).await.unwrap_err();
    assert!(matches!(error, InsertError::OutcomeUnknown(_)), "{error:?}");
    proxy.heal();

    assert!(
        store.resolve(&batch.ids).await.unwrap(),
        "the batch did commit"
    );
    assert_eq!(count_rows(database.url()).await, 3);
    // Retrying it is refused by the primary key, never stored twice.
    let retry = store.insert(&batch.rows()).await.unwrap_err();
    assert!(matches!(retry, InsertError::DuplicateIds(_)), "{retry:?}");
    assert_eq!(count_rows(database.url()).await, 3);
    store.close().await;
    drop(proxy);
    database.drop_database().await;
}

#[tokio::test]
async fn an_insert_that_never_reached_the_server_resolves_to_not_committed() {
    let database = TestDatabase::create().await;
    let proxy = FaultProxy::start("127.0.0.1:3306".parse().unwrap())
        .await
        .unwrap();
    let store = Store::connect(
        &url_through(&proxy, &database),
        &options_with_statement_timeout(Duration::from_millis(800)),
    )
    .await
    .unwrap();
    let batch = Batch::for_ids(store.allocate_ids(4).await.unwrap());

    proxy.blackhole(true);
    let error = store.insert(&batch.rows()).await.unwrap_err();
    assert!(
        matches!(
            error,
            InsertError::OutcomeUnknown(StoreError::Timeout { .. })
        ),
        "{error:?}"
    );
    proxy.heal();

    assert!(!store.resolve(&batch.ids).await.unwrap());
    assert_eq!(count_rows(database.url()).await, 0);
    store.insert(&batch.rows()).await.unwrap();
    assert!(store.resolve(&batch.ids).await.unwrap());
    store.close().await;
    drop(proxy);
    database.drop_database().await;
}
