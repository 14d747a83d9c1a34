//! `GET /api/events` and `GET /api/events/{id}`, in each mode: MySQL without Redis (every
//! read from the database) and embedded (page 1 from the in-process list, the rest from
//! SQLite); the answers are the same.

use std::collections::HashSet;

use crate::helpers::{Mode, TestApp, in_each_mode};

/// Posts `count` events cycling through types, levels and sources; returns their ids.
async fn post_mixed(app: &TestApp, count: usize) -> Vec<u64> {
    let types = ["GAS", "SMOKE", "DOOR"];
    let levels = ["INFO", "WARN", "ERROR", "CRITICAL"];
    let events: Vec<String> = (0..count)
        .map(|n| {
            format!(
                r#"{{"source":"s{}","type":"{}","level":"{}","payload":{{"n":{n}}}}}"#,
                n % 5,
                types[n % 3],
                levels[n % 4]
            )
        })
        .collect();
    let response = app.post_json(format!("[{}]", events.join(","))).await;
    assert_eq!(response.status, 201);
    response.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// Which list items a filter should keep.
type Predicate = fn(&serde_json::Value) -> bool;

fn ids_of(json: &serde_json::Value) -> Vec<u64> {
    json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_u64().unwrap())
        .collect()
}

async fn pages_come_newest_first_with_their_fields(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let ids = post_mixed(&app, 25).await;
    let newest_first: Vec<u64> = ids.iter().rev().copied().collect();

    let response = app.get("/api/events?size=10").await;
    assert_eq!(response.status, 200);
    if mode == Mode::Embedded {
        // Page 1 comes from the in-process list once it has taken the batch (until then
        // the store answers, never a list without the acknowledged events): same bytes.
        let hit = crate::cache::until_hit(&app, "/api/events?size=10").await;
        assert_eq!(hit.body, response.body);
    } else {
        // Without Redis, MySQL answers every read: another instance may write.
        assert_eq!(response.header("x-cache"), Some("MISS"));
    }
    let json = response.json();
    assert_eq!(ids_of(&json), newest_first[..10]);
    assert_eq!(
        (
            json["page"].as_u64(),
            json["size"].as_u64(),
            json["hasMore"].as_bool()
        ),
        (Some(1), Some(10), Some(true))
    );
    assert!(json.get("nextBefore").is_none());

    let json = app.get("/api/events?size=10&page=3").await.json();
    assert_eq!(ids_of(&json), newest_first[20..]);
    assert_eq!(json["hasMore"], false);
    let json = app.get("/api/events").await.json();
    assert_eq!(json["size"], 20, "default size");
    assert_eq!(ids_of(&json).len(), 20);
    let json = app.get("/api/events?page=9").await.json();
    assert!(ids_of(&json).is_empty());
    assert_eq!(json["hasMore"], false);
    app.stop().await.drop_database().await;
}

async fn filters_select_matching_events_only(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    post_mixed(&app, 60).await;
    let cases: [(&str, Predicate); 5] = [
        ("type=GAS", |e| e["type"] == "GAS"),
        ("type=GAS,SMOKE&level=WARN", |e| {
            (e["type"] == "GAS" || e["type"] == "SMOKE") && e["level"] == "WARN"
        }),
        ("level=CRITICAL,INFO", |e| {
            e["level"] == "CRITICAL" || e["level"] == "INFO"
        }),
        ("source=s1,s3&type=DOOR", |e| {
            (e["source"] == "s1" || e["source"] == "s3") && e["type"] == "DOOR"
        }),
        ("source=s2&level=ERROR&type=SMOKE", |e| {
            e["source"] == "s2" && e["level"] == "ERROR" && e["type"] == "SMOKE"
        }),
    ];
    let everything = app.get("/api/events?size=100").await.json();
    for (query, predicate) in cases {
        let json = app
            .get(&format!("/api/events?size=100&{query}"))
            .await
            .json();
        let expected: Vec<u64> = everything["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| predicate(e))
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        assert!(!expected.is_empty(), "{query} matches something");
        assert_eq!(ids_of(&json), expected, "{query}");
    }
    app.stop().await.drop_database().await;
}

async fn time_ranges_filter_on_created_at(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let first = post_mixed(&app, 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let json = app.get(&format!("/api/events/{}", first[2])).await.json();
    let boundary = json["createdAt"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let second = post_mixed(&app, 2).await;

    let later = app
        .get(&format!("/api/events?from={boundary}&size=100"))
        .await
        .json();
    let later_ids: HashSet<u64> = ids_of(&later).into_iter().collect();
    assert!(second.iter().all(|id| later_ids.contains(id)));
    let earlier = app
        .get(&format!("/api/events?to={boundary}&size=100"))
        .await
        .json();
    assert!(ids_of(&earlier).iter().all(|id| !second.contains(id)));
    let none = app.get("/api/events?to=2000-01-01T00:00:00Z").await.json();
    assert!(ids_of(&none).is_empty());
    app.stop().await.drop_database().await;
}

async fn the_cursor_walks_every_event_once(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let ids = post_mixed(&app, 23).await;
    let mut seen = Vec::new();
    let mut before = u64::MAX >> 11;
    loop {
        let json = app
            .get(&format!("/api/events?size=5&before={before}"))
            .await
            .json();
        seen.extend(ids_of(&json));
        match json["nextBefore"].as_u64() {
            Some(next) => {
                assert_eq!(json["hasMore"], true);
                before = next;
            }
            None => {
                assert!(
                    json["nextBefore"].is_null(),
                    "nextBefore is present and null at the end"
                );
                assert_eq!(json["hasMore"], false);
                break;
            }
        }
    }
    let expected: Vec<u64> = ids.into_iter().rev().collect();
    assert_eq!(seen, expected);
    app.stop().await.drop_database().await;
}

async fn bad_query_parameters_are_400_invalid_query(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    for query in [
        "size=0",
        "size=1000",
        "page=-1",
        "page=1.5",
        "level=LOUD",
        "size=abc",
        "before=abc",
        "page=1&before=5",
        "page=99999999999",
        "type=%00",
        "source=a%00b",
        "from=yesterday",
    ] {
        let response = app.get(&format!("/api/events?{query}")).await;
        let json = response.assert_error(400, "invalid_query");
        assert!(json["message"].as_str().unwrap().len() > 5, "{query}");
    }
    // Empty filter values are skipped, wherever they are: `type=` and `type=A,` alike.
    for ignored in [
        "foo=bar",
        "type[]=GAS",
        "page=1&size=5&x=%ff",
        "type=",
        "type=A,",
        "type=A,,B",
    ] {
        assert_eq!(
            app.get(&format!("/api/events?{ignored}")).await.status,
            200,
            "{ignored}"
        );
    }
    app.stop().await.drop_database().await;
}

async fn one_event_by_id_matches_its_list_item_byte_for_byte(mode: Mode) {
    let app = TestApp::spawn_in(mode, &[]).await;
    let ids = post_mixed(&app, 3).await;
    let response = app.get(&format!("/api/events/{}", ids[1])).await;
    assert_eq!(response.status, 200);
    let list = app.get("/api/events?size=3").await;
    let list_text = String::from_utf8(list.body.to_vec()).unwrap();
    let one_text = String::from_utf8(response.body.to_vec()).unwrap();
    assert!(list_text.contains(&one_text), "{one_text} in {list_text}");
    assert_eq!(response.json()["id"], ids[1]);

    for missing in ["999999", "0", "abc", "-1", "1.0", "9007199254740993", "+1"] {
        app.get(&format!("/api/events/{missing}"))
            .await
            .assert_error(404, "not_found");
    }
    let response = app
        .send(
            http::Method::DELETE,
            &format!("/api/events/{}", ids[0]),
            None,
            "",
        )
        .await;
    response.assert_error(405, "method_not_allowed");
    app.stop().await.drop_database().await;
}

in_each_mode!(
    pages_come_newest_first_with_their_fields,
    filters_select_matching_events_only,
    time_ranges_filter_on_created_at,
    the_cursor_walks_every_event_once,
    bad_query_parameters_are_400_invalid_query,
    one_event_by_id_matches_its_list_item_byte_for_byte,
);
