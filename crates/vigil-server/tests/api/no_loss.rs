//! No acknowledged event is ever lost or duplicated, under every fault the test proxy can make
//! while producers keep posting (single events and bulks) and WebSocket clients keep reading.
//!
//! Each scenario runs the same harness: MariaDB and Redis both behind a [`FaultProxy`], eight
//! single-event producers and two bulk producers posting without pause, two WebSocket clients
//! (one plain, one filtered), a warm-up, the fault for a few seconds, the heal, a recovery
//! period, then the checks:
//! - every request was answered (201, or 503 `store_unavailable`/`overloaded` with
//!   `Retry-After`) within [`ANSWER_BOUND`]: never a hang;
//! - the table holds exactly the acknowledged events, each under its acknowledged id, and none
//!   of the refused ones;
//! - ingest recovered by itself (acknowledgements after the heal);
//! - each WebSocket client received every acknowledged event it subscribed to, exactly once
//!   (backfill covers what the Redis channel lost).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vigil_testkit::database::TestDatabase;
use vigil_testkit::proxy::FaultProxy;

use crate::helpers::{MARIADB, REDIS_URL, TestApp, all_rows, test_config};
use crate::listeners::Listener;
use crate::producers::{Answer, Load, Producers, check_table, level_of_producer, producer_of};

/// The longest any request may take to be answered, fault or not.
const ANSWER_BOUND: Duration = Duration::from_secs(30);
/// Eight single-event and two bulk producers.
const LOAD: Load = Load {
    single: 8,
    bulk: 2,
    bulk_events: 20,
    answer_bound: ANSWER_BOUND,
    backoff: Duration::from_millis(50),
};
/// Phases of a scenario.
const WARM_UP: Duration = Duration::from_millis(700);
const FAULT: Duration = Duration::from_secs(3);
const RECOVERY: Duration = Duration::from_secs(2);

/// A server whose database and Redis both sit behind fault proxies.
struct Rig {
    app: TestApp,
    database_proxy: FaultProxy,
    redis_proxy: FaultProxy,
}

impl Rig {
    async fn start() -> Rig {
        let database = TestDatabase::create().await;
        let database_proxy = FaultProxy::start(MARIADB.parse::<SocketAddr>().unwrap())
            .await
            .unwrap();
        let redis_upstream: SocketAddr = REDIS_URL.trim_start_matches("redis://").parse().unwrap();
        let redis_proxy = FaultProxy::start(redis_upstream).await.unwrap();
        let prefix = format!("vigil:test:{}", uuid::Uuid::new_v4().simple());
        let database_url = format!("mysql://root@{}/{}", database_proxy.addr(), database.name());
        let redis_url = format!("redis://{}", redis_proxy.addr());
        let recent_key = format!("{prefix}:events:recent");
        let channel = format!("{prefix}:events:new");
        let config = test_config(
            &database_url,
            &[
                "--redis-url",
                &redis_url,
                "--redis-recent-key",
                &recent_key,
                "--redis-channel",
                &channel,
                // Small client queues: a backfill (thousands of events at once) must be paced
                // to them, or it would close healthy clients as slow consumers.
                "--ws-client-queue",
                "256",
            ],
        );
        let mut app = TestApp::spawn_on(database, config).await;
        app.redis_prefix = Some(prefix);
        Rig {
            app,
            database_proxy,
            redis_proxy,
        }
    }
}

/// Runs a scenario: load, `fault` for [`FAULT`], `heal`, recovery, then every check.
async fn run_scenario(name: &str, fault: impl FnOnce(&Rig), heal: impl FnOnce(&Rig)) {
    let rig = Rig::start().await;
    let everything = Listener::connect(&rig.app, None).await;
    let warnings = Listener::connect(&rig.app, Some("WARN")).await;
    let producers = Producers::start(&[rig.app.addr], LOAD);
    tokio::time::sleep(WARM_UP).await;
    fault(&rig);
    tokio::time::sleep(FAULT).await;
    heal(&rig);
    let healed_at = Instant::now();
    tokio::time::sleep(RECOVERY).await;
    let exchanges = producers.stop().await;

    let acked_after_heal = exchanges
        .iter()
        .filter(|exchange| {
            matches!(exchange.answer, Answer::Acked(_)) && exchange.answered_at > healed_at
        })
        .count();
    assert!(acked_after_heal > 0, "{name}: ingest did not recover");
    let rows = all_rows(&rig.app.db().await).await;
    let stored: Vec<(u64, String)> = rows.into_iter().map(|row| (row.id, row.source)).collect();
    let tally = check_table(name, &exchanges, &stored);
    assert_eq!(
        tally.unknown_requests, 0,
        "{name}: every answer is certain under these faults"
    );
    let acked = &tally.acked;
    let warn_ids: HashSet<u64> = acked
        .iter()
        .filter(|(_, source)| level_of_producer(producer_of(source)) == "WARN")
        .map(|(id, _)| *id)
        .collect();

    let all_ids: HashSet<u64> = acked.keys().copied().collect();
    everything.expect_exactly(&all_ids).await;
    warnings.expect_exactly(&warn_ids).await;
    eprintln!(
        "{name}: {} events acknowledged ({} requests after the heal), {} requests refused, all delivered",
        acked.len(),
        acked_after_heal,
        tally.refused_requests
    );
    rig.app.stop().await.drop_database().await;
}

#[tokio::test]
async fn database_cut() {
    run_scenario(
        "database cut",
        |rig| {
            rig.database_proxy.refuse_new(true);
            rig.database_proxy.cut_all();
        },
        |rig| rig.database_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn database_blackholed() {
    run_scenario(
        "database blackholed",
        |rig| rig.database_proxy.blackhole(true),
        |rig| rig.database_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn database_slow() {
    run_scenario(
        "database slow",
        |rig| rig.database_proxy.set_delay(Duration::from_millis(300)),
        |rig| rig.database_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn database_cut_right_after_an_insert() {
    run_scenario(
        "database cut after an insert",
        |rig| rig.database_proxy.cut_reply_after(b"INSERT INTO events"),
        |rig| rig.database_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn redis_cut() {
    run_scenario(
        "redis cut",
        |rig| {
            rig.redis_proxy.refuse_new(true);
            rig.redis_proxy.cut_all();
        },
        |rig| rig.redis_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn redis_slow() {
    run_scenario(
        "redis slow",
        |rig| rig.redis_proxy.set_delay(Duration::from_millis(300)),
        |rig| rig.redis_proxy.heal(),
    )
    .await;
}
