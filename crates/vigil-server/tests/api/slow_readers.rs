//! Clients that send requests and never read the answers: each gives up its connection once
//! `VIGIL_WRITE_TIMEOUT_S` passes without the response being taken, so they cannot hold every
//! connection slot for as long as they like.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{Mode, TestApp};

/// A connection that pipelines `requests` GETs of the OpenAPI document (about 50 KB each)
/// into a 1 KiB receive window and never reads.
async fn never_reading(app: &TestApp, requests: usize) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stream = socket.connect(app.addr).await.unwrap();
    let request = format!(
        "GET /api/openapi.json HTTP/1.1\r\nHost: {}\r\n\r\n",
        app.addr
    );
    stream
        .write_all(request.repeat(requests).as_bytes())
        .await
        .unwrap();
    stream
}

/// `GET /api/health` on a new connection; the status line, if an answer came within `wait`.
async fn health_within(app: &TestApp, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, async {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "GET /api/health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            app.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    })
    .await
    .ok()
}

#[tokio::test]
async fn clients_that_never_read_lose_their_connections_and_others_are_served() {
    let app = TestApp::spawn_in(
        Mode::Embedded,
        &["--max-connections", "4", "--write-timeout-s", "2"],
    )
    .await;
    let mut hogs = Vec::new();
    for _ in 0..4 {
        hogs.push(never_reading(&app, 200).await);
    }
    // Every slot is held now; the writes stall and, after the write timeout, the slots free.
    let answer = health_within(&app, Duration::from_secs(30)).await;
    assert_eq!(
        answer.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "a new client is served while the slow readers are still connected"
    );
    drop(hogs);
    app.stop().await;
}
