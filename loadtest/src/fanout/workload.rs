//! The events a run posts, and which of them a client's `/ws` filter lets through.
//!
//! An event's source, type and level are functions of its sequence number, so the measurer
//! knows without bookkeeping which acknowledged events each client should receive: with a
//! filter, the expected deliveries are the acknowledged events that match it. Sixteen
//! consecutive events cover every type × level pair.

use std::io::Write;

/// Event types, by `seq % 4`.
pub const TYPES: [&str; 4] = ["GAS", "SMOKE", "TEMP", "DOOR"];
/// Levels, by `(seq / 4) % 4`.
pub const LEVELS: [&str; 4] = ["INFO", "WARN", "ERROR", "CRITICAL"];
/// Sources are `sensor-0` … `sensor-31`, by `seq % 32`.
pub const SOURCES: u64 = 32;

pub fn event_type(seq: u64) -> &'static str {
    TYPES[(seq % 4) as usize]
}

pub fn level(seq: u64) -> &'static str {
    LEVELS[((seq / 4) % 4) as usize]
}

pub fn source_number(seq: u64) -> u64 {
    seq % SOURCES
}

/// Appends one event, its payload carrying the stamp that clients read back
/// ([`super::extract::event_stamp`]).
pub fn write_event(out: &mut Vec<u8>, seq: u64, sent_us: u64, run: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"source":"sensor-{}","type":"{}","level":"{}","payload":{{"t":{sent_us},"seq":{seq},"run":{run}}}}}"#,
        source_number(seq),
        event_type(seq),
        level(seq),
    );
}

/// The body of one POST: a single event object, or a JSON array of `seqs.len()` events.
pub fn request_body(seqs: std::ops::Range<u64>, sent_us: u64, run: u64) -> Vec<u8> {
    let bulk = seqs.end - seqs.start > 1;
    let mut body = Vec::with_capacity(128 * (seqs.end - seqs.start) as usize + 2);
    if bulk {
        body.push(b'[');
    }
    for seq in seqs {
        if bulk && body.len() > 1 {
            body.push(b',');
        }
        write_event(&mut body, seq, sent_us, run);
    }
    if bulk {
        body.push(b']');
    }
    body
}

/// A `/ws` filter (`type=GAS,SMOKE&level=WARN&source=sensor-1`), as the server applies it:
/// each given key must match one of its comma-separated values; unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The query as given, appended to `/ws`.
    pub query: String,
    types: Vec<String>,
    levels: Vec<String>,
    sources: Vec<String>,
}

impl Filter {
    /// Parses a query string. Percent-escapes are not decoded: the measurer's own values
    /// never need them.
    pub fn parse(query: &str) -> Result<Self, String> {
        let query = query.trim_start_matches('?');
        let mut filter = Filter {
            query: query.to_owned(),
            ..Filter::default()
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("filter {pair:?} is not key=value"))?;
            if value.contains('%') || value.contains('+') {
                return Err(format!("filter {pair:?}: escaped values are not supported"));
            }
            let values = value.split(',').map(str::to_owned);
            match key {
                "type" => filter.types.extend(values),
                "level" => filter.levels.extend(values),
                "source" => filter.sources.extend(values),
                "since" => return Err("filter: `since` is the measurer's own to set".to_owned()),
                _ => {}
            }
        }
        Ok(filter)
    }

    /// Whether the event with this sequence number passes the filter.
    pub fn matches(&self, seq: u64) -> bool {
        let source = format!("sensor-{}", source_number(seq));
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type(seq)))
            && (self.levels.is_empty() || self.levels.iter().any(|l| l == level(seq)))
            && (self.sources.is_empty() || self.sources.contains(&source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_vary_over_every_type_and_level() {
        let pairs: std::collections::HashSet<(&str, &str)> =
            (0..16).map(|seq| (event_type(seq), level(seq))).collect();
        assert_eq!(pairs.len(), 16);
    }

    #[test]
    fn bodies_are_an_object_or_an_array() {
        let single = request_body(5..6, 100, 9);
        assert_eq!(
            String::from_utf8(single).unwrap(),
            r#"{"source":"sensor-5","type":"SMOKE","level":"WARN","payload":{"t":100,"seq":5,"run":9}}"#
        );
        let bulk: serde_json::Value = serde_json::from_slice(&request_body(0..3, 1, 2)).unwrap();
        let seqs: Vec<u64> = bulk
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["payload"]["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
    }

    #[test]
    fn filters_match_like_the_server() {
        let filter = Filter::parse("type=GAS,SMOKE&level=WARN&x=1").unwrap();
        assert_eq!(filter.query, "type=GAS,SMOKE&level=WARN&x=1");
        let matching: Vec<u64> = (0..32).filter(|&seq| filter.matches(seq)).collect();
        assert_eq!(matching, [4, 5, 20, 21]);
        assert!((0..100).all(|seq| Filter::parse("").unwrap().matches(seq)));
        let by_source = Filter::parse("source=sensor-3").unwrap();
        assert_eq!((0..100).filter(|&seq| by_source.matches(seq)).count(), 4);
        assert!(Filter::parse("type").is_err());
        assert!(Filter::parse("source=a%2Db").is_err());
        assert!(Filter::parse("since=4").is_err());
    }
}
