//! Hostile input: a table of malformed, oversized, slow, truncated and abusive requests, each
//! answered with its documented 4xx in the API's error shape (the README's *Limits* and
//! *Errors*), or a closed socket for the WebSocket and raw-HTTP cases, while a well-behaved
//! client posts and reads throughout and never sees anything but 201 and 200. Afterwards the
//! table holds exactly the well-behaved client's events: nothing of a refused request was
//! stored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, TestResponse, all_rows, event_json, read_until_closed};
use crate::ws::{KEY, eventually};

/// The server under attack: small limits so that every limit is cheap to reach.
const SETTINGS: &[&str] = &[
    "--max-body-bytes",
    "65536",
    "--max-bulk-events",
    "10",
    "--header-read-timeout-s",
    "1",
    "--body-read-timeout-s",
    "2",
    "--ws-ping-interval-s",
    "1",
];
const MAX_BODY: usize = 65536;

/// Source prefix of the well-behaved client's events; hostile events never use it.
const GOOD: &str = "good-";

/// A well-behaved client posting and reading until told to stop.
struct GoodClient {
    stop: Arc<AtomicBool>,
    posted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl GoodClient {
    fn start(app: &TestApp) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(AtomicU64::new(0));
        let client = app.client.clone();
        let addr = app.addr;
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            let posted = Arc::clone(&posted);
            async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = event_json(&format!("{GOOD}{n}"));
                    let (status, text) =
                        exchange(&client, addr, Method::POST, "/api/events", Some(body)).await;
                    assert_eq!(status, 201, "the good client's post {n}: {text}");
                    posted.fetch_add(1, Ordering::Relaxed);
                    let (status, text) =
                        exchange(&client, addr, Method::GET, "/api/events?size=5", None).await;
                    assert_eq!(status, 200, "the good client's read {n}: {text}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        GoodClient { stop, posted, task }
    }

    /// Stops the client; panics with its failure if it saw anything but 201 and 200.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the good client never saw an error");
        self.posted.load(Ordering::Relaxed)
    }
}

async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
) -> (u16, String) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("the good client is answered within 30 s")
        .expect("the good client's request completes");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One hostile body posted to `/api/events`.
struct BodyCase {
    name: String,
    content_type: Option<&'static [u8]>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    name: impl Into<String>,
    content_type: Option<&'static [u8]>,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> BodyCase {
    BodyCase {
        name: name.into(),
        content_type,
        body: body.into(),
        status,
        code,
    }
}

const JSON: Option<&[u8]> = Some(b"application/json");
const NDJSON: Option<&[u8]> = Some(b"application/x-ndjson");

fn evil(fields: &str) -> String {
    format!(r#"{{"source":"evil","type":"GAS","level":"WARN"{fields}}}"#)
}

fn nested_payload(depth: usize) -> String {
    format!(
        r#"{{"source":"evil","type":"T","level":"INFO","payload":{}1{}}}"#,
        r#"{"a":"#.repeat(depth),
        "}".repeat(depth)
    )
}

fn body_cases() -> Vec<BodyCase> {
    let valid = evil("");
    let mut cases = vec![
        // Malformed JSON.
        case("unclosed object", JSON, "{", 400, "invalid_json"),
        case(
            "single quotes",
            JSON,
            "{'source':'evil'}",
            400,
            "invalid_json",
        ),
        case("trailing comma", JSON, evil(","), 400, "invalid_json"),
        case(
            "two documents",
            JSON,
            format!("{valid}{valid}"),
            400,
            "invalid_json",
        ),
        case(
            "garbage after the document",
            JSON,
            format!("{valid} x"),
            400,
            "invalid_json",
        ),
        case(
            "comment",
            JSON,
            format!("/* c */{valid}"),
            400,
            "invalid_json",
        ),
        case("raw NUL byte", JSON, b"\0".to_vec(), 400, "invalid_json"),
        case(
            "NUL byte inside the object",
            JSON,
            "{\"source\":\"evil\",\0\"type\":\"T\",\"level\":\"INFO\"}",
            400,
            "invalid_json",
        ),
        case(
            "unescaped control character in a string",
            JSON,
            evil(",\"payload\":{\"a\":\"x\ny\"}"),
            400,
            "invalid_json",
        ),
        case(
            "lone surrogate escape",
            JSON,
            evil(r#","payload":{"a":"\ud800"}"#),
            400,
            "invalid_json",
        ),
        case(
            "bad escape",
            JSON,
            evil(r#","payload":{"a":"\x41"}"#),
            400,
            "invalid_json",
        ),
        case(
            "NaN",
            JSON,
            evil(r#","payload":{"a":NaN}"#),
            400,
            "invalid_json",
        ),
        case(
            "number past a double",
            JSON,
            evil(r#","payload":{"a":1e400}"#),
            400,
            "invalid_json",
        ),
        case(
            "leading zero",
            JSON,
            evil(r#","payload":{"a":01}"#),
            400,
            "invalid_json",
        ),
        case(
            "bare minus",
            JSON,
            evil(r#","payload":{"a":-}"#),
            400,
            "invalid_json",
        ),
        // Invalid UTF-8, BOMs.
        case(
            "invalid UTF-8 in a string",
            JSON,
            b"{\"source\":\"\xff\xfe\",\"type\":\"T\",\"level\":\"INFO\"}".to_vec(),
            400,
            "invalid_json",
        ),
        case(
            "overlong UTF-8 encoding",
            JSON,
            b"{\"source\":\"\xc0\xaf\",\"type\":\"T\",\"level\":\"INFO\"}".to_vec(),
            400,
            "invalid_json",
        ),
        case(
            "UTF-8 encoded surrogate",
            JSON,
            b"{\"source\":\"\xed\xa0\x80\",\"type\":\"T\",\"level\":\"INFO\"}".to_vec(),
            400,
            "invalid_json",
        ),
        case(
            "truncated UTF-8 sequence",
            JSON,
            b"{\"source\":\"\xe2\x82\",\"type\":\"T\",\"level\":\"INFO\"}".to_vec(),
            400,
            "invalid_json",
        ),
        case(
            "invalid UTF-8 in a payload key",
            JSON,
            b"{\"source\":\"evil\",\"type\":\"T\",\"level\":\"INFO\",\"payload\":{\"\x80\":1}}"
                .to_vec(),
            400,
            "invalid_json",
        ),
        case(
            "UTF-16 body",
            JSON,
            valid
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>(),
            400,
            "invalid_json",
        ),
        case(
            "UTF-8 byte order mark",
            JSON,
            [&b"\xef\xbb\xbf"[..], valid.as_bytes()].concat(),
            400,
            "invalid_json",
        ),
        // Deep nesting.
        case(
            "a million brackets",
            JSON,
            "[".repeat(1_000_000)
                .into_bytes()
                .into_iter()
                .take(MAX_BODY - 1)
                .collect::<Vec<u8>>(),
            400,
            "invalid_json",
        ),
        case(
            "objects nested far past the limit",
            JSON,
            nested_payload(1000),
            400,
            "invalid_json",
        ),
        case(
            "payload one level too deep",
            JSON,
            nested_payload(32),
            400,
            "validation_failed",
        ),
        case(
            "arrays nested in a bulk body",
            JSON,
            format!("[[{valid}]]"),
            400,
            "validation_failed",
        ),
        // Huge strings and numbers.
        case(
            "source over 128 code points",
            JSON,
            format!(
                r#"{{"source":"{}","type":"T","level":"INFO"}}"#,
                "é".repeat(129)
            ),
            400,
            "validation_failed",
        ),
        case(
            "source of 60,000 bytes",
            JSON,
            format!(
                r#"{{"source":"{}","type":"T","level":"INFO"}}"#,
                "x".repeat(60_000)
            ),
            400,
            "validation_failed",
        ),
        case(
            "type over 64 bytes",
            JSON,
            format!(
                r#"{{"source":"evil","type":"{}","level":"INFO"}}"#,
                "T".repeat(65)
            ),
            400,
            "validation_failed",
        ),
        case(
            "payload over 16 KiB",
            JSON,
            evil(&format!(
                r#","payload":{{"a":"{}"}}"#,
                "x".repeat(16 * 1024)
            )),
            400,
            "validation_failed",
        ),
        case(
            "a 20,000-digit number as the level",
            JSON,
            evil("").replace(r#""WARN""#, &"9".repeat(20_000)),
            400,
            "invalid_json",
        ),
        case(
            "a huge number as occurredAt",
            JSON,
            evil(r#","occurredAt":1e308"#),
            400,
            "validation_failed",
        ),
        case(
            "occurredAt in year 0",
            JSON,
            evil(r#","occurredAt":"0000-01-01T00:00:00Z""#),
            400,
            "validation_failed",
        ),
        case(
            "occurredAt with a leap second",
            JSON,
            evil(r#","occurredAt":"2016-12-31T23:59:60Z""#),
            400,
            "validation_failed",
        ),
        case(
            "occurredAt of 10,000 characters",
            JSON,
            evil(&format!(
                r#","occurredAt":"2026-01-01T00:00:00.{}Z""#,
                "1".repeat(10_000)
            ))
            .replace(".1", ".x"),
            400,
            "validation_failed",
        ),
        // Duplicate keys, unknown fields.
        case(
            "duplicate top-level key",
            JSON,
            r#"{"source":"evil","source":"evil2","type":"T","level":"INFO"}"#,
            400,
            "validation_failed",
        ),
        case(
            "duplicate payload key",
            JSON,
            evil(r#","payload":{"a":1,"a":2}"#),
            400,
            "validation_failed",
        ),
        case(
            "duplicate nested payload key",
            JSON,
            evil(r#","payload":{"a":{"b":1,"b":1}}"#),
            400,
            "validation_failed",
        ),
        case(
            "unknown field",
            JSON,
            evil(r#","admin":true"#),
            400,
            "validation_failed",
        ),
        case(
            "__proto__ field",
            JSON,
            evil(r#","__proto__":{}"#),
            400,
            "validation_failed",
        ),
        // Wrong types.
        case(
            "source is a number",
            JSON,
            r#"{"source":1,"type":"T","level":"INFO"}"#,
            400,
            "validation_failed",
        ),
        case(
            "level in lowercase",
            JSON,
            r#"{"source":"evil","type":"T","level":"warn"}"#,
            400,
            "validation_failed",
        ),
        case(
            "level is null",
            JSON,
            r#"{"source":"evil","type":"T","level":null}"#,
            400,
            "validation_failed",
        ),
        case(
            "payload is an array",
            JSON,
            evil(r#","payload":[1]"#),
            400,
            "validation_failed",
        ),
        case(
            "payload is a string",
            JSON,
            evil(r#","payload":"{}""#),
            400,
            "validation_failed",
        ),
        case(
            "top level is a string",
            JSON,
            r#""event""#,
            400,
            "validation_failed",
        ),
        case(
            "top level is a number",
            JSON,
            "42",
            400,
            "validation_failed",
        ),
        case("top level is null", JSON, "null", 400, "validation_failed"),
        case(
            "array of numbers",
            JSON,
            "[1,2,3]",
            400,
            "validation_failed",
        ),
        case("missing fields", JSON, "{}", 400, "validation_failed"),
        case(
            "control character in source",
            JSON,
            r#"{"source":"evil\u0000","type":"T","level":"INFO"}"#,
            400,
            "validation_failed",
        ),
        case(
            "one bad event refuses a bulk",
            JSON,
            format!(r#"[{valid},{valid},{{"source":"evil","type":"T","level":"LOUD"}}]"#),
            400,
            "validation_failed",
        ),
        // Empty bodies.
        case("empty body", JSON, "", 400, "validation_failed"),
        case(
            "whitespace body",
            JSON,
            " \r\n\t ",
            400,
            "validation_failed",
        ),
        case("empty array", JSON, "[]", 400, "validation_failed"),
        case("blank NDJSON", NDJSON, "\n\r\n\n", 400, "validation_failed"),
        // NDJSON.
        case(
            "NDJSON with a broken line",
            NDJSON,
            format!("{valid}\n{{\"source\":\n"),
            400,
            "invalid_json",
        ),
        case(
            "NDJSON with an array line",
            NDJSON,
            format!("{valid}\n[{valid}]\n"),
            400,
            "validation_failed",
        ),
        case(
            "NDJSON with two objects on a line",
            NDJSON,
            format!("{valid}{valid}\n"),
            400,
            "invalid_json",
        ),
        // Limits.
        case(
            "eleven events in a bulk",
            JSON,
            format!("[{}]", [valid.as_str(); 11].join(",")),
            413,
            "payload_too_large",
        ),
        case(
            "eleven NDJSON events",
            NDJSON,
            [valid.as_str(); 11].join("\n"),
            413,
            "payload_too_large",
        ),
        case(
            "a body over the limit",
            JSON,
            format!("[{}]", vec![valid.as_str(); 2000].join(",")),
            413,
            "payload_too_large",
        ),
        // Content types.
        case(
            "no content type",
            None,
            valid.clone(),
            415,
            "unsupported_media_type",
        ),
        case(
            "text/plain",
            Some(b"text/plain"),
            valid.clone(),
            415,
            "unsupported_media_type",
        ),
        case(
            "form encoding",
            Some(b"application/x-www-form-urlencoded"),
            valid.clone(),
            415,
            "unsupported_media_type",
        ),
        case(
            "multipart",
            Some(b"multipart/form-data; boundary=x"),
            valid.clone(),
            415,
            "unsupported_media_type",
        ),
        case(
            "latin-1 charset",
            Some(b"application/json; charset=latin1"),
            valid.clone(),
            415,
            "unsupported_media_type",
        ),
        case(
            "two media types",
            Some(b"application/json, text/plain"),
            valid.clone(),
            415,
            "unsupported_media_type",
        ),
        case(
            "a suffix",
            Some(b"application/jsonx"),
            valid.clone(),
            415,
            "unsupported_media_type",
        ),
        case(
            "a non-ASCII content type",
            Some(b"application/json\xff"),
            valid.clone(),
            415,
            "unsupported_media_type",
        ),
        case(
            "an empty content type",
            Some(b""),
            valid.clone(),
            415,
            "unsupported_media_type",
        ),
    ];
    // Every truncation of a valid bulk body is refused: no prefix is a valid body.
    let bulk = format!(
        "[{valid},{}]",
        evil(r#","payload":{"a":[1,2.5e3,"x\"y",null,true]},"occurredAt":"2026-01-01T00:00:00Z""#)
    );
    for end in 1..bulk.len() {
        let prefix = &bulk[..end];
        cases.push(case(
            format!("truncated at byte {end}"),
            JSON,
            prefix,
            400,
            "invalid_json",
        ));
    }
    cases
}

/// One hostile query to `GET /api/events`.
const QUERY_CASES: &[(&str, &str)] = &[
    ("huge page number", "page=99999999999999999999999999"),
    ("page past u32", "page=4294967296"),
    ("page past the offset limit", "page=4294967295"),
    ("negative page", "page=-1"),
    ("page zero", "page=0"),
    ("fractional page", "page=1.5"),
    ("page with a plus", "page=%2B1"),
    ("page with spaces", "page=+1"),
    ("exponent size", "size=1e2"),
    ("size zero", "size=0"),
    ("empty size", "size="),
    ("size over 100", "size=101"),
    ("NUL as the size", "size=%00"),
    ("NUL in a type", "type=GAS%00"),
    ("NUL as a source", "source=%00"),
    ("NUL in a level", "level=WARN%00"),
    (
        "twenty-one types",
        "type=A,B,C,D,E,F,G,H,I,J,K,L,M,N,O,P,Q,R,S,T,U",
    ),
    (
        "twenty-one repeated types",
        "type=A&type=B&type=C&type=D&type=E&type=F&type=G&type=H&type=I&type=J&type=K&type=L&type=M&type=N&type=O&type=P&type=Q&type=R&type=S&type=T&type=U",
    ),
    ("repeated size, last bad", "size=10&size=0"),
    ("level in lowercase", "level=warn"),
    ("type with a space", "type=GAS+LEAK"),
    ("invalid percent-encoding as a page", "page=%ZZ"),
    ("a lone percent as a size", "size=%"),
    ("invalid UTF-8 in a source", "source=%C3%28"),
    ("invalid UTF-8 in a type", "type=%FF"),
    (
        "overlong source",
        "source=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ),
    (
        "from after to",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
    ),
    ("from not a date", "from=yesterday"),
    ("to with a leap second", "to=2016-12-31T23:59:60Z"),
    ("before zero", "before=0"),
    ("before not a number", "before=abc"),
    ("before past u64", "before=18446744073709551616"),
    ("page with before", "page=1&before=10"),
];

/// Queries that look hostile but are valid by the contract: unknown parameters (bracket
/// syntax included) are ignored, a repeated parameter's last value wins, repeated filters add.
const IGNORED_QUERIES: &[&str] = &[
    "type[]=GAS",
    "type%5B%5D=GAS&level[0]=LOUD",
    "%00=1",
    "page[]=0",
    "page=1&page=2",
    "type=GAS&type=SMOKE",
    "&&&==&",
    "x=%ZZ%FF%00",
];

#[tokio::test]
async fn hostile_requests_get_their_4xx_while_a_good_client_is_served() {
    let app = TestApp::spawn_with(SETTINGS).await;
    let good = GoodClient::start(&app);

    for case in body_cases() {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(app.url("/api/events"));
        if let Some(content_type) = case.content_type {
            request = request.header(
                "content-type",
                HeaderValue::from_bytes(content_type).unwrap(),
            );
        }
        let response = app
            .request(request.body(Full::new(Bytes::from(case.body))).unwrap())
            .await;
        assert_refused(&response, case.status, case.code, &case.name);
    }

    for (name, query) in QUERY_CASES {
        let response = app.get(&format!("/api/events?{query}")).await;
        assert_refused(&response, 400, "invalid_query", name);
        let response = app.get(&format!("/ws?{query}")).await;
        // /ws checks the upgrade first; with a valid upgrade, bad filters are 400 (below).
        assert_eq!(response.status, 426, "/ws {name}");
    }
    for query in IGNORED_QUERIES {
        let response = app.get(&format!("/api/events?{query}")).await;
        assert_eq!(
            response.status,
            200,
            "{query}: {}",
            String::from_utf8_lossy(&response.body)
        );
    }
    let long_value = format!("/api/events?source={}", "s".repeat(60_000));
    assert_refused(
        &app.get(&long_value).await,
        400,
        "invalid_query",
        "a 60 kB source",
    );
    for id in [
        "0",
        "-1",
        "abc",
        "9007199254740992",
        "99999999999999999999999",
        "%00",
        "1%2F2",
        "+1",
        "1.0",
        "1e3",
    ] {
        let response = app.get(&format!("/api/events/{id}")).await;
        assert_refused(&response, 404, "not_found", id);
    }

    let posted = good.finish().await;
    assert!(posted > 0, "the good client made progress");
    assert_only_good_rows(&app, posted).await;
    app.stop().await.drop_database().await;
}

fn assert_refused(response: &TestResponse, status: u16, code: &str, name: &str) {
    let text = String::from_utf8_lossy(&response.body);
    assert_eq!(response.status.as_u16(), status, "{name}: {text}");
    let json = response.json();
    assert_eq!(json["error"], code, "{name}: {text}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{name}"
    );
    assert_eq!(json["requestId"], response.request_id(), "{name}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{name}"
    );
}

async fn assert_only_good_rows(app: &TestApp, posted: u64) {
    let rows = all_rows(&app.db().await).await;
    let hostile: Vec<_> = rows
        .iter()
        .filter(|row| !row.source.starts_with(GOOD))
        .collect();
    assert!(
        hostile.is_empty(),
        "nothing of a refused request is stored: {hostile:?}"
    );
    assert_eq!(rows.len() as u64, posted, "every good event is stored");
}

/// Raw HTTP: what a client library would never send.
#[tokio::test]
async fn hostile_connections_are_closed_while_a_good_client_is_served() {
    let app = TestApp::spawn_with(SETTINGS).await;
    let good = GoodClient::start(&app);
    let addr = app.addr;

    // Slow-loris: headers a byte at a time, past the 1 s header read timeout, from many
    // connections at once; each is closed without an answer to its unfinished request.
    let lorises: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let head = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for byte in head {
                    if stream.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                read_until_closed(&mut stream).await
            })
        })
        .collect();
    // A client that connects and sends nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();

    // A declared body over the limit: 413, Connection: close, read by the client.
    let answer = raw(addr, format!("POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"error\":\"payload_too_large\""),
        "{answer}"
    );
    // An absurd Content-Length: refused before reading.
    let answer = raw(addr, b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999999999999999\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    // Abrupt disconnects mid-body, declared and chunked: nothing stored, nothing hangs.
    for _ in 0..10 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let body = evil("");
        let head = format!(
            "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
            .write_all(&body.as_bytes()[..body.len() / 2])
            .await
            .unwrap();
        drop(stream);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[{\"so").await.unwrap();
        drop(stream);
    }
    // Malformed HTTP is refused by hyper's parser itself: a bare 400 and a closed connection
    // (no handler runs, so there is no JSON body), and the server goes on.
    for garbage in [
        &b"GET /api/events?type=GAS\0 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = raw(addr, garbage).await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    }
    // A request line longer than hyper's buffer: refused by hyper, the server goes on.
    let huge_uri = format!(
        "GET /api/events?source={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "s".repeat(1_000_000)
    );
    let answer = raw(addr, huge_uri.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    // A body that trickles (headers in, then a byte now and then, never the whole body):
    // 408 request_timeout at the body read timeout, and the connection closed.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let trickling = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
        }
        read_until_closed(&mut trickle).await
    });
    let answer = tokio::time::timeout(Duration::from_secs(30), trickling)
        .await
        .expect("the trickling client is answered and closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    // A chunked body that is not chunked: the body read fails, a JSON 400.
    let answer = raw(addr, b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"error\":\"invalid_json\""), "{answer}");
    assert!(
        answer.contains("chunked framing is malformed"),
        "the message says the framing is bad: {answer}"
    );

    for loris in lorises {
        let answer = tokio::time::timeout(Duration::from_secs(30), loris)
            .await
            .expect("the slow client is disconnected")
            .unwrap();
        assert!(
            !answer.contains("200 OK"),
            "a slow client's request is never served: {answer}"
        );
    }
    let closed =
        tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut silent)).await;
    assert!(
        closed.is_ok(),
        "a silent connection is closed at the header read timeout"
    );

    let posted = good.finish().await;
    assert_only_good_rows(&app, posted).await;
    app.stop().await.drop_database().await;
}

/// Writes `bytes` on a new connection and reads until the server closes it.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream).await
}

/// A WebSocket opened by hand, to send what no WebSocket library would.
struct RawSocket {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl RawSocket {
    async fn open(addr: SocketAddr) -> RawSocket {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        let end = loop {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the upgrade is answered");
            received.extend_from_slice(&buffer[..n]);
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let head = String::from_utf8_lossy(&received[..end]);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawSocket {
            stream,
            buffered: received[end..].to_vec(),
        }
    }

    /// Sends a client frame header (masked) and `payload` (masked with a zero key).
    async fn send(&mut self, first: u8, declared_len: u64, payload: &[u8]) {
        let mut frame = vec![first];
        match declared_len {
            0..=125 => frame.push(0x80 | declared_len as u8),
            126..=65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(declared_len as u16).to_be_bytes());
            }
            _ => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&declared_len.to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        let _ = self.stream.write_all(&frame).await;
    }

    /// Reads server frames until a Close (its code) or the end of the connection (`None`).
    async fn close_code(&mut self) -> Option<u16> {
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(code) = self.parse_close() {
                return code;
            }
            match tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut buffer)).await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.buffered.extend_from_slice(&buffer[..n]),
                Err(_) => panic!("the server neither closed nor answered within 30 s"),
            }
        }
    }

    /// Consumes complete server frames; `Some(code)` at a Close frame.
    fn parse_close(&mut self) -> Option<Option<u16>> {
        loop {
            let b = &self.buffered;
            if b.len() < 2 {
                return None;
            }
            let (len, header) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => return None,
                n => (n as usize, 2),
            };
            if b.len() < header + len {
                return None;
            }
            let opcode = b[0] & 0x0f;
            let payload = b[header..header + len].to_vec();
            self.buffered.drain(..header + len);
            if opcode == 0x8 {
                return Some(
                    payload
                        .get(..2)
                        .map(|code| u16::from_be_bytes([code[0], code[1]])),
                );
            }
        }
    }
}

#[tokio::test]
async fn hostile_websocket_clients_are_refused_or_closed_while_a_good_client_is_served() {
    let app = TestApp::spawn_with(SETTINGS).await;
    let good = GoodClient::start(&app);
    let addr = app.addr;

    // Upgrade abuse: JSON errors, never a hung socket.
    let upgrade = |version: &'static str, key: &'static str| {
        [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", version),
            ("sec-websocket-key", key),
        ]
    };
    for (name, headers, status, code) in [
        (
            "a short key",
            upgrade("13", "c2hvcnQ="),
            400,
            "invalid_upgrade",
        ),
        (
            "a key that is not base64",
            upgrade("13", "!!!!!!!!!!!!!!!!!!!!!!=="),
            400,
            "invalid_upgrade",
        ),
        (
            "a 17-byte key",
            upgrade("13", "AAAAAAAAAAAAAAAAAAAAAAA="),
            400,
            "invalid_upgrade",
        ),
        ("an empty key", upgrade("13", ""), 400, "invalid_upgrade"),
        ("version 8", upgrade("8", KEY), 426, "upgrade_required"),
        ("version 14", upgrade("14", KEY), 426, "upgrade_required"),
        (
            "a version list",
            upgrade("13, 8", KEY),
            426,
            "upgrade_required",
        ),
        (
            "an empty version",
            upgrade("", KEY),
            426,
            "upgrade_required",
        ),
    ] {
        let response = crate::ws::upgrade_attempt(&app, "/ws", &headers).await;
        assert_refused(&response, status, code, name);
    }
    let no_upgrade = crate::ws::upgrade_attempt(
        &app,
        "/ws",
        &[
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
        ],
    )
    .await;
    assert_refused(&no_upgrade, 426, "upgrade_required", "no Upgrade header");
    let h2c = crate::ws::upgrade_attempt(
        &app,
        "/ws",
        &[("connection", "Upgrade"), ("upgrade", "h2c")],
    )
    .await;
    assert_refused(&h2c, 426, "upgrade_required", "an upgrade to h2c");
    for (name, query) in QUERY_CASES
        .iter()
        .filter(|(_, q)| q.contains("type=") || q.contains("level=") || q.contains("source="))
    {
        let response =
            crate::ws::upgrade_attempt(&app, &format!("/ws?{query}"), &upgrade("13", KEY)).await;
        assert_refused(&response, 400, "invalid_query", name);
    }
    for since in [
        "-1",
        "abc",
        "%00",
        "9007199254740992",
        "1&since=2",
        "1e3",
        "",
    ] {
        let response =
            crate::ws::upgrade_attempt(&app, &format!("/ws?since={since}"), &upgrade("13", KEY))
                .await;
        assert_refused(&response, 400, "invalid_query", since);
    }
    let post = app
        .send(Method::POST, "/ws", Some("application/json"), "{}")
        .await;
    assert_refused(&post, 405, "method_not_allowed", "POST /ws");

    // Frames over 64 KiB: closed with 1009, declared or sent.
    let mut big = RawSocket::open(addr).await;
    big.send(0x81, 1 << 40, b"").await;
    assert_eq!(big.close_code().await, Some(1009), "a 1 TiB frame header");
    let mut big = RawSocket::open(addr).await;
    big.send(0x82, 70_000, &vec![b'x'; 70_000]).await;
    assert_eq!(big.close_code().await, Some(1009), "a 70 kB binary frame");
    // Protocol violations: closed with 1002 (or 1007 for bad UTF-8 in a close reason).
    let mut reserved = RawSocket::open(addr).await;
    reserved.send(0x83, 0, b"").await;
    assert_eq!(reserved.close_code().await, Some(1002), "a reserved opcode");
    let mut rsv = RawSocket::open(addr).await;
    rsv.send(0xC1, 1, b"x").await;
    assert_eq!(rsv.close_code().await, Some(1002), "reserved bits");
    let mut big_ping = RawSocket::open(addr).await;
    big_ping.send(0x89, 200, &[0; 200]).await;
    assert_eq!(
        big_ping.close_code().await,
        Some(1002),
        "a control frame over 125 bytes"
    );
    let mut fragmented_ping = RawSocket::open(addr).await;
    fragmented_ping.send(0x09, 1, b"x").await;
    assert_eq!(
        fragmented_ping.close_code().await,
        Some(1002),
        "a fragmented control frame"
    );

    // Frames never finished: the server goes on serving others and reaps the sockets when
    // they fall silent (three ping intervals of 1 s).
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut socket = RawSocket::open(addr).await;
        socket.send(0x81, 1000, b"only ten b").await;
        stalled.push(socket);
        let mut socket = RawSocket::open(addr).await;
        socket.send(0x01, 3, b"abc").await; // a first fragment, never continued
        stalled.push(socket);
    }
    // An abrupt disconnect in the middle of a frame.
    let mut dropped = RawSocket::open(addr).await;
    dropped.send(0x81, 100, b"half").await;
    drop(dropped);
    for mut socket in stalled {
        let code = socket.close_code().await;
        assert!(
            matches!(code, Some(1001) | None),
            "a stalled client is reaped: {code:?}"
        );
    }
    eventually("every hostile websocket client is gone", || {
        app.hub.client_count() == 0
    })
    .await;

    let posted = good.finish().await;
    assert_only_good_rows(&app, posted).await;
    app.stop().await.drop_database().await;
}
