//! Through Redis Sentinel (a private primary, replica and three sentinels): the bus, the
//! publisher and a subscription find the primary, follow it by themselves when it is killed and
//! the replica promoted, and the list on the new primary is not trusted until a refill (the old
//! primary may have acknowledged pushes it never replicated).

use std::time::Duration;

use futures_util::StreamExt;
use vigil_bus::{Publisher, RecentRead, RedisBus, RedisTarget};
use vigil_testkit::redis_sentinel::RedisSentinelGroup;

use crate::helpers::{
    PATIENCE, TestNames, batch, entries, expect_hit, ids_of, publish_until_one_gets_through,
};

/// Generous bound on the sentinels' failover.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_bus_follows_the_primary_across_a_failover_and_misses_until_a_refill() {
    let mut group = RedisSentinelGroup::start().await.unwrap();
    let sentinels = group.sentinels().parse().unwrap();
    let target = RedisTarget::sentinel(&sentinels, group.master_name(), None).unwrap();
    let test = TestNames::new(60);
    let bus = RedisBus::connect_to(target.clone(), test.names.clone())
        .await
        .unwrap();
    let first_primary = group.primary().await.unwrap();
    assert_eq!(target.known_primary_addr(), Some(first_primary.to_string()));
    let publisher = Publisher::start(bus.clone(), 16);
    publisher.publish(batch(1..=60));
    let mut next_id = 61;
    publish_until_one_gets_through(&publisher, &mut next_id).await;
    expect_hit(bus.recent(50).await.unwrap());

    let killed = group.kill_primary().await.unwrap();
    let promoted = group
        .wait_for_new_primary(killed, FAILOVER_LIMIT)
        .await
        .unwrap();
    publish_until_one_gets_through(&publisher, &mut next_id).await;
    assert_eq!(target.known_primary_addr(), Some(promoted.to_string()));

    // The subscription is made on the new primary and hears what is published now.
    let channel = test.names.channel.clone();
    let mut subscription = target.subscribe(&[channel.as_str()]).await.unwrap();
    let published_id = next_id;
    publisher.publish(batch(published_id..=published_id));
    let message = tokio::time::timeout(PATIENCE, subscription.on_message().next())
        .await
        .expect("the event is broadcast through the new primary")
        .unwrap();
    assert!(
        message
            .get_payload_bytes()
            .starts_with(format!("{{\"id\":{published_id},").as_bytes())
    );

    // Reads on the new primary miss (the switch raised a gap) although the list is long
    // enough, until a refill from the database repairs it.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let ticket = loop {
        match bus.recent(50).await {
            Ok(RecentRead::Miss(ticket)) => break ticket,
            Ok(RecentRead::Hit { .. }) => panic!("a hit on the new primary before any refill"),
            // The reader's connection may still go to the killed primary once.
            Err(error) => assert!(
                tokio::time::Instant::now() < give_up,
                "reads never reached the new primary: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let newest = published_id;
    bus.refill(ticket, &entries((newest - 59..=newest).rev()))
        .await
        .unwrap();
    let (page, _) = expect_hit(bus.recent(50).await.unwrap());
    assert_eq!(
        ids_of(&page),
        (newest - 49..=newest).rev().collect::<Vec<_>>()
    );
    assert!(publisher.stats().redis_errors() >= 1);
}
