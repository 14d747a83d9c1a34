//! Redis unreachable or hung, through the tests' fault proxy: publishing never blocks, drops are
//! counted and marked as a gap, reads fail fast (the caller reads the database), and everything
//! resumes by itself once Redis is back, with reads missing until a refill repairs the gap.

use std::time::Instant;

use vigil_bus::{BusError, Publisher, RecentRead, RedisBus};
use vigil_testkit::proxy::FaultProxy;

use crate::helpers::{
    TestNames, batch, direct, entries, eventually, expect_hit, ids_of,
    publish_until_one_gets_through, redis_addr, redis_url,
};

#[tokio::test]
async fn unreachable_redis_drops_and_marks_a_gap_then_publishing_resumes_and_reads_miss_until_refill()
 {
    let test = TestNames::new(60);
    let proxy = FaultProxy::start(redis_addr()).await.unwrap();
    let bus = RedisBus::connect(&redis_url(proxy.addr()), test.names.clone())
        .await
        .unwrap();
    let publisher = Publisher::start(bus.clone(), 16);
    let stats = publisher.stats();
    publisher.publish(batch(1..=60));
    eventually("the first batch is published", || async {
        stats.events_published() == 60
    })
    .await;
    expect_hit(bus.recent(50).await.unwrap());

    proxy.refuse_new(true);
    proxy.cut_all();

    let started = Instant::now();
    publisher.publish(batch(61..=70));
    eprintln!(
        "publish with redis unreachable returned after {:?}",
        started.elapsed()
    );
    eventually("the batch is dropped", || async {
        stats.batches_dropped() == 1
    })
    .await;
    assert_eq!(stats.events_dropped(), 10);
    assert!(stats.redis_errors() >= 1);
    assert_eq!(publisher.gap_epoch(), 1);

    let started = Instant::now();
    let read = bus.recent(50).await;
    eprintln!(
        "read with redis unreachable failed after {:?}",
        started.elapsed()
    );
    assert!(read.is_err(), "reads fail so the caller reads the database");

    proxy.heal();
    let mut next_id = 71;
    publish_until_one_gets_through(&publisher, &mut next_id).await;
    let last_id = next_id - 1;
    // Batches dropped while the connection came back belong to the same gap.
    assert_eq!(publisher.gap_epoch(), 1);

    // The gap mark is in Redis: every instance's reads miss although the list is long enough.
    let mut redis = direct().await;
    let raised: u64 = redis::cmd("HGET")
        .arg(test.names.gap_key())
        .arg("raised")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(raised, 1);
    let mut read = bus.recent(50).await;
    while read.is_err() {
        // The reader's own connection is still coming back.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        read = bus.recent(50).await;
    }
    let RecentRead::Miss(ticket) = read.unwrap() else {
        panic!("an open gap makes reads miss");
    };

    // The caller reads the database (which holds every committed event) and refills.
    bus.refill(ticket, &entries((1..=last_id).rev()))
        .await
        .unwrap();
    let (page, has_more) = expect_hit(bus.recent(50).await.unwrap());
    assert_eq!(page, entries((last_id - 49..=last_id).rev()));
    assert!(has_more);
    assert!(ids_of(&page).contains(&70), "the dropped events are back");
}

#[tokio::test]
async fn hung_redis_fails_reads_and_publishes_and_both_recover_after_heal() {
    let test = TestNames::new(60);
    let proxy = FaultProxy::start(redis_addr()).await.unwrap();
    let bus = RedisBus::connect(&redis_url(proxy.addr()), test.names.clone())
        .await
        .unwrap();
    let publisher = Publisher::start(bus.clone(), 16);
    let stats = publisher.stats();
    publisher.publish(batch(1..=60));
    eventually("the first batch is published", || async {
        stats.events_published() == 60
    })
    .await;

    proxy.blackhole(true);
    let read = bus.recent(50).await;
    assert!(
        matches!(read, Err(BusError::Timeout(_)) | Err(BusError::Redis(_))),
        "a hung redis fails the read: {read:?}"
    );
    publisher.publish(batch(61..=61));
    eventually("the batch is dropped", || async {
        stats.batches_dropped() == 1
    })
    .await;
    assert_eq!(publisher.gap_epoch(), 1);

    proxy.heal();
    let mut next_id = 62;
    publish_until_one_gets_through(&publisher, &mut next_id).await;
    eventually("reads answer again", || async {
        bus.recent(50).await.is_ok()
    })
    .await;
    assert!(matches!(bus.recent(50).await.unwrap(), RecentRead::Miss(_)));
}

#[tokio::test]
async fn lazy_bus_starts_while_redis_is_down_and_works_once_it_is_back() {
    let test = TestNames::new(60);
    let proxy = FaultProxy::start(redis_addr()).await.unwrap();
    proxy.refuse_new(true);
    let url = redis_url(proxy.addr());
    assert!(RedisBus::connect(&url, test.names.clone()).await.is_err());

    let bus = RedisBus::connect_lazy(&url, test.names.clone()).unwrap();
    assert!(bus.recent(20).await.is_err());
    assert!(bus.ping().await.is_err());

    proxy.heal();
    eventually("redis answers", || async { bus.ping().await.is_ok() }).await;
    assert!(matches!(bus.recent(20).await.unwrap(), RecentRead::Miss(_)));
}
