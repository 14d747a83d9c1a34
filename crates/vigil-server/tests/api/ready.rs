//! `GET /api/ready`: 200 while the database answers and the process is not draining, with
//! Redis reported but never decisive; 503 otherwise. Faults go through the test kit's proxy.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use vigil_testkit::proxy::FaultProxy;

use crate::helpers::{REDIS_URL, TestApp, TestResponse, event_json};

fn assert_not_ready(response: &TestResponse) {
    assert_eq!(response.status, 503, "{:?}", response.body);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.json()["ready"], false);
}

#[tokio::test]
async fn ready_without_redis_reports_redis_off() {
    let app = TestApp::spawn().await;
    let response = app.get("/api/ready").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json(),
        json!({"ready": true, "store": "up", "redis": "off"})
    );
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn ready_with_redis_reports_redis_up() {
    let app = TestApp::spawn_with_redis(&[]).await;
    let response = app.get("/api/ready").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"ready": true, "store": "up", "redis": "up"})
    );
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn redis_down_is_degraded_but_still_ready() {
    let proxy = FaultProxy::start(REDIS_URL["redis://".len()..].parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let app = TestApp::spawn_with_redis_at(&format!("redis://{}", proxy.addr()), &[]).await;
    assert_eq!(app.get("/api/ready").await.json()["redis"], "up");

    proxy.refuse_new(true);
    proxy.cut_all();
    let response = app.get("/api/ready").await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert_eq!(
        response.json(),
        json!({"ready": true, "store": "up", "redis": "down"})
    );

    proxy.heal();
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn store_down_is_not_ready() {
    let (app, proxy) = TestApp::spawn_behind_db_proxy(&[]).await;
    assert_eq!(app.get("/api/ready").await.status, 200);

    proxy.refuse_new(true);
    proxy.cut_all();
    let response = app.get("/api/ready").await;
    assert_not_ready(&response);
    assert_eq!(response.json()["store"], "down");
    // Liveness does not look at dependencies.
    assert_eq!(app.get("/api/health").await.status, 200);

    proxy.heal();
    let mut answer = app.get("/api/ready").await;
    for _ in 0..50 {
        if answer.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = app.get("/api/ready").await;
    }
    assert_eq!(answer.status, 200, "ready again once the database is back");
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn a_draining_server_is_not_ready_but_still_serves_until_the_delay_ends() {
    let mut app = TestApp::spawn_with(&["--drain-delay-s", "3"]).await;
    assert_eq!(app.get("/api/ready").await.status, 200);

    app.begin_stop();
    let mut response = app.get("/api/ready").await;
    for _ in 0..20 {
        if response.status != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        response = app.get("/api/ready").await;
    }
    assert_not_ready(&response);
    assert_eq!(
        response.json(),
        json!({"ready": false, "store": "up", "redis": "off", "draining": true})
    );
    // During the drain delay the instance still does its work.
    assert_eq!(app.get("/api/health").await.status, 200);
    assert_eq!(app.post_json(event_json("late")).await.status, 201);

    app.stop().await.drop_database().await;
}
