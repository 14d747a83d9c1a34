//! `/ws?since=<id>` (replay, the control frame, then live, with nothing lost or repeated at the
//! seam) and backfill (events the live feed lost reach connected clients from the database).
//! Resume runs in each mode; across instances and through Redis faults, with MySQL and Redis.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use vigil_testkit::proxy::FaultProxy;

use crate::helpers::{ExtraInstance, Mode, TestApp, event_json, in_each_mode, post_events_request};
use crate::ws::{KEY, Received, WsClient, event, eventually, id_of, post_one, upgrade_attempt};

/// The `resume` control frame's fields, if `text` is one.
fn resume_of(text: &str) -> Option<(u64, u64, bool)> {
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    let resume = json.get("resume")?;
    assert_eq!(json.as_object().unwrap().len(), 1, "{text}");
    Some((
        resume["since"].as_u64().unwrap(),
        resume["replayed"].as_u64().unwrap(),
        resume["complete"].as_bool().unwrap(),
    ))
}

/// Reads a resume's replay: the replayed ids, then the control frame's fields.
async fn read_replay(client: &mut WsClient) -> (Vec<u64>, (u64, u64, bool)) {
    let mut replayed = Vec::new();
    loop {
        let text = client.next_text().await;
        if let Some(control) = resume_of(&text) {
            return (replayed, control);
        }
        replayed.push(id_of(&text));
    }
}

async fn resume_replays_missed_events_then_one_control_frame_then_live(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(post_one(&app, event_json(&format!("before-{n}"))).await);
    }
    let since = ids[2];
    let mut client = WsClient::connect(app.addr, &format!("/ws?since={since}")).await;
    let (replayed, control) = read_replay(&mut client).await;
    assert_eq!(replayed, ids[3..]);
    assert_eq!(control, (since, 3, true));
    // Replayed frames are the stored JSON.
    let live = post_one(&app, event_json("after")).await;
    let text = client.next_text().await;
    assert_eq!(id_of(&text), live);
    let stored = app.get(&format!("/api/events/{live}")).await;
    assert_eq!(text.as_bytes(), &stored.body[..]);

    // Resuming from the newest id replays nothing, and still says so.
    let mut caught_up = WsClient::connect(app.addr, &format!("/ws?since={live}")).await;
    assert_eq!(read_replay(&mut caught_up).await, (vec![], (live, 0, true)));
    assert_eq!(app.hub.stats().resumes(), 2);
    app.stop().await;
}

async fn resume_applies_the_filter_and_says_when_its_bound_cut_the_replay(mode: Mode) {
    let app = TestApp::spawn_in(mode, &["--ws-resume-max", "3"]).await;
    let mut gas = Vec::new();
    for n in 0..10 {
        let event_type = if n % 2 == 0 { "GAS" } else { "SMOKE" };
        let id = post_one(&app, event("resume-filter", event_type, "WARN")).await;
        if event_type == "GAS" {
            gas.push(id);
        }
    }
    // Five GAS events after `since = 0`: the bound (3) cuts the replay.
    let mut client = WsClient::connect(app.addr, "/ws?since=0&type=GAS").await;
    let (replayed, control) = read_replay(&mut client).await;
    assert_eq!(replayed, gas[..3]);
    assert_eq!(control, (0, 3, false));
    // Resuming again from the last replayed id finishes the job.
    let mut again = WsClient::connect(app.addr, &format!("/ws?since={}&type=GAS", gas[2])).await;
    let (replayed, control) = read_replay(&mut again).await;
    assert_eq!(replayed, gas[3..]);
    assert_eq!(control, (gas[2], 2, true));
    app.stop().await;
}

async fn bad_since_values_get_invalid_query(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let valid = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", KEY),
    ];
    for since in ["abc", "-1", "1.5", "", "9007199254740992", "1&since=2"] {
        let response = upgrade_attempt(&app, &format!("/ws?since={since}"), &valid).await;
        let json = response.assert_error(400, "invalid_query");
        assert!(
            json["message"].as_str().unwrap().contains("since"),
            "{json}"
        );
    }
    assert_eq!(app.hub.client_count(), 0);
    app.stop().await;
}

/// Posts events one after another to `addr` until `stop`, and returns the acknowledged ids.
pub fn keep_posting(
    app: &TestApp,
    addr: SocketAddr,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let client = app.client.clone();
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let request = post_events_request(addr, event_json(&format!("{name}-{n}")));
            let response = client.request(request).await.unwrap();
            assert_eq!(response.status(), 201);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            acked.push(json["id"].as_u64().unwrap());
        }
        acked
    })
}

#[tokio::test]
async fn resume_on_another_instance_while_both_take_events_has_no_gap_and_no_duplicate() {
    let app = TestApp::spawn_with_redis(&[]).await;
    let other = ExtraInstance::start_with(app.database.url(), &app.redis_args()).await;
    let mut first = WsClient::connect(app.addr, "/ws").await;

    // Two producers, one per instance: ids from two id blocks, interleaved on the channel.
    let stop = Arc::new(AtomicBool::new(false));
    let producers = [
        keep_posting(&app, app.addr, "first", Arc::clone(&stop)),
        keep_posting(&app, other.addr, "second", Arc::clone(&stop)),
    ];

    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.push(id_of(&first.next_text().await));
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let since = *seen.last().unwrap();
    let mut second = WsClient::connect(other.addr, &format!("/ws?since={since}")).await;
    let (replayed, (control_since, count, complete)) = read_replay(&mut second).await;
    assert_eq!(
        (control_since, count, complete),
        (since, replayed.len() as u64, true)
    );
    assert!(
        !replayed.is_empty(),
        "events arrived while the client was away"
    );
    seen.extend(&replayed);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = HashSet::new();
    for producer in producers {
        acked.extend(producer.await.unwrap());
    }
    let mut seen_set: HashSet<u64> = seen.iter().copied().collect();
    while !acked.is_subset(&seen_set) {
        let id = id_of(&second.next_text().await);
        seen.push(id);
        seen_set.insert(id);
    }
    assert_eq!(seen.len(), seen_set.len(), "an event arrived twice");
    assert_eq!(seen_set, acked, "an event arrived that nobody posted");
    other.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn clients_get_every_event_committed_while_redis_was_cut() {
    let proxy = FaultProxy::start("127.0.0.1:6379".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let app = TestApp::spawn_with_redis_at(&format!("redis://{}", proxy.addr()), &[]).await;
    let bridge = app.bridge.clone().expect("a redis app has a bridge");
    let mut client = WsClient::connect(app.addr, "/ws").await;
    let mut posted = vec![post_one(&app, event_json("before-cut")).await];
    assert_eq!(id_of(&client.next_text().await), posted[0]);
    let (received, mut events) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Received::Text(text) = client.next().await {
            if received.send(id_of(&text)).is_err() {
                break;
            }
        }
    });

    proxy.refuse_new(true);
    proxy.cut_all();
    eventually("the bridge notices", || bridge.reconnects() > 0).await;
    // Committed and acknowledged while the channel cannot carry them.
    for n in 0..20 {
        posted.push(post_one(&app, event_json(&format!("during-cut-{n}"))).await);
    }
    proxy.refuse_new(false);
    eventually("the subscription is back", || bridge.is_subscribed()).await;
    for n in 0..5 {
        posted.push(post_one(&app, event_json(&format!("after-cut-{n}"))).await);
    }

    let expected: HashSet<u64> = posted[1..].iter().copied().collect();
    let mut got = Vec::new();
    while !expected.iter().all(|id| got.contains(id)) {
        let id = tokio::time::timeout(crate::ws::FRAME_WAIT, events.recv())
            .await
            .expect("every event arrives")
            .expect("the client is still reading");
        got.push(id);
    }
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "an event arrived twice: {got:?}");
    assert_eq!(unique, expected);
    assert!(app.hub.stats().backfilled_events() > 0);
    reader.abort();
    app.stop().await;
}

#[tokio::test]
async fn a_gap_notice_makes_every_instance_backfill_from_the_database() {
    let app = TestApp::spawn_with_redis(&[]).await;
    let mut client = WsClient::connect(app.addr, "/ws").await;
    let first = post_one(&app, event_json("first")).await;
    assert_eq!(id_of(&client.next_text().await), first);

    // An event committed by a publisher that then dropped it: in the table, never on the
    // channel. Its gap notice is all the hub hears.
    let lost_id: u64 = 9_000_000_000_000_000;
    sqlx::query(
        "INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id) \
         VALUES (?, 'dropped', 'GAS', 'CRITICAL', NULL, NULL, UTC_TIMESTAMP(3), 'r-dropped')",
    )
    .bind(lost_id)
    .execute(&app.db().await)
    .await
    .unwrap();
    let notice = vigil_bus::gap_notice(vigil_core::UnixMillis::now().0 - 1000);
    let channel = format!("{}:gaps", app.channel());
    let mut redis = app.redis().await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(&notice)
        .query_async(&mut redis)
        .await
        .unwrap();

    let text = client.next_text().await;
    assert_eq!(id_of(&text), lost_id);
    let stored = app.get(&format!("/api/events/{lost_id}")).await;
    assert_eq!(text.as_bytes(), &stored.body[..]);
    // Already-delivered events are not sent again: the next frame is the next event.
    let next = post_one(&app, event_json("next")).await;
    assert_eq!(id_of(&client.next_text().await), next);
    assert_eq!(app.hub.stats().backfilled_events(), 1);
    app.stop().await;
}

in_each_mode!(all: resume_replays_missed_events_then_one_control_frame_then_live);

in_each_mode!(
    resume_applies_the_filter_and_says_when_its_bound_cut_the_replay,
    bad_since_values_get_invalid_query,
);
