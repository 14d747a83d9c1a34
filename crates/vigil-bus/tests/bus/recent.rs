//! Page 1 from the list: hits only when the list can answer truthfully; refills merge with
//! concurrent pushes.

use bytes::Bytes;
use vigil_bus::{RecentRead, RedisBus};

use crate::helpers::{TestNames, direct, entries, expect_hit, ids_of, list, redis_addr, redis_url};

async fn bus(test: &TestNames) -> RedisBus {
    RedisBus::connect(&redis_url(redis_addr()), test.names.clone())
        .await
        .unwrap()
}

async fn warm(bus: &RedisBus, ids: impl DoubleEndedIterator<Item = u64>) {
    let ticket = bus.refill_ticket().await.unwrap();
    bus.refill(ticket, &entries(ids.rev())).await.unwrap();
}

#[tokio::test]
async fn recent_hits_with_newest_first_when_the_list_holds_more_than_the_page() {
    let test = TestNames::new(60);
    let bus = bus(&test).await;
    warm(&bus, 1..=60).await;

    let (page, has_more) = expect_hit(bus.recent(50).await.unwrap());
    assert_eq!(page, entries((11..=60).rev()));
    assert!(has_more);

    let (page, has_more) = expect_hit(bus.recent(59).await.unwrap());
    assert_eq!(ids_of(&page), (2..=60).rev().collect::<Vec<_>>());
    assert!(has_more);

    // 60 entries cannot tell whether a 61st exists.
    assert!(matches!(bus.recent(60).await.unwrap(), RecentRead::Miss(_)));
}

#[tokio::test]
async fn recent_misses_on_a_short_empty_or_deleted_list() {
    let test = TestNames::new(60);
    let bus = bus(&test).await;
    assert!(matches!(bus.recent(20).await.unwrap(), RecentRead::Miss(_)));

    warm(&bus, 1..=20).await;
    assert!(matches!(bus.recent(20).await.unwrap(), RecentRead::Miss(_)));
    expect_hit(bus.recent(19).await.unwrap());

    let mut redis = direct().await;
    let _: () = redis::cmd("DEL")
        .arg(test.key())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(matches!(bus.recent(10).await.unwrap(), RecentRead::Miss(_)));
}

#[tokio::test]
async fn a_list_written_out_of_order_misses_until_a_refill_sorts_it() {
    let test = TestNames::new(60);
    let bus = bus(&test).await;
    let mut redis = direct().await;
    // Plain LPUSHes from two writers with their own id blocks, one id twice: the head of the
    // list (6, 42, 5, 4, 42, 41) says nothing truthful about the newest five.
    let pushed = entries([1, 2, 3, 40, 41, 42, 4, 5, 42, 6]);
    let _: () = redis::cmd("LPUSH")
        .arg(test.key())
        .arg(
            pushed
                .iter()
                .map(|entry| entry.as_ref())
                .collect::<Vec<&[u8]>>(),
        )
        .query_async(&mut redis)
        .await
        .unwrap();
    let RecentRead::Miss(ticket) = bus.recent(5).await.unwrap() else {
        panic!("expected a miss on a list out of order");
    };

    bus.refill(ticket, &[]).await.unwrap();
    assert_eq!(
        ids_of(&list(&mut redis, test.key()).await),
        [42, 41, 40, 6, 5, 4, 3, 2, 1]
    );
    let (page, has_more) = expect_hit(bus.recent(5).await.unwrap());
    assert_eq!(ids_of(&page), [42, 41, 40, 6, 5]);
    assert!(has_more);
}

#[tokio::test]
async fn an_unreadable_entry_makes_a_miss_and_refill_drops_it() {
    let test = TestNames::new(60);
    let bus = bus(&test).await;
    let mut redis = direct().await;
    let mut pushed = entries(1..=10);
    pushed.insert(5, Bytes::from_static(b"not an event"));
    let _: () = redis::cmd("RPUSH")
        .arg(test.key())
        .arg(
            pushed
                .iter()
                .map(|entry| entry.as_ref())
                .collect::<Vec<&[u8]>>(),
        )
        .query_async(&mut redis)
        .await
        .unwrap();
    let RecentRead::Miss(ticket) = bus.recent(8).await.unwrap() else {
        panic!("expected a miss");
    };

    bus.refill(ticket, &[]).await.unwrap();
    assert_eq!(list(&mut redis, test.key()).await, entries((1..=10).rev()));
    expect_hit(bus.recent(8).await.unwrap());
}

#[tokio::test]
async fn refill_merges_with_newer_pushes_sorted_deduped_and_trimmed() {
    let test = TestNames::new(60);
    let bus = bus(&test).await;
    let mut redis = direct().await;
    let RecentRead::Miss(ticket) = bus.recent(20).await.unwrap() else {
        panic!("expected a miss on an empty list");
    };

    // While the caller reads the database, the publisher pushes newer events.
    let newer = entries(101..=130);
    let _: () = redis::cmd("LPUSH")
        .arg(test.key())
        .arg(
            newer
                .iter()
                .map(|entry| entry.as_ref())
                .collect::<Vec<&[u8]>>(),
        )
        .query_async(&mut redis)
        .await
        .unwrap();
    // The database read, newest first, overlapping the pushes (101..=105).
    bus.refill(ticket, &entries((1..=105).rev())).await.unwrap();

    let held = list(&mut redis, test.key()).await;
    assert_eq!(
        held,
        entries((71..=130).rev()),
        "60 newest, each once, id descending"
    );
    let (page, _) = expect_hit(bus.recent(50).await.unwrap());
    assert_eq!(page, entries((81..=130).rev()));
}

#[tokio::test]
async fn refill_of_nothing_is_fine() {
    let test = TestNames::new(60);
    let bus = bus(&test).await;
    let ticket = bus.refill_ticket().await.unwrap();
    bus.refill(ticket, &[]).await.unwrap();
    let mut redis = direct().await;
    assert!(list(&mut redis, test.key()).await.is_empty());
    assert!(matches!(bus.recent(1).await.unwrap(), RecentRead::Miss(_)));
}

#[tokio::test]
async fn a_gap_raised_after_the_ticket_stays_open_until_a_later_refill() {
    let test = TestNames::new(60);
    let bus = bus(&test).await;
    let mut redis = direct().await;
    warm(&bus, 1..=60).await;
    expect_hit(bus.recent(50).await.unwrap());

    // A publisher somewhere dropped events and raised a gap (what the publisher does).
    let raise = || {
        redis::cmd("HINCRBY")
            .arg(test.names.gap_key())
            .arg("raised")
            .arg(1)
            .clone()
    };
    let _: i64 = raise().query_async(&mut redis).await.unwrap();
    let RecentRead::Miss(ticket) = bus.recent(50).await.unwrap() else {
        panic!("an open gap makes a miss");
    };
    // Another gap is raised while the caller reads the database: its refill repairs only the
    // first, so the list still misses.
    let _: i64 = raise().query_async(&mut redis).await.unwrap();
    bus.refill(ticket, &entries((1..=61).rev())).await.unwrap();
    let RecentRead::Miss(later_ticket) = bus.recent(50).await.unwrap() else {
        panic!("a gap raised after the ticket stays open");
    };

    bus.refill(later_ticket, &entries((1..=62).rev()))
        .await
        .unwrap();
    let (page, _) = expect_hit(bus.recent(50).await.unwrap());
    assert_eq!(page, entries((13..=62).rev()));
}
