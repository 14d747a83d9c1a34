//! `GET /metrics`: what a scrape shows after real traffic, counted exactly (every test app has
//! its own counters), and the separate metrics listener.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use http::Method;

use crate::helpers::{TestApp, TestResponse, bulk_json, event_json};
use crate::ws::WsClient;

/// One scrape, parsed: sample lines and the families their `# TYPE` lines declare.
pub struct Scrape {
    /// `name{labels}` (labels sorted) → value.
    samples: BTreeMap<String, f64>,
    /// Family names with their type (`counter`, `gauge`, `histogram`, `info`).
    pub families: BTreeMap<String, String>,
    pub text: String,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        let mut families = BTreeMap::new();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
                families.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
            samples.insert(canonical(series), value);
        }
        Scrape {
            samples,
            families,
            text: text.to_owned(),
        }
    }

    /// The sample `name` with exactly these labels, or 0 when absent (counters not yet
    /// touched are not all listed).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut series = name.to_owned();
        if !labels.is_empty() {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            series = format!("{name}{{{}}}", pairs.join(","));
        }
        self.samples
            .get(&canonical(&series))
            .copied()
            .unwrap_or(0.0)
    }

    /// Every label value any sample carries for `label`.
    pub fn label_values(&self, label: &str) -> BTreeSet<String> {
        let needle = format!("{label}=\"");
        self.samples
            .keys()
            .filter_map(|series| {
                let start = series.find(&needle)? + needle.len();
                let end = series[start..].find('"')? + start;
                Some(series[start..end].to_owned())
            })
            .collect()
    }
}

/// `name{b="2",a="1"}` → `name{a="1",b="2"}`.
fn canonical(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_owned();
    };
    let labels = labels.trim_end_matches('}');
    let mut pairs: Vec<&str> = labels
        .split("\",")
        .map(|p| p.trim_end_matches('"'))
        .collect();
    pairs.sort_unstable();
    let pairs: Vec<String> = pairs.iter().map(|p| format!("{p}\"")).collect();
    format!("{name}{{{}}}", pairs.join(","))
}

pub async fn scrape_at(app: &TestApp, addr: SocketAddr) -> (TestResponse, Scrape) {
    let request = http::Request::builder()
        .uri(format!("http://{addr}/metrics"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = app.request(request).await;
    assert_eq!(response.status, 200);
    let scrape = Scrape::parse(std::str::from_utf8(&response.body).expect("utf-8 metrics"));
    (response, scrape)
}

pub async fn scrape(app: &TestApp) -> Scrape {
    scrape_at(app, app.addr).await.1
}

fn requests(scrape: &Scrape, route: &str, method: &str, status: &str) -> f64 {
    scrape.value(
        "vigil_http_requests_total",
        &[("method", method), ("route", route), ("status", status)],
    )
}

fn rejected(scrape: &Scrape, reason: &str) -> f64 {
    scrape.value("vigil_ingest_rejected_total", &[("reason", reason)])
}

#[tokio::test]
async fn metrics_count_requests_events_rejections_reads_and_websocket_frames() {
    let app = TestApp::spawn_with_redis(&[]).await;
    let mut client = WsClient::connect(app.addr, "/ws").await;

    let mut ids = Vec::new();
    for n in 0..3 {
        let response = app.post_json(event_json(&format!("metrics-{n}"))).await;
        assert_eq!(response.status, 201);
        ids.push(response.json()["id"].as_u64().unwrap());
    }
    let bulk = app
        .post_json(bulk_json(&["m-a".to_owned(), "m-b".to_owned()]))
        .await;
    assert_eq!(bulk.status, 201);
    for _ in 0..5 {
        client.next_text().await;
    }

    app.post_json("{").await.assert_error(400, "invalid_json");
    app.post_json(r#"{"source":"s","type":"GAS","level":"LOUD"}"#)
        .await
        .assert_error(400, "validation_failed");
    app.post_json(r#"[{"source":"s","type":"GAS","level":"INFO"},{"source":"s"}]"#)
        .await
        .assert_error(400, "validation_failed");
    app.send(Method::POST, "/api/events", Some("text/plain"), "x")
        .await
        .assert_error(415, "unsupported_media_type");

    let cacheable_reads = 3;
    for _ in 0..cacheable_reads {
        assert_eq!(app.get("/api/events?size=2").await.status, 200);
    }
    assert_eq!(app.get("/api/events?type=GAS").await.status, 200);
    assert_eq!(
        app.get(&format!("/api/events/{}", ids[0])).await.status,
        200
    );
    assert_eq!(app.get("/api/events/123456789").await.status, 404);
    assert_eq!(app.get("/no/such/route").await.status, 404);

    let (response, scrape) = scrape_at(&app, app.addr).await;
    assert_eq!(
        response.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(scrape.text.ends_with("# EOF\n"), "{}", scrape.text);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        scrape.value("vigil_build_info", &[("version", version)]),
        1.0
    );

    // HTTP: by route pattern, method and status; never a raw path.
    assert_eq!(requests(&scrape, "/api/events", "POST", "201"), 4.0);
    assert_eq!(requests(&scrape, "/api/events", "POST", "400"), 3.0);
    assert_eq!(requests(&scrape, "/api/events", "POST", "415"), 1.0);
    assert_eq!(requests(&scrape, "/api/events", "GET", "200"), 4.0);
    assert_eq!(requests(&scrape, "/api/events/{id}", "GET", "200"), 1.0);
    assert_eq!(requests(&scrape, "/api/events/{id}", "GET", "404"), 1.0);
    assert_eq!(requests(&scrape, "unmatched", "GET", "404"), 1.0);
    assert_eq!(requests(&scrape, "/ws", "GET", "101"), 1.0);
    let routes = scrape.label_values("route");
    assert!(
        routes
            .iter()
            .all(|route| !route.contains(char::is_numeric) && route != "/no/such/route"),
        "{routes:?}"
    );
    let post_latency = [("method", "POST"), ("route", "/api/events")];
    assert_eq!(
        scrape.value("vigil_http_request_duration_seconds_count", &post_latency),
        8.0
    );
    assert!(scrape.value("vigil_http_request_duration_seconds_sum", &post_latency) > 0.0);
    assert_eq!(
        scrape.value(
            "vigil_http_request_duration_seconds_bucket",
            &[("le", "+Inf"), ("method", "POST"), ("route", "/api/events")]
        ),
        8.0
    );

    // Ingest: accepted events, refusals by reason, batches.
    assert_eq!(scrape.value("vigil_events_accepted_total", &[]), 5.0);
    assert_eq!(rejected(&scrape, "invalid_json"), 1.0);
    assert_eq!(rejected(&scrape, "validation_failed"), 2.0);
    assert_eq!(rejected(&scrape, "unsupported_media_type"), 1.0);
    assert_eq!(rejected(&scrape, "overloaded"), 0.0);
    assert!(scrape.families.contains_key("vigil_ingest_rejected"));
    assert_eq!(scrape.value("vigil_ingest_queue_depth", &[]), 0.0);
    assert_eq!(scrape.value("vigil_ingest_queue_capacity", &[]), 50_000.0);
    let batches = scrape.value("vigil_batches_total", &[]);
    assert!((1.0..=4.0).contains(&batches), "{batches}");
    assert_eq!(scrape.value("vigil_batch_rows_count", &[]), batches);
    assert_eq!(scrape.value("vigil_batch_rows_sum", &[]), 5.0);
    assert_eq!(
        scrape.value("vigil_batch_flush_duration_seconds_count", &[]),
        batches
    );
    assert_eq!(
        scrape.value("vigil_db_errors_total", &[("operation", "write")]),
        0.0
    );

    // Cache: every cacheable read is a hit or a miss; the filtered read is neither.
    let hits = scrape.value("vigil_cache_hits_total", &[]);
    let misses = scrape.value("vigil_cache_misses_total", &[]);
    assert_eq!(
        hits + misses,
        f64::from(cacheable_reads),
        "{hits} + {misses}"
    );

    // Redis and the publisher. Its counter moves after Redis's reply, which may come after
    // subscribers (the client above) already got the events.
    let mut published = scrape.value("vigil_publisher_published_events_total", &[]);
    for _ in 0..100 {
        if published == 5.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        published = self::scrape(&app)
            .await
            .value("vigil_publisher_published_events_total", &[]);
    }
    assert_eq!(published, 5.0);
    assert_eq!(
        scrape.value("vigil_publisher_dropped_events_total", &[]),
        0.0
    );
    assert_eq!(
        scrape.value("vigil_redis_errors_total", &[("operation", "publish")]),
        0.0
    );

    // WebSocket.
    assert_eq!(scrape.value("vigil_ws_clients", &[]), 1.0);
    assert_eq!(scrape.value("vigil_ws_frames_sent_total", &[]), 5.0);
    assert_eq!(scrape.value("vigil_ws_slow_consumer_drops_total", &[]), 0.0);
    assert_eq!(scrape.value("vigil_ws_bridge_reconnects_total", &[]), 0.0);
    assert!(scrape.families.contains_key("vigil_ws_backfilled_events"));

    drop(client);
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn scrapes_count_themselves_on_the_next_scrape() {
    let app = TestApp::spawn().await;
    let first = scrape(&app).await;
    assert_eq!(requests(&first, "/metrics", "GET", "200"), 0.0);
    let second = scrape(&app).await;
    assert_eq!(requests(&second, "/metrics", "GET", "200"), 1.0);
    // Without Redis the Redis families are still declared, at zero.
    assert_eq!(second.value("vigil_cache_hits_total", &[]), 0.0);
    assert!(second.families.contains_key("vigil_redis_errors"));
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn with_a_metrics_address_metrics_are_served_there_only() {
    let app = TestApp::spawn_with(&["--metrics-addr", "127.0.0.1:0"]).await;
    let metrics_addr = app.metrics_addr.expect("a metrics listener");
    assert_ne!(metrics_addr, app.addr);
    assert_eq!(app.post_json(event_json("elsewhere")).await.status, 201);

    app.get("/metrics").await.assert_error(404, "not_found");
    let (_, scrape) = scrape_at(&app, metrics_addr).await;
    assert_eq!(scrape.value("vigil_events_accepted_total", &[]), 1.0);
    assert_eq!(requests(&scrape, "/api/events", "POST", "201"), 1.0);
    assert_eq!(requests(&scrape, "/metrics", "GET", "404"), 1.0);

    // The metrics listener answers as the API does: request ids, 404 elsewhere, 405 with
    // Allow for another method.
    let at_metrics = |method: http::Method, path: &str| {
        http::Request::builder()
            .method(method)
            .uri(format!("http://{metrics_addr}{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let elsewhere = app
        .request(at_metrics(http::Method::GET, "/api/health"))
        .await;
    elsewhere.assert_error(404, "not_found");
    let posted = app
        .request(at_metrics(http::Method::POST, "/metrics"))
        .await;
    posted.assert_error(405, "method_not_allowed");
    assert_eq!(posted.header("allow"), Some("GET, HEAD"));
    let scraped = app.request(at_metrics(http::Method::GET, "/metrics")).await;
    assert_eq!(scraped.status, 200);
    assert!(!scraped.request_id().is_empty());
    app.stop().await.drop_database().await;
}
