//! `/ws` and RFC 6455: pings answered with pongs (through tokio-tungstenite, a client library
//! other than the one the server is built on, and with raw frames), and the protocol errors a
//! server must fail the connection for, sent as raw bytes so that no client library can tidy
//! them up first.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Mode, TestApp, event_json};
use crate::ws::{FRAME_WAIT, id_of, post_one};

const FIN: u8 = 0x80;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A WebSocket connection at the byte level: the upgrade by hand, then frames as bytes.
struct RawSocket {
    stream: TcpStream,
    /// Bytes read past the last parsed frame.
    pending: Vec<u8>,
}

impl RawSocket {
    async fn connect(addr: SocketAddr) -> RawSocket {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut socket = RawSocket {
            stream,
            pending: Vec::new(),
        };
        let head_end = loop {
            if let Some(end) = socket
                .pending
                .windows(4)
                .position(|four| four == b"\r\n\r\n")
            {
                break end + 4;
            }
            socket.read_more().await;
        };
        let head = String::from_utf8_lossy(&socket.pending[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        socket.pending.drain(..head_end);
        socket
    }

    async fn read_more(&mut self) {
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(FRAME_WAIT, self.stream.read(&mut buffer))
            .await
            .expect("the server answers in time")
            .expect("read from the server");
        assert!(read > 0, "the server closed without a close frame");
        self.pending.extend_from_slice(&buffer[..read]);
    }

    /// Sends one frame; `masked` as a client must, or not, to test the server.
    async fn send(&mut self, first_byte: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first_byte];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            length @ 0..=125 => frame.push(mask_bit | length as u8),
            length @ 126..=65535 => {
                frame.push(mask_bit | 126);
                frame.extend((length as u16).to_be_bytes());
            }
            length => {
                frame.push(mask_bit | 127);
                frame.extend((length as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            frame.extend(key);
            frame.extend(
                payload
                    .iter()
                    .enumerate()
                    .map(|(i, byte)| byte ^ key[i % 4]),
            );
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next server frame: its first byte and its payload (server frames are unmasked).
    async fn next_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some((first, payload, used)) = parse_server_frame(&self.pending) {
                self.pending.drain(..used);
                return (first, payload);
            }
            self.read_more().await;
        }
    }

    /// Skips pings and events until the server's Close; its status code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (first, payload) = self.next_frame().await;
            if first & 0x0f == CLOSE {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }

    /// Skips everything until a Pong; its payload.
    async fn pong(&mut self) -> Vec<u8> {
        loop {
            let (first, payload) = self.next_frame().await;
            assert_ne!(first & 0x0f, CLOSE, "closed instead of answering the ping");
            if first & 0x0f == PONG {
                return payload;
            }
        }
    }
}

fn parse_server_frame(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&first, rest) = bytes.split_first()?;
    let (&second, rest) = rest.split_first()?;
    assert_eq!(second & 0x80, 0, "server frames are never masked");
    let (length, header) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize,
            10,
        ),
        length => (length as usize, 2),
    };
    let payload = bytes.get(header..header + length)?;
    Some((first, payload.to_vec(), header + length))
}

#[tokio::test]
async fn a_client_library_ping_gets_its_pong() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr))
        .await
        .expect("tokio-tungstenite connects");
    client
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.next().await.expect("a message").expect("no error") {
                Message::Pong(payload) => break payload,
                _ => continue,
            }
        }
    })
    .await
    .expect("the pong arrives in time");
    assert_eq!(&pong[..], b"are you there");
    app.stop().await;
}

#[tokio::test]
async fn a_raw_ping_gets_a_pong_with_its_payload_and_the_stream_goes_on() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    let mut socket = RawSocket::connect(app.addr).await;
    socket.send(FIN | PING, b"raw ping", true).await;
    assert_eq!(socket.pong().await, b"raw ping");
    let id = post_one(&app, event_json("after-ping")).await;
    let (first, payload) = socket.next_frame().await;
    assert_eq!(first, FIN | TEXT);
    assert_eq!(id_of(std::str::from_utf8(&payload).unwrap()), id);
    app.stop().await;
}

#[tokio::test]
async fn an_unmasked_client_frame_closes_with_1002() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    let mut socket = RawSocket::connect(app.addr).await;
    socket.send(FIN | TEXT, b"not masked", false).await;
    assert_eq!(socket.close_code().await, 1002);
    app.stop().await;
}

#[tokio::test]
async fn control_frames_over_125_bytes_close_with_1002() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    for opcode in [PONG, CLOSE, PING] {
        let mut socket = RawSocket::connect(app.addr).await;
        let mut payload = vec![b'x'; 200];
        if opcode == CLOSE {
            payload[..2].copy_from_slice(&1000u16.to_be_bytes());
        }
        socket.send(FIN | opcode, &payload, true).await;
        assert_eq!(socket.close_code().await, 1002, "opcode {opcode:#x}");
    }
    app.stop().await;
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_with_1007_and_valid_text_does_not() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    let euro = "€".as_bytes();
    let mut socket = RawSocket::connect(app.addr).await;
    socket.send(TEXT, &euro[..2], true).await;
    socket.send(FIN | CONTINUATION, &euro[2..], true).await;
    socket.send(FIN | PING, b"still here", true).await;
    assert_eq!(socket.pong().await, b"still here");

    let mut socket = RawSocket::connect(app.addr).await;
    socket.send(TEXT, &euro[..2], true).await;
    socket.send(FIN | CONTINUATION, b"(", true).await;
    assert_eq!(socket.close_code().await, 1007);
    app.stop().await;
}

#[tokio::test]
async fn fragments_out_of_order_close_with_1002() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    // A continuation with no message before it.
    let mut socket = RawSocket::connect(app.addr).await;
    socket.send(FIN | CONTINUATION, b"orphan", true).await;
    assert_eq!(socket.close_code().await, 1002);
    // A text frame inside a fragmented message.
    let mut socket = RawSocket::connect(app.addr).await;
    socket.send(TEXT, b"first half", true).await;
    socket.send(FIN | TEXT, b"another message", true).await;
    assert_eq!(socket.close_code().await, 1002);
    app.stop().await;
}
