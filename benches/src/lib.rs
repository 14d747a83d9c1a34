//! Inputs and reference implementations for Vigil's criterion benches.
//!
//! [`serde_reference`] parses and validates events the conventional way (serde_json with a
//! derived struct and a raw payload), to give the simd-json parser in `vigil-core` a
//! reference line in the same report.

use vigil_core::event::{is_valid_type, source_problem};
use vigil_core::{BodyFormat, EventParser, Level, Limits, NewEvent, UnixMillis};

/// A realistic single event of about 120 bytes.
pub fn sample_event(n: usize) -> String {
    let (event_type, level) = match n % 4 {
        0 => ("GAS", "WARN"),
        1 => ("SMOKE", "CRITICAL"),
        2 => ("DOOR", "INFO"),
        _ => ("TEMP", "ERROR"),
    };
    format!(
        r#"{{"source":"site-3/gateway-{}/sensor-{}","type":"{event_type}","level":"{level}","payload":{{"ppm":{},"battery":0.{}}}}}"#,
        n % 17,
        n % 101,
        100 + n % 400,
        n % 97 + 1,
    )
}

/// A JSON array of `count` sample events.
pub fn sample_bulk(count: usize) -> String {
    let events: Vec<String> = (0..count).map(sample_event).collect();
    format!("[{}]", events.join(","))
}

/// `count` sample events, parsed and validated: what the batcher receives.
pub fn sample_new_events(count: usize) -> Vec<NewEvent> {
    EventParser::new(Limits::default())
        .parse(sample_bulk(count).as_bytes(), BodyFormat::Json)
        .expect("the sample events are valid")
        .events
}

pub mod serde_reference {
    //! serde_json parse + the same validation rules, for comparison only.

    use serde::Deserialize;
    use serde_json::value::RawValue;

    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct WireEvent<'a> {
        #[serde(borrow)]
        source: std::borrow::Cow<'a, str>,
        #[serde(rename = "type", borrow)]
        event_type: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        level: std::borrow::Cow<'a, str>,
        #[serde(borrow, default)]
        payload: Option<&'a RawValue>,
        #[serde(rename = "occurredAt", borrow, default)]
        occurred_at: Option<std::borrow::Cow<'a, str>>,
    }

    /// Parses and validates a JSON body (object or array) like `EventParser` does.
    pub fn parse(body: &[u8], limits: &Limits) -> Result<Vec<NewEvent>, String> {
        let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let wire: Vec<WireEvent<'_>> = if is_array {
            serde_json::from_slice(body).map_err(|e| e.to_string())?
        } else {
            vec![serde_json::from_slice(body).map_err(|e| e.to_string())?]
        };
        if wire.is_empty() || wire.len() > limits.max_bulk_events {
            return Err("bad event count".into());
        }
        wire.into_iter()
            .map(|event| validate(event, limits))
            .collect()
    }

    fn validate(event: WireEvent<'_>, limits: &Limits) -> Result<NewEvent, String> {
        if let Some(problem) = source_problem(&event.source, limits.max_source_chars) {
            return Err(problem.into());
        }
        if !is_valid_type(&event.event_type, limits.max_type_len) {
            return Err("bad type".into());
        }
        let level: Level = event.level.parse().map_err(|()| "bad level".to_owned())?;
        let payload = match event.payload.map(RawValue::get) {
            None | Some("null") => None,
            Some(raw) if raw.starts_with('{') => {
                let minified = vigil_core::parse::minify(raw.as_bytes());
                if minified.len() > limits.max_payload_bytes {
                    return Err("payload too large".into());
                }
                Some(String::from_utf8(minified).map_err(|e| e.to_string())?)
            }
            Some(_) => return Err("payload must be an object".into()),
        };
        let occurred_at = event
            .occurred_at
            .map(|text| UnixMillis::parse_rfc3339(&text).map_err(|e| e.to_string()))
            .transpose()?;
        Ok(NewEvent {
            source: event.source.into_owned(),
            event_type: event.event_type.into_owned(),
            level,
            payload,
            occurred_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_agrees_with_the_real_parser_on_the_bench_inputs() {
        let limits = Limits::default();
        let mut parser = EventParser::new(limits);
        for body in [sample_event(3), sample_bulk(1000)] {
            let real = parser
                .parse(body.as_bytes(), BodyFormat::Json)
                .unwrap()
                .events;
            let reference = serde_reference::parse(body.as_bytes(), &limits).unwrap();
            assert_eq!(real, reference);
        }
        assert!(
            (100..=140).contains(&sample_event(42).len()),
            "{}",
            sample_event(42).len()
        );
    }
}
