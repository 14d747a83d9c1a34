//! `POST /api/events`: acknowledged ids are exactly the stored rows, in each mode (the
//! rows read straight from MariaDB or the embedded SQLite file).

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::helpers::{ExtraInstance, Mode, TestApp, bulk_json, event_json, in_each_mode};

async fn a_single_event_is_stored_and_acknowledged_with_its_id(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let response = app
        .post_json(r#"{"source":"sensor-1","type":"GAS","level":"WARN","payload":{ "ppm" : 120 },"occurredAt":"2026-11-24T07:12:09.5+02:00"}"#)
        .await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    let json = response.json();
    assert_eq!(json["requestId"], response.request_id());
    let id = json["id"].as_u64().expect("a numeric id");
    assert_eq!(json.as_object().unwrap().len(), 2, "{json}");

    let rows = app.rows().await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.id, id);
    assert_eq!(
        (
            row.source.as_str(),
            row.event_type.as_str(),
            row.level.as_str()
        ),
        ("sensor-1", "GAS", "WARN")
    );
    assert_eq!(row.payload.as_deref(), Some(r#"{"ppm":120}"#));
    assert_eq!(row.request_id, response.request_id());
    let stored = app.get(&format!("/api/events/{id}")).await.json();
    assert_eq!(
        stored["occurredAt"], "2026-11-24T05:12:09.500Z",
        "stored in UTC, milliseconds kept"
    );
    if mode == Mode::MySql {
        let occurred: String = sqlx::query_scalar(
            "SELECT DATE_FORMAT(occurred_at, '%Y-%m-%dT%H:%i:%s.%f') FROM events",
        )
        .fetch_one(&app.db().await)
        .await
        .unwrap();
        assert_eq!(occurred, "2026-11-24T05:12:09.500000");
    }
    app.stop().await.drop_database().await;
}

async fn bulk_arrays_and_ndjson_are_acknowledged_with_ids_in_order(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let array = format!(
        "[{},{},{}]",
        event_json("a0"),
        event_json("a1"),
        event_json("a2")
    );
    let response = app.post_json(array).await;
    assert_eq!(response.status, 201);
    let json = response.json();
    assert_eq!(json["count"], 3);
    let array_ids: Vec<u64> = json["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();

    let ndjson = format!("{}\r\n\r\n{}\n", event_json("n0"), event_json("n1"));
    let response = app
        .send(
            Method::POST,
            "/api/events",
            Some("application/x-ndjson"),
            ndjson,
        )
        .await;
    assert_eq!(response.status, 201);
    let ndjson_ids: Vec<u64> = response.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();

    let one = app
        .post_json(format!("[{}]", event_json("one")))
        .await
        .json();
    assert_eq!(one["count"], 1, "an array of one is still a bulk answer");
    let one_id = one["ids"][0].as_u64().unwrap();

    let rows = app.rows().await;
    let by_id: HashMap<u64, &str> = rows.iter().map(|r| (r.id, r.source.as_str())).collect();
    assert_eq!(rows.len(), 6);
    for (ids, sources) in [
        (&array_ids, vec!["a0", "a1", "a2"]),
        (&ndjson_ids, vec!["n0", "n1"]),
    ] {
        let stored: Vec<&str> = ids.iter().map(|id| by_id[id]).collect();
        assert_eq!(stored, sources);
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "ids increase within a request"
        );
    }
    assert_eq!(by_id[&one_id], "one");
    app.stop().await.drop_database().await;
}

async fn many_concurrent_posters_get_exactly_their_rows(mode: Mode) {
    let app = Arc::new(TestApp::spawn_in(mode, &[]).await);
    let mut posters = Vec::new();
    for poster in 0..64 {
        let app = Arc::clone(&app);
        posters.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..25 {
                if n % 5 == 0 {
                    let sources: Vec<String> =
                        (0..4).map(|k| format!("p{poster}-{n}-{k}")).collect();
                    let body = bulk_json(&sources);
                    let response = app.post_json(body).await;
                    assert_eq!(response.status, 201);
                    let ids = response.ids();
                    acked.extend(ids.into_iter().zip(sources));
                } else {
                    let source = format!("p{poster}-{n}");
                    let response = app.post_json(event_json(&source)).await;
                    assert_eq!(response.status, 201);
                    acked.push((response.json()["id"].as_u64().unwrap(), source));
                }
            }
            acked
        }));
    }
    assert_table_holds_exactly(&app, posters).await;
    let app = Arc::into_inner(app).expect("posters are done");
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn two_instances_on_one_database_acknowledge_exactly_their_rows() {
    let app = Arc::new(TestApp::spawn().await);
    let second = ExtraInstance::start(app.database.url()).await;
    let addrs = [app.addr, second.addr];
    let mut posters = Vec::new();
    for poster in 0..32 {
        let app = Arc::clone(&app);
        let target = addrs[poster % 2];
        posters.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..20 {
                let sources: Vec<String> = (0..(1 + n % 3))
                    .map(|k| format!("i{poster}-{n}-{k}"))
                    .collect();
                let body = bulk_json(&sources);
                let request = http::Request::post(format!("http://{target}/api/events"))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                let response = app.request(request).await;
                assert_eq!(response.status, 201);
                let ids = response.ids();
                acked.extend(ids.into_iter().zip(sources));
            }
            acked
        }));
    }
    assert_table_holds_exactly(&app, posters).await;
    second.stop().await;
    let app = Arc::into_inner(app).expect("posters are done");
    app.stop().await.drop_database().await;
}

/// Waits for the posters and checks the table holds exactly their acknowledged events: every
/// acked id once, with its content, and no other row.
async fn assert_table_holds_exactly(
    app: &TestApp,
    posters: Vec<tokio::task::JoinHandle<Vec<(u64, String)>>>,
) {
    let mut acked: HashMap<u64, String> = HashMap::new();
    for poster in posters {
        for (id, source) in poster.await.unwrap() {
            assert!(
                acked.insert(id, source).is_none(),
                "id {id} acknowledged twice"
            );
        }
    }
    let rows = app.rows().await;
    assert_eq!(
        rows.len(),
        acked.len(),
        "no rows beyond the acknowledged ones"
    );
    for row in &rows {
        assert_eq!(
            acked.get(&row.id),
            Some(&row.source),
            "row {} holds its acked content",
            row.id
        );
        assert_eq!(row.payload.as_deref(), Some(r#"{"ppm":120}"#));
    }
}

in_each_mode!(
    a_single_event_is_stored_and_acknowledged_with_its_id,
    bulk_arrays_and_ndjson_are_acknowledged_with_ids_in_order,
    many_concurrent_posters_get_exactly_their_rows,
);
