//! `/ws`: live events over a real WebSocket client (fastwebsockets' client handshake over a
//! TCP stream), in each mode: embedded (the in-process feed), MySQL without Redis (the same
//! feed) and MySQL with Redis (the channel); across instances with Redis only.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, handshake};
use http::header::{CONNECTION, UPGRADE};
use http::{Method, Request};
use http_body_util::{Empty, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{
    ExtraInstance, Mode, TestApp, TestResponse, event_json, in_each_mode, post_events_request,
};

/// How long a test waits for any one frame.
pub const FRAME_WAIT: Duration = Duration::from_secs(30);

/// What a client read.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Text(String),
    Close(u16, String),
}

pub struct WsClient {
    socket: WebSocket<TokioIo<Upgraded>>,
    /// The headers of the server's 101.
    pub response_headers: http::HeaderMap,
}

impl WsClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> WsClient {
        Self::connect_with(addr, path, &[]).await
    }

    /// A client whose upgrade request carries these extra headers (a token, an Origin,
    /// subprotocols).
    pub async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> WsClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::handshake(stream, addr, path, headers).await
    }

    /// A client whose socket buffers almost nothing, so that a client that stops reading
    /// pushes back on the server quickly.
    async fn connect_with_small_buffer(addr: SocketAddr, path: &str) -> WsClient {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        Self::handshake(stream, addr, path, &[]).await
    }

    async fn handshake(
        stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> WsClient {
        let mut request = Request::builder()
            .method("GET")
            .uri(format!("http://{addr}{path}"))
            .header("Host", addr.to_string())
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header("Sec-WebSocket-Key", handshake::generate_key())
            .header("Sec-WebSocket-Version", "13");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::<Bytes>::new()).unwrap();
        let (socket, response) = handshake::client(&TokioExecutor::new(), request, stream)
            .await
            .expect("the websocket handshake succeeds");
        assert_eq!(response.status(), 101);
        assert!(response.headers().contains_key("x-request-id"));
        WsClient {
            socket,
            response_headers: response.headers().clone(),
        }
    }

    /// The next text or close frame (pings are answered by the client on the way).
    pub async fn next(&mut self) -> Received {
        let frame = tokio::time::timeout(FRAME_WAIT, async {
            loop {
                let frame = self.socket.read_frame().await.expect("read a frame");
                match frame.opcode {
                    OpCode::Text => {
                        break Received::Text(String::from_utf8(frame.payload.to_vec()).unwrap());
                    }
                    OpCode::Close => {
                        let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                        let reason = String::from_utf8(frame.payload[2..].to_vec()).unwrap();
                        break Received::Close(code, reason);
                    }
                    _ => continue,
                }
            }
        })
        .await;
        frame.expect("a frame arrives in time")
    }

    pub async fn next_text(&mut self) -> String {
        match self.next().await {
            Received::Text(text) => text,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    async fn send(&mut self, frame: Frame<'_>) {
        self.socket.write_frame(frame).await.unwrap();
    }
}

pub fn id_of(json: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(json).unwrap()["id"]
        .as_u64()
        .unwrap()
}

pub async fn post_to(app: &TestApp, addr: SocketAddr, body: String) -> TestResponse {
    app.request(post_events_request(addr, body)).await
}

/// An event with these fields.
pub fn event(source: &str, event_type: &str, level: &str) -> String {
    format!(
        r#"{{"source":"{source}","type":"{event_type}","level":"{level}","payload":{{"n":1}}}}"#
    )
}

pub async fn post_one(app: &TestApp, body: String) -> u64 {
    let response = app.post_json(body).await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    response.json()["id"].as_u64().unwrap()
}

/// Posts one event and checks the client receives exactly its stored JSON.
async fn a_posted_event_arrives_as_its_stored_json(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let mut client = WsClient::connect(app.addr, "/ws").await;
    let id = post_one(&app, event_json("ws-sensor-\\\"quoted\\\"")).await;
    let frame = client.next_text().await;
    let stored = app.get(&format!("/api/events/{id}")).await;
    assert_eq!(stored.status, 200);
    assert_eq!(frame.as_bytes(), &stored.body[..]);
    app.stop().await;
}

async fn filters_deliver_only_matching_events(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let mut filtered =
        WsClient::connect(app.addr, "/ws?type=GAS,SMOKE&level=WARN&source=sensor-1").await;
    let mut everything = WsClient::connect(app.addr, "/ws").await;
    let wanted_gas = post_one(&app, event("sensor-1", "GAS", "WARN")).await;
    post_one(&app, event("sensor-1", "GAS", "INFO")).await;
    post_one(&app, event("sensor-2", "GAS", "WARN")).await;
    post_one(&app, event("sensor-1", "FIRE", "WARN")).await;
    let wanted_smoke = post_one(&app, event("sensor-1", "SMOKE", "WARN")).await;

    assert_eq!(id_of(&filtered.next_text().await), wanted_gas);
    assert_eq!(id_of(&filtered.next_text().await), wanted_smoke);
    let mut all = Vec::new();
    for _ in 0..5 {
        all.push(id_of(&everything.next_text().await));
    }
    assert_eq!(all.len(), 5);
    assert!(all.is_sorted(), "{all:?}");
    assert_eq!(all.last(), Some(&wanted_smoke));
    app.stop().await;
}

#[tokio::test]
async fn an_event_posted_to_either_instance_reaches_clients_of_both() {
    let app = TestApp::spawn_with_redis(&[]).await;
    let other = ExtraInstance::start_with(app.database.url(), &app.redis_args()).await;
    let mut on_first = WsClient::connect(app.addr, "/ws").await;
    let mut on_second = WsClient::connect(other.addr, "/ws").await;

    let response = post_to(&app, app.addr, event_json("posted-to-first")).await;
    assert_eq!(response.status, 201);
    let first_id = response.json()["id"].as_u64().unwrap();
    let response = post_to(&app, other.addr, event_json("posted-to-second")).await;
    assert_eq!(response.status, 201);
    let second_id = response.json()["id"].as_u64().unwrap();

    for client in [&mut on_first, &mut on_second] {
        let mut ids = vec![
            id_of(&client.next_text().await),
            id_of(&client.next_text().await),
        ];
        ids.sort_unstable();
        let mut expected = vec![first_id, second_id];
        expected.sort_unstable();
        assert_eq!(ids, expected);
    }
    other.stop().await;
    app.stop().await;
}

async fn a_slow_consumer_is_closed_1008_while_a_fast_one_gets_everything(mode: Mode) {
    let app = TestApp::spawn_in(mode, &["--ws-client-queue", "64"]).await;
    let mut slow = WsClient::connect_with_small_buffer(app.addr, "/ws").await;
    let mut fast = WsClient::connect(app.addr, "/ws").await;

    // Large events fill the slow client's socket buffers, then its queue, in a few rounds.
    let blob = "x".repeat(15_000);
    let one =
        format!(r#"{{"source":"bulk","type":"GAS","level":"WARN","payload":{{"blob":"{blob}"}}}}"#);
    let bulk = format!("[{}]", vec![one; 50].join(","));
    let mut posted = Vec::new();
    for _round in 0..100 {
        let response = app.post_json(bulk.clone()).await;
        assert_eq!(response.status, 201);
        let ids: Vec<u64> = response.json()["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap())
            .collect();
        for &id in &ids {
            assert_eq!(id_of(&fast.next_text().await), id);
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
        match slow.next().await {
            Received::Text(text) => received.push(id_of(&text)),
            Received::Close(code, reason) => break (code, reason),
        }
    };
    assert_eq!(close, (1008, "slow consumer".to_owned()));
    assert!(received.len() < posted.len());
    assert_eq!(received[..], posted[..received.len()]);

    // The fast client is still served.
    let id = post_one(&app, event_json("after")).await;
    assert_eq!(id_of(&fast.next_text().await), id);
    app.stop().await;
}

async fn shutdown_closes_clients_with_1001(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let mut client = WsClient::connect(app.addr, "/ws").await;
    let id = post_one(&app, event_json("before-shutdown")).await;
    assert_eq!(id_of(&client.next_text().await), id);
    let reading = tokio::spawn(async move { client.next().await });
    app.stop().await;
    assert_eq!(
        reading.await.unwrap(),
        Received::Close(1001, "server shutting down".into())
    );
}

pub async fn upgrade_attempt(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut builder = Request::builder().method(Method::GET).uri(app.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    app.request(builder.body(Full::new(Bytes::new())).unwrap())
        .await
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

async fn bad_upgrade_requests_get_a_json_error_not_a_hung_socket(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let upgrade = [("connection", "Upgrade"), ("upgrade", "websocket")];

    let plain = upgrade_attempt(&app, "/ws", &[]).await;
    plain.assert_error(426, "upgrade_required");
    assert_eq!(plain.header("upgrade"), Some("websocket"));
    assert_eq!(plain.header("sec-websocket-version"), Some("13"));

    let old_version = upgrade_attempt(
        &app,
        "/ws",
        &[
            upgrade[0],
            upgrade[1],
            ("sec-websocket-version", "8"),
            ("sec-websocket-key", KEY),
        ],
    )
    .await;
    old_version.assert_error(426, "upgrade_required");
    assert_eq!(old_version.header("sec-websocket-version"), Some("13"));

    for key in [None, Some("not-a-key")] {
        let mut headers = vec![upgrade[0], upgrade[1], ("sec-websocket-version", "13")];
        headers.extend(key.map(|key| ("sec-websocket-key", key)));
        upgrade_attempt(&app, "/ws", &headers)
            .await
            .assert_error(400, "invalid_upgrade");
    }

    let valid = [
        upgrade[0],
        upgrade[1],
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", KEY),
    ];
    let bad_filter = upgrade_attempt(&app, "/ws?level=LOUD", &valid).await;
    let json = bad_filter.assert_error(400, "invalid_query");
    assert!(
        json["message"].as_str().unwrap().contains("level"),
        "{json}"
    );
    upgrade_attempt(&app, "/ws?type=a%20b", &valid)
        .await
        .assert_error(400, "invalid_query");

    let post = app.send(Method::POST, "/ws", None, "").await;
    post.assert_error(405, "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET"));
    assert_eq!(app.hub.client_count(), 0);
    app.stop().await;
}

async fn upgrades_past_the_client_limit_get_503(mode: Mode) {
    let app = TestApp::spawn_in(mode, &["--ws-max-clients", "1"]).await;
    let mut first = WsClient::connect(app.addr, "/ws").await;
    let valid = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", KEY),
    ];
    let refused = upgrade_attempt(&app, "/ws", &valid).await;
    refused.assert_error(503, "overloaded");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(app.hub.stats().clients_refused(), 1);

    // The first client is unaffected; once it leaves, its place is free again.
    let id = post_one(&app, event_json("limit")).await;
    assert_eq!(id_of(&first.next_text().await), id);
    first.send(Frame::close(1000, b"bye")).await;
    assert_eq!(first.next().await, Received::Close(1000, String::new()));
    drop(first);
    let mut waited = 0;
    while app.hub.client_count() > 0 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let mut again = WsClient::connect(app.addr, "/ws").await;
    let id = post_one(&app, event_json("limit-again")).await;
    assert_eq!(id_of(&again.next_text().await), id);
    app.stop().await;
}

async fn client_frames_over_the_size_limit_close_with_1009_and_others_are_ignored(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let mut client = WsClient::connect(app.addr, "/ws").await;
    // Small client messages are ignored; the stream goes on.
    client
        .send(Frame::text(Payload::Owned(b"hello".to_vec())))
        .await;
    let id = post_one(&app, event_json("still-served")).await;
    assert_eq!(id_of(&client.next_text().await), id);

    client
        .send(Frame::binary(Payload::Owned(vec![0u8; 100 * 1024])))
        .await;
    assert_eq!(
        client.next().await,
        Received::Close(1009, "message too big".into())
    );
    app.stop().await;
}

async fn a_client_silent_for_three_ping_intervals_is_closed(mode: Mode) {
    let app = TestApp::spawn_in(mode, &["--ws-ping-interval-s", "1"]).await;
    let mut client = WsClient::connect(app.addr, "/ws").await;
    // Not reading means not answering the server's pings.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        client.next().await,
        Received::Close(1001, "idle timeout".into())
    );

    // A client that keeps reading answers the pings and stays.
    let mut live = WsClient::connect(app.addr, "/ws").await;
    let keep_reading = tokio::spawn(async move { live.next().await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let id = post_one(&app, event_json("alive")).await;
    let stored = app.get(&format!("/api/events/{id}")).await;
    assert_eq!(
        keep_reading.await.unwrap(),
        Received::Text(String::from_utf8(stored.body.to_vec()).unwrap())
    );
    app.stop().await;
}

/// Waits (bounded) until `condition` holds.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..600 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

in_each_mode!(
    all: a_posted_event_arrives_as_its_stored_json,
    filters_deliver_only_matching_events,
    shutdown_closes_clients_with_1001,
);

in_each_mode!(
    a_slow_consumer_is_closed_1008_while_a_fast_one_gets_everything,
    bad_upgrade_requests_get_a_json_error_not_a_hung_socket,
    upgrades_past_the_client_limit_get_503,
    client_frames_over_the_size_limit_close_with_1009_and_others_are_ignored,
    a_client_silent_for_three_ping_intervals_is_closed,
);
