//! Realistic, varied events for the HTTP load tests, made from a sequence number alone.
//!
//! A site's traffic is mostly routine readings with a few alarms: sources are
//! `site-<s>/gateway-<g>/<kind>-<n>` over 8 sites × 16 gateways × 64 devices, levels are
//! INFO 70 %, WARN 20 %, ERROR 8 %, CRITICAL 2 %, payloads depend on the type and range from
//! ~20 bytes (a door switch) to ~1.5 KiB (one reading in 64 carries a diagnostics block), and
//! one event in 4 says when it occurred. Event `n` of a seed is always the same bytes, so runs
//! are comparable; nothing here allocates more than the body it returns.

use std::fmt::Write as _;

/// Event types and the device kind that sends them, weighted like a gas/fire-safety site.
const TYPES: [((&str, &str), u64); 8] = [
    (("GAS", "gas"), 30),
    (("TEMP", "thermo"), 20),
    (("HUMIDITY", "thermo"), 10),
    (("SMOKE", "smoke"), 10),
    (("DOOR", "door"), 12),
    (("MOTION", "pir"), 10),
    (("POWER", "meter"), 5),
    (("WATER_LEAK", "leak"), 3),
];

/// Levels and their weights, per thousand.
const LEVELS: [(&str, u64); 4] = [
    ("INFO", 700),
    ("WARN", 200),
    ("ERROR", 80),
    ("CRITICAL", 20),
];

/// One reading in this many carries a diagnostics block (~1.5 KiB of payload).
const LARGE_PAYLOAD_EVERY: u64 = 64;
/// Samples in a diagnostics block (~6 bytes each).
const DIAGNOSTIC_SAMPLES: u64 = 224;

/// A 64-bit mix (splitmix64): well spread from consecutive inputs, no state.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn pick<T: Copy>(table: &[(T, u64)], roll: u64) -> T {
    let total: u64 = table.iter().map(|(_, weight)| weight).sum();
    let mut roll = roll % total;
    for &(item, weight) in table {
        if roll < weight {
            return item;
        }
        roll -= weight;
    }
    table[table.len() - 1].0
}

/// Appends event `seq` of run `seed` as one JSON object to `out`.
pub fn write_event(out: &mut String, seed: u64, seq: u64) {
    let r = mix(seed ^ mix(seq));
    let (event_type, kind) = pick(&TYPES, r);
    let level = pick(&LEVELS, r >> 16);
    let site = (r >> 32) % 8;
    let gateway = (r >> 35) % 16;
    let device = (r >> 39) % 64;
    let _ = write!(
        out,
        r#"{{"source":"site-{site}/gateway-{gateway}/{kind}-{device}","type":"{event_type}","level":"{level}","payload":"#
    );
    write_payload(out, event_type, r, seq);
    if (r >> 45).is_multiple_of(4) {
        // A reading taken up to a minute before it was sent, in whole milliseconds.
        let at_ms = 1_795_000_000_000 + (seq % 86_400_000) - (r >> 47) % 60_000;
        let _ = write!(out, r#","occurredAt":"{}""#, rfc3339_millis(at_ms));
    }
    out.push('}');
}

fn write_payload(out: &mut String, event_type: &str, r: u64, seq: u64) {
    let v = (r >> 20) % 1000;
    let battery = 20 + (r >> 50) % 81;
    let _ = match event_type {
        "GAS" => write!(
            out,
            r#"{{"ppm":{},"gas":"{}","battery":{battery},"threshold":300}}"#,
            50 + v / 2,
            ["CH4", "CO", "H2S", "LPG"][(r % 4) as usize]
        ),
        "TEMP" => write!(
            out,
            r#"{{"celsius":{}.{},"battery":{battery}}}"#,
            10 + v % 40,
            v % 10
        ),
        "HUMIDITY" => write!(
            out,
            r#"{{"percent":{}.{},"celsius":{}}}"#,
            20 + v % 70,
            v % 10,
            15 + v % 15
        ),
        "SMOKE" => write!(
            out,
            r#"{{"obscuration":{}.{:02},"alarm":{}}}"#,
            v % 5,
            v % 100,
            v > 900
        ),
        "DOOR" => write!(out, r#"{{"open":{}}}"#, v.is_multiple_of(2)),
        "MOTION" => write!(out, r#"{{"zone":"z{}","count":{}}}"#, v % 12, 1 + v % 5),
        "POWER" => write!(
            out,
            r#"{{"watts":{},"volts":{}.{},"amps":{}.{:02},"phases":[{},{},{}]}}"#,
            100 + v * 7,
            228 + v % 5,
            v % 10,
            v % 16,
            v % 100,
            v % 230,
            (v + 77) % 230,
            (v + 155) % 230
        ),
        _ => write!(out, r#"{{"wet":{},"sensor":"probe-{}"}}"#, v > 500, v % 3),
    };
    if seq.is_multiple_of(LARGE_PAYLOAD_EVERY) {
        // Replace the closing brace with a diagnostics block of ~1.5 KiB.
        out.pop();
        out.push_str(r#","diagnostics":{"firmware":"4.2.17","uptimeS":"#);
        let _ = write!(out, "{},\"samples\":[", r % 10_000_000);
        for index in 0..DIAGNOSTIC_SAMPLES {
            if index > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}", mix(r + index) % 100_000);
        }
        out.push_str("]}}");
    }
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ` for milliseconds since the epoch (years 1970–9999).
fn rfc3339_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// One event as a request body.
pub fn event_body(seed: u64, seq: u64) -> String {
    let mut out = String::with_capacity(256);
    write_event(&mut out, seed, seq);
    out
}

/// A JSON array of `count` events, `first_seq` onwards.
pub fn bulk_body(seed: u64, first_seq: u64, count: usize) -> String {
    let mut out = String::with_capacity(count * 200 + 2);
    out.push('[');
    for index in 0..count as u64 {
        if index > 0 {
            out.push(',');
        }
        write_event(&mut out, seed, first_seq + index);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn parsed(seq: u64) -> serde_json::Value {
        serde_json::from_str(&event_body(7, seq)).expect("valid JSON")
    }

    #[test]
    fn every_event_has_the_fields_vigil_accepts() {
        for seq in 0..2000 {
            let event = parsed(seq);
            let object = event.as_object().unwrap();
            for key in object.keys() {
                assert!(
                    ["source", "type", "level", "payload", "occurredAt"].contains(&key.as_str()),
                    "{key}"
                );
            }
            assert!(event["payload"].is_object());
            assert!(
                ["INFO", "WARN", "ERROR", "CRITICAL"].contains(&event["level"].as_str().unwrap())
            );
            if let Some(at) = event.get("occurredAt") {
                let at = at.as_str().unwrap();
                assert_eq!(at.len(), 24, "{at}");
                assert!(at.starts_with("2026-") && at.ends_with('Z'), "{at}");
            }
        }
    }

    #[test]
    fn events_vary_in_source_type_level_and_size() {
        let events: Vec<serde_json::Value> = (0..2000).map(parsed).collect();
        let distinct = |key: &str| {
            events
                .iter()
                .map(|e| e[key].as_str().unwrap().to_owned())
                .collect::<HashSet<_>>()
                .len()
        };
        assert_eq!(distinct("type"), TYPES.len());
        assert_eq!(distinct("level"), LEVELS.len());
        assert!(distinct("source") > 1000);
        let sizes: Vec<usize> = (0..2000).map(|seq| event_body(7, seq).len()).collect();
        assert!(sizes.iter().min().unwrap() < &120);
        assert!(sizes.iter().max().unwrap() > &1000);
        let criticals = events.iter().filter(|e| e["level"] == "CRITICAL").count();
        assert!((10..=80).contains(&criticals), "{criticals}");
    }

    #[test]
    fn a_seed_and_sequence_number_always_make_the_same_event() {
        assert_eq!(event_body(1, 42), event_body(1, 42));
        assert_ne!(event_body(1, 42), event_body(2, 42));
        let bulk: serde_json::Value = serde_json::from_str(&bulk_body(1, 40, 3)).unwrap();
        assert_eq!(bulk.as_array().unwrap().len(), 3);
        assert_eq!(
            bulk[2],
            serde_json::from_str::<serde_json::Value>(&event_body(1, 42)).unwrap()
        );
    }

    #[test]
    fn dates_are_rfc3339_in_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_000_000_123),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
