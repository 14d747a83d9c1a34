//! Shared set-up: unique names per test, events encoded like vigil-core's, direct access to
//! Redis for checking what the bus wrote.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use vigil_bus::{BusNames, CommittedBatch, PublishedEvent, Publisher, RecentRead, entry_id};

/// The machine's shared Redis.
pub const REDIS_ADDR: &str = "127.0.0.1:6379";

/// Longest a test waits for something that should happen within a few round trips.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub fn redis_addr() -> SocketAddr {
    REDIS_ADDR.parse().unwrap()
}

pub fn redis_url(addr: SocketAddr) -> String {
    format!("redis://{addr}")
}

/// Names no other test uses; the keys are deleted when this is dropped (never FLUSHALL).
pub struct TestNames {
    pub names: BusNames,
}

impl TestNames {
    pub fn new(recent_size: usize) -> TestNames {
        let prefix = format!("vigil:test:{}", uuid::Uuid::new_v4());
        TestNames {
            names: BusNames {
                recent_key: format!("{prefix}:events:recent"),
                channel: format!("{prefix}:events:new"),
                recent_size,
            },
        }
    }

    pub fn key(&self) -> &str {
        &self.names.recent_key
    }
}

impl Drop for TestNames {
    fn drop(&mut self) {
        let deleted = redis::Client::open(redis_url(redis_addr()))
            .and_then(|client| client.get_connection())
            .and_then(|mut connection| {
                redis::cmd("DEL")
                    .arg(&self.names.recent_key)
                    .arg(self.names.gap_key())
                    .exec(&mut connection)
            });
        if let Err(error) = deleted {
            eprintln!("could not delete the test's keys: {error}");
        }
    }
}

/// An event encoded the way vigil-core encodes it: the id first.
pub fn event(id: u64) -> PublishedEvent {
    let json = format!(
        "{{\"id\":{id},\"source\":\"sensor-{id}\",\"type\":\"GAS\",\"level\":\"WARN\",\
         \"payload\":{{\"ppm\":{ppm}}},\"occurredAt\":null,\
         \"createdAt\":\"2026-11-24T05:12:09.123Z\",\"requestId\":\"req-{id}\"}}",
        ppm = id % 500
    );
    PublishedEvent {
        id,
        json: Bytes::from(json),
    }
}

pub fn batch(ids: impl IntoIterator<Item = u64>) -> CommittedBatch {
    CommittedBatch {
        events: ids.into_iter().map(event).collect(),
        created_at: vigil_core::UnixMillis::now(),
    }
}

/// Encoded events for the given ids, in the given order (e.g. a database read, newest first).
pub fn entries(ids: impl IntoIterator<Item = u64>) -> Vec<Bytes> {
    ids.into_iter().map(|id| event(id).json).collect()
}

pub fn ids_of(entries: &[Bytes]) -> Vec<u64> {
    entries
        .iter()
        .map(|entry| entry_id(entry).unwrap())
        .collect()
}

/// A connection straight to Redis (no proxy), for looking at what the bus wrote.
pub async fn direct() -> MultiplexedConnection {
    redis::Client::open(redis_url(redis_addr()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The whole list, head first.
pub async fn list(connection: &mut MultiplexedConnection, key: &str) -> Vec<Bytes> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(connection)
        .await
        .unwrap()
}

/// Waits until `condition` holds, checking every 20 ms; panics after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The hit's entries, or a panic naming what was read instead.
pub fn expect_hit(read: RecentRead) -> (Vec<Bytes>, bool) {
    match read {
        RecentRead::Hit {
            newest_first,
            has_more,
        } => (newest_first, has_more),
        RecentRead::Miss(_) => panic!("expected a hit, got a miss"),
    }
}

/// Publishes one-event batches with increasing ids from `*next_id` until one is published.
pub async fn publish_until_one_gets_through(publisher: &Publisher, next_id: &mut u64) {
    let published_before = publisher.stats().batches_published();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while publisher.stats().batches_published() == published_before {
        assert!(
            tokio::time::Instant::now() < give_up,
            "publishing did not resume"
        );
        publisher.publish(batch(*next_id..=*next_id));
        *next_id += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
