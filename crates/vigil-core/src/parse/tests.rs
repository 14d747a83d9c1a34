use super::*;
use proptest::prelude::*;

fn parser() -> EventParser {
    EventParser::new(Limits::default())
}

fn parse_json(body: &str) -> Result<ParsedBody, ParseError> {
    parser().parse(body.as_bytes(), BodyFormat::Json)
}

fn single(body: &str) -> NewEvent {
    let parsed = parse_json(body).unwrap_or_else(|e| panic!("{body}: {e:?}"));
    assert!(!parsed.bulk);
    assert_eq!(parsed.events.len(), 1);
    parsed.events.into_iter().next().unwrap()
}

/// The `(field, index)` pairs of a validation failure.
fn problems(body: &str, format: BodyFormat) -> Vec<(Option<usize>, String)> {
    match parser().parse(body.as_bytes(), format) {
        Err(ParseError::Validation(details)) => {
            details.into_iter().map(|d| (d.index, d.field)).collect()
        }
        other => panic!("{body}: expected a validation error, got {other:?}"),
    }
}

#[test]
fn accepts_good_events() {
    let event =
        single(r#"{"source":"sensor-1","type":"GAS","level":"WARN","payload":{"ppm":120}}"#);
    assert_eq!(event.source, "sensor-1");
    assert_eq!(event.event_type, "GAS");
    assert_eq!(event.level, Level::Warn);
    assert_eq!(event.payload.as_deref(), Some(r#"{"ppm":120}"#));
    assert_eq!(event.occurred_at, None);

    let cases = [
        r#"{"source":"s","type":"T","level":"INFO"}"#,
        r#"{"level":"CRITICAL","type":"a.b:c-d_e","source":"é ü 北"}"#,
        r#"{"source":"s","type":"T","level":"ERROR","payload":null,"occurredAt":null}"#,
        r#"{"source":"s","type":"T","level":"ERROR","payload":{},"occurredAt":"2026-01-01T00:00:00+01:00"}"#,
        "  \r\n {\"source\" : \"s\" ,\n \"type\":\"T\",\t\"level\":\"INFO\"}  \n",
        r#"{"sour\u0063e":"s\"q","type":"T","level":"INFO"}"#,
    ];
    for body in cases {
        single(body);
    }
}

#[test]
fn keeps_the_payload_text_minus_insignificant_whitespace() {
    let cases = [
        (r#"{"ppm":120}"#, r#"{"ppm":120}"#),
        (
            "{ \"a\" : [ 1 , 2.50 , 1e3 ] ,\n\t\"b\" : { } }",
            r#"{"a":[1,2.50,1e3],"b":{}}"#,
        ),
        (
            r#"{"s":"keep  these \" spaces \\ \u00e9 ]}"}"#,
            r#"{"s":"keep  these \" spaces \\ \u00e9 ]}"}"#,
        ),
        (
            r#"{"deep":{"x":[{"y":null},true,false,-0.0]}}"#,
            r#"{"deep":{"x":[{"y":null},true,false,-0.0]}}"#,
        ),
    ];
    for (payload, expected) in cases {
        let body = format!(r#"{{"source":"s","type":"T","payload":{payload},"level":"INFO"}}"#);
        assert_eq!(
            single(&body).payload.as_deref(),
            Some(expected),
            "{payload}"
        );
    }
}

#[test]
fn normalises_occurred_at_to_utc() {
    let event = single(
        r#"{"source":"s","type":"T","level":"INFO","occurredAt":"2026-11-24T07:12:09.1234+02:00"}"#,
    );
    assert_eq!(
        event.occurred_at.unwrap().to_string(),
        "2026-11-24T05:12:09.123Z"
    );
}

#[test]
fn refuses_bad_events_naming_the_field() {
    let long_source = format!(
        r#"{{"source":"{}","type":"T","level":"INFO"}}"#,
        "x".repeat(129)
    );
    let long_type = format!(
        r#"{{"source":"s","type":"{}","level":"INFO"}}"#,
        "T".repeat(65)
    );
    let big_payload = format!(
        r#"{{"source":"s","type":"T","level":"INFO","payload":{{"b":"{}"}}}}"#,
        "x".repeat(16 * 1024)
    );
    let deep_payload = format!(
        r#"{{"source":"s","type":"T","level":"INFO","payload":{}1{}}}"#,
        r#"{"a":"#.repeat(33),
        "}".repeat(33)
    );
    let cases: Vec<(&str, &str)> = vec![
        (r#"{"type":"T","level":"INFO"}"#, "source"),
        (r#"{"source":"s","level":"INFO"}"#, "type"),
        (r#"{"source":"s","type":"T"}"#, "level"),
        (r#"{"source":"","type":"T","level":"INFO"}"#, "source"),
        (r#"{"source":"a\nb","type":"T","level":"INFO"}"#, "source"),
        (
            r#"{"source":"a\u0000b","type":"T","level":"INFO"}"#,
            "source",
        ),
        (r#"{"source":7,"type":"T","level":"INFO"}"#, "source"),
        (&long_source, "source"),
        (r#"{"source":"s","type":"","level":"INFO"}"#, "type"),
        (r#"{"source":"s","type":"GAS LEAK","level":"INFO"}"#, "type"),
        (r#"{"source":"s","type":"ГАЗ","level":"INFO"}"#, "type"),
        (r#"{"source":"s","type":["T"],"level":"INFO"}"#, "type"),
        (&long_type, "type"),
        (r#"{"source":"s","type":"T","level":"warn"}"#, "level"),
        (r#"{"source":"s","type":"T","level":"LOUD"}"#, "level"),
        (r#"{"source":"s","type":"T","level":1}"#, "level"),
        (
            r#"{"source":"s","type":"T","level":"INFO","payload":[1]}"#,
            "payload",
        ),
        (
            r#"{"source":"s","type":"T","level":"INFO","payload":"{}"}"#,
            "payload",
        ),
        (
            r#"{"source":"s","type":"T","level":"INFO","payload":{"a":1,"a":2}}"#,
            "payload",
        ),
        (
            r#"{"source":"s","type":"T","level":"INFO","payload":{"x":{"b":1,"c":2,"b":3}}}"#,
            "payload",
        ),
        (&big_payload, "payload"),
        (&deep_payload, "payload"),
        (
            r#"{"source":"s","type":"T","level":"INFO","occurredAt":"yesterday"}"#,
            "occurredAt",
        ),
        (
            r#"{"source":"s","type":"T","level":"INFO","occurredAt":1732425129}"#,
            "occurredAt",
        ),
        (
            r#"{"source":"s","type":"T","level":"INFO","occurredAt":"2026-02-30T00:00:00Z"}"#,
            "occurredAt",
        ),
        (
            r#"{"source":"s","type":"T","level":"INFO","extra":1}"#,
            "extra",
        ),
        (
            r#"{"source":"s","source":"t","type":"T","level":"INFO"}"#,
            "source",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(
            problems(body, BodyFormat::Json),
            vec![(None, field.to_owned())],
            "{body}"
        );
    }
}

#[test]
fn payload_at_the_limits_is_accepted() {
    let at_depth = format!(
        r#"{{"source":"s","type":"T","level":"INFO","payload":{}1{}}}"#,
        r#"{"a":"#.repeat(31),
        "}".repeat(31)
    );
    single(&at_depth);
    // One more is refused by validation (MariaDB's JSON_VALID would refuse it at insert).
    let too_deep = format!(
        r#"{{"source":"s","type":"T","level":"INFO","payload":{}[]{}}}"#,
        r#"{"a":"#.repeat(31),
        "}".repeat(31)
    );
    assert_eq!(
        problems(&too_deep, BodyFormat::Json),
        vec![(None, "payload".to_owned())]
    );
    // 16 KiB exactly once minified: `{"b":"…"}` is 8 bytes of framing.
    let at_size = format!(
        r#"{{"source":"s","type":"T","level":"INFO","payload":{{ "b" : "{}" }}}}"#,
        "x".repeat(16 * 1024 - 8)
    );
    assert_eq!(single(&at_size).payload.unwrap().len(), 16 * 1024);
}

#[test]
fn lists_every_problem_of_an_event() {
    let found = problems(r#"{"source":1,"level":"x","bogus":true}"#, BodyFormat::Json);
    let fields: Vec<&str> = found.iter().map(|(_, f)| f.as_str()).collect();
    assert_eq!(fields, ["source", "level", "bogus", "type"]);
}

#[test]
fn malformed_json_is_invalid_json() {
    for body in [
        "{",
        r#"{"source":"s""#,
        r#"{"source":"s",}"#,
        "{'source':'s'}",
        r#"{"source":"s"} {"source":"t"}"#,
        "[1,]",
        "nul",
        "\u{feff}{}",
    ] {
        assert!(
            matches!(parse_json(body), Err(ParseError::InvalidJson { .. })),
            "{body:?} gave {:?}",
            parse_json(body)
        );
    }
    let invalid_utf8 = b"{\"source\":\"\xff\",\"type\":\"T\",\"level\":\"INFO\"}";
    assert!(matches!(
        parser().parse(invalid_utf8, BodyFormat::Json),
        Err(ParseError::InvalidJson { .. })
    ));
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let brackets = "[".repeat(1_000_000);
    assert!(matches!(
        parse_json(&brackets),
        Err(ParseError::InvalidJson { .. })
    ));
    let objects = format!("{}{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    assert!(matches!(
        parse_json(&objects),
        Err(ParseError::InvalidJson { .. })
    ));
}

#[test]
fn non_objects_are_refused() {
    for body in ["1", "\"event\"", "null", "true"] {
        assert_eq!(
            problems(body, BodyFormat::Json),
            vec![(None, "$".to_owned())],
            "{body}"
        );
    }
    let found = problems(
        r#"[{"source":"s","type":"T","level":"INFO"},7,[]]"#,
        BodyFormat::Json,
    );
    assert_eq!(
        found,
        vec![(Some(1), "$".to_owned()), (Some(2), "$".to_owned())]
    );
}

#[test]
fn empty_bodies_are_refused() {
    for body in ["", "  \n", "[]", " [ ] "] {
        assert_eq!(parse_json(body), Err(ParseError::Empty), "{body:?}");
    }
    for body in ["", "\n\n", "\r\n  \r\n"] {
        assert_eq!(
            parser().parse(body.as_bytes(), BodyFormat::NdJson),
            Err(ParseError::Empty)
        );
    }
}

#[test]
fn arrays_are_bulk_even_with_one_event() {
    let parsed = parse_json(r#"[{"source":"s","type":"T","level":"INFO"}]"#).unwrap();
    assert!(parsed.bulk);
    assert_eq!(parsed.events.len(), 1);
}

#[test]
fn bulk_is_all_or_nothing_and_names_the_item() {
    let body = r#"[
        {"source":"a","type":"T","level":"INFO","payload":{"n":1}},
        {"source":"b","type":"T","level":"NOPE"},
        {"source":"c","type":"T","level":"INFO","payload":{"n":3}},
        {"source":"d","type":"T T","level":"INFO"}
    ]"#;
    assert_eq!(
        problems(body, BodyFormat::Json),
        vec![(Some(1), "level".to_owned()), (Some(3), "type".to_owned())]
    );
}

#[test]
fn bulk_payloads_map_to_their_own_events() {
    let body = r#"[{"source":"a","type":"T","level":"INFO","payload":{"n":[1, {"k":"}"}]}},
                   {"payload":{"n" : 2},"source":"b","type":"T","level":"WARN"},
                   {"source":"c","type":"T","level":"INFO"},
                   {"source":"d","type":"T","level":"INFO","payload":{"n":4}}]"#;
    let parsed = parse_json(body).unwrap();
    let payloads: Vec<Option<&str>> = parsed.events.iter().map(|e| e.payload.as_deref()).collect();
    assert_eq!(
        payloads,
        [
            Some(r#"{"n":[1,{"k":"}"}]}"#),
            Some(r#"{"n":2}"#),
            None,
            Some(r#"{"n":4}"#)
        ]
    );
}

#[test]
fn ndjson_tolerates_blank_lines_and_crlf() {
    let body = "{\"source\":\"a\",\"type\":\"T\",\"level\":\"INFO\"}\r\n\r\n   \n\
                {\"source\":\"b\",\"type\":\"T\",\"level\":\"WARN\",\"payload\":{\"x\": 1}}\r\n";
    let parsed = parser().parse(body.as_bytes(), BodyFormat::NdJson).unwrap();
    assert!(parsed.bulk);
    let sources: Vec<&str> = parsed.events.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["a", "b"]);
    assert_eq!(parsed.events[1].payload.as_deref(), Some(r#"{"x":1}"#));
}

#[test]
fn ndjson_names_the_bad_item_and_line() {
    let body = "{\"source\":\"a\",\"type\":\"T\",\"level\":\"INFO\"}\n\n[1]\n{\"source\":\"b\"}\n";
    let found = problems(body, BodyFormat::NdJson);
    assert_eq!(
        found,
        vec![
            (Some(1), "$".to_owned()),
            (Some(2), "type".to_owned()),
            (Some(2), "level".to_owned())
        ]
    );
    let broken = "{\"source\":\"a\",\"type\":\"T\",\"level\":\"INFO\"}\n{\"source\":\n";
    match parser().parse(broken.as_bytes(), BodyFormat::NdJson) {
        Err(ParseError::InvalidJson { message }) => {
            assert!(message.starts_with("line 2:"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bulk_over_the_event_limit_is_refused() {
    let limits = Limits {
        max_bulk_events: 3,
        ..Limits::default()
    };
    let event = r#"{"source":"s","type":"T","level":"INFO"}"#;
    let array = format!("[{}]", [event; 4].join(","));
    let ndjson = [event; 4].join("\n");
    let mut parser = EventParser::new(limits);
    assert_eq!(
        parser.parse(array.as_bytes(), BodyFormat::Json),
        Err(ParseError::TooManyEvents { max: 3 })
    );
    assert_eq!(
        parser.parse(ndjson.as_bytes(), BodyFormat::NdJson),
        Err(ParseError::TooManyEvents { max: 3 })
    );
    let three = format!("[{}]", [event; 3].join(","));
    assert_eq!(
        parser
            .parse(three.as_bytes(), BodyFormat::Json)
            .unwrap()
            .events
            .len(),
        3
    );
}

#[test]
fn a_reused_parser_gives_the_same_answers() {
    let mut parser = parser();
    let big = format!(
        r#"[{}]"#,
        vec![r#"{"source":"s","type":"T","level":"INFO","payload":{"a":"long string here"}}"#; 200]
            .join(",")
    );
    let small = r#"{"source":"x","type":"T","level":"INFO","payload":{"b":2}}"#;
    for _ in 0..3 {
        assert_eq!(
            parser
                .parse(big.as_bytes(), BodyFormat::Json)
                .unwrap()
                .events
                .len(),
            200
        );
        let event = parser
            .parse(small.as_bytes(), BodyFormat::Json)
            .unwrap()
            .events
            .remove(0);
        assert_eq!(event.payload.as_deref(), Some(r#"{"b":2}"#));
        assert!(parser.parse(b"{", BodyFormat::Json).is_err());
    }
}

/// A JSON value tree for generating payloads.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e12f64..1e12).prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z\\\\\"{}\\[\\] ]{0,6}", inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn no_input_panics_the_parser(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut parser = parser();
        let _ = parser.parse(&body, BodyFormat::Json);
        let _ = parser.parse(&body, BodyFormat::NdJson);
    }

    #[test]
    fn no_near_json_input_panics_the_parser(body in "[\\[\\]{}:,\" a-z0-9\\\\\n]{0,256}") {
        let mut parser = parser();
        let _ = parser.parse(body.as_bytes(), BodyFormat::Json);
        let _ = parser.parse(body.as_bytes(), BodyFormat::NdJson);
    }

    #[test]
    fn payloads_survive_as_their_compact_text(
        fields in prop::collection::btree_map("[a-z]{1,5}", json_value(), 0..5),
        pretty in any::<bool>(),
    ) {
        let payload = serde_json::Value::Object(fields.into_iter().collect());
        let compact = serde_json::to_string(&payload).unwrap();
        let sent = if pretty { serde_json::to_string_pretty(&payload).unwrap() } else { compact.clone() };
        let body = format!(r#"[{{"source":"s","type":"T","level":"INFO","payload":{sent}}},{{"payload":{sent},"source":"t","type":"T","level":"WARN"}}]"#);
        let parsed = parser().parse(body.as_bytes(), BodyFormat::Json).unwrap();
        for event in &parsed.events {
            prop_assert_eq!(event.payload.as_deref(), Some(compact.as_str()));
        }
    }
}

#[test]
fn a_bad_escape_is_reported_where_it_is() {
    for (body, at) in [
        (r#"{"source":"\ud800x","type":"GAS","level":"WARN"}"#, 11),
        (r#"{"source":"ok \udc00","type":"GAS","level":"WARN"}"#, 14),
        (r#"{"source":"\u12","type":"GAS","level":"WARN"}"#, 11),
        (r#"{"source":"a\qb","type":"GAS","level":"WARN"}"#, 12),
    ] {
        let Err(ParseError::InvalidJson { message }) = parse_json(body) else {
            panic!("{body} was accepted");
        };
        assert!(message.contains(&format!("byte {at}")), "{body}: {message}");
    }
    // A surrogate pair is one character, not an error.
    assert_eq!(
        single(r#"{"source":"\ud83d\ude00","type":"GAS","level":"WARN"}"#).source,
        "😀"
    );
    assert_eq!(first_bad_escape(br#""\ud83d\ude00 \" \\ \/""#), None);
}
