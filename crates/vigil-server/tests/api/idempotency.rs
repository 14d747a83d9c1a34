//! `Idempotency-Key` on `POST /api/events`, in each mode: a retry gets the original answer
//! and stores nothing, another body under the key is 422, a repeat while the first is in
//! flight is 409, a write that failed leaves the key free (the record commits with the events,
//! never before), keys are scoped per token, expire after `VIGIL_IDEMPOTENCY_TTL`, and two
//! instances given one key at once store its events once.

use std::time::{Duration, Instant};

use http::Method;
use sqlx::{Connection, Executor};

use crate::auth::{INGEST_TOKEN, post_as, token_args};
use crate::helpers::{
    ExtraInstance, Mode, TestApp, TestResponse, TestStore, bulk_json, event_json, in_each_mode,
};

in_each_mode!(
    a_retry_gets_the_original_answer_and_stores_nothing,
    another_body_under_a_key_is_refused,
    a_key_in_flight_is_409_and_a_failed_write_leaves_it_free,
    keys_are_scoped_per_token,
    keys_expire_after_the_ttl
);

async fn post_keyed(app: &TestApp, key: &str, body: impl Into<bytes::Bytes>) -> TestResponse {
    post_keyed_as(app, key, None, body).await
}

async fn post_keyed_as(
    app: &TestApp,
    key: &str,
    token: Option<&str>,
    body: impl Into<bytes::Bytes>,
) -> TestResponse {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![
        ("content-type", "application/json"),
        ("idempotency-key", key),
    ];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization));
    }
    app.send_with(Method::POST, "/api/events", &headers, body)
        .await
}

fn assert_created(response: &TestResponse) {
    assert_eq!(
        response.status.as_u16(),
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

fn assert_replay_of(replay: &TestResponse, original: &TestResponse) {
    assert_created(replay);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        replay.body, original.body,
        "the original answer, byte for byte"
    );
    assert_ne!(
        replay.request_id(),
        original.request_id(),
        "the replay is its own request"
    );
}

async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

async fn a_retry_gets_the_original_answer_and_stores_nothing(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let single = event_json("keyed-single");
    let first = post_keyed(&app, "order-1", single.clone()).await;
    assert_created(&first);
    assert_eq!(first.header("idempotent-replayed"), None);
    let id = first.json()["id"].as_u64().unwrap();
    assert_eq!(first.json()["requestId"], first.request_id());
    let again = post_keyed(&app, "order-1", single.clone()).await;
    assert_replay_of(&again, &first);

    let sources: Vec<String> = (0..50).map(|n| format!("keyed-bulk-{n}")).collect();
    let bulk = bulk_json(&sources);
    let stored = post_keyed(&app, "batch 2026-11-24T10:00 #7", bulk.clone()).await;
    assert_created(&stored);
    assert_eq!(stored.ids().len(), 50);
    for _ in 0..3 {
        let replay = post_keyed(&app, "batch 2026-11-24T10:00 #7", bulk.clone()).await;
        assert_replay_of(&replay, &stored);
    }

    // Replays are answered by the batcher through the store's read pool; the pool must be
    // left fit for request handlers (a connection opened on the batcher's own runtime once
    // hung every read that later drew it, until its statement timeout).
    let reads = (0..12).map(|n| {
        let app = &app;
        async move { app.get(&format!("/api/events?source=keyed-bulk-{n}")).await }
    });
    for read in futures_util::future::join_all(reads).await {
        assert_eq!(
            read.status.as_u16(),
            200,
            "{}",
            String::from_utf8_lossy(&read.body)
        );
    }

    // Without a key the same body is a new request.
    assert_created(&app.post_json(single.clone()).await);
    let rows = app.rows().await;
    assert_eq!(rows.len(), 1 + 50 + 1, "replays stored nothing");
    let keyed = rows.iter().find(|row| row.id == id).expect("the first row");
    assert_eq!(keyed.request_id, first.request_id());
    assert_eq!(metric(&app, "vigil_idempotent_replays_total").await, 4);

    // A malformed key is refused before anything is stored.
    let long = "k".repeat(256);
    for bad in [long.as_str(), ""] {
        let refused = post_keyed(&app, bad, single.clone()).await;
        let error = refused.assert_error(400, "validation_failed");
        assert_eq!(error["details"][0]["field"], "Idempotency-Key");
    }
    assert_eq!(app.rows().await.len(), 52);
    app.stop().await.drop_database().await;
}

async fn another_body_under_a_key_is_refused(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let original = post_keyed(&app, "reading-42", event_json("sensor-a")).await;
    assert_created(&original);
    let other = post_keyed(&app, "reading-42", event_json("sensor-b")).await;
    other.assert_error(422, "idempotency_mismatch");
    // The same events spelled differently are a different body too (the check is on bytes).
    let respaced = format!(" {}", event_json("sensor-a"));
    post_keyed(&app, "reading-42", respaced)
        .await
        .assert_error(422, "idempotency_mismatch");
    // The original is still replayed, and only it is stored.
    assert_replay_of(
        &post_keyed(&app, "reading-42", event_json("sensor-a")).await,
        &original,
    );
    let rows = app.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].source, "sensor-a");
    let metrics = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains(r#"vigil_ingest_rejected_total{reason="idempotency_mismatch"} 2"#),
        "mismatches are counted"
    );
    app.stop().await.drop_database().await;
}

/// Another connection holding the database's writes: SQLite's write lock (`BEGIN IMMEDIATE`),
/// or on MariaDB a read lock on the events table, which an INSERT waits for.
enum WriteBlock {
    Sqlite(sqlx::SqliteConnection),
    MySql(sqlx::MySqlConnection),
}

impl WriteBlock {
    async fn hold(store: &TestStore) -> WriteBlock {
        match store {
            TestStore::Embedded { dir, .. } => {
                let options =
                    sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("vigil.db"));
                let mut connection = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("open the embedded database");
                connection
                    .execute("BEGIN IMMEDIATE")
                    .await
                    .expect("take the write lock");
                WriteBlock::Sqlite(connection)
            }
            TestStore::MySql(database) => {
                let mut connection = sqlx::MySqlConnection::connect(database.url())
                    .await
                    .expect("connect to the test database");
                connection
                    .execute("LOCK TABLES events READ")
                    .await
                    .expect("lock the events table");
                WriteBlock::MySql(connection)
            }
        }
    }

    async fn release(self) {
        match self {
            WriteBlock::Sqlite(mut connection) => {
                connection.execute("ROLLBACK").await.unwrap();
                connection.close().await.unwrap();
            }
            WriteBlock::MySql(mut connection) => {
                connection.execute("UNLOCK TABLES").await.unwrap();
                connection.close().await.unwrap();
            }
        }
    }
}

async fn a_key_in_flight_is_409_and_a_failed_write_leaves_it_free(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let body = event_json("alarm-panel-3");
    let block = WriteBlock::hold(&app.database).await;

    let client = app.client.clone();
    let request = crate::helpers::keyed_post_request(app.addr, "alarm-77", body.clone());
    let first = tokio::spawn(crate::helpers::read_response(client.request(request)));
    // The first request is queued behind the held lock: the same key is refused meanwhile,
    // and a different key is not held up by it (its own write waits like any other).
    let deadline = Instant::now() + Duration::from_secs(5);
    let conflict = loop {
        let response = post_keyed(&app, "alarm-77", body.clone()).await;
        if response.status.as_u16() == 409 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error = conflict.assert_error(409, "idempotency_in_flight");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    assert_eq!(conflict.header("retry-after"), Some("1"));

    // Held past the retry window: the write fails and the producer hears 503.
    first.await.unwrap().assert_error(503, "store_unavailable");
    block.release().await;
    assert!(app.rows().await.is_empty());

    // Nothing was recorded with the failed write, so the retry stores the event.
    let retry = post_keyed(&app, "alarm-77", body.clone()).await;
    assert_created(&retry);
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_replay_of(&post_keyed(&app, "alarm-77", body).await, &retry);
    assert_eq!(app.rows().await.len(), 1);
    app.stop().await.drop_database().await;
}

async fn keys_are_scoped_per_token(mode: Mode) {
    let args = token_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = TestApp::spawn_in(mode, &args).await;
    let other_token = args[1].split(',').nth(1).unwrap();
    let body = event_json("shared-gateway");
    let first = post_keyed_as(&app, "k-1", Some(INGEST_TOKEN), body.clone()).await;
    let second = post_keyed_as(&app, "k-1", Some(other_token), body.clone()).await;
    assert_created(&first);
    assert_created(&second);
    assert_eq!(second.header("idempotent-replayed"), None);
    assert_ne!(
        first.json()["id"],
        second.json()["id"],
        "two producers, two events"
    );
    assert_replay_of(
        &post_keyed_as(&app, "k-1", Some(INGEST_TOKEN), body.clone()).await,
        &first,
    );
    // A key is checked after the token: without one, nothing is replayed or stored.
    let anonymous = post_keyed_as(&app, "k-1", None, body.clone()).await;
    anonymous.assert_error(401, "unauthorized");
    let unkeyed = post_as(&app, "/api/events", Some(INGEST_TOKEN), body).await;
    assert_created(&unkeyed);
    assert_eq!(app.rows().await.len(), 3);
    app.stop().await.drop_database().await;
}

async fn keys_expire_after_the_ttl(mode: Mode) {
    let app = TestApp::spawn_in(mode, &["--idempotency-ttl", "1s"]).await;
    let first = post_keyed(&app, "short-lived", event_json("one")).await;
    assert_created(&first);
    assert_replay_of(
        &post_keyed(&app, "short-lived", event_json("one")).await,
        &first,
    );
    // A key nobody reuses: only the purge can remove its record.
    assert_created(&post_keyed(&app, "never-again", event_json("three")).await);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Expired: the key is free again, for any body.
    let later = post_keyed(&app, "short-lived", event_json("two")).await;
    assert_created(&later);
    assert_eq!(later.header("idempotent-replayed"), None);
    assert_ne!(later.json()["id"], first.json()["id"]);
    // The purge (every second at this TTL) removes expired records.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&app, "vigil_idempotency_records_purged_total").await == 0 {
        assert!(Instant::now() < deadline, "expired records are purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.rows().await.len(), 3);
    app.stop().await.drop_database().await;
}

/// Two instances on one database given the same key at the same moment: each key's events
/// are stored once, and both answers carry the same ids (one of them replayed, whether the
/// loser found the record before writing or its batch was refused by the record's key).
#[tokio::test]
async fn two_instances_given_one_key_store_its_events_once() {
    let app = TestApp::spawn_in(Mode::MySql, &[]).await;
    let other = ExtraInstance::start(app.database.url()).await;
    const KEYS: usize = 40;
    let mut answers = Vec::new();
    for n in 0..KEYS {
        let key = format!("race-{n}");
        let body = bulk_json(&[format!("race-{n}-a"), format!("race-{n}-b")]);
        let client = app.client.clone();
        let to_first = crate::helpers::keyed_post_request(app.addr, &key, body.clone());
        let to_second = crate::helpers::keyed_post_request(other.addr, &key, body);
        let second_client = app.client.clone();
        answers.push(tokio::spawn(async move {
            let (first, second) = tokio::join!(
                crate::helpers::read_response(client.request(to_first)),
                crate::helpers::read_response(second_client.request(to_second)),
            );
            (first, second)
        }));
    }
    for answer in answers {
        let (first, second) = answer.await.unwrap();
        assert_created(&first);
        assert_created(&second);
        assert_eq!(first.ids(), second.ids());
        let replayed = [&first, &second]
            .iter()
            .filter(|response| response.header("idempotent-replayed") == Some("true"))
            .count();
        assert_eq!(replayed, 1);
    }
    assert_eq!(app.rows().await.len(), KEYS * 2);
    other.stop().await;
    app.stop().await.drop_database().await;
}
