use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::helpers::TestApp;

async fn health_with_request_id(app: &TestApp, id: &str) -> crate::helpers::TestResponse {
    let request = Request::get(app.url("/api/health"))
        .header("x-request-id", id)
        .body(Full::new(Bytes::new()))
        .unwrap();
    app.request(request).await
}

#[tokio::test]
async fn a_safe_caller_request_id_is_echoed() {
    let app = TestApp::spawn().await;
    for id in ["gateway-7:req.42_a", &"x".repeat(128)] {
        let response = health_with_request_id(&app, id).await;
        assert_eq!(response.request_id(), id);
    }
    // Also in error bodies.
    let request = Request::get(app.url("/nope"))
        .header("x-request-id", "trace-1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = app.request(request).await;
    assert_eq!(
        response.assert_error(404, "not_found")["requestId"],
        "trace-1"
    );
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn an_unsafe_or_missing_request_id_is_replaced_by_a_uuid() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(129);
    for id in ["has space", "semi;colon", "quote\"d", long.as_str()] {
        let response = health_with_request_id(&app, id).await;
        assert_ne!(response.request_id(), id);
        assert!(
            uuid::Uuid::parse_str(response.request_id()).is_ok(),
            "{}",
            response.request_id()
        );
    }
    let first = app.get("/api/health").await;
    let second = app.get("/api/health").await;
    assert!(uuid::Uuid::parse_str(first.request_id()).is_ok());
    assert_ne!(first.request_id(), second.request_id());
    app.stop().await.drop_database().await;
}
