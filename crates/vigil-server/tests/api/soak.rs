//! Soak: the real binary in full mode (MariaDB + Redis) at a steady rate for a bounded time
//! with WebSocket clients connected; its resident memory and open file descriptors must stay
//! flat and nothing may be lost.
//!
//! Ignored in the normal run (it takes minutes); `scripts/test.sh` runs it as its own stage:
//! `VIGIL_SOAK_SECONDS=120 cargo nextest run -p vigil-server --run-ignored only -E 'test(soak)'`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use vigil_testkit::database::TestDatabase;

use crate::helpers::{REDIS_URL, TestStore, event_json, post_events_request};
use crate::lifecycle::{start, stop_gracefully, vigil};
use crate::ws::{Received, WsClient, id_of};

/// Events posted per second.
const RATE: u64 = 400;
/// WebSocket clients reading throughout.
const CLIENTS: usize = 20;
/// Share of the run treated as warm-up before the baseline is taken.
const WARM_UP_SHARE: f64 = 0.25;

/// Resident memory (KiB) and open file descriptors of `pid`.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

#[tokio::test]
#[ignore = "minutes long: scripts/test.sh runs it as the soak stage"]
async fn soak_keeps_memory_and_descriptors_flat_and_loses_nothing() {
    let seconds: u64 = std::env::var("VIGIL_SOAK_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(60);
    let duration = Duration::from_secs(seconds);
    let database = TestDatabase::create().await;
    let prefix = format!("vigil:soak:{}", uuid::Uuid::new_v4().simple());
    let mut command = vigil();
    command
        .env("DATABASE_URL", database.url())
        .env("REDIS_URL", REDIS_URL)
        .env("VIGIL_REDIS_RECENT_KEY", format!("{prefix}:events:recent"))
        .env("VIGIL_REDIS_CHANNEL", format!("{prefix}:events:new"));
    let (child, addr) = start(command).await;
    let pid = child.id().unwrap();

    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = WsClient::connect(addr, "/ws").await;
        readers.push(tokio::spawn(async move {
            let mut ids = HashSet::new();
            while let Received::Text(text) = client.next().await {
                assert!(ids.insert(id_of(&text)), "an event arrived twice");
            }
            ids
        }));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let poster = tokio::spawn(post_steadily(addr, Arc::clone(&stop)));
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(2)).await;
        samples.push((started.elapsed(), footprint(pid)));
    }
    stop.store(true, Ordering::Relaxed);
    let acked = poster.await.unwrap();
    assert!(
        acked.len() as f64 > 0.8 * RATE as f64 * seconds as f64,
        "the steady rate held: {} acknowledged",
        acked.len()
    );

    // Memory and descriptors after warm-up stay near the baseline taken after it.
    let warm: Vec<_> = samples
        .iter()
        .filter(|(at, _)| at.as_secs_f64() >= WARM_UP_SHARE * duration.as_secs_f64())
        .map(|(_, footprint)| *footprint)
        .collect();
    let (base_rss, base_fds) = warm[0];
    let (max_rss, max_fds) = warm
        .iter()
        .fold((0, 0), |(rss, fds), &(r, f)| (rss.max(r), fds.max(f)));
    eprintln!(
        "soak {seconds} s at {RATE}/s, {CLIENTS} clients: {} events; RSS {base_rss} → max {max_rss} KiB; fds {base_fds} → max {max_fds}",
        acked.len()
    );
    assert!(
        max_rss <= base_rss + base_rss / 4 + 8 * 1024,
        "RSS grew from {base_rss} to {max_rss} KiB"
    );
    // Pools open connections as concurrency asks, up to their bounds: the database read pool
    // (10), this test's HTTP connections (16 slots) and a few Redis connections. Growth past
    // those bounds is a leak.
    assert!(
        max_fds <= base_fds + 10 + 16 + 6,
        "descriptors grew from {base_fds} to {max_fds}"
    );

    // Nothing lost: the table holds every acknowledged event, every client received them all.
    let store = TestStore::from(database);
    let stored: HashSet<u64> = store.rows().await.into_iter().map(|row| row.id).collect();
    assert!(acked.is_subset(&stored), "an acknowledged event is missing");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_gracefully(child).await;
    for reader in readers {
        let received = reader.await.unwrap();
        let missing = acked.difference(&received).count();
        assert_eq!(missing, 0, "a client missed {missing} events");
    }
    store.drop_database().await;
    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: Result<(), _> = redis::cmd("DEL")
        .arg(format!("{prefix}:events:recent"))
        .arg(format!("{prefix}:events:recent:gap"))
        .query_async(&mut redis)
        .await;
}

/// Posts single events at [`RATE`] per second, on the clock, until `stop`; the acknowledged ids.
async fn post_steadily(addr: SocketAddr, stop: Arc<AtomicBool>) -> HashSet<u64> {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    // At most this many posts in flight, so the client holds a fixed set of connections and
    // the server's descriptor count measures the server, not the client's pool growing.
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    let mut in_flight = tokio::task::JoinSet::new();
    let mut acked = HashSet::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        n += 1;
        let client = client.clone();
        let slot = Arc::clone(&slots).acquire_owned().await.unwrap();
        in_flight.spawn(async move {
            let _slot = slot;
            let request = post_events_request(addr, event_json(&format!("soak-{n}")));
            let response = client.request(request).await.expect("the server answers");
            assert_eq!(response.status(), 201);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            json["id"].as_u64().unwrap()
        });
        while let Some(done) = in_flight.try_join_next() {
            acked.insert(done.unwrap());
        }
    }
    while let Some(done) = in_flight.join_next().await {
        acked.insert(done.unwrap());
    }
    acked
}
