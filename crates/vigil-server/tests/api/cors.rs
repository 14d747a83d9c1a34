//! Browsers: CORS on the API (`VIGIL_CORS_ORIGINS`) and the Origin allow-list of `/ws`
//! (`VIGIL_WS_ORIGINS`, against cross-site WebSocket hijacking).

use http::Method;

use crate::auth::{INGEST_TOKEN, READ_TOKEN, post_as, token_args};
use crate::helpers::{Mode, TestApp, TestResponse, event_json};
use crate::ws::{KEY, WsClient, id_of, upgrade_attempt};

const APP: &str = "https://dashboard.example.com";
const EVIL: &str = "https://evil.example.net";

async fn preflight(app: &TestApp, path: &str, origin: &str) -> TestResponse {
    app.send_with(
        Method::OPTIONS,
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            ),
        ],
        "",
    )
    .await
}

fn has_no_cors_headers(response: &TestResponse) -> bool {
    response
        .headers
        .keys()
        .all(|name| !name.as_str().starts_with("access-control-"))
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_others_none() {
    let mut args = token_args();
    args.extend([
        "--cors-origins".into(),
        format!("{APP}, http://localhost:5173"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = TestApp::spawn_in(Mode::Embedded, &args).await;

    // The preflight needs no token (browsers send none) and names what may be sent.
    let answer = preflight(&app, "/api/events", APP).await;
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("access-control-allow-origin"), Some(APP));
    let methods = answer.header("access-control-allow-methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let allowed = answer
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for header in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    assert!(answer.header("access-control-max-age").is_some());
    assert!(answer.header("x-request-id").is_some());

    // A disallowed origin's preflight is an ordinary OPTIONS: no CORS headers.
    let refused = preflight(&app, "/api/events", EVIL).await;
    assert_eq!(refused.status, 405);
    assert!(has_no_cors_headers(&refused));

    // Actual requests: the allowed origin can read the answer and its headers.
    let authorization = format!("Bearer {INGEST_TOKEN}");
    let posted = app
        .send_with(
            Method::POST,
            "/api/events",
            &[
                ("origin", APP),
                ("authorization", &authorization),
                ("content-type", "application/json"),
            ],
            event_json("cors"),
        )
        .await;
    assert_eq!(posted.status, 201);
    assert_eq!(posted.header("access-control-allow-origin"), Some(APP));
    assert!(posted.header("vary").unwrap().contains("Origin"));
    let exposed = posted.header("access-control-expose-headers").unwrap();
    for header in [
        "X-Request-Id",
        "Retry-After",
        "X-Cache",
        "Idempotent-Replayed",
    ] {
        assert!(exposed.contains(header), "{exposed}");
    }
    // Errors carry them too, so a page can read why it was refused.
    let unauthorized = app
        .send_with(Method::GET, "/api/events", &[("origin", APP)], "")
        .await;
    unauthorized.assert_error(401, "unauthorized");
    assert_eq!(
        unauthorized.header("access-control-allow-origin"),
        Some(APP)
    );

    let read = format!("Bearer {READ_TOKEN}");
    let evil = app
        .send_with(
            Method::GET,
            "/api/events",
            &[("origin", EVIL), ("authorization", &read)],
            "",
        )
        .await;
    assert_eq!(
        evil.status, 200,
        "CORS is enforced by browsers, not by refusing"
    );
    assert!(has_no_cors_headers(&evil));
    assert!(evil.header("vary").unwrap().contains("Origin"));
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn without_cors_origins_no_origin_gets_cors_headers() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    let answer = preflight(&app, "/api/events", APP).await;
    assert_eq!(answer.status, 405);
    assert!(has_no_cors_headers(&answer));
    let listed = app
        .send_with(Method::GET, "/api/events", &[("origin", APP)], "")
        .await;
    assert_eq!(listed.status, 200);
    assert!(has_no_cors_headers(&listed));
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn a_wildcard_allows_every_origin() {
    let app = TestApp::spawn_in(Mode::Embedded, &["--cors-origins", "*"]).await;
    let answer = preflight(&app, "/api/events", EVIL).await;
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    let posted = post_as(&app, "/api/events", None, event_json("any")).await;
    assert_eq!(posted.status, 201);
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn websocket_upgrades_from_unlisted_origins_are_refused() {
    let app = TestApp::spawn_in(
        Mode::Embedded,
        &["--ws-origins", "https://dashboard.example.com"],
    )
    .await;
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", KEY),
        ("origin", EVIL),
    ];
    let refused = upgrade_attempt(&app, "/ws", &upgrade).await;
    refused.assert_error(403, "forbidden");
    assert_eq!(app.hub.client_count(), 0, "refused before the upgrade");

    let mut listed = WsClient::connect_with(app.addr, "/ws", &[("origin", APP)]).await;
    // Not a browser (no Origin): allowed.
    let mut tool = WsClient::connect(app.addr, "/ws").await;
    let posted = post_as(&app, "/api/events", None, event_json("ws-origin")).await;
    let id = posted.json()["id"].as_u64().unwrap();
    assert_eq!(id_of(&listed.next_text().await), id);
    assert_eq!(id_of(&tool.next_text().await), id);
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn without_ws_origins_any_origin_may_connect() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    let _client = WsClient::connect_with(app.addr, "/ws", &[("origin", EVIL)]).await;
    assert_eq!(app.hub.client_count(), 1);
    app.stop().await.drop_database().await;
}
