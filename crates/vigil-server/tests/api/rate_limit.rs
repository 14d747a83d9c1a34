//! Rate limits: per-token and per-address ingest buckets (429 `rate_limited` with
//! `Retry-After`), WebSocket clients per address, and `X-Forwarded-For` believed only from
//! `VIGIL_TRUSTED_PROXIES`.

use http::Method;

use crate::auth::{INGEST_TOKEN, post_as};
use crate::helpers::{Mode, TestApp, TestResponse, event_json, in_each_mode};
use crate::ws::{KEY, WsClient, upgrade_attempt};

const OTHER_TOKEN: &str = "other-ingest-token-0123456789";

fn assert_rate_limited(response: &TestResponse) {
    response.assert_error(429, "rate_limited");
    let wait: u64 = response
        .header("retry-after")
        .expect("429 says when to retry")
        .parse()
        .unwrap();
    assert!(wait >= 1);
}

async fn post_from(app: &TestApp, forwarded_for: &str) -> TestResponse {
    app.send_with(
        Method::POST,
        "/api/events",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", forwarded_for),
        ],
        event_json("forwarded"),
    )
    .await
}

/// Each token has its own bucket; a refused request stores nothing.
async fn each_token_is_limited_on_its_own(mode: Mode) {
    let tokens = format!("{INGEST_TOKEN},{OTHER_TOKEN}");
    let app = TestApp::spawn_in(
        mode,
        &[
            "--ingest-tokens",
            &tokens,
            // One an hour after a burst of 2: the test never sees a refill.
            "--ingest-rate-per-token",
            "0.0003",
            "--ingest-rate-burst",
            "2",
        ],
    )
    .await;
    for _ in 0..2 {
        let posted = post_as(&app, "/api/events", Some(INGEST_TOKEN), event_json("a")).await;
        assert_eq!(posted.status, 201);
    }
    let limited = post_as(&app, "/api/events", Some(INGEST_TOKEN), event_json("a")).await;
    assert_rate_limited(&limited);
    let other = post_as(&app, "/api/events", Some(OTHER_TOKEN), event_json("b")).await;
    assert_eq!(other.status, 201, "another token has its own bucket");
    // Refused without a token: 401 before any bucket is touched.
    let anonymous = post_as(&app, "/api/events", None, event_json("c")).await;
    anonymous.assert_error(401, "unauthorized");
    assert_eq!(app.rows().await.len(), 3);
    app.stop().await.drop_database().await;
}

in_each_mode!(each_token_is_limited_on_its_own);

#[tokio::test]
async fn addresses_are_limited_and_forwarded_for_counts_only_from_trusted_proxies() {
    // Untrusted peer: X-Forwarded-For is ignored, every request is 127.0.0.1's.
    let app = TestApp::spawn_in(
        Mode::Embedded,
        &[
            "--ingest-rate-per-addr",
            "0.0003",
            "--ingest-rate-burst",
            "1",
        ],
    )
    .await;
    assert_eq!(post_from(&app, "203.0.113.1").await.status, 201);
    assert_rate_limited(&post_from(&app, "203.0.113.2").await);
    app.stop().await.drop_database().await;

    // Behind a trusted proxy (the test client, on loopback): the forwarded client counts.
    let app = TestApp::spawn_in(
        Mode::Embedded,
        &[
            "--ingest-rate-per-addr",
            "0.0003",
            "--ingest-rate-burst",
            "1",
            "--trusted-proxies",
            "127.0.0.0/8,10.0.0.0/8",
        ],
    )
    .await;
    assert_eq!(post_from(&app, "203.0.113.1").await.status, 201);
    assert_eq!(post_from(&app, "203.0.113.2").await.status, 201);
    // The client is the rightmost hop that is not a trusted proxy; what it claimed is ignored.
    assert_rate_limited(&post_from(&app, "198.51.100.9, 203.0.113.1, 10.1.2.3").await);
    let listed = app.get("/api/events").await;
    assert_eq!(listed.status, 200, "reads are not limited");
    assert_eq!(app.rows().await.len(), 2);
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn websocket_clients_are_limited_per_address() {
    let app = TestApp::spawn_in(Mode::Embedded, &["--ws-max-clients-per-addr", "2"]).await;
    let first = WsClient::connect(app.addr, "/ws").await;
    let _second = WsClient::connect(app.addr, "/ws").await;
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", KEY),
    ];
    assert_rate_limited(&upgrade_attempt(&app, "/ws", &upgrade).await);
    assert_eq!(app.hub.client_count(), 2);

    // A closed socket gives its place back.
    drop(first);
    crate::ws::eventually("the first client is gone", {
        let hub = app.hub.clone();
        move || hub.client_count() == 1
    })
    .await;
    let mut again = None;
    for _ in 0..100 {
        let attempt = upgrade_attempt(&app, "/ws?type=NOTHING", &upgrade).await;
        if attempt.status == 429 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        again = Some(attempt);
        break;
    }
    assert_eq!(again.expect("a place frees up").status, 101);
    app.stop().await.drop_database().await;
}
