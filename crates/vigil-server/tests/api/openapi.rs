//! `openapi.json` against the server: it is a valid OpenAPI 3.1 document, it documents
//! exactly the routes and methods the router serves, it is what `/api/openapi.json` serves,
//! and real responses (each status a test can trigger) match their documented schemas and
//! required headers.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use vigil_server::http::error::ErrorCode;
use vigil_server::http::{OPENAPI_JSON, ROUTES};

use crate::auth::{INGEST_TOKEN, READ_TOKEN};
use crate::helpers::{TestApp, TestResponse, event_json};
use crate::ws::{KEY, WsClient, upgrade_attempt};

/// The headers of a WebSocket upgrade with this key.
fn upgrade(key: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", key),
    ]
}

const OPERATION_METHODS: [&str; 8] = [
    "get", "head", "post", "put", "delete", "patch", "options", "trace",
];

fn spec() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Follows `$ref`s inside the document.
fn resolve<'a>(spec: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references: {reference}"));
        value = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} resolves"));
    }
    value
}

/// A JSON Schema 2020-12 validator for `schema`, with the document's components beside it
/// so that `#/components/...` references resolve.
fn validator(spec: &Value, schema: &Value) -> jsonschema::Validator {
    let mut document = schema.clone();
    if let Some(object) = document.as_object_mut() {
        object.insert("components".into(), spec["components"].clone());
    } else {
        document = json!({ "allOf": [schema], "components": spec["components"] });
    }
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&document)
        .unwrap_or_else(|error| panic!("schema compiles ({error}): {schema}"))
}

fn assert_valid(spec: &Value, schema: &Value, instance: &Value, what: &str) {
    let validator = validator(spec, schema);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {instance} does not match its documented schema: {errors:#?}"
    );
}

/// Checks a real response against the document: its status is documented for this path and
/// method, its required headers are present and match, and its JSON body matches the schema.
fn check_response(spec: &Value, path: &str, method: &str, response: &TestResponse) {
    let operation = &spec["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is documented");
    let status = response.status.as_u16().to_string();
    let documented = operation["responses"]
        .get(&status)
        .unwrap_or_else(|| panic!("{method} {path}: status {status} is documented"));
    check_documented_response(
        spec,
        resolve(spec, documented),
        response,
        &format!("{method} {path} {status}"),
    );
}

fn check_documented_response(
    spec: &Value,
    documented: &Value,
    response: &TestResponse,
    what: &str,
) {
    if let Some(headers) = documented["headers"].as_object() {
        for (name, header) in headers {
            let header = resolve(spec, header);
            let value = response.header(name);
            if header["required"] == true {
                assert!(value.is_some(), "{what}: header {name} is present");
            }
            if let Some(value) = value {
                let schema = &header["schema"];
                let instance = if resolve(spec, schema)["type"] == "integer" {
                    json!(value.parse::<u64>().expect("an integer header"))
                } else {
                    json!(value)
                };
                assert_valid(spec, schema, &instance, &format!("{what}: header {name}"));
            }
        }
    }
    match documented["content"].as_object() {
        Some(content) => {
            let content_type = response.header("content-type").expect("a content type");
            let media = content
                .get(content_type)
                .unwrap_or_else(|| panic!("{what}: content type {content_type} is documented"));
            if content_type == "application/json" {
                assert_valid(spec, &media["schema"], &response.json(), what);
            }
        }
        None => assert!(response.body.is_empty(), "{what}: no body is documented"),
    }
}

#[test]
fn openapi_json_is_a_valid_openapi_3_1_document() {
    let parsed = oas3::from_json(OPENAPI_JSON).expect("openapi.json parses as OpenAPI 3.1");
    assert!(parsed.openapi.starts_with("3.1"), "{}", parsed.openapi);
    // The 19 routed operations and the 2 CORS preflights.
    assert_eq!(parsed.operations().count(), 21);

    let spec = spec();
    // Every reference resolves, and every component schema compiles as JSON Schema 2020-12.
    fn walk(spec: &Value, value: &Value) {
        match value {
            Value::Object(object) => {
                if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
                    let pointer = reference.strip_prefix('#').expect("a local reference");
                    assert!(spec.pointer(pointer).is_some(), "{reference} resolves");
                }
                object.values().for_each(|value| walk(spec, value));
            }
            Value::Array(items) => items.iter().for_each(|value| walk(spec, value)),
            _ => {}
        }
    }
    walk(&spec, &spec);
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
        let _ = validator(&spec, schema);
        assert!(
            schema.get("description").is_some()
                || schema.get("properties").is_some()
                || schema.get("enum").is_some(),
            "{name} says what it is"
        );
    }
    // Every operation answers with X-Request-Id, and names an operation id once.
    let mut operation_ids = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().expect("an operation id");
            assert!(operation_ids.insert(id.to_owned()), "{id} is unique");
            for (status, response) in operation["responses"].as_object().unwrap() {
                let response = resolve(&spec, response);
                assert!(
                    response["headers"]["X-Request-Id"].is_object(),
                    "{method} {path} {status} documents X-Request-Id"
                );
            }
        }
    }
}

/// The CORS preflights the document describes (`options` operations): answered by the CORS
/// layer before routing, on any path, so they are not in the routing table.
fn documented_preflights(spec: &Value) -> BTreeSet<String> {
    spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, item)| item.get("options").is_some())
        .map(|(path, _)| path.clone())
        .collect()
}

#[test]
fn the_documented_routes_are_the_routing_table() {
    let spec = spec();
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|key| OPERATION_METHODS.contains(&key.as_str()) && *key != "options")
                .map(move |method| (path.clone(), method.to_ascii_uppercase()))
        })
        .collect();
    let preflights = documented_preflights(&spec);
    assert!(!preflights.is_empty(), "the CORS preflight is described");
    for path in &preflights {
        assert!(
            ROUTES.iter().any(|(route, _)| route == path),
            "a preflight on {path}, which is not a route"
        );
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .iter()
                .map(move |method| ((*path).to_owned(), (*method).to_owned()))
        })
        .collect();
    assert_eq!(documented, served);
}

/// The routing table is what the server serves: each listed method reaches a handler, and
/// every other method gets 405 with an `Allow` naming exactly the listed ones.
#[test]
fn the_documented_error_codes_are_the_servers_with_their_statuses() {
    let spec = spec();
    let documented: Vec<&str> =
        spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
            .as_array()
            .expect("the Error schema lists its codes")
            .iter()
            .map(|code| code.as_str().unwrap())
            .collect();
    let served: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(
        documented, served,
        "openapi.json lists exactly the server's codes, in order"
    );
    // Every status an error code answers with is a documented response of some operation.
    let statuses: BTreeSet<String> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|operation| operation.get("responses"))
        .flat_map(|responses| responses.as_object().unwrap().keys().cloned())
        .collect();
    // A 405 answers a method no operation has, so no operation can document it.
    for code in ErrorCode::ALL
        .into_iter()
        .filter(|code| *code != ErrorCode::MethodNotAllowed)
    {
        let status = code.status().as_u16().to_string();
        assert!(
            statuses.contains(&status),
            "{code:?} answers {status}, documented nowhere"
        );
    }
}

#[tokio::test]
async fn the_routing_table_is_what_the_server_serves() {
    let app = TestApp::spawn().await;
    for (pattern, methods) in ROUTES {
        let mut path = pattern.replace("{id}", "1").replace("{name}", "app.js");
        if path == "/api/events/stream" {
            // A refused stream: an accepted one is a response that never ends.
            path.push_str("?level=LOUD");
        }
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let response = app
                .send(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &path,
                    Some("application/json"),
                    "",
                )
                .await;
            if methods.contains(&method) {
                assert_ne!(response.status, 405, "{method} {pattern} is served");
                if response.status == 404 && method != "HEAD" {
                    let json = response.json();
                    assert_ne!(json["message"], "no such route", "{method} {pattern}");
                }
            } else {
                if method != "HEAD" {
                    response.assert_error(405, "method_not_allowed");
                } else {
                    assert_eq!(response.status, 405, "{method} {pattern}");
                }
                let allowed: BTreeSet<&str> = response
                    .header("allow")
                    .expect("405 names the allowed methods")
                    .split(", ")
                    .collect();
                assert_eq!(allowed, methods.iter().copied().collect(), "{pattern}");
            }
        }
    }
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn the_server_serves_the_document_in_the_repository() {
    let app = TestApp::spawn().await;
    let response = app.get("/api/openapi.json").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.body, OPENAPI_JSON.as_bytes());
    check_response(&spec(), "/api/openapi.json", "get", &response);
    app.stop().await.drop_database().await;
}

async fn post(app: &TestApp, content_type: &str, body: impl Into<Bytes>) -> TestResponse {
    app.send(Method::POST, "/api/events", Some(content_type), body)
        .await
}

#[tokio::test]
async fn real_responses_match_their_documented_schemas() {
    let spec = spec();
    let app = TestApp::spawn_with(&["--max-bulk-events", "3", "--ws-max-clients", "1"]).await;
    let check = |path: &'static str, method: &'static str, response: TestResponse| {
        check_response(&spec, path, method, &response);
        response
    };

    check("/api/health", "get", app.get("/api/health").await);
    check("/api/ready", "get", app.get("/api/ready").await);
    check(
        "/api/health",
        "head",
        app.send(Method::HEAD, "/api/health", None, "").await,
    );

    // 201, single and bulk (array and NDJSON).
    let single = check(
        "/api/events",
        "post",
        app.post_json(r#"{"source":"s1","type":"GAS","level":"WARN","payload":{"ppm":1e3,"big":123456789012345678901234567890},"occurredAt":"2026-11-24T06:00:00.5+01:00"}"#).await,
    );
    assert_eq!(single.status, 201);
    assert!(single.json().get("id").is_some());
    let bulk = check(
        "/api/events",
        "post",
        app.post_json(format!("[{},{}]", event_json("s2"), event_json("s3")))
            .await,
    );
    assert_eq!(bulk.status, 201);
    let ndjson = check(
        "/api/events",
        "post",
        post(
            &app,
            "application/x-ndjson",
            format!("{}\r\n\n", event_json("s4")),
        )
        .await,
    );
    assert_eq!(ndjson.ids().len(), 1);
    let id = single.json()["id"].as_u64().unwrap();

    // 200: a list page (cache rule off without Redis), a cursor page, one event, HEAD.
    let page = check("/api/events", "get", app.get("/api/events?size=2").await);
    assert_eq!(page.status, 200);
    assert_eq!(page.json()["items"].as_array().unwrap().len(), 2);
    let cursor = check(
        "/api/events",
        "get",
        app.get("/api/events?before=9007199254740991&size=3&level=WARN")
            .await,
    );
    assert!(cursor.json().get("nextBefore").is_some());
    let one = check(
        "/api/events/{id}",
        "get",
        app.get(&format!("/api/events/{id}")).await,
    );
    assert_eq!(one.status, 200);
    assert_eq!(
        one.json()["payload"]["big"].as_f64(),
        Some(1.2345678901234568e29)
    );
    check(
        "/api/events",
        "head",
        app.send(Method::HEAD, "/api/events", None, "").await,
    );

    // Each error a client can trigger.
    let errors: Vec<(&str, &str, TestResponse, u16, &str)> = vec![
        (
            "/api/events",
            "post",
            app.post_json("{").await,
            400,
            "invalid_json",
        ),
        (
            "/api/events",
            "post",
            app.post_json(r#"[{"source":"","type":"T","level":"INFO"}]"#)
                .await,
            400,
            "validation_failed",
        ),
        (
            "/api/events",
            "post",
            app.post_json(format!("[{}]", [event_json("x").as_str(); 4].join(",")))
                .await,
            413,
            "payload_too_large",
        ),
        (
            "/api/events",
            "post",
            post(&app, "text/plain", event_json("x")).await,
            415,
            "unsupported_media_type",
        ),
        (
            "/api/events",
            "get",
            app.get("/api/events?size=0").await,
            400,
            "invalid_query",
        ),
        (
            "/api/events/{id}",
            "get",
            app.get("/api/events/999999").await,
            404,
            "not_found",
        ),
        ("/ws", "get", app.get("/ws").await, 426, "upgrade_required"),
        (
            "/ws",
            "get",
            upgrade_attempt(&app, "/ws", &upgrade("short")).await,
            400,
            "invalid_upgrade",
        ),
        (
            "/ws",
            "get",
            upgrade_attempt(&app, "/ws?level=LOUD", &upgrade(KEY)).await,
            400,
            "invalid_query",
        ),
    ];
    for (path, method, response, status, code) in &errors {
        response.assert_error(*status, code);
        check_response(&spec, path, method, response);
    }
    let details = &errors[1].2.json()["details"];
    assert_eq!(details[0]["index"], 0);

    // 503 overloaded: the WebSocket client cap is 1.
    let _first = WsClient::connect(app.addr, "/ws").await;
    let refused = upgrade_attempt(&app, "/ws", &upgrade(KEY)).await;
    refused.assert_error(503, "overloaded");
    check_response(&spec, "/ws", "get", &refused);

    // Errors outside any operation: the shared 404 and 405 responses.
    let unknown = app.get("/nowhere").await;
    unknown.assert_error(404, "not_found");
    check_documented_response(
        &spec,
        &spec["components"]["responses"]["NotFound"],
        &unknown,
        "404",
    );
    let wrong = app.send(Method::DELETE, "/api/events", None, "").await;
    wrong.assert_error(405, "method_not_allowed");
    check_documented_response(
        &spec,
        &spec["components"]["responses"]["MethodNotAllowed"],
        &wrong,
        "405",
    );

    app.stop().await.drop_database().await;
}

/// The access rules' answers (401, 403, 429, and the CORS headers on a success) match their
/// documentation.
#[tokio::test]
async fn security_responses_match_their_documented_schemas() {
    let spec = spec();
    let app = TestApp::spawn_with(&[
        "--ingest-tokens",
        INGEST_TOKEN,
        "--read-tokens",
        READ_TOKEN,
        "--ingest-rate-per-token",
        "0.0003",
        "--ingest-rate-burst",
        "1",
        "--cors-origins",
        "https://a.test",
        "--ws-origins",
        "https://a.test",
        "--ws-max-clients-per-addr",
        "1",
    ])
    .await;
    let ingest = format!("Bearer {INGEST_TOKEN}");
    let read = format!("Bearer {READ_TOKEN}");
    let post = |authorization: Option<&'static str>| {
        let app = &app;
        let authorization = authorization.map(|token| format!("Bearer {token}"));
        async move {
            let mut headers = vec![
                ("content-type", "application/json"),
                ("origin", "https://a.test"),
            ];
            if let Some(authorization) = &authorization {
                headers.push(("authorization", authorization.as_str()));
            }
            app.send_with(Method::POST, "/api/events", &headers, event_json("s"))
                .await
        }
    };
    let cases = [
        ("/api/events", "post", post(None).await, 401),
        ("/api/events", "post", post(Some(READ_TOKEN)).await, 403),
        ("/api/events", "post", post(Some(INGEST_TOKEN)).await, 201),
        ("/api/events", "post", post(Some(INGEST_TOKEN)).await, 429),
        ("/api/events", "get", app.get("/api/events").await, 401),
        (
            "/api/events",
            "get",
            app.send_with(
                Method::GET,
                "/api/events",
                &[("authorization", &ingest)],
                "",
            )
            .await,
            403,
        ),
        (
            "/api/events",
            "get",
            app.send_with(
                Method::GET,
                "/api/events",
                &[("authorization", &read), ("origin", "https://a.test")],
                "",
            )
            .await,
            200,
        ),
        (
            "/api/events",
            "head",
            app.send_with(Method::HEAD, "/api/events", &[], "").await,
            401,
        ),
        (
            "/api/events/{id}",
            "get",
            app.get("/api/events/1").await,
            401,
        ),
        (
            "/ws",
            "get",
            upgrade_attempt(&app, "/ws", &upgrade(KEY)).await,
            401,
        ),
    ];
    for (path, method, response, status) in &cases {
        assert_eq!(response.status, *status, "{method} {path}");
        check_response(&spec, path, method, response);
    }
    assert_eq!(
        cases[2].2.header("access-control-allow-origin"),
        Some("https://a.test")
    );
    let mut with_token = upgrade(KEY).to_vec();
    with_token.push(("authorization", &read));
    let mut from_elsewhere = with_token.clone();
    from_elsewhere.push(("origin", "https://b.test"));
    let refused = upgrade_attempt(&app, "/ws", &from_elsewhere).await;
    refused.assert_error(403, "forbidden");
    check_response(&spec, "/ws", "get", &refused);
    let _first = WsClient::connect_with(app.addr, "/ws", &[("authorization", &read)]).await;
    let limited = upgrade_attempt(&app, "/ws", &with_token).await;
    limited.assert_error(429, "rate_limited");
    check_response(&spec, "/ws", "get", &limited);

    // The preflights: 204 from the allowed origin, 405 from another, as documented.
    for path in documented_preflights(&spec) {
        let concrete = path.replace("{id}", "1");
        for (origin, status) in [("https://a.test", 204), ("https://b.test", 405)] {
            let answer = app
                .send_with(
                    Method::OPTIONS,
                    &concrete,
                    &[("origin", origin), ("access-control-request-method", "GET")],
                    "",
                )
                .await;
            assert_eq!(answer.status.as_u16(), status, "{path} from {origin}");
            check_response(&spec, &path, "options", &answer);
        }
    }
    app.stop().await.drop_database().await;
}

/// The idempotency answers (a replayed 201 with its header, 409, 422, a bad key's 400) match
/// their documentation.
#[tokio::test]
async fn idempotency_responses_match_their_documented_schemas() {
    let spec = spec();
    let app = TestApp::spawn().await;
    let keyed = |key: &'static str, source: &'static str| {
        let app = &app;
        async move {
            app.send_with(
                Method::POST,
                "/api/events",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                event_json(source),
            )
            .await
        }
    };
    let first = keyed("doc-1", "a").await;
    let replay = keyed("doc-1", "a").await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let mismatch = keyed("doc-1", "b").await;
    let bad_key = keyed("tab\there", "a").await;
    for (response, status) in [(first, 201), (replay, 201), (mismatch, 422), (bad_key, 400)] {
        assert_eq!(response.status.as_u16(), status);
        check_response(&spec, "/api/events", "post", &response);
    }
    app.stop().await.drop_database().await;
}
