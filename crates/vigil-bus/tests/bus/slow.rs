//! A slow Redis (hundreds of milliseconds away): publishing never waits for it, and a queue that
//! fills up drops its oldest batches, counted, with a gap marked.

use std::time::{Duration, Instant};

use vigil_bus::{Publisher, RecentRead, RedisBus};
use vigil_testkit::proxy::FaultProxy;

use crate::helpers::{
    TestNames, batch, direct, entries, eventually, ids_of, list, redis_addr, redis_url,
};

/// Each chunk through the proxy waits this long, each way: a round trip takes 600 ms or more.
const SLOW: Duration = Duration::from_millis(300);

#[tokio::test]
async fn publish_returns_before_a_slow_redis_has_the_batch() {
    let test = TestNames::new(60);
    let proxy = FaultProxy::start(redis_addr()).await.unwrap();
    let bus = RedisBus::connect(&redis_url(proxy.addr()), test.names.clone())
        .await
        .unwrap();
    let publisher = Publisher::start(bus, 16);
    let stats = publisher.stats();
    publisher.publish(batch(1..=5));
    eventually("the publisher's connection is open", || async {
        stats.events_published() == 5
    })
    .await;

    proxy.set_delay(SLOW);
    let mut redis = direct().await;
    let started = Instant::now();
    publisher.publish(batch(6..=10));
    let publish_took = started.elapsed();
    let right_after = list(&mut redis, test.key()).await;
    eprintln!("publish took {publish_took:?} with redis {SLOW:?} away");
    assert_eq!(
        right_after,
        entries((1..=5).rev()),
        "publish returned before the batch reached redis"
    );

    eventually("the batch reaches redis", || async {
        list(&mut direct().await, test.key()).await == entries((1..=10).rev())
    })
    .await;
    assert_eq!(stats.batches_dropped(), 0);
    assert_eq!(publisher.gap_epoch(), 0);
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_batches_counts_them_and_marks_a_gap() {
    let test = TestNames::new(60);
    let proxy = FaultProxy::start(redis_addr()).await.unwrap();
    let bus = RedisBus::connect(&redis_url(proxy.addr()), test.names.clone())
        .await
        .unwrap();
    let publisher = Publisher::start(bus.clone(), 2);
    let stats = publisher.stats();
    publisher.publish(batch(1..=60));
    eventually("the first batch is published", || async {
        stats.events_published() == 60
    })
    .await;

    proxy.set_delay(SLOW);
    // Ten commits while one round trip takes 600 ms: the queue holds two batches at most.
    for id in 61..=70 {
        publisher.publish(batch(id..=id));
    }
    eventually("every batch is published or dropped", || async {
        stats.batches_published() + stats.batches_dropped() == 11
    })
    .await;
    let counts = stats.snapshot();
    assert!(counts.batches_dropped >= 1, "{counts:?}");
    assert_eq!(counts.events_dropped, counts.batches_dropped);
    assert_eq!(counts.redis_errors, 0);
    assert_eq!(publisher.gap_epoch(), 1);

    // The newest batches are never the ones dropped; the list stays in id order.
    let held = ids_of(&list(&mut direct().await, test.key()).await);
    assert_eq!(held[..2], [70, 69]);
    assert!(held.is_sorted_by(|newer, older| newer > older));
    assert_eq!(held.len(), 60, "trimmed");
    let newer_held = held.iter().filter(|&&id| id > 60).count() as u64;
    assert_eq!(newer_held, 10 - counts.events_dropped);

    // The gap is marked in Redis, so reads miss until a refill from the database.
    proxy.heal();
    let RecentRead::Miss(ticket) = bus.recent(50).await.unwrap() else {
        panic!("the gap makes reads miss");
    };
    bus.refill(ticket, &entries((1..=70).rev())).await.unwrap();
    let read = bus.recent(50).await.unwrap();
    assert_eq!(
        read,
        RecentRead::Hit {
            newest_first: entries((21..=70).rev()),
            has_more: true
        }
    );
}
