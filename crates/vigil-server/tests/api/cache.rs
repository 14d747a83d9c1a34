//! The recent list behind `GET /api/events?page=1&size<=50`: the rule's tests run in the
//! embedded mode (the in-process list) and the full mode (the Redis list); Redis faults are
//! tested in the full mode only. Each Redis test uses its own key and channel names; none
//! ever flushes Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use vigil_testkit::proxy::FaultProxy;

use crate::helpers::{Mode, TestApp, TestResponse, event_json, in_each_mode};

async fn post_many(app: &TestApp, count: usize, prefix: &str) {
    let events: Vec<String> = (0..count)
        .map(|n| event_json(&format!("{prefix}{n}")))
        .collect();
    let response = app.post_json(format!("[{}]", events.join(","))).await;
    assert_eq!(response.status, 201);
}

/// Reads `path` until the list answers it (X-Cache: HIT); a guard against waiting forever.
pub async fn until_hit(app: &TestApp, path: &str) -> TestResponse {
    for _ in 0..200 {
        let response = app.get(path).await;
        assert_eq!(response.status, 200);
        if response.header("x-cache") == Some("HIT") {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never became a cache hit");
}

async fn page_one_is_served_from_the_list_byte_identical_to_the_database(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    post_many(&app, 70, "a").await;

    let hit = until_hit(&app, "/api/events?page=1&size=20").await;
    let json = hit.json();
    let ids: Vec<u64> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 20);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(json["hasMore"], true);

    // The same page from the database: a filter every event matches is never cached.
    let miss = app.get("/api/events?page=1&size=20&level=WARN").await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(
        miss.body, hit.body,
        "cache and database answers are byte-identical"
    );
    if mode != Mode::MySqlRedis {
        app.stop().await.drop_database().await;
        return;
    }

    // Delete our own list key so the list cannot answer, and it refills.
    let mut redis = app.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(app.recent_key())
        .query_async(&mut redis)
        .await
        .unwrap();
    let miss = app.get("/api/events?page=1&size=20").await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(
        miss.body, hit.body,
        "cache and database answers are byte-identical"
    );

    // The miss refilled the list in the background.
    let refilled = until_hit(&app, "/api/events?page=1&size=20").await;
    assert_eq!(refilled.body, hit.body);
    let length: usize = redis::cmd("LLEN")
        .arg(app.recent_key())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(length, 70, "all 70 events fit the list of 100");
    app.stop().await.drop_database().await;
}

async fn only_the_cache_rule_reads_the_list(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    post_many(&app, 80, "b").await;
    until_hit(&app, "/api/events").await;
    until_hit(&app, "/api/events?size=50").await;
    for path in [
        "/api/events?size=51",
        "/api/events?page=2",
        "/api/events?type=GAS",
        "/api/events?level=WARN",
        "/api/events?source=b1",
        "/api/events?before=999999999",
    ] {
        assert_eq!(
            app.get(path).await.header("x-cache"),
            Some("MISS"),
            "{path}"
        );
    }
    app.stop().await.drop_database().await;
}

async fn a_short_list_never_hides_events_the_database_has(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    post_many(&app, 10, "c").await;
    let response = app.get("/api/events?size=20").await;
    assert_eq!(
        response.header("x-cache"),
        Some("MISS"),
        "10 entries cannot answer a page of 20 with hasMore"
    );
    assert_eq!(response.json()["items"].as_array().unwrap().len(), 10);
    app.stop().await.drop_database().await;
}

async fn the_list_is_warmed_at_start_from_the_database(mode: Mode) {
    let first = TestApp::spawn_in(mode, &[]).await;
    post_many(&first, 60, "d").await;
    until_hit(&first, "/api/events?size=20").await;
    let redis_prefix = first.redis_prefix.clone();
    // Restart on the same store (and Redis names), the Redis list dropped first: start-up
    // fills the list from the database, so the first read is a hit.
    let mut redis = None;
    let mut redis_args = Vec::new();
    if mode == Mode::MySqlRedis {
        let mut connection = first.redis().await;
        let _: () = redis::cmd("DEL")
            .arg(first.recent_key())
            .query_async(&mut connection)
            .await
            .unwrap();
        redis = Some(connection);
        redis_args = first.redis_args();
    }
    let store = first.stop().await;
    let redis_args: Vec<&str> = redis_args.iter().map(String::as_str).collect();
    let config = store.config(&redis_args);
    let mut second = TestApp::spawn_on(store, config).await;
    second.redis_prefix = redis_prefix;
    if let Some(mut redis) = redis {
        let length: usize = redis::cmd("LLEN")
            .arg(second.recent_key())
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(length, 60);
    }
    assert_eq!(
        second.get("/api/events?size=20").await.header("x-cache"),
        Some("HIT")
    );
    second.stop().await.drop_database().await;
}

async fn app_with_redis_behind_proxy() -> (TestApp, FaultProxy) {
    let proxy = FaultProxy::start("127.0.0.1:6379".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let url = format!("redis://{}", proxy.addr());
    (TestApp::spawn_with_redis_at(&url, &[]).await, proxy)
}

#[tokio::test]
async fn with_redis_unreachable_ingest_and_reads_go_on() {
    let (app, proxy) = app_with_redis_behind_proxy().await;
    post_many(&app, 60, "e").await;
    until_hit(&app, "/api/events?size=20").await;

    proxy.refuse_new(true);
    proxy.cut_all();
    for n in 0..20 {
        let response = app.post_json(event_json(&format!("down{n}"))).await;
        assert_eq!(response.status, 201, "ingest does not need Redis");
    }
    let response = app.get("/api/events?size=20").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-cache"), Some("MISS"));
    let newest = &response.json()["items"][0];
    assert_eq!(
        newest["source"], "down19",
        "reads come from the database, with everything"
    );

    // Back: publishing resumes, the gap is repaired by a refill, and the list answers with
    // the events posted while it was down.
    proxy.heal();
    post_many(&app, 1, "after").await;
    let hit = until_hit(&app, "/api/events?size=50").await;
    let sources: Vec<String> = hit.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sources[0], "after0");
    assert!(
        sources.contains(&"down19".to_owned()) && sources.contains(&"down0".to_owned()),
        "{sources:?}"
    );
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn a_silent_redis_never_holds_back_acks() {
    let (app, proxy) = app_with_redis_behind_proxy().await;
    // Redis accepts and never answers: were acks waiting on Redis, these posts would hang
    // (the helper's request guard fails the test after a minute).
    proxy.blackhole(true);
    let app = Arc::new(app);
    let mut posters = Vec::new();
    for n in 0..32 {
        let app = Arc::clone(&app);
        posters.push(tokio::spawn(async move {
            app.post_json(event_json(&format!("bh{n}"))).await.status
        }));
    }
    for poster in posters {
        assert_eq!(poster.await.unwrap(), 201);
    }
    proxy.set_delay(Duration::from_millis(300));
    proxy.blackhole(false);
    for n in 0..8 {
        assert_eq!(
            app.post_json(event_json(&format!("slow{n}"))).await.status,
            201
        );
    }
    proxy.heal();
    let app = Arc::into_inner(app).unwrap();
    app.stop().await.drop_database().await;
}

in_each_mode!(
    redis: page_one_is_served_from_the_list_byte_identical_to_the_database,
    only_the_cache_rule_reads_the_list,
    a_short_list_never_hides_events_the_database_has,
    the_list_is_warmed_at_start_from_the_database,
);
