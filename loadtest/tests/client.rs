//! One measuring client against a scripted WebSocket server on a loopback port: the upgrade,
//! frames split across TCP writes, a masked pong, duplicates, foreign frames and a close code;
//! and one event-stream client against a scripted chunked `text/event-stream` response.
//! (The run against a real Vigil is in loadtest/README.md.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use vigil_loadtest::fanout::client::{self, ClientSettings, Ending, Shared, Wire};
use vigil_loadtest::fanout::system::Target;

const RUN: u64 = 7;

fn text_frame(json: &str) -> Vec<u8> {
    assert!(json.len() < 126);
    let mut frame = vec![0x81, json.len() as u8];
    frame.extend_from_slice(json.as_bytes());
    frame
}

fn event(id: u64, seq: u64, run: u64) -> Vec<u8> {
    text_frame(&format!(
        r#"{{"id":{id},"source":"sensor-1","type":"GAS","level":"WARN","payload":{{"t":0,"seq":{seq},"run":{run}}},"occurredAt":null}}"#
    ))
}

/// Reads one masked client frame and returns (opcode, unmasked payload).
async fn read_client_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[1] & 0x80, 0x80, "client frames must be masked");
    let len = usize::from(header[1] & 0x7f);
    let mut mask = [0u8; 4];
    stream.read_exact(&mut mask).await.unwrap();
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    for (index, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[index % 4];
    }
    (header[0] & 0x0f, payload)
}

/// Plays one connection: 101 with the first event in the same write, an event split across
/// two writes, a ping, a duplicate, a foreign event, then Close 1008.
async fn scripted_server(listener: TcpListener) -> (String, Vec<u8>, Vec<u8>) {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let mut first =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec();
    first.extend(event(10, 0, RUN));
    stream.write_all(&first).await.unwrap();
    let split = event(11, 1, RUN);
    stream.write_all(&split[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.write_all(&split[20..]).await.unwrap();
    stream.write_all(&[0x89, 2, b'h', b'i']).await.unwrap();
    let pong = read_client_frame(&mut stream).await;
    assert_eq!(pong.0, 0xA);
    let mut rest = event(11, 1, RUN);
    rest.extend(event(12, 2, RUN + 1));
    rest.extend(text_frame(
        r#"{"resume":{"since":9,"replayed":0,"complete":true}}"#,
    ));
    rest.extend([0x88, 2, 0x03, 0xf0]);
    stream.write_all(&rest).await.unwrap();
    let close = read_client_frame(&mut stream).await;
    assert_eq!(close.0, 0x8);
    (String::from_utf8(head).unwrap(), pong.1, close.1)
}

/// Runs one measuring client against the scripted server on `port` until the server ends
/// the connection.
async fn run_one_client(
    port: u16,
    wire: Wire,
    path: &str,
    shared: &Arc<Shared>,
) -> client::ClientOutcome {
    let settings = Arc::new(ClientSettings {
        target: Target::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        wire,
        path: path.to_owned(),
        read_buffer: 32,
        run: RUN,
        started: Instant::now(),
        seq_bound: 100,
        reconnect: false,
    });
    tokio::time::timeout(
        Duration::from_secs(10),
        client::run(0, settings, shared.clone(), Arc::new(Semaphore::new(1))),
    )
    .await
    .expect("the client ends when the server ends the connection")
}

#[tokio::test]
async fn client_reads_events_answers_pings_and_records_the_close_code() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(scripted_server(listener));
    let shared = Arc::new(Shared::default());
    let outcome = run_one_client(port, Wire::Ws, "/ws?type=GAS", &shared).await;
    let (head, pong, close) = server.await.unwrap();

    assert!(head.starts_with("GET /ws?type=GAS HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
    assert_eq!(pong, b"hi");
    assert_eq!(close, [0x03, 0xf0], "the close reply echoes the code");
    assert!(outcome.connected);
    assert_eq!(outcome.received.len(), 2);
    assert!(outcome.received.contains(0) && outcome.received.contains(1));
    assert_eq!(outcome.duplicates, 1);
    assert_eq!(outcome.foreign_frames, 1);
    assert_eq!(outcome.control_frames, 1);
    assert_eq!(outcome.pings, 1);
    assert_eq!(outcome.endings, [Ending::ServerClose(Some(1008))]);
    assert_eq!(outcome.latency_us.as_ref().map(|h| h.len()), Some(2));
    assert_eq!(
        shared.delivered.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

fn sse_event(id: u64, seq: u64, run: u64) -> String {
    format!(
        "id: {id}\ndata: {{\"id\":{id},\"source\":\"sensor-1\",\"type\":\"GAS\",\"level\":\"WARN\",\"payload\":{{\"t\":0,\"seq\":{seq},\"run\":{run}}},\"occurredAt\":null}}\n\n"
    )
}

fn chunk(text: &str) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", text.len()).into_bytes();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

#[tokio::test]
async fn a_stream_client_reads_events_across_chunks_and_records_the_close() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let mut first = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
            transfer-encoding: chunked\r\n\r\n"
            .to_vec();
        first.extend(chunk("retry: 1000\n\n"));
        first.extend(chunk(&sse_event(10, 0, RUN)));
        stream.write_all(&first).await.unwrap();
        let split = chunk(&format!("{}: keep-alive\n\n", sse_event(11, 1, RUN)));
        stream.write_all(&split[..30]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        stream.write_all(&split[30..]).await.unwrap();
        let mut rest = chunk(&sse_event(11, 1, RUN));
        rest.extend(chunk(&sse_event(12, 2, RUN + 1)));
        rest.extend(chunk(
            "event: resume\ndata: {\"since\":9,\"replayed\":0,\"complete\":true}\n\n",
        ));
        rest.extend(chunk(
            "event: close\ndata: {\"reason\":\"slow consumer\"}\n\n",
        ));
        rest.extend(b"0\r\n\r\n");
        stream.write_all(&rest).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    let shared = Arc::new(Shared::default());
    let outcome = run_one_client(port, Wire::Sse, "/api/events/stream?type=GAS", &shared).await;
    let head = server.await.unwrap();
    assert!(
        head.starts_with("GET /api/events/stream?type=GAS HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(outcome.connected);
    assert_eq!(outcome.received.len(), 2);
    assert_eq!(outcome.duplicates, 1);
    assert_eq!(outcome.foreign_frames, 1);
    assert_eq!(outcome.control_frames, 1);
    assert_eq!(
        outcome.pings, 2,
        "the retry field and the keep-alive comment"
    );
    assert_eq!(outcome.endings, [Ending::ServerClose(Some(1008))]);
}
