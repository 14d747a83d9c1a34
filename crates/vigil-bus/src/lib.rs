//! Vigil's recent-events cache and broadcast: on Redis, or inside the process.
//!
//! After the batcher commits a batch, each event is already encoded once to its final JSON; those
//! bytes become the entry of the recent list (`events:recent`, which page-1 reads are served
//! from) and the message on the channel (`events:new`, which every instance's WebSocket hub
//! listens to). Redis is cache and broadcast, never the record:
//!
//! - [`Publisher`] sends committed batches in commit order without ever delaying an ack; what a
//!   slow or absent Redis makes it drop is counted and marked as a gap.
//! - [`RedisBus::recent`] answers page 1 only when the list can do so truthfully, and
//!   [`RedisBus::refill`] repairs the list from the database without racing concurrent pushes.
//!
//! - [`RedisTarget`] says where Redis is: one server, or the primary Redis Sentinel names;
//!   everything above (and the realtime bridge's subscription, [`RedisTarget::subscribe`])
//!   follows the primary across a failover.
//!
//! - [`LocalRecent`] is the same recent list inside the process, for the embedded mode
//!   (SQLite, no Redis), where one instance is the only writer; the in-process broadcast is
//!   the server's realtime hub, fed straight from the batcher.
//!
//! The list's order, the gap mark and the timeouts are explained in CACHE.md beside this crate.

mod entry;
mod error;
mod link;
mod local;
mod names;
mod publisher;
mod redis_bus;
mod subscription;
mod target;

pub use entry::{MAX_ID_EXCLUSIVE, entry_id};
pub use error::BusError;
pub use link::{CONNECTION_TIMEOUT, RESPONSE_TIMEOUT};
pub use local::LocalRecent;
pub use names::{BusNames, MIN_RECENT_SIZE};
pub use publisher::{Publisher, PublisherCounts, PublisherStats};
pub use redis_bus::{
    READ_DEADLINE, RecentRead, RedisBus, RefillTicket, WRITE_DEADLINE, gap_notice, read_gap_notice,
};
pub use subscription::{Delivery, HEALTH_CHECK_INTERVAL, HEALTH_CHECK_TIMEOUT, Subscription};
pub use target::{
    LOOKUP_DEADLINE, LOOKUP_MIN_INTERVAL, RedisTarget, SentinelAddr, SentinelAddrs,
    check_master_name, open_client,
};

pub use vigil_core::{CommitSink, CommittedBatch, PublishedEvent};

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

/// Fixtures shared by this crate's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::PublishedEvent;
    use bytes::Bytes;

    /// A committed event with this id and a minimal encoded body.
    pub(crate) fn event(id: u64) -> PublishedEvent {
        PublishedEvent {
            id,
            json: Bytes::from(format!("{{\"id\":{id},\"source\":\"s\"}}")),
        }
    }
}
