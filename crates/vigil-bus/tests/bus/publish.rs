//! Committed batches reach the list (newest first, trimmed) and the channel (every event's exact
//! bytes, in commit order).

use std::time::Duration;

use futures_util::StreamExt;
use vigil_bus::{Publisher, RecentRead, RedisBus};

use crate::helpers::{
    PATIENCE, TestNames, batch, direct, entries, event, eventually, expect_hit, ids_of, list,
    redis_addr, redis_url,
};

#[tokio::test]
async fn published_batches_reach_the_list_newest_first_and_the_channel_in_commit_order() {
    let test = TestNames::new(60);
    let url = redis_url(redis_addr());
    // Subscribe before publishing: pub/sub keeps nothing for late subscribers.
    let mut pubsub = redis::Client::open(url.as_str())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(&test.names.channel).await.unwrap();

    let bus = RedisBus::connect(&url, test.names.clone()).await.unwrap();
    let publisher = Publisher::start(bus, 64);
    publisher.publish(batch(1..=30));
    publisher.publish(batch(31..=50));
    publisher.publish(batch(51..=80));

    let mut messages = pubsub.on_message();
    for id in 1..=80 {
        let message = tokio::time::timeout(PATIENCE, messages.next())
            .await
            .expect("every event is published")
            .unwrap();
        assert_eq!(
            message.get_payload_bytes(),
            &event(id).json[..],
            "event {id}"
        );
    }
    drop(messages);

    let stats = publisher.stats();
    eventually("the batches are counted", || async {
        stats.events_published() == 80
    })
    .await;
    assert_eq!(stats.batches_published(), 3);
    assert_eq!(stats.batches_dropped(), 0);
    assert_eq!(stats.redis_errors(), 0);
    assert_eq!(publisher.gap_epoch(), 0);

    let mut redis = direct().await;
    let held = list(&mut redis, test.key()).await;
    assert_eq!(
        held,
        entries((21..=80).rev()),
        "newest first, trimmed to 60"
    );
}

#[tokio::test]
async fn shutdown_publishes_what_is_queued() {
    let test = TestNames::new(100);
    let bus = RedisBus::connect(&redis_url(redis_addr()), test.names.clone())
        .await
        .unwrap();
    let publisher = Publisher::start(bus, 64);
    let watcher = publisher.clone();
    for first in (1..=200).step_by(10) {
        publisher.publish(batch(first..first + 10));
    }
    publisher.shutdown(Duration::from_secs(10)).await;

    assert_eq!(watcher.stats().events_published(), 200);
    assert_eq!(watcher.stats().events_dropped(), 0);
    let mut redis = direct().await;
    assert_eq!(
        list(&mut redis, test.key()).await,
        entries((101..=200).rev())
    );

    // After shutdown nothing more is taken, and that is counted.
    watcher.publish(batch(201..=201));
    assert_eq!(watcher.stats().batches_dropped(), 1);
    assert_eq!(watcher.gap_epoch(), 1);
}

#[tokio::test]
async fn interleaved_id_blocks_from_two_instances_keep_the_list_in_id_order() {
    // Two instances with their own id blocks: instance A hands out 5000…, instance B 1000….
    // Whatever order their pushes interleave in, the list holds the largest ids, largest first,
    // which is what the database's newest-first page shows.
    let test = TestNames::new(60);
    let url = redis_url(redis_addr());
    let instance_a = Publisher::start(
        RedisBus::connect(&url, test.names.clone()).await.unwrap(),
        64,
    );
    let instance_b = Publisher::start(
        RedisBus::connect(&url, test.names.clone()).await.unwrap(),
        64,
    );

    for round in 0..5u64 {
        instance_a.publish(batch(5000 + round * 10..5000 + round * 10 + 10));
        instance_b.publish(batch(1000 + round * 20..1000 + round * 20 + 20));
    }
    instance_a.shutdown(Duration::from_secs(10)).await;
    instance_b.shutdown(Duration::from_secs(10)).await;

    let mut redis = direct().await;
    let held = ids_of(&list(&mut redis, test.key()).await);
    let mut expected: Vec<u64> = (5000..5050).chain(1000..1100).collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    expected.truncate(60);
    assert_eq!(held, expected);

    let bus = RedisBus::connect(&url, test.names.clone()).await.unwrap();
    let (page, has_more) = expect_hit(bus.recent(50).await.unwrap());
    assert_eq!(ids_of(&page), expected[..50]);
    assert!(has_more);
    assert!(matches!(bus.recent(60).await.unwrap(), RecentRead::Miss(_)));
}
