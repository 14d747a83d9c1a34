use crate::helpers::TestApp;

#[tokio::test]
async fn health_answers_ok_true() {
    let app = TestApp::spawn().await;
    let response = app.get("/api/health").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json(), serde_json::json!({"ok": true}));
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn health_answers_head_without_a_body() {
    let app = TestApp::spawn().await;
    let response = app.send(http::Method::HEAD, "/api/health", None, "").await;
    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    app.stop().await.drop_database().await;
}
