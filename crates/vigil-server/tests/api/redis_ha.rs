//! Redis failing for real, not through a proxy: a Sentinel failover (the primary SIGKILLed, its
//! replica promoted) and a Redis killed for good, each while producers keep posting (single
//! events and bulks) and WebSocket clients keep reading. Private servers of the test's own
//! (`vigil_testkit::redis_sentinel`); the machine's Redis is never touched.
//!
//! What each test shows:
//! - every post is answered 201: Redis never costs an acknowledgement, nor slows one past the
//!   producers' bound;
//! - the table holds exactly the acknowledged events;
//! - each WebSocket client (one plain, one filtered to WARN) receives every acknowledged event
//!   it subscribed to exactly once: across the failover window by the bridge's polls and
//!   backfill, and with Redis gone for good from the database alone;
//! - after the failover, by themselves: page 1 is served from the list again (`X-Cache: HIT`,
//!   the newest events) and new events are broadcast through the new primary.
//!
//! The tests print what they measured (kill → first broadcast through the new primary; how
//! late events arrive while Redis is down) but assert no timing beyond generous bounds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use vigil_realtime::BridgeStats;
use vigil_testkit::database::TestDatabase;
use vigil_testkit::redis_sentinel::{PrivateRedis, RedisSentinelGroup};

use crate::cache::until_hit;
use crate::galera::first_ack_after;
use crate::helpers::{TestApp, all_rows, event_json, test_config};
use crate::listeners::Listener;
use crate::producers::{
    Answer, Exchange, Load, Producers, check_table, level_of_producer, producer_of, report_failover,
};
use crate::ws::{eventually, id_of};

/// Eight single-event and two bulk producers, as in the no-loss tests; a refusal fails the
/// test (see [`assert_all_acknowledged`]).
const LOAD: Load = Load {
    single: 8,
    bulk: 2,
    bulk_events: 20,
    answer_bound: Duration::from_secs(30),
    backoff: Duration::from_millis(50),
};
/// Posting before the fault.
const WARM_UP: Duration = Duration::from_millis(700);
/// Posting after the failover, through the new primary.
const AFTER_FAILOVER: Duration = Duration::from_secs(3);
/// Posting with Redis gone.
const WITHOUT_REDIS: Duration = Duration::from_secs(4);
/// Generous bounds on the sentinels' failover and on the broadcast coming back after it.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
const BROADCAST_LIMIT: Duration = Duration::from_secs(60);
/// How often the test looks at the bridge's counters while waiting.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);
/// Events acknowledged this long after Redis died are counted as delivered by polling (the
/// first second holds the last live messages and the switch to polling).
const STEADY_AFTER_LOSS: Duration = Duration::from_secs(1);

#[tokio::test]
async fn sentinel_failover_under_load_loses_no_event_and_the_cache_and_broadcast_come_back() {
    let mut group = RedisSentinelGroup::start().await.unwrap();
    let database = TestDatabase::create().await;
    let sentinels = group.sentinels();
    let config = test_config(
        database.url(),
        &[
            "--redis-sentinels",
            &sentinels,
            "--redis-sentinel-master",
            group.master_name(),
            // Small client queues: a backfill must be paced to them (see no_loss.rs).
            "--ws-client-queue",
            "256",
        ],
    );
    let app = TestApp::spawn_on(database, config).await;
    let bridge = app.bridge.clone().expect("a redis bridge");
    let watched = Arc::clone(&bridge);
    eventually("the bridge subscribes through the sentinels", move || {
        watched.is_subscribed()
    })
    .await;
    let everything = Listener::connect(&app, None).await;
    let warnings = Listener::connect(&app, Some("WARN")).await;
    let producers = Producers::start(&[app.addr], LOAD);
    tokio::time::sleep(WARM_UP).await;

    let killed_at = Instant::now();
    let old_primary = group.kill_primary().await.unwrap();
    let broadcast_back = tokio::spawn(broadcast_through_a_new_subscription(Arc::clone(&bridge)));
    let new_primary = group
        .wait_for_new_primary(old_primary, FAILOVER_LIMIT)
        .await
        .unwrap();
    let promoted_after = killed_at.elapsed();
    let broadcast_after = broadcast_back.await.unwrap() - killed_at;
    tokio::time::sleep(AFTER_FAILOVER).await;
    let exchanges = producers.stop().await;
    assert_all_acknowledged(&exchanges);
    let stored = stored(&app).await;
    let tally = check_table("sentinel failover", &exchanges, &stored);
    assert!(
        first_ack_after(&exchanges, 0, killed_at).is_some(),
        "posts are acknowledged after the kill"
    );

    // New events go out through the new primary: one posted now is heard there.
    let mut new_channel = redis::Client::open(format!("redis://{new_primary}"))
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    new_channel.subscribe("events:new").await.unwrap();
    let last = app.post_json(event_json("after-the-failover")).await;
    assert_eq!(last.status, 201);
    let last_id = last.json()["id"].as_u64().unwrap();
    let heard = tokio::time::timeout(BROADCAST_LIMIT, new_channel.on_message().next())
        .await
        .expect("the new primary broadcasts new events")
        .unwrap();
    assert_eq!(
        id_of(&String::from_utf8_lossy(heard.get_payload_bytes())),
        last_id
    );

    // The last event is a WARN (event_json): both clients get it.
    let mut all_ids: HashSet<u64> = tally.acked.keys().copied().collect();
    all_ids.insert(last_id);
    let mut warn_ids = warn_ids(&tally.acked);
    warn_ids.insert(last_id);
    everything.expect_exactly(&all_ids).await;
    warnings.expect_exactly(&warn_ids).await;

    // The list is served again, from the new primary, and it is the newest events.
    let hit = until_hit(&app, "/api/events?page=1&size=20").await;
    let page: Vec<u64> = hit.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_u64().unwrap())
        .collect();
    let mut newest: Vec<u64> = stored.iter().map(|(id, _)| *id).collect();
    newest.push(last_id);
    newest.sort_unstable_by(|a, b| b.cmp(a));
    newest.truncate(20);
    assert_eq!(page, newest, "page 1 from the list is the database's");

    eprintln!(
        "sentinel failover: {} events acknowledged (slowest answer {:?}), all delivered once \
         to both clients; primary {old_primary} killed, {new_primary} named after \
         {promoted_after:?}, first broadcast through it after {broadcast_after:?}; {} bridge \
         reconnects",
        tally.acked.len(),
        tally.slowest,
        bridge.reconnects()
    );
    report_failover(
        "Redis Sentinel, the primary SIGKILLed and the replica promoted (posts never stopped; first-201 column: from the kill to the first event broadcast through the new primary)",
        &tally,
        broadcast_after,
    );
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn with_redis_gone_for_good_websocket_clients_get_every_event_from_the_database() {
    let mut redis = PrivateRedis::start(&[]).await.unwrap();
    let database = TestDatabase::create().await;
    let redis_url = redis.url();
    let config = test_config(
        database.url(),
        &["--redis-url", &redis_url, "--ws-client-queue", "256"],
    );
    let app = TestApp::spawn_on(database, config).await;
    let bridge = app.bridge.clone().expect("a redis bridge");
    let watched = Arc::clone(&bridge);
    eventually("the bridge subscribes", move || watched.is_subscribed()).await;
    let everything = Listener::connect(&app, None).await;
    let warnings = Listener::connect(&app, Some("WARN")).await;
    let producers = Producers::start(&[app.addr], LOAD);
    tokio::time::sleep(WARM_UP).await;

    redis.kill();
    let killed_at = Instant::now();
    tokio::time::sleep(WITHOUT_REDIS).await;
    let exchanges = producers.stop().await;
    assert_all_acknowledged(&exchanges);
    assert!(!bridge.is_subscribed(), "redis is gone");

    let stored = stored(&app).await;
    let tally = check_table("redis gone", &exchanges, &stored);
    let all_ids: HashSet<u64> = tally.acked.keys().copied().collect();
    let warn_ids = warn_ids(&tally.acked);
    let arrivals = everything.expect_exactly(&all_ids).await;
    warnings.expect_exactly(&warn_ids).await;

    // How late events acknowledged well after the loss reached the plain client.
    let mut late: Vec<Duration> = exchanges
        .iter()
        .filter(|exchange| exchange.answered_at > killed_at + STEADY_AFTER_LOSS)
        .filter_map(|exchange| match &exchange.answer {
            Answer::Acked(ids) => Some(
                ids.iter()
                    .map(|id| arrivals[id].saturating_duration_since(exchange.answered_at)),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    late.sort_unstable();
    assert!(!late.is_empty(), "events were acknowledged without redis");
    eprintln!(
        "redis gone: {} events acknowledged (slowest answer {:?}), all delivered once to both \
         clients; {} acknowledged from {STEADY_AFTER_LOSS:?} after the kill arrived after their \
         201 by: p50 {:?}, p99 {:?}, max {:?}; {} backfills",
        tally.acked.len(),
        tally.slowest,
        late.len(),
        late[late.len() / 2],
        late[late.len() * 99 / 100],
        late[late.len() - 1],
        app.hub.stats().backfills()
    );
    app.stop().await.drop_database().await;
}

/// Every request was acknowledged: Redis failing never refuses a post.
fn assert_all_acknowledged(exchanges: &[Exchange]) {
    let refused: Vec<&Exchange> = exchanges
        .iter()
        .filter(|exchange| !matches!(exchange.answer, Answer::Acked(_)))
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {} posts were not answered 201, e.g. {:?}",
        refused.len(),
        exchanges.len(),
        refused.first()
    );
}

/// Every row of the test's table, as (id, source).
async fn stored(app: &TestApp) -> Vec<(u64, String)> {
    all_rows(&app.db().await)
        .await
        .into_iter()
        .map(|row| (row.id, row.source))
        .collect()
}

/// The acknowledged ids posted at level WARN.
fn warn_ids(acked: &HashMap<u64, String>) -> HashSet<u64> {
    acked
        .iter()
        .filter(|(_, source)| level_of_producer(producer_of(source)) == "WARN")
        .map(|(id, _)| *id)
        .collect()
}

/// Waits until the bridge has lost its subscription and then received a message on a new one;
/// when it did.
async fn broadcast_through_a_new_subscription(bridge: Arc<BridgeStats>) -> Instant {
    let deadline = Instant::now() + BROADCAST_LIMIT;
    while bridge.is_subscribed() {
        assert!(Instant::now() < deadline, "the subscription never dropped");
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
    let before = bridge.messages();
    while !(bridge.is_subscribed() && bridge.messages() > before) {
        assert!(
            Instant::now() < deadline,
            "nothing was broadcast through a new subscription within {BROADCAST_LIMIT:?}"
        );
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
    Instant::now()
}
