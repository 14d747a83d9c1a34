//! Where committed batches go once their requests are answered.
//!
//! The batcher hands every committed batch, encoded once, to one [`CommitSink`]: with Redis
//! that is the [`Publisher`] (the recent list and the channel every instance's realtime hub
//! listens to); without Redis the server plugs in its in-process realtime feed instead, and
//! in the embedded mode also the in-process recent list ([`LocalRecent`]), both behind one
//! [`FanOut`] so the batcher keeps one sink. The batcher calls the sink on its own thread
//! after the acks, so a sink must never block.

use std::sync::Arc;

use vigil_bus::{CommittedBatch, LocalRecent, Publisher};

/// Receives each committed batch, events in commit (id-ascending) order.
pub trait CommitSink: Send + Sync + 'static {
    /// Takes the batch without blocking and without failing: a sink that cannot keep up
    /// drops and counts what it cannot take (the database holds every committed event).
    fn committed(&self, batch: CommittedBatch);
}

impl CommitSink for Publisher {
    fn committed(&self, batch: CommittedBatch) {
        self.publish(batch);
    }
}

impl CommitSink for LocalRecent {
    fn committed(&self, batch: CommittedBatch) {
        self.push(&batch);
    }
}

/// Hands every batch to each of several sinks, in order. Cloning a batch clones its
/// reference-counted JSON, not the bytes.
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Mutex;
    use vigil_bus::PublishedEvent;
    use vigil_core::UnixMillis;

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
