//! Tokens: `VIGIL_INGEST_TOKENS` guards posting, `VIGIL_READ_TOKENS` reading and `/ws`, in
//! each mode; a browser's WebSocket passes its token as a subprotocol; the open routes stay
//! open; tokens never reach the logs, metrics or error bodies; a bad token list exits 2.

use http::Method;

use crate::helpers::{Mode, TestApp, TestResponse, event_json, in_each_mode};
use crate::lifecycle::{start_logged, stop_gracefully, vigil};
use crate::ws::{KEY, WsClient, id_of, upgrade_attempt};

pub const INGEST_TOKEN: &str = "ingest-token-0123456789abcdef";
const OTHER_INGEST_TOKEN: &str = "second.ingest_token~0123456789";
pub const READ_TOKEN: &str = "read-token-0123456789abcdef";

/// The settings of a server with both token lists.
pub fn token_args() -> Vec<String> {
    vec![
        "--ingest-tokens".into(),
        format!("{INGEST_TOKEN},{OTHER_INGEST_TOKEN}"),
        "--read-tokens".into(),
        READ_TOKEN.into(),
    ]
}

async fn spawn_with_tokens(mode: Mode) -> TestApp {
    let args = token_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestApp::spawn_in(mode, &args).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub async fn post_as(app: &TestApp, path: &str, token: Option<&str>, body: String) -> TestResponse {
    let authorization = token.map(bearer);
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization));
    }
    app.send_with(Method::POST, path, &headers, body).await
}

async fn get_as(app: &TestApp, path: &str, token: Option<&str>) -> TestResponse {
    let authorization = token.map(bearer);
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    app.send_with(Method::GET, path, &headers, "").await
}

/// Checks a refusal: its code, and that no token leaks into it.
fn assert_refused(response: &TestResponse, status: u16, code: &str) {
    response.assert_error(status, code);
    let body = String::from_utf8_lossy(&response.body);
    for token in [INGEST_TOKEN, OTHER_INGEST_TOKEN, READ_TOKEN, "wrong-token"] {
        assert!(!body.contains(token), "{body}");
    }
    if status == 401 {
        let challenge = response.header("www-authenticate").expect("a challenge");
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
}

async fn posting_needs_an_ingest_token(mode: Mode) {
    let app = spawn_with_tokens(mode).await;
    let missing = post_as(&app, "/api/events", None, event_json("no-token")).await;
    assert_refused(&missing, 401, "unauthorized");
    let wrong = post_as(&app, "/api/events", Some(READ_TOKEN), event_json("read")).await;
    assert_refused(&wrong, 403, "forbidden");
    let garbage = post_as(&app, "/api/events", Some("wrong-token"), event_json("x")).await;
    assert_refused(&garbage, 403, "forbidden");
    assert!(app.rows().await.is_empty(), "nothing refused was stored");
    let metrics = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains(r#"vigil_ingest_rejected_total{reason="unauthorized"} 1"#),
        "refusals are counted by reason"
    );
    assert!(!metrics.contains(READ_TOKEN));

    let first = post_as(&app, "/api/events", Some(INGEST_TOKEN), event_json("a")).await;
    assert_eq!(first.status, 201);
    let second = post_as(
        &app,
        "/api/events",
        Some(OTHER_INGEST_TOKEN),
        event_json("b"),
    )
    .await;
    assert_eq!(second.status, 201);
    // The last resort: the query string.
    let by_query = post_as(
        &app,
        &format!("/api/events?token={INGEST_TOKEN}"),
        None,
        event_json("c"),
    )
    .await;
    assert_eq!(by_query.status, 201);
    let sources: Vec<String> = app.rows().await.into_iter().map(|row| row.source).collect();
    assert_eq!(sources, ["a", "b", "c"]);
    app.stop().await.drop_database().await;
}

async fn reading_needs_a_read_token(mode: Mode) {
    let app = spawn_with_tokens(mode).await;
    let posted = post_as(&app, "/api/events", Some(INGEST_TOKEN), event_json("r")).await;
    let id = posted.json()["id"].as_u64().unwrap();
    let one = format!("/api/events/{id}");

    for path in ["/api/events", "/api/events?size=5&type=GAS", one.as_str()] {
        assert_refused(&get_as(&app, path, None).await, 401, "unauthorized");
        let ingest_only = get_as(&app, path, Some(INGEST_TOKEN)).await;
        assert_refused(&ingest_only, 403, "forbidden");
        assert_eq!(get_as(&app, path, Some(READ_TOKEN)).await.status, 200);
    }
    let page = get_as(&app, "/api/events", Some(READ_TOKEN)).await;
    assert_eq!(page.json()["items"][0]["id"], id);
    let by_query = get_as(&app, &format!("/api/events?token={READ_TOKEN}"), None).await;
    assert_eq!(by_query.status, 200);
    let head = app.send_with(Method::HEAD, "/api/events", &[], "").await;
    assert_eq!(head.status, 401);

    // Liveness, readiness, metrics and the API description stay open.
    for path in ["/api/health", "/api/ready", "/metrics", "/api/openapi.json"] {
        assert_eq!(get_as(&app, path, None).await.status, 200, "{path}");
    }
    let metrics = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
    for token in [INGEST_TOKEN, READ_TOKEN] {
        assert!(!metrics.contains(token));
    }
    app.stop().await.drop_database().await;
}

async fn websockets_need_a_read_token_and_browsers_pass_it_as_a_subprotocol(mode: Mode) {
    let app = spawn_with_tokens(mode).await;
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", KEY),
    ];
    assert_refused(
        &upgrade_attempt(&app, "/ws", &upgrade).await,
        401,
        "unauthorized",
    );
    let mut wrong = upgrade.to_vec();
    let offer = format!("vigil.v1, vigil.bearer.{INGEST_TOKEN}");
    wrong.push(("sec-websocket-protocol", &offer));
    assert_refused(
        &upgrade_attempt(&app, "/ws", &wrong).await,
        403,
        "forbidden",
    );
    assert_eq!(app.hub.client_count(), 0);

    // What `new WebSocket(url, ["vigil.v1", "vigil.bearer." + token])` sends.
    let offer = format!("vigil.v1, vigil.bearer.{READ_TOKEN}");
    let mut browser = WsClient::connect_with(
        app.addr,
        "/ws",
        &[
            ("sec-websocket-protocol", &offer),
            ("origin", "https://dashboard.example.com"),
        ],
    )
    .await;
    assert_eq!(
        browser
            .response_headers
            .get("sec-websocket-protocol")
            .unwrap(),
        "vigil.v1",
        "the server picks vigil.v1 and never echoes the token"
    );
    let authorization = bearer(READ_TOKEN);
    let mut by_header =
        WsClient::connect_with(app.addr, "/ws", &[("authorization", &authorization)]).await;
    assert!(
        !by_header
            .response_headers
            .contains_key("sec-websocket-protocol")
    );
    let mut by_query =
        WsClient::connect(app.addr, &format!("/ws?type=GAS&token={READ_TOKEN}")).await;

    let posted = post_as(&app, "/api/events", Some(INGEST_TOKEN), event_json("live")).await;
    let id = posted.json()["id"].as_u64().unwrap();
    for client in [&mut browser, &mut by_header, &mut by_query] {
        assert_eq!(id_of(&client.next_text().await), id);
    }
    app.stop().await.drop_database().await;
}

in_each_mode!(
    posting_needs_an_ingest_token,
    reading_needs_a_read_token,
    websockets_need_a_read_token_and_browsers_pass_it_as_a_subprotocol,
);

/// Without token lists every route is open (the start-up log warns).
#[tokio::test]
async fn without_tokens_everything_is_open() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    assert_eq!(app.post_json(event_json("open")).await.status, 201);
    assert_eq!(app.get("/api/events").await.status, 200);
    let _client = WsClient::connect(app.addr, "/ws").await;
    app.stop().await.drop_database().await;
}

/// The binary with tokens: its whole log, through refusals, `?token=` and a graceful stop,
/// never holds a token, and it warns when a list is unset.
#[tokio::test]
async fn tokens_never_reach_the_log() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = vigil();
    command
        .env("VIGIL_DATA_DIR", data_dir.path())
        .env("RUST_LOG", "debug")
        .env("VIGIL_INGEST_TOKENS", INGEST_TOKEN);
    let (child, addr, log) = start_logged(command).await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    for (path, authorization) in [
        (format!("/api/events?token={INGEST_TOKEN}"), None),
        ("/api/events".to_owned(), Some(bearer(INGEST_TOKEN))),
        (
            "/api/events".to_owned(),
            Some(bearer("wrong-token-0123456789")),
        ),
        ("/api/events?token=wrong-token-0123456789".to_owned(), None),
    ] {
        let mut request = http::Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/json");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = client
            .request(
                request
                    .body(http_body_util::Full::new(bytes::Bytes::from(event_json(
                        "log",
                    ))))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!([201, 403].contains(&response.status().as_u16()));
    }
    stop_gracefully(child).await;
    let log = log.lock().unwrap().clone();
    assert!(log.contains("VIGIL_READ_TOKENS is not set"), "{log}");
    assert!(log.contains("ingest_tokens=<1 token>"), "{log}");
    assert!(!log.contains(INGEST_TOKEN), "{log}");
    assert!(!log.contains("wrong-token"), "{log}");
}

#[tokio::test]
async fn a_bad_token_list_exits_2_without_echoing_it() {
    let output = vigil()
        .env("DATABASE_URL", "mysql://root@127.0.0.1:3306/test")
        .env(
            "VIGIL_READ_TOKENS",
            "good-token-0123456789,bad/token/0123456789",
        )
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("VIGIL_READ_TOKENS"), "{stderr}");
    assert!(stderr.contains("token #2"), "{stderr}");
    assert!(!stderr.contains("0123456789"), "{stderr}");
}
