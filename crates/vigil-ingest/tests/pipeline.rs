//! The pipeline without HTTP, against the real MariaDB: budget, group commit, acks, shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use vigil_core::{Level, NewEvent};
use vigil_ingest::{Ingest, IngestConfig, IngestError};
use vigil_store::{Store, StoreOptions};
use vigil_testkit::database::TestDatabase;

fn event(source: &str) -> NewEvent {
    NewEvent {
        source: source.to_owned(),
        event_type: "GAS".into(),
        level: Level::Warn,
        payload: Some(r#"{"ppm":1}"#.into()),
        occurred_at: None,
    }
}

async fn store_for(database: &TestDatabase) -> Store {
    Store::connect(database.url(), &StoreOptions::default())
        .await
        .expect("connect")
}

async fn stored_sources(store: &Store, ids: &[u64]) -> Vec<String> {
    let mut sources = Vec::new();
    for id in ids {
        let event = store
            .get(*id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("id {id} is stored"));
        sources.push(event.source);
    }
    sources
}

#[tokio::test]
async fn concurrent_requests_are_group_committed_and_each_gets_its_own_ids() {
    let database = TestDatabase::create().await;
    let store = store_for(&database).await;
    let ingest = Ingest::start(store.clone(), IngestConfig::default(), None).unwrap();
    let queue = ingest.queue();

    let mut pending = Vec::new();
    for n in 0..400 {
        let events = if n % 10 == 0 {
            vec![event(&format!("r{n}a")), event(&format!("r{n}b"))]
        } else {
            vec![event(&format!("r{n}"))]
        };
        let expected: Vec<String> = events.iter().map(|e| e.source.clone()).collect();
        let ack = queue
            .submit(events, format!("req-{n}"))
            .expect("within budget");
        pending.push((ack, expected));
    }
    for (ack, expected) in pending {
        let ids = ack.wait().await.expect("committed");
        assert_eq!(ids.len(), expected.len());
        assert_eq!(stored_sources(&store, &ids).await, expected);
    }
    let stats = queue.stats();
    assert_eq!(stats.rows.load(Ordering::Relaxed), 440);
    assert!(
        stats.max_batch_rows.load(Ordering::Relaxed) > 1,
        "400 requests queued at once are written in shared batches"
    );
    assert!(stats.batches.load(Ordering::Relaxed) < 400);
    assert_eq!(queue.depth(), 0, "the budget is released after the acks");
    ingest.shutdown(Duration::from_secs(10)).await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_request_larger_than_a_batch_still_goes_whole() {
    let database = TestDatabase::create().await;
    let store = store_for(&database).await;
    let config = IngestConfig {
        batch_max_rows: 10,
        ..IngestConfig::default()
    };
    let ingest = Ingest::start(store.clone(), config, None).unwrap();
    let queue = ingest.queue();
    let small = queue.submit(vec![event("small")], "a".into()).unwrap();
    let big_events: Vec<NewEvent> = (0..25).map(|n| event(&format!("big{n}"))).collect();
    let big = queue.submit(big_events, "b".into()).unwrap();
    let after = queue.submit(vec![event("after")], "c".into()).unwrap();

    let small_ids = small.wait().await.unwrap();
    let big_ids = big.wait().await.unwrap();
    let after_ids = after.wait().await.unwrap();
    assert_eq!(big_ids.len(), 25);
    assert!(big_ids.windows(2).all(|w| w[0] < w[1]));
    assert!(
        small_ids[0] < big_ids[0] && big_ids[24] < after_ids[0],
        "ids follow commit order"
    );
    ingest.shutdown(Duration::from_secs(10)).await;
    database.drop_database().await;
}

#[tokio::test]
async fn over_budget_is_refused_at_once_and_a_bulk_is_admitted_whole_or_not_at_all() {
    let database = TestDatabase::create().await;
    let store = store_for(&database).await;
    let config = IngestConfig {
        queue_events: 5,
        ..IngestConfig::default()
    };
    let ingest = Ingest::start(store.clone(), config, None).unwrap();
    let queue = ingest.queue();

    let too_big: Vec<NewEvent> = (0..6).map(|n| event(&format!("x{n}"))).collect();
    assert_eq!(
        queue.submit(too_big, "big".into()).err(),
        Some(IngestError::Overloaded)
    );
    assert_eq!(queue.depth(), 0, "a refused bulk reserves nothing");

    // Fill the budget faster than the batcher can drain it; something must be refused.
    let mut admitted = Vec::new();
    let mut refused = 0;
    for n in 0..200 {
        match queue.submit(
            vec![event(&format!("e{n}")), event(&format!("f{n}"))],
            format!("r{n}"),
        ) {
            Ok(ack) => admitted.push(ack),
            Err(IngestError::Overloaded) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused > 0);
    for ack in admitted {
        assert_eq!(ack.wait().await.unwrap().len(), 2);
    }
    ingest.shutdown(Duration::from_secs(10)).await;
    database.drop_database().await;
}

#[tokio::test]
async fn shutdown_commits_everything_queued_then_refuses_new_events() {
    let database = TestDatabase::create().await;
    let store = store_for(&database).await;
    let ingest = Ingest::start(store.clone(), IngestConfig::default(), None).unwrap();
    let queue = ingest.queue();
    let acks: Vec<_> = (0..300)
        .map(|n| {
            queue
                .submit(vec![event(&format!("q{n}"))], format!("r{n}"))
                .unwrap()
        })
        .collect();
    ingest.shutdown(Duration::from_secs(30)).await;

    assert!(!queue.is_open());
    assert_eq!(
        queue.submit(vec![event("late")], "late".into()).err(),
        Some(IngestError::ShuttingDown)
    );
    let mut ids = Vec::new();
    for ack in acks {
        ids.extend(
            ack.wait()
                .await
                .expect("queued before shutdown, so committed"),
        );
    }
    assert_eq!(ids.len(), 300);
    assert_eq!(store.latest(1000).await.unwrap().len(), 300);
    database.drop_database().await;
}

#[tokio::test]
async fn a_request_the_database_refuses_fails_alone_and_its_batch_mates_are_stored() {
    let database = TestDatabase::create().await;
    let store = store_for(&database).await;
    // A check Vigil's validation does not make: the database refuses one source.
    let pool = sqlx::MySqlPool::connect(database.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW \
         IF NEW.source = 'poison' THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison refused'; END IF",
    )
    .execute(&pool)
    .await
    .unwrap();

    let ingest = Ingest::start(store.clone(), IngestConfig::default(), None).unwrap();
    let queue = ingest.queue();
    // The table is locked while the requests queue, so they are written in one batch with the
    // poison once it is released.
    let mut locker = pool.acquire().await.unwrap();
    sqlx::raw_sql("LOCK TABLES events WRITE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let mut pending = Vec::new();
    for n in 0..60 {
        let source = if n == 30 {
            "poison".to_owned()
        } else {
            format!("good-{n}")
        };
        let ack = queue
            .submit(vec![event(&source)], format!("req-{n}"))
            .unwrap();
        pending.push((ack, source));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut *locker)
        .await
        .unwrap();
    drop(locker);
    pool.close().await;
    for (ack, source) in pending {
        let answer = ack.wait().await;
        if source == "poison" {
            assert_eq!(answer, Err(IngestError::Rejected));
        } else {
            let ids = answer.unwrap_or_else(|error| panic!("{source}: {error}"));
            assert_eq!(stored_sources(&store, &ids).await, [source]);
        }
    }
    assert_eq!(queue.stats().failed_requests.load(Ordering::Relaxed), 1);
    ingest.shutdown(Duration::from_secs(10)).await;
    database.drop_database().await;
}

/// Two pipelines on one database (two instances) given the same keys: the database's unique
/// key on the record decides, the loser's batch is refused whole, and its batcher answers the
/// keyed request from the winner's record (same body) or with a mismatch (another body) while
/// its unkeyed batch mates are written again. Nothing is stored twice.
#[tokio::test]
async fn a_key_recorded_by_another_instance_is_answered_from_its_record() {
    use vigil_ingest::{KeyedRequest, Stored};
    use vigil_store::Digest;

    let database = TestDatabase::create().await;
    let store = store_for(&database).await;
    let first = Ingest::start(store.clone(), IngestConfig::default(), None).unwrap();
    let second_store = store_for(&database).await;
    let second = Ingest::start(second_store.clone(), IngestConfig::default(), None).unwrap();
    let key = |tag: u8| Digest::from_sha256(&[tag; 32]);
    let body = |tag: u8| Digest::from_sha256(&[tag.wrapping_add(100); 32]);

    for (tag, same_body) in [(1u8, true), (2, false)] {
        let keyed = |queue: &vigil_ingest::IngestQueue, body: Digest, source: &str| {
            let claim = queue.claim_key(key(tag)).expect("free on this instance");
            queue
                .submit_keyed(
                    vec![event(source)],
                    format!("req-{source}"),
                    KeyedRequest { claim, body },
                )
                .unwrap()
        };
        let winner = keyed(&first.queue(), body(tag), &format!("win-{tag}"))
            .wait_stored()
            .await
            .unwrap();
        let Stored::Committed(ids) = winner else {
            panic!("the first write commits: {winner:?}");
        };
        // The second instance never saw the record: its write is refused by the key and
        // answered from the record, and an unkeyed request queued with it (in its batch, or
        // the next) is stored all the same.
        let queue = second.queue();
        let loser_body = if same_body { body(tag) } else { body(tag + 50) };
        let loser = keyed(&queue, loser_body, &format!("lose-{tag}"));
        let mate = queue
            .submit(vec![event(&format!("mate-{tag}"))], format!("mate-{tag}"))
            .unwrap();
        let answer = loser.wait_stored().await;
        if same_body {
            match answer.unwrap() {
                Stored::Replayed(record) => {
                    assert_eq!(record.ids, ids);
                    assert_eq!(record.request_id, format!("req-win-{tag}"));
                }
                other => panic!("expected a replay, got {other:?}"),
            }
        } else {
            assert_eq!(answer.unwrap_err(), IngestError::IdempotencyMismatch);
        }
        let mate_ids = mate.wait().await.expect("the batch mate is written again");
        assert_eq!(
            stored_sources(&store, &mate_ids).await,
            [format!("mate-{tag}")]
        );
        assert!(
            queue.claim_key(key(tag)).is_some(),
            "the claim was released"
        );
    }
    let rows = store.latest(100).await.unwrap();
    let mut sources: Vec<String> = rows.into_iter().map(|event| event.source).collect();
    sources.sort();
    assert_eq!(sources, ["mate-1", "mate-2", "win-1", "win-2"]);
    first.shutdown(Duration::from_secs(5)).await;
    second.shutdown(Duration::from_secs(5)).await;
    store.close().await;
    second_store.close().await;
    database.drop_database().await;
}

/// Hands every committed batch's ids to the test, in the order the batcher handed them over.
#[derive(Default)]
struct RecordingSink {
    batches: std::sync::Mutex<Vec<Vec<u64>>>,
}

impl vigil_core::CommitSink for RecordingSink {
    fn committed(&self, batch: vigil_core::CommittedBatch) {
        let ids = batch.events.iter().map(|event| event.id).collect();
        self.batches.lock().unwrap().push(ids);
    }
}

#[tokio::test]
async fn large_batches_overlap_on_two_writers_and_still_commit_and_publish_in_id_order() {
    let database = TestDatabase::create().await;
    let store = store_for(&database).await;
    assert!(store.writers() >= 2, "MySQL spreads batches over writers");
    let sink = std::sync::Arc::new(RecordingSink::default());
    let config = IngestConfig {
        batch_max_rows: 400,
        ..IngestConfig::default()
    };
    let ingest = Ingest::start(store.clone(), config, Some(sink.clone())).unwrap();
    let queue = ingest.queue();

    let mut pending = Vec::new();
    for n in 0..60 {
        let events: Vec<NewEvent> = (0..300).map(|k| event(&format!("b{n}-{k}"))).collect();
        pending.push(
            queue
                .submit(events, format!("bulk-{n}"))
                .expect("within budget"),
        );
    }
    let mut acked = Vec::new();
    for ack in pending {
        let ids = ack.wait().await.expect("stored");
        assert_eq!(ids.len(), 300);
        acked.extend(ids);
    }
    assert!(
        queue.stats().overlapped_batches.load(Ordering::Relaxed) > 0,
        "some batches were written beside another"
    );
    ingest.shutdown(Duration::from_secs(10)).await;

    // Published in commit order, which is id order, each acknowledged id exactly once.
    let published: Vec<u64> = sink.batches.lock().unwrap().concat();
    assert!(
        published.windows(2).all(|pair| pair[0] < pair[1]),
        "batches were handed over in id order"
    );
    acked.sort_unstable();
    assert_eq!(published, acked);
    let stored = store.latest(acked.len() + 1).await.unwrap();
    assert_eq!(
        stored.len(),
        acked.len(),
        "every acknowledged event and nothing else"
    );
    database.drop_database().await;
}
