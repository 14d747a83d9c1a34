//! When the database fails in ways that leave a batch's outcome unknown: every post is
//! answered within `VIGIL_REQUEST_TIMEOUT_S`, new posts are refused at once (503) while the
//! batcher settles the outcome, a post whose batch was sent and not confirmed in time gets 504
//! `outcome_unknown`, and a retry with the same `Idempotency-Key` is then exact: the original
//! ids if the batch committed, stored once if it did not.
//!
//! Two kinds of fault:
//! - the database process itself killed under load (a private `mariadbd`, SIGKILL) and started
//!   again 45 s later: answers stay within the bound, posts are refused with 503 while it is
//!   gone, 201s return within seconds of it, and the table holds exactly what was
//!   acknowledged;
//! - the tests' TCP proxy in front of the machine's MariaDB losing the writer's `COMMIT`
//!   (dropped before the server sees it, or its reply cut after the server committed) while new
//!   connections are refused, so the outcome cannot be settled until the proxy heals.

use std::time::{Duration, Instant};

use http::Method;
use vigil_testkit::database::TestDatabase;
use vigil_testkit::mariadb::PrivateMariaDb;

use crate::helpers::{TestApp, TestResponse, all_rows, event_json, test_config};
use crate::producers::{Answer, Load, Producers, check_table, report_failover};

/// Short bounds, so the answer deadline comes within the test's patience.
const BOUNDS: &[&str] = &["--request-timeout-s", "3", "--statement-timeout-s", "1"];
/// How long the settled outcome may take to show once the proxy heals.
const SETTLE_BOUND: Duration = Duration::from_secs(30);

async fn post_keyed(app: &TestApp, key: &str, source: &str) -> TestResponse {
    app.send_with(
        Method::POST,
        "/api/events",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        event_json(source),
    )
    .await
}

/// The value of `vigil_batches_settled_late{outcome="…"}` in a scrape.
async fn settled_late(app: &TestApp, outcome: &str) -> u64 {
    let scrape = app.get("/metrics").await;
    let text = String::from_utf8_lossy(&scrape.body).into_owned();
    let prefix = format!("vigil_batches_settled_late_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap_or(0))
}

async fn wait_until_settled(app: &TestApp, outcome: &str) {
    let deadline = tokio::time::Instant::now() + SETTLE_BOUND;
    while settled_late(app, outcome).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch was not settled {outcome} within {SETTLE_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Loses the next `COMMIT` as `lose` says, with new connections refused so `resolve` cannot
/// settle it; posts a keyed event, which must get 504; checks that new posts and the keyed
/// retry are refused with 503 while the outcome is unknown and that `/api/ready` says so.
async fn post_into_an_unknown_outcome(
    app: &TestApp,
    proxy: &vigil_testkit::proxy::FaultProxy,
    key: &str,
    lose: impl FnOnce(&vigil_testkit::proxy::FaultProxy),
) {
    // The writer is open before connections are refused.
    assert_eq!(app.post_json(event_json("warm-up")).await.status, 201);
    proxy.refuse_new(true);
    lose(proxy);

    let unknown = post_keyed(app, key, "keyed").await;
    let body = unknown.assert_error(504, "outcome_unknown");
    assert!(unknown.header("retry-after").is_some(), "{body}");

    // The batch is still being settled: nothing new is taken, not even the retry.
    app.post_json(event_json("while-settling"))
        .await
        .assert_error(503, "store_unavailable");
    post_keyed(app, key, "keyed")
        .await
        .assert_error(503, "store_unavailable");
    let ready = app.get("/api/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["store"], "settling");
}

#[tokio::test]
async fn a_keyed_retry_after_an_unknown_outcome_that_committed_gets_the_original_ids() {
    let (app, proxy) = TestApp::spawn_behind_db_proxy(BOUNDS).await;
    post_into_an_unknown_outcome(&app, &proxy, "order-17", |proxy| {
        proxy.cut_reply_after(b"COMMIT")
    })
    .await;

    proxy.heal();
    wait_until_settled(&app, "committed").await;
    let retry = post_keyed(&app, "order-17", "keyed").await;
    assert_eq!(
        retry.status,
        201,
        "{}",
        String::from_utf8_lossy(&retry.body)
    );
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let id = retry.json()["id"].as_u64().expect("an id");

    let keyed_rows: Vec<_> = app
        .rows()
        .await
        .into_iter()
        .filter(|row| row.source == "keyed")
        .collect();
    assert_eq!(keyed_rows.len(), 1, "stored once");
    assert_eq!(keyed_rows[0].id, id, "under the id the retry was told");
    assert!(
        app.rows()
            .await
            .iter()
            .all(|row| row.source != "while-settling")
    );
    // Ingest goes on.
    assert_eq!(app.post_json(event_json("after")).await.status, 201);
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn a_keyed_retry_after_an_unknown_outcome_that_did_not_commit_stores_it_once() {
    let (app, proxy) = TestApp::spawn_behind_db_proxy(BOUNDS).await;
    post_into_an_unknown_outcome(&app, &proxy, "order-18", |proxy| {
        proxy.cut_instead_of(b"COMMIT")
    })
    .await;

    proxy.heal();
    wait_until_settled(&app, "not_committed").await;
    assert!(
        app.rows().await.iter().all(|row| row.source != "keyed"),
        "a lost COMMIT commits nothing"
    );
    let retry = post_keyed(&app, "order-18", "keyed").await;
    assert_eq!(
        retry.status,
        201,
        "{}",
        String::from_utf8_lossy(&retry.body)
    );
    assert_eq!(retry.header("idempotent-replayed"), None, "written now");
    let id = retry.json()["id"].as_u64().expect("an id");
    let again = post_keyed(&app, "order-18", "keyed").await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"].as_u64(), Some(id));

    let keyed_rows: Vec<_> = app
        .rows()
        .await
        .into_iter()
        .filter(|row| row.source == "keyed")
        .collect();
    assert_eq!(keyed_rows.len(), 1, "stored once");
    assert_eq!(keyed_rows[0].id, id);
    app.stop().await.drop_database().await;
}

/// The default answer bound (`VIGIL_REQUEST_TIMEOUT_S`), and what HTTP and a busy machine may
/// add to it on the client's side.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CLIENT_SLACK: Duration = Duration::from_secs(3);
/// Sixteen concurrent posters, as a site's gateways would be.
const GATEWAYS: Load = Load {
    single: 12,
    bulk: 4,
    bulk_events: 20,
    answer_bound: REQUEST_TIMEOUT.saturating_add(CLIENT_SLACK),
    backoff: Duration::from_millis(100),
};
/// How long the database stays dead.
const OUTAGE: Duration = Duration::from_secs(45);
/// How soon after the database accepts connections again posts must be acknowledged.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_killed_database_gets_503s_within_the_bound_and_201s_soon_after_it_returns() {
    let mut server = PrivateMariaDb::start(&[])
        .await
        .expect("a private mariadbd");
    let database = TestDatabase::create_on(&server.url()).await;
    let config = test_config(database.url(), &[]);
    let app = TestApp::spawn_on(database, config).await;
    let producers = Producers::start(&[app.addr], GATEWAYS);
    tokio::time::sleep(Duration::from_secs(2)).await;

    server.kill();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready = app.get("/api/ready").await;
    assert_eq!(ready.status, 503, "not ready while the database is dead");
    // Down, or settling the batch that was in flight at the kill: either way not taking posts.
    let store = ready.json()["store"].clone();
    assert!(store == "down" || store == "settling", "store {store}");
    let scrape = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
    assert!(
        scrape.lines().any(|line| line == "vigil_store_up 0"),
        "the metrics show the store down"
    );

    tokio::time::sleep(OUTAGE.saturating_sub(killed_at.elapsed())).await;
    server.restart().await.expect("the database starts again");
    let back_at = Instant::now();
    tokio::time::sleep(RECOVERY_BOUND * 2).await;
    let exchanges = producers.stop().await;

    let rows = all_rows(&app.db().await).await;
    let stored: Vec<(u64, String)> = rows.into_iter().map(|row| (row.id, row.source)).collect();
    let tally = check_table("database killed", &exchanges, &stored);

    // While it was gone (after the requests in flight at the kill were answered), every post
    // was refused, and promptly.
    let settled_by = killed_at + GATEWAYS.answer_bound;
    let during: Vec<_> = exchanges
        .iter()
        .filter(|exchange| exchange.sent_at > settled_by && exchange.answered_at < back_at)
        .collect();
    assert!(!during.is_empty(), "posts were made during the outage");
    assert!(
        during
            .iter()
            .all(|exchange| exchange.answer == Answer::Refused),
        "everything posted while the database was dead was refused with 503"
    );
    // Back: acknowledged again within seconds.
    let first_ack_after = exchanges
        .iter()
        .filter(|exchange| {
            exchange.sent_at > back_at && matches!(exchange.answer, Answer::Acked(_))
        })
        .map(|exchange| exchange.answered_at)
        .min()
        .expect("posts are acknowledged once the database is back");
    assert!(
        first_ack_after - back_at <= RECOVERY_BOUND,
        "the first 201 came {:?} after the database was back",
        first_ack_after - back_at
    );
    report_failover(
        "a private mariadbd SIGKILLed under 16 posters, restarted 45 s later (first 201: after it accepts connections again)",
        &tally,
        first_ack_after - back_at,
    );
    app.stop().await.drop_database().await;
}
