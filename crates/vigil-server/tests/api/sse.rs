//! `GET /api/events/stream`: Server-Sent Events read by a real HTTP client (hyper's, over a
//! TCP stream), in each mode; resume across instances with MySQL and Redis.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{ExtraInstance, Mode, TestApp, TestResponse, event_json, in_each_mode};
use crate::ws::{FRAME_WAIT, event, eventually, id_of, post_one, upgrade_attempt};
use crate::ws_resume::keep_posting;

/// One message of the stream, as the SSE specification splits them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub comment: Option<String>,
    pub retry: Option<u64>,
}

/// A stream being read.
pub struct SseClient {
    body: Incoming,
    buffer: Vec<u8>,
    pub headers: HeaderMap,
}

impl SseClient {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::over(stream, addr, path, headers).await
    }

    /// A client whose socket buffers almost nothing, so that one that stops reading pushes
    /// back on the server quickly.
    async fn open_with_small_buffer(addr: SocketAddr, path: &str) -> SseClient {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        Self::over(stream, addr, path, &[]).await
    }

    async fn over(
        stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> SseClient {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::get(format!("http://{addr}{path}"))
            .header("host", addr.to_string())
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let (parts, body) = response.into_parts();
        SseClient {
            body,
            buffer: Vec::new(),
            headers: parts.headers,
        }
    }

    /// The next message; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Message> {
        tokio::time::timeout(FRAME_WAIT, self.next_unbounded())
            .await
            .expect("a message arrives in time")
    }

    async fn next_unbounded(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Some(parse(std::str::from_utf8(&block[..end]).unwrap()));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => {
                    assert!(self.buffer.is_empty(), "the stream ended inside a message");
                    return None;
                }
            }
        }
    }

    /// The next event message (skipping comments and `retry:`).
    pub async fn next_event(&mut self) -> Message {
        loop {
            let message = self.next().await.expect("the stream goes on");
            if message.data.is_some() {
                return message;
            }
        }
    }

    /// The next event's id; panics on a named (non-event) message.
    pub async fn next_id(&mut self) -> u64 {
        let message = self.next_event().await;
        assert_eq!(message.event, None, "{message:?}");
        let id = message.id.expect("an event message has an id");
        assert_eq!(id_of(message.data.as_deref().unwrap()), id);
        id
    }

    /// A resume's replay: the replayed ids, then the `resume` message's fields.
    async fn read_replay(&mut self) -> (Vec<u64>, (u64, u64, bool)) {
        let mut replayed = Vec::new();
        loop {
            let message = self.next_event().await;
            if message.event.as_deref() == Some("resume") {
                let json: serde_json::Value =
                    serde_json::from_str(message.data.as_deref().unwrap()).unwrap();
                assert_eq!(message.id, None);
                return (
                    replayed,
                    (
                        json["since"].as_u64().unwrap(),
                        json["replayed"].as_u64().unwrap(),
                        json["complete"].as_bool().unwrap(),
                    ),
                );
            }
            replayed.push(message.id.unwrap());
        }
    }
}

fn parse(block: &str) -> Message {
    let mut message = Message::default();
    for line in block.split('\n') {
        if let Some(comment) = line.strip_prefix(':') {
            message.comment = Some(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => message.id = Some(value.parse().unwrap()),
            "event" => message.event = Some(value.to_owned()),
            "data" => {
                assert!(message.data.is_none(), "one data line per message: {block}");
                message.data = Some(value.to_owned());
            }
            "retry" => message.retry = Some(value.parse().unwrap()),
            other => panic!("unknown field {other:?} in {block:?}"),
        }
    }
    message
}

/// A request to the stream route that is expected to be refused (its body is read whole).
async fn refused(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    upgrade_attempt(app, path, headers).await
}

/// The stream's named message (`resume`, `close`) as JSON.
fn named(message: &Message, name: &str) -> serde_json::Value {
    assert_eq!(message.event.as_deref(), Some(name), "{message:?}");
    serde_json::from_str(message.data.as_deref().unwrap()).unwrap()
}

async fn live_events_arrive_as_their_stored_json(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let mut client = SseClient::open(app.addr, "/api/events/stream", &[]).await;
    assert_eq!(
        client
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    assert_eq!(
        client
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    assert!(client.headers.contains_key("x-request-id"));
    let first = client.next().await.unwrap();
    assert_eq!(first.retry, Some(1000));
    eventually("the stream client is in the hub", || {
        app.hub.sse_client_count() == 1
    })
    .await;

    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(post_one(&app, event_json(&format!("sse-live-{n}"))).await);
    }
    for &id in &ids {
        let message = client.next_event().await;
        assert_eq!(message.id, Some(id));
        let stored = app.get(&format!("/api/events/{id}")).await;
        assert_eq!(message.data.unwrap().as_bytes(), &stored.body[..]);
    }
    let metrics = String::from_utf8(app.get("/metrics").await.body.to_vec()).unwrap();
    assert!(metrics.contains("vigil_sse_clients 1"), "{metrics}");
    assert!(metrics.contains("vigil_ws_clients 0"), "{metrics}");
    drop(client);
    eventually("the client that left is gone from the hub", || {
        app.hub.client_count() == 0
    })
    .await;
    app.stop().await;
}

async fn filters_pick_events_and_bad_requests_get_json_errors(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let mut gas = SseClient::open(
        app.addr,
        "/api/events/stream?type=GAS&level=CRITICAL,ERROR",
        &[],
    )
    .await;
    let mut all = SseClient::open(app.addr, "/api/events/stream", &[]).await;
    eventually("both clients are in the hub", || {
        app.hub.client_count() == 2
    })
    .await;
    let posted = [
        post_one(&app, event("f", "GAS", "WARN")).await,
        post_one(&app, event("f", "SMOKE", "CRITICAL")).await,
        post_one(&app, event("f", "GAS", "CRITICAL")).await,
        post_one(&app, event("f", "GAS", "ERROR")).await,
    ];
    for &id in &posted {
        assert_eq!(all.next_id().await, id);
    }
    assert_eq!(gas.next_id().await, posted[2]);
    assert_eq!(gas.next_id().await, posted[3]);

    for (path, headers, status, code) in [
        (
            "/api/events/stream?level=LOUD",
            vec![],
            400,
            "invalid_query",
        ),
        ("/api/events/stream?since=abc", vec![], 400, "invalid_query"),
        (
            "/api/events/stream",
            vec![("last-event-id", "12x")],
            400,
            "validation_failed",
        ),
        (
            "/api/events/stream",
            vec![("last-event-id", "9007199254740992")],
            400,
            "validation_failed",
        ),
    ] {
        refused(&app, path, &headers)
            .await
            .assert_error(status, code);
    }
    let post = app
        .send(
            http::Method::POST,
            "/api/events/stream",
            Some("application/json"),
            "{}",
        )
        .await;
    post.assert_error(405, "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET"));
    assert_eq!(app.hub.client_count(), 2);
    app.stop().await;
}

async fn last_event_id_and_since_resume_without_gap_or_duplicate(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(post_one(&app, event_json(&format!("sse-before-{n}"))).await);
    }
    let since = ids[2].to_string();
    // The header wins over the query (it is what a reconnecting EventSource sends).
    let mut client = SseClient::open(
        app.addr,
        &format!("/api/events/stream?since={}", ids[0]),
        &[("last-event-id", &since)],
    )
    .await;
    let (replayed, control) = client.read_replay().await;
    assert_eq!(replayed, ids[3..]);
    assert_eq!(control, (ids[2], 3, true));
    let live = post_one(&app, event_json("sse-after")).await;
    assert_eq!(client.next_id().await, live);

    let mut by_query =
        SseClient::open(app.addr, &format!("/api/events/stream?since={live}"), &[]).await;
    assert_eq!(by_query.read_replay().await, (vec![], (live, 0, true)));
    assert_eq!(app.hub.stats().resumes(), 2);
    app.stop().await;
}

async fn a_quiet_stream_gets_keep_alive_comments(mode: Mode) {
    let app = TestApp::spawn_in(mode, &["--ws-ping-interval-s", "1"]).await;
    let mut client = SseClient::open(app.addr, "/api/events/stream", &[]).await;
    assert_eq!(client.next().await.unwrap().retry, Some(1000));
    let keep_alive = client.next().await.unwrap();
    assert_eq!(keep_alive.comment.as_deref(), Some("keep-alive"));
    assert_eq!(keep_alive.data, None);
    app.stop().await;
}

async fn a_slow_consumer_is_closed_while_a_fast_one_gets_everything(mode: Mode) {
    let app = TestApp::spawn_in(mode, &["--ws-client-queue", "64"]).await;
    let mut slow = SseClient::open_with_small_buffer(app.addr, "/api/events/stream").await;
    let mut fast = SseClient::open(app.addr, "/api/events/stream", &[]).await;
    eventually("both clients are in the hub", || {
        app.hub.client_count() == 2
    })
    .await;

    let blob = "x".repeat(15_000);
    let one =
        format!(r#"{{"source":"bulk","type":"GAS","level":"WARN","payload":{{"blob":"{blob}"}}}}"#);
    let bulk = format!("[{}]", vec![one; 50].join(","));
    let mut posted = Vec::new();
    for _round in 0..100 {
        let response = app.post_json(bulk.clone()).await;
        assert_eq!(response.status, 201);
        let ids = response.ids();
        for &id in &ids {
            assert_eq!(fast.next_id().await, id);
        }
        posted.extend(ids);
        if app.hub.stats().slow_consumers() > 0 {
            break;
        }
    }
    assert_eq!(
        app.hub.stats().slow_consumers(),
        1,
        "the slow client was never dropped"
    );
    assert_eq!(app.hub.client_count(), 1);

    // The slow client gets what was already on its way, in order, then the policy's close.
    let mut received = Vec::new();
    let close = loop {
        let message = slow.next_event().await;
        if message.event.is_some() {
            break message;
        }
        received.push(message.id.unwrap());
    };
    assert_eq!(named(&close, "close")["reason"], "slow consumer");
    assert!(slow.next().await.is_none(), "the stream ends after close");
    assert!(received.len() < posted.len());
    assert_eq!(received[..], posted[..received.len()]);

    let id = post_one(&app, event_json("after")).await;
    assert_eq!(fast.next_id().await, id);
    app.stop().await;
}

async fn shutdown_sends_what_was_queued_then_close_and_ends_the_stream(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let mut client = SseClient::open(app.addr, "/api/events/stream", &[]).await;
    eventually("the client is in the hub", || app.hub.client_count() == 1).await;
    let id = post_one(&app, event_json("before-shutdown")).await;
    assert_eq!(client.next_id().await, id);
    let reading = tokio::spawn(async move {
        let close = client.next_event().await;
        (close, client.next().await)
    });
    let started = std::time::Instant::now();
    app.stop().await;
    // The drain does not wait for the stream to end by itself (the deadline is 30 s).
    assert!(started.elapsed() < Duration::from_secs(20));
    let (close, after) = reading.await.unwrap();
    assert_eq!(named(&close, "close")["reason"], "server shutting down");
    assert_eq!(after, None);
}

#[tokio::test]
async fn tokens_origins_and_the_per_address_limit_are_those_of_ws() {
    let app = TestApp::spawn_with(&[
        "--read-tokens",
        "reader-secret-0123456789",
        "--cors-origins",
        "https://console.example",
        "--ws-max-clients-per-addr",
        "2",
    ])
    .await;
    refused(&app, "/api/events/stream", &[])
        .await
        .assert_error(401, "unauthorized");
    refused(&app, "/api/events/stream?token=wrong", &[])
        .await
        .assert_error(403, "forbidden");
    let by_header = SseClient::open(
        app.addr,
        "/api/events/stream",
        &[
            ("authorization", "Bearer reader-secret-0123456789"),
            ("origin", "https://console.example"),
        ],
    )
    .await;
    assert_eq!(
        by_header
            .headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://console.example")
    );
    // EventSource cannot set headers: the query carries the token.
    let _by_query = SseClient::open(
        app.addr,
        "/api/events/stream?token=reader-secret-0123456789",
        &[],
    )
    .await;
    let third = refused(
        &app,
        "/api/events/stream?token=reader-secret-0123456789",
        &[],
    )
    .await;
    third.assert_error(429, "rate_limited");
    assert!(third.header("retry-after").is_some());
    app.stop().await;
}

#[tokio::test]
async fn resume_on_another_instance_while_both_take_events_has_no_gap_and_no_duplicate() {
    let app = TestApp::spawn_with_redis(&[]).await;
    let other = ExtraInstance::start_with(app.database.url(), &app.redis_args()).await;
    let mut first = SseClient::open(app.addr, "/api/events/stream", &[]).await;
    eventually("the client is in the hub", || app.hub.client_count() == 1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let producers = [
        keep_posting(&app, app.addr, "first", Arc::clone(&stop)),
        keep_posting(&app, other.addr, "second", Arc::clone(&stop)),
    ];
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.push(first.next_id().await);
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // What a browser's EventSource does: reconnect with the last id it got.
    let since = seen.last().unwrap().to_string();
    let mut second = SseClient::open(
        other.addr,
        "/api/events/stream",
        &[("last-event-id", &since)],
    )
    .await;
    let (replayed, (control_since, count, complete)) = second.read_replay().await;
    assert_eq!(
        (control_since, count, complete),
        (*seen.last().unwrap(), replayed.len() as u64, true)
    );
    assert!(
        !replayed.is_empty(),
        "events arrived while the client was away"
    );
    seen.extend(&replayed);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = HashSet::new();
    for producer in producers {
        acked.extend(producer.await.unwrap());
    }
    let mut seen_set: HashSet<u64> = seen.iter().copied().collect();
    while !acked.is_subset(&seen_set) {
        let id = second.next_id().await;
        seen.push(id);
        seen_set.insert(id);
    }
    assert_eq!(seen.len(), seen_set.len(), "an event arrived twice");
    assert_eq!(seen_set, acked, "an event arrived that nobody posted");
    other.stop().await;
    app.stop().await;
}

in_each_mode!(
    all: live_events_arrive_as_their_stored_json,
    last_event_id_and_since_resume_without_gap_or_duplicate,
);

in_each_mode!(
    filters_pick_events_and_bad_requests_get_json_errors,
    a_quiet_stream_gets_keep_alive_comments,
    a_slow_consumer_is_closed_while_a_fast_one_gets_everything,
    shutdown_sends_what_was_queued_then_close_and_ends_the_stream,
);
