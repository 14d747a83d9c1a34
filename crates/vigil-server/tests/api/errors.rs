//! Bad requests get their documented status and error body (the README's *Errors*), and the
//! server keeps serving.

use std::time::Duration;

use http::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{TestApp, read_until_closed};

#[tokio::test]
async fn unknown_routes_are_404() {
    let app = TestApp::spawn().await;
    // `/` is the console; nothing else outside the table is served.
    for path in [
        "/index.html",
        "/console",
        "/console/",
        "/console/app.js/x",
        "/console/lib.rs",
        "/api",
        "/api/health/",
        "/api/eventsx",
        "/metrics2",
        "/%00",
    ] {
        app.get(path).await.assert_error(404, "not_found");
    }
    assert_eq!(app.get("/api/health").await.status, 200);
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let app = TestApp::spawn().await;
    let response = app
        .send(Method::POST, "/api/health", Some("application/json"), "{}")
        .await;
    response.assert_error(405, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET, HEAD"));

    let response = app.send(Method::DELETE, "/api/events", None, "").await;
    response.assert_error(405, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET, HEAD, POST"));
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn unsupported_content_types_are_415() {
    let app = TestApp::spawn().await;
    let event = crate::helpers::event_json("s");
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=latin1"),
    ] {
        let response = app
            .send(Method::POST, "/api/events", content_type, event.clone())
            .await;
        response.assert_error(415, "unsupported_media_type");
    }
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let app = TestApp::spawn().await;
    for body in ["{", "{\"source\":", "[1,", "{'a':1}", "\u{0}"] {
        app.post_json(body).await.assert_error(400, "invalid_json");
    }
    let invalid_utf8: &'static [u8] =
        b"{\"source\":\"\xff\xfe\",\"type\":\"T\",\"level\":\"INFO\"}";
    app.post_json(invalid_utf8)
        .await
        .assert_error(400, "invalid_json");
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn invalid_events_are_400_with_details_naming_item_and_field() {
    let app = TestApp::spawn().await;
    let response = app
        .post_json(r#"{"source":"s","type":"GAS LEAK","level":"LOUD","extra":1}"#)
        .await;
    let json = response.assert_error(400, "validation_failed");
    let fields: Vec<&str> = json["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["type", "level", "extra"]);
    assert!(json["details"][0].get("index").is_none());

    let bulk = format!(
        "[{},{}]",
        crate::helpers::event_json("ok"),
        r#"{"source":"s","type":"T","level":"warn"}"#
    );
    let json = app
        .post_json(bulk)
        .await
        .assert_error(400, "validation_failed");
    assert_eq!(
        json["details"],
        serde_json::json!([{"index": 1, "field": "level", "message": "must be one of INFO, WARN, ERROR, CRITICAL"}])
    );

    for empty in ["", "[]", "  "] {
        app.post_json(empty)
            .await
            .assert_error(400, "validation_failed");
    }
    let rows = crate::helpers::all_rows(&app.db().await).await;
    assert!(
        rows.is_empty(),
        "nothing of a refused body is stored: {rows:?}"
    );
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn too_many_bulk_events_is_413() {
    let app = TestApp::spawn_with(&["--max-bulk-events", "3"]).await;
    let event = crate::helpers::event_json("s");
    let body = format!("[{}]", [event.as_str(); 4].join(","));
    app.post_json(body)
        .await
        .assert_error(413, "payload_too_large");
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_and_the_client_reads_it() {
    let app = TestApp::spawn_with(&["--max-body-bytes", "2048"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let body = vec![b' '; 1_000_000];
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Keep sending the body as a naive client would; the server answers and drains.
    let _ = stream.write_all(&body).await;
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(
        response.contains("\"error\":\"payload_too_large\""),
        "{response}"
    );
    assert_eq!(app.get("/api/health").await.status, 200);
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let app = TestApp::spawn_with(&["--max-body-bytes", "2048"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 1000, " ".repeat(1000));
    for _ in 0..10 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(app.get("/api/health").await.status, 200);
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = TestApp::spawn_with(&["--header-read-timeout-s", "1"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // A guard against hanging forever, not a speed assertion.
    let closed =
        tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut stream)).await;
    assert!(closed.is_ok(), "the server closed the slow connection");
    assert_eq!(app.get("/api/health").await.status, 200);
    app.stop().await.drop_database().await;
}
