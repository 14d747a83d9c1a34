//! A corpus-and-mutation fuzz run over everything vigil-core reads from clients: request
//! bodies ([`EventParser`]), list queries ([`EventQuery`]) and `/ws` queries
//! ([`parse_subscribe_query`]).
//!
//! `cargo fuzz` needs a nightly toolchain (libFuzzer's sanitizer coverage flags), which CI's
//! stable-only machines do not have; this runs on stable instead: every file of
//! `fuzz/corpus/<target>/` as it is, then random mutations of them (bit flips, interesting
//! tokens, truncations, splices, duplicated ranges) and random bytes, until
//! `VIGIL_FUZZ_SECONDS` (default 2) have passed. `VIGIL_FUZZ_SEED` replays a run. Properties:
//!
//! - nothing panics;
//! - an accepted body's events are within the limits (payload size and nesting included, as
//!   MariaDB's `JSON_VALID` would check them), print to JSON that a reference parser reads
//!   back to the same fields, and that JSON, posted again, parses to the same events;
//! - an accepted list query is within its bounds, and printed back to a query string it
//!   parses to the same query; an accepted `since` is a valid event id.
//!
//! A failing input is written to `$CARGO_TARGET_TMPDIR/fuzz-failure-<target>.bin`; add it to
//! the corpus once fixed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_core::{
    BodyFormat, EventParser, EventQuery, Limits, MAX_ID_EXCLUSIVE, NewEvent, UnixMillis,
    parse_subscribe_query, write_json_string,
};

/// Fragments that tend to reach edge cases once spliced into an input.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"123456789012345678901234567890",
    b"\\u0000",
    b"\\ud800",
    b"\\uDC00",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\"payload\":",
    b"\"occurredAt\":\"",
    b"2024-02-29T24:00:00Z",
    b"\"source\":\"",
    b"\"level\":\"INFO\"",
    b"{\"a\":",
    b"%",
    b"%00",
    b"%FF",
    b"&",
    b"=",
    b"+",
    b",,",
    b"page=",
    b"size=",
    b"before=",
    b"since=",
    b"type=",
    b"source=",
    b"\0",
];

/// xorshift64*: small, deterministic from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            2 => out.truncate(at),
            3 if at < out.len() => {
                let end = at + rng.below(out.len() - at + 1);
                out.drain(at..end);
            }
            4 if at < out.len() => {
                let end = (at + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                for _ in 0..1 + rng.below(8) {
                    out.splice(at..at, copy.iter().copied());
                }
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            6 => out.insert(at, rng.next() as u8),
            _ => {
                let i = rng.below(out.len() + 1);
                let byte = [b'0', b'9', b'a', b' ', b'.', b'-', b'e'][rng.below(7)];
                out.insert(i, byte);
            }
        }
    }
    out
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn read_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|error| panic!("read fuzz/corpus/{target}: {error}"))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz/corpus/{target} has inputs");
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

fn budget() -> Duration {
    let seconds = std::env::var("VIGIL_FUZZ_SECONDS")
        .ok()
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(seconds)
}

fn seed() -> u64 {
    std::env::var("VIGIL_FUZZ_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// Runs `check` on the corpus, then on mutations until the time budget is spent.
fn run(target: &str, budget: Duration, mut check: impl FnMut(&str, &[u8])) {
    let corpus = read_corpus(target);
    let inputs: Vec<Vec<u8>> = corpus.iter().map(|(_, bytes)| bytes.clone()).collect();
    let seed = seed();
    let mut rng = Rng(seed);
    let mut runs = 0u64;
    let mut try_one = |label: &str, input: &[u8]| {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(label, input)));
        if outcome.is_err() {
            let path =
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-failure-{target}.bin"));
            let _ = std::fs::write(&path, input);
            panic!(
                "{target}: {label} (seed {seed}) failed on {:?}; saved to {}",
                String::from_utf8_lossy(input),
                path.display()
            );
        }
    };
    for (name, input) in &corpus {
        try_one(name, input);
        runs += 1;
    }
    let deadline = Instant::now() + budget;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let input = if rng.below(16) == 0 {
                (0..rng.below(256)).map(|_| rng.next() as u8).collect()
            } else {
                let base = &inputs[rng.below(inputs.len())];
                mutate(&mut rng, base, &inputs)
            };
            try_one("a mutation", &input);
            runs += 1;
        }
    }
    eprintln!("{target}: {runs} inputs in {budget:?} (seed {seed})");
}

/// The nesting of a JSON text (objects and arrays), counted outside strings.
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, ..) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b'}' | b']') => depth -= 1,
            _ => {}
        }
    }
    deepest
}

/// The event as a producer would send it again, from its parsed fields.
fn as_input(event: &NewEvent) -> Vec<u8> {
    let mut out = b"{\"source\":".to_vec();
    write_json_string(&mut out, &event.source);
    out.extend_from_slice(b",\"type\":");
    write_json_string(&mut out, &event.event_type);
    out.extend_from_slice(format!(",\"level\":\"{}\"", event.level).as_bytes());
    if let Some(payload) = &event.payload {
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(payload.as_bytes());
    }
    if let Some(at) = event.occurred_at {
        out.extend_from_slice(b",\"occurredAt\":\"");
        at.write_rfc3339(&mut out);
        out.push(b'"');
    }
    out.push(b'}');
    out
}

fn check_event(limits: &Limits, event: &NewEvent, again: &mut EventParser) {
    assert!((1..=limits.max_source_chars).contains(&event.source.chars().count()));
    assert!(!event.source.chars().any(char::is_control));
    assert!((1..=limits.max_type_len).contains(&event.event_type.len()));
    if let Some(payload) = &event.payload {
        assert!(payload.len() <= limits.max_payload_bytes, "payload size");
        assert!(
            nesting(payload) <= limits.max_payload_depth,
            "payload nesting"
        );
        assert!(payload.starts_with('{'));
    }

    // The stored JSON is well-formed and a reference parser reads the same fields.
    let stored = event.as_stored(7, UnixMillis(0), "req-1").encode();
    let reread: serde_json::Value = serde_json::from_slice(&stored).unwrap_or_else(|error| {
        panic!(
            "stored JSON is not JSON ({error}): {}",
            String::from_utf8_lossy(&stored)
        )
    });
    assert_eq!(reread["source"], event.source.as_str());
    assert_eq!(reread["type"], event.event_type.as_str());
    assert_eq!(reread["level"], event.level.as_str());
    assert_eq!(reread["payload"].is_null(), event.payload.is_none());

    // Sent again, it is the same event.
    let input = as_input(event);
    let parsed = again
        .parse(&input, BodyFormat::Json)
        .unwrap_or_else(|error| {
            panic!(
                "re-encoded event refused ({error:?}): {}",
                String::from_utf8_lossy(&input)
            )
        });
    assert_eq!(parsed.events.as_slice(), std::slice::from_ref(event));
}

#[test]
fn fuzz_event_parser() {
    let limits = Limits::default();
    let mut parser = EventParser::new(limits);
    let mut again = EventParser::new(limits);
    run("parse", budget(), |label, input| {
        for format in [BodyFormat::Json, BodyFormat::NdJson] {
            let Ok(body) = parser.parse(input, format) else {
                continue;
            };
            assert!(
                !body.events.is_empty(),
                "{label}: an accepted body has events"
            );
            assert!(body.events.len() <= limits.max_bulk_events);
            for event in &body.events {
                check_event(&limits, event, &mut again);
            }
        }
    });
}

/// The query string that says `query` (sources percent-encoded).
fn as_query_string(query: &EventQuery) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    if query.before.is_none() {
        out.append_pair("page", &query.page.to_string());
    }
    out.append_pair("size", &query.size.to_string());
    let join = |items: Vec<String>| items.join(",");
    if !query.filter.types.is_empty() {
        out.append_pair("type", &join(query.filter.types.clone()));
    }
    if !query.filter.levels.is_empty() {
        out.append_pair(
            "level",
            &join(query.filter.levels.iter().map(|l| l.to_string()).collect()),
        );
    }
    for source in &query.filter.sources {
        out.append_pair("source", source);
    }
    for (name, at) in [("from", query.from), ("to", query.to)] {
        if let Some(at) = at {
            let mut text = Vec::new();
            at.write_rfc3339(&mut text);
            out.append_pair(name, std::str::from_utf8(&text).unwrap());
        }
    }
    if let Some(before) = query.before {
        out.append_pair("before", &before.to_string());
    }
    out.finish()
}

#[test]
fn fuzz_list_query() {
    run("query", budget(), |_, input| {
        let text = String::from_utf8_lossy(input);
        let Ok(query) = EventQuery::parse(Some(&text)) else {
            return;
        };
        assert!((1..=100).contains(&query.size));
        assert!(query.page >= 1 && query.offset() <= 10_000);
        assert!(query.filter.types.len() <= 20 && query.filter.levels.len() <= 20);
        assert!(query.filter.sources.len() <= 20);
        assert!(query.before.is_none() || query.page == 1);
        if let (Some(from), Some(to)) = (query.from, query.to) {
            assert!(from <= to);
        }
        // Sources holding a comma cannot be said in the comma-separated syntax.
        if query
            .filter
            .sources
            .iter()
            .any(|source| source.contains(','))
        {
            return;
        }
        let printed = as_query_string(&query);
        let again = EventQuery::parse(Some(&printed))
            .unwrap_or_else(|error| panic!("{printed:?} refused: {error}"));
        assert_eq!(again, query, "{printed}");
    });
}

#[test]
fn fuzz_subscribe_query() {
    run("subscribe", budget(), |_, input| {
        let text = String::from_utf8_lossy(input);
        let Ok((filter, since)) = parse_subscribe_query(Some(&text)) else {
            return;
        };
        assert!(since.is_none_or(|id| id < MAX_ID_EXCLUSIVE));
        assert!(
            filter.types.len() <= 20 && filter.levels.len() <= 20 && filter.sources.len() <= 20
        );
    });
}
