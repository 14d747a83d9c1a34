//! The fault proxy against a small echo server of the test's own, and once through to the
//! machine's MariaDB.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vigil_testkit::proxy::FaultProxy;

/// Upper bound for things that must happen; only a broken proxy gets near it.
const EVENTUALLY: Duration = Duration::from_secs(10);

/// How long to watch for something that must not happen.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// An upstream that echoes every chunk back and keeps a copy of everything it received.
struct EchoServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl EchoServer {
    async fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buffer = vec![0; 4096];
                    loop {
                        let read = match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => read,
                        };
                        // Recorded before answering: once a reply exists, the request is logged.
                        log.lock().unwrap().extend_from_slice(&buffer[..read]);
                        if stream.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        EchoServer { addr, received }
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

/// Sends `message` and reads as many bytes back, concurrently so large messages cannot stall on
/// full socket buffers.
async fn echo_round_trip(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
    let (mut reader, mut writer) = stream.split();
    let mut reply = vec![0; message.len()];
    let round_trip =
        async { tokio::try_join!(writer.write_all(message), reader.read_exact(&mut reply)) };
    tokio::time::timeout(EVENTUALLY, round_trip)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo"))??;
    Ok(reply)
}

async fn assert_echoes(stream: &mut TcpStream, message: &[u8]) {
    assert_eq!(echo_round_trip(stream, message).await.unwrap(), message);
}

/// Reads until the connection fails and returns how it failed; panics if data arrives.
async fn read_failure(stream: &mut TcpStream) -> io::ErrorKind {
    let mut buffer = [0; 64];
    match tokio::time::timeout(EVENTUALLY, stream.read(&mut buffer)).await {
        Err(_) => panic!("connection still open after {EVENTUALLY:?}"),
        Ok(Ok(0)) => io::ErrorKind::UnexpectedEof,
        Ok(Ok(read)) => panic!("unexpected data: {:?}", &buffer[..read]),
        Ok(Err(error)) => error.kind(),
    }
}

/// Asserts that nothing arrives on `stream` for a while.
async fn assert_silent(stream: &mut TcpStream) {
    let mut buffer = [0; 64];
    if let Ok(outcome) = tokio::time::timeout(QUIET_PERIOD, stream.read(&mut buffer)).await {
        panic!("expected silence, got {outcome:?}");
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn forwards_both_ways_and_passes_half_close() {
    let upstream = EchoServer::start().await;
    let proxy = FaultProxy::start(upstream.addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();

    assert_echoes(&mut client, b"hello").await;
    let large: Vec<u8> = (0..2_000_000u32).map(|i| i as u8).collect();
    assert_echoes(&mut client, &large).await;
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.accepted(), 1);

    // Client half-closes; the echo server sees end of stream and closes; the client sees it.
    client.shutdown().await.unwrap();
    assert_eq!(
        read_failure(&mut client).await,
        io::ErrorKind::UnexpectedEof
    );
    eventually("the connection to be forgotten", || {
        proxy.connections() == 0
    })
    .await;
}

#[tokio::test]
async fn delay_slows_every_chunk_on_open_connections() {
    let delay = Duration::from_millis(150);
    let upstream = EchoServer::start().await;
    let proxy = FaultProxy::start(upstream.addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_echoes(&mut client, b"warm-up").await;

    proxy.set_delay(delay);
    let started = Instant::now();
    assert_echoes(&mut client, b"slow").await;
    // One chunk each way, each delayed.
    assert!(
        started.elapsed() >= 2 * delay,
        "took {:?}",
        started.elapsed()
    );

    proxy.set_delay(Duration::ZERO);
    assert_echoes(&mut client, b"fast again").await;
}

#[tokio::test]
async fn cut_all_resets_open_connections_and_new_ones_work() {
    let upstream = EchoServer::start().await;
    let proxy = FaultProxy::start(upstream.addr).await.unwrap();
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_echoes(&mut first, b"one").await;
    assert_echoes(&mut second, b"two").await;

    proxy.cut_all();

    assert_eq!(proxy.connections(), 0);
    assert_eq!(
        read_failure(&mut first).await,
        io::ErrorKind::ConnectionReset
    );
    assert_eq!(
        read_failure(&mut second).await,
        io::ErrorKind::ConnectionReset
    );
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_echoes(&mut third, b"three").await;
    assert_eq!(proxy.accepted(), 3);
}

#[tokio::test]
async fn refuse_new_resets_new_connections_only() {
    let upstream = EchoServer::start().await;
    let proxy = FaultProxy::start(upstream.addr).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_echoes(&mut open, b"before").await;

    proxy.refuse_new(true);
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        read_failure(&mut refused).await,
        io::ErrorKind::ConnectionReset
    );
    assert_echoes(&mut open, b"still open").await;
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(proxy.connections(), 1);

    proxy.refuse_new(false);
    let mut accepted = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_echoes(&mut accepted, b"after").await;
}

#[tokio::test]
async fn blackhole_holds_everything_until_heal_cuts_those_connections() {
    let upstream = EchoServer::start().await;
    let proxy = FaultProxy::start(upstream.addr).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut idle = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_echoes(&mut open, b"before").await;
    assert_echoes(&mut idle, b"before").await;

    proxy.blackhole(true);
    open.write_all(b"into the void").await.unwrap();
    assert_silent(&mut open).await;
    let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
    new.write_all(b"also lost").await.unwrap();
    assert_silent(&mut new).await;
    assert_eq!(upstream.received(), b"beforebefore");

    proxy.heal();

    // Connections that lost data are cut; the one that sent nothing carries on.
    assert_eq!(
        read_failure(&mut open).await,
        io::ErrorKind::ConnectionReset
    );
    assert_eq!(read_failure(&mut new).await, io::ErrorKind::ConnectionReset);
    assert_echoes(&mut idle, b"after").await;
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_echoes(&mut fresh, b"fresh").await;
    assert_eq!(upstream.received(), b"beforebeforeafterfresh");
}

#[tokio::test]
async fn cut_reply_after_forwards_the_request_but_never_the_reply() {
    let upstream = EchoServer::start().await;
    let proxy = FaultProxy::start(upstream.addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_echoes(&mut client, b"BEGIN").await;

    proxy.cut_reply_after(b"COMMIT");
    // The pattern straddles two chunks: the first is forwarded and answered as usual.
    assert_echoes(&mut client, b"xxCOM").await;
    client.write_all(b"MITyy").await.unwrap();

    assert_eq!(
        read_failure(&mut client).await,
        io::ErrorKind::ConnectionReset
    );
    assert_eq!(upstream.received(), b"BEGINxxCOMMITyy");

    // Armed once: the next COMMIT goes through.
    let mut next = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_echoes(&mut next, b"COMMIT").await;
}

#[tokio::test]
async fn dropping_the_proxy_closes_connections_and_the_port() {
    let upstream = EchoServer::start().await;
    let proxy = FaultProxy::start(upstream.addr).await.unwrap();
    let addr = proxy.addr();
    let mut client = TcpStream::connect(addr).await.unwrap();
    assert_echoes(&mut client, b"hello").await;

    drop(proxy);

    assert_eq!(
        read_failure(&mut client).await,
        io::ErrorKind::ConnectionReset
    );
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        match TcpStream::connect(addr).await {
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => break,
            _ => assert!(Instant::now() < deadline, "proxy port still accepts"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn select_one(connection: &mut MySqlConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT 1").fetch_one(connection).await
}

#[tokio::test]
async fn mariadb_through_the_proxy_fails_on_cut_and_recovers_after_heal() {
    let mariadb: SocketAddr = "127.0.0.1:3306".parse().unwrap();
    let proxy = FaultProxy::start(mariadb).await.unwrap();
    let url = format!("mysql://root@{}", proxy.addr());

    let mut connection = MySqlConnection::connect(&url).await.unwrap();
    assert_eq!(select_one(&mut connection).await.unwrap(), 1);

    proxy.cut_all();
    let after_cut = tokio::time::timeout(EVENTUALLY, select_one(&mut connection))
        .await
        .expect("query on a cut connection hung");
    assert!(after_cut.is_err(), "query on a cut connection succeeded");

    proxy.refuse_new(true);
    let refused = tokio::time::timeout(EVENTUALLY, MySqlConnection::connect(&url))
        .await
        .expect("connecting while refused hung");
    assert!(refused.is_err(), "connected while refusing");

    proxy.heal();
    let mut reconnected = MySqlConnection::connect(&url).await.unwrap();
    assert_eq!(select_one(&mut reconnected).await.unwrap(), 1);
    reconnected.close().await.unwrap();
}
