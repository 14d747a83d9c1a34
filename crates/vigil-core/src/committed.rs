//! A committed batch as every consumer of commits sees it, and the sink the batcher hands it
//! to: the types the pipeline, the cache and broadcast, and the realtime hub share, kept here,
//! in the crate all of them use.
//!
//! After a commit each event is encoded once ([`crate::StoredEventRef::encode`]); those bytes
//! are the cache entry, the pub/sub message and every WebSocket frame. They always start with
//! the id (`{"id":17,…`), so [`entry_id`] reads it without parsing the JSON.

use std::sync::Arc;

use bytes::Bytes;

use crate::{MAX_ID_EXCLUSIVE, UnixMillis};

/// One committed event: its id and its encoded JSON, which starts with `{"id":<id>,`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    /// The event's id, as in the JSON's prefix.
    pub id: u64,
    /// The event exactly as every reader receives it.
    pub json: Bytes,
}

/// One committed batch, events in commit (id-ascending) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBatch {
    /// The batch's events.
    pub events: Vec<PublishedEvent>,
    /// The `createdAt` every event of the batch carries: where a realtime backfill that
    /// must recover the batch starts reading.
    pub created_at: UnixMillis,
}

/// Receives each committed batch, events in commit (id-ascending) order: the Redis publisher,
/// the in-process recent list, the realtime hub. The batcher calls it on its own thread after
/// the acks, so a sink must never block.
pub trait CommitSink: Send + Sync + 'static {
    /// Takes the batch without blocking and without failing: a sink that cannot keep up
    /// drops and counts what it cannot take (the database holds every committed event).
    fn committed(&self, batch: CommittedBatch);
}

/// Hands every batch to each of several sinks, in order, so the batcher keeps one sink.
/// Cloning a batch clones its reference-counted JSON, not the bytes.
pub struct FanOut {
    sinks: Vec<Arc<dyn CommitSink>>,
}

impl FanOut {
    pub fn new(sinks: Vec<Arc<dyn CommitSink>>) -> FanOut {
        FanOut { sinks }
    }
}

impl CommitSink for FanOut {
    fn committed(&self, batch: CommittedBatch) {
        let Some((last, first)) = self.sinks.split_last() else {
            return;
        };
        for sink in first {
            sink.committed(batch.clone());
        }
        last.committed(batch);
    }
}

/// What every encoded event starts with, up to the id's digits.
const ID_PREFIX: &[u8] = b"{\"id\":";

/// Ids are below 2^53 (so JavaScript reads them exactly), hence at most 16 decimal digits.
const MAX_ID_DIGITS: usize = 16;

/// The id of an encoded event, read from its `{"id":<digits>,` prefix; `None` if the entry does
/// not start that way or the id is not below 2^53.
pub fn entry_id(entry: &[u8]) -> Option<u64> {
    let rest = entry.strip_prefix(ID_PREFIX)?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_ID_DIGITS || rest.get(digits) != Some(&b',') {
        return None;
    }
    let id = rest[..digits]
        .iter()
        .fold(0u64, |id, digit| id * 10 + u64::from(digit - b'0'));
    (id < MAX_ID_EXCLUSIVE).then_some(id)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn id_is_read_from_the_prefix() {
        assert_eq!(entry_id(br#"{"id":17,"source":"a"}"#), Some(17));
        assert_eq!(entry_id(br#"{"id":0,"x":1}"#), Some(0));
        assert_eq!(entry_id(br#"{"id":1,"#), Some(1));
    }

    #[test]
    fn largest_id_below_two_to_the_53_is_read() {
        let text = format!("{{\"id\":{},\"a\":1}}", MAX_ID_EXCLUSIVE - 1);
        assert_eq!(entry_id(text.as_bytes()), Some(MAX_ID_EXCLUSIVE - 1));
    }

    #[test]
    fn ids_at_or_above_two_to_the_53_are_rejected() {
        let at_bound = format!("{{\"id\":{MAX_ID_EXCLUSIVE},\"a\":1}}");
        assert_eq!(entry_id(at_bound.as_bytes()), None);
        assert_eq!(entry_id(br#"{"id":99999999999999999,"a":1}"#), None);
        assert_eq!(entry_id(br#"{"id":184467440737095516150,"a":1}"#), None);
    }

    #[test]
    fn entries_without_an_id_prefix_are_rejected() {
        for text in [
            &br#""#[..],
            br#"{"id":}"#,
            br#"{"id":,"a":1}"#,
            br#"{"id":17}"#,
            br#"{"id":17"#,
            br#"{"id":-1,"a":1}"#,
            br#"{"id":1.5,"a":1}"#,
            br#"{"id":"17","a":1}"#,
            br#"{ "id":17,"a":1}"#,
            br#"{"source":"a","id":17}"#,
            br#"[17]"#,
        ] {
            assert_eq!(entry_id(text), None, "{}", String::from_utf8_lossy(text));
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<u64>>);

    impl CommitSink for Recorder {
        fn committed(&self, batch: CommittedBatch) {
            let mut seen = self.0.lock().unwrap();
            seen.extend(batch.events.iter().map(|event| event.id));
        }
    }

    #[test]
    fn a_fan_out_hands_every_batch_to_every_sink() {
        let first = Arc::new(Recorder::default());
        let second = Arc::new(Recorder::default());
        let fan_out = FanOut::new(vec![first.clone(), second.clone()]);
        for id in [1, 2] {
            fan_out.committed(CommittedBatch {
                events: vec![PublishedEvent {
                    id,
                    json: Bytes::from(format!("{{\"id\":{id},")),
                }],
                created_at: UnixMillis(0),
            });
        }
        assert_eq!(*first.0.lock().unwrap(), [1, 2]);
        assert_eq!(*second.0.lock().unwrap(), [1, 2]);
        FanOut::new(Vec::new()).committed(CommittedBatch {
            events: Vec::new(),
            created_at: UnixMillis(0),
        });
    }
}
