//! Where committed batches go once their requests are answered.
//!
//! The batcher hands every committed batch, encoded once, to one [`CommitSink`]: with Redis
//! that is the [`Publisher`] (the recent list and the channel every instance's realtime hub
//! listens to); without Redis the server plugs in its in-process realtime feed instead. The
//! batcher calls the sink on its own thread after the acks, so a sink must never block.

use vigil_bus::{CommittedBatch, Publisher};

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
