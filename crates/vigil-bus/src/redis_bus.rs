//! The Redis connection of one Vigil process and the cache's reads and refills.
//!
//! Redis is cache and broadcast, never the record: every operation here is bounded in time and
//! its failure means "answer from the database". The connections reconnect by themselves and
//! follow the primary when Sentinel names a new one (`link.rs`, `target.rs`); CACHE.md beside
//! this crate explains the list's order, the gap hash, the refill ticket and what a failover
//! does to them.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;

use crate::entry::check_newest_first;
use crate::link::Link;
use crate::{BusError, BusNames, RedisTarget};

/// Bound on a whole read ([`RedisBus::recent`], [`RedisBus::refill_ticket`],
/// [`RedisBus::ping`]), including any wait for a reconnection in progress: past it, the caller
/// reads the database.
pub const READ_DEADLINE: Duration = Duration::from_secs(1);

/// Bound on a whole write (a refill, one publisher round trip), including any wait for a
/// reconnection in progress. Nothing acknowledged waits on it.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(2);

/// Bound on [`RedisBus::connect`]'s first connection.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

/// The script that merges entries into the list by id (see `merge.lua`), without its comments
/// and indentation. Refills send it whole (`EVAL`); the publisher's round trips name it by
/// its SHA-1 (`EVALSHA`), loading it first whenever the connection may have lost it.
static MERGE_SCRIPT: LazyLock<String> =
    LazyLock::new(|| strip_lua_comments(include_str!("merge.lua")));

/// The SHA-1 of [`MERGE_SCRIPT`], as `EVALSHA` names it.
static MERGE_SCRIPT_SHA: LazyLock<String> = LazyLock::new(|| {
    redis::Script::new(MERGE_SCRIPT.as_str())
        .get_hash()
        .to_owned()
});

/// The Redis names with the gap hash's key worked out once.
#[derive(Debug)]
pub(crate) struct Keys {
    /// The names as configured.
    pub(crate) names: BusNames,
    /// `<recent_key>:gap`.
    pub(crate) gap: String,
    /// `<channel>:gaps`.
    pub(crate) gap_channel: String,
}

/// A handle on Redis for the recent-events cache and the channel. Cheap to clone: clones share
/// the connections.
#[derive(Clone)]
pub struct RedisBus {
    /// Serves reads, refills and pings.
    reader: Link,
    /// Serves the publisher, so that large publish pipelines never queue ahead of page reads on
    /// one connection. Opened on first use.
    pub(crate) writer: Link,
    /// Key and channel names.
    pub(crate) keys: Arc<Keys>,
}

impl std::fmt::Debug for RedisBus {
    // The connections' Debug would print the connection info, password included.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisBus")
            .field("names", &self.keys.names)
            .finish_non_exhaustive()
    }
}

/// A page-1 read's reply: the gap hash's `raised` and `repaired`, and the list's head.
type ListRead = ((Option<u64>, Option<u64>), Vec<Bytes>);

/// What the list can say about page 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecentRead {
    /// The list answers truthfully: the newest `size` events, largest id first, as encoded.
    Hit {
        /// Encoded events, id descending, each id once.
        newest_first: Vec<Bytes>,
        /// Whether events older than the page exist. The list only answers when it holds more
        /// than the page, so this is always true on a hit.
        has_more: bool,
    },
    /// The list cannot answer truthfully (short, cold, or a publisher lost events): read the
    /// database, then [`RedisBus::refill`] with this ticket.
    Miss(RefillTicket),
}

/// The gap count seen before a database read, handed back to [`RedisBus::refill`] so that a
/// refill only repairs the gaps its read can have covered. Gaps raised after the ticket was
/// taken stay open, and a ticket taken on a former primary repairs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillTicket {
    /// The gap hash's `raised` field when the ticket was taken.
    gaps_raised: u64,
    /// The primary it was read from.
    generation: u64,
}

impl RedisBus {
    /// Connects to Redis at `redis_url` (`redis://`, or `rediss://` once a TLS feature of the
    /// redis crate is enabled) and checks it answers. Fails when Redis is unreachable; see
    /// [`connect_lazy`](Self::connect_lazy) for starting without it.
    pub async fn connect(redis_url: &str, names: BusNames) -> Result<RedisBus, BusError> {
        names.validate()?;
        RedisBus::connect_to(RedisTarget::direct(redis_url)?, names).await
    }

    /// Like [`connect`](Self::connect), to `target` (one server, or the primary Sentinel
    /// names).
    pub async fn connect_to(target: RedisTarget, names: BusNames) -> Result<RedisBus, BusError> {
        let bus = RedisBus::connect_lazy_to(target, names)?;
        bus.ping_within(CONNECT_DEADLINE).await?;
        Ok(bus)
    }

    /// Like [`connect`](Self::connect) but without waiting for Redis: the connections open on
    /// first use, so a process can start while Redis is down and use it once it is back.
    pub fn connect_lazy(redis_url: &str, names: BusNames) -> Result<RedisBus, BusError> {
        names.validate()?;
        RedisBus::connect_lazy_to(RedisTarget::direct(redis_url)?, names)
    }

    /// Like [`connect_lazy`](Self::connect_lazy), to `target`.
    pub fn connect_lazy_to(target: RedisTarget, names: BusNames) -> Result<RedisBus, BusError> {
        names.validate()?;
        let gap = names.gap_key();
        Ok(RedisBus {
            reader: Link::new(target.clone()),
            writer: Link::new(target),
            keys: Arc::new(Keys {
                gap_channel: names.gap_channel(),
                names,
                gap,
            }),
        })
    }

    /// The names this bus uses.
    pub fn names(&self) -> &BusNames {
        &self.keys.names
    }

    /// Whether Redis answers, within [`READ_DEADLINE`] (for readiness reports).
    pub async fn ping(&self) -> Result<(), BusError> {
        self.ping_within(READ_DEADLINE).await
    }

    async fn ping_within(&self, deadline: Duration) -> Result<(), BusError> {
        let reply: String = self
            .reader
            .run(deadline, |mut connection| async move {
                Ok(redis::cmd("PING")
                    .query_async(&mut connection.manager)
                    .await?)
            })
            .await?;
        if reply != "PONG" {
            return Err(BusError::UnexpectedReply("ping did not answer pong"));
        }
        Ok(())
    }

    /// Page 1 of the cache rule: the newest `size` entries, id descending, when the list can
    /// answer truthfully; [`RecentRead::Miss`] when it is shorter than `size + 1` entries, a gap
    /// is open, or the entries read are not strictly id-descending (an entry without a readable
    /// id, a repeated id, or a list written by something other than the merge script, whose
    /// deeper entries may be newer). One round trip (`HMGET` of the gap hash, `LRANGE 0 size`),
    /// bounded by [`READ_DEADLINE`]; an error means "read the database".
    ///
    /// The first read on a new primary (after a Sentinel failover) first raises a gap there:
    /// the old primary may have acknowledged pushes it never replicated, so the list may lack
    /// events while looking complete. Every instance's reads then miss until a refill.
    pub async fn recent(&self, size: usize) -> Result<RecentRead, BusError> {
        let last_index = i64::try_from(size).unwrap_or(i64::MAX);
        let ((gap_counts, raw), generation): (ListRead, u64) = self
            .reader
            .run(READ_DEADLINE, |mut connection| async move {
                let mut pipeline = redis::pipe();
                if connection.after_switch {
                    self.add_gap_mark(&mut pipeline);
                }
                pipeline
                    .cmd("HMGET")
                    .arg(&self.keys.gap)
                    .arg("raised")
                    .arg("repaired")
                    .cmd("LRANGE")
                    .arg(&self.keys.names.recent_key)
                    .arg(0)
                    .arg(last_index);
                let reply = pipeline.query_async(&mut connection.manager).await?;
                if connection.after_switch {
                    self.reader.settled(connection.generation);
                }
                Ok((reply, connection.generation))
            })
            .await?;

        let (raised, repaired) = gap_counts;
        let gaps_raised = raised.unwrap_or(0);
        let gap_open = gaps_raised > repaired.unwrap_or(0);
        if gap_open || raw.len() <= size || check_newest_first(&raw).is_err() {
            return Ok(RecentRead::Miss(RefillTicket {
                gaps_raised,
                generation,
            }));
        }
        let mut newest_first = raw;
        newest_first.truncate(size);
        Ok(RecentRead::Hit {
            newest_first,
            has_more: true,
        })
    }

    /// A ticket for a refill that does not follow a [`recent`](Self::recent) miss (warming the
    /// list at start): take it before reading the database.
    pub async fn refill_ticket(&self) -> Result<RefillTicket, BusError> {
        let (raised, generation): (Option<u64>, u64) = self
            .reader
            .run(READ_DEADLINE, |mut connection| async move {
                let raised = redis::cmd("HGET")
                    .arg(&self.keys.gap)
                    .arg("raised")
                    .query_async(&mut connection.manager)
                    .await?;
                Ok((raised, connection.generation))
            })
            .await?;
        Ok(RefillTicket {
            gaps_raised: raised.unwrap_or(0),
            generation,
        })
    }

    /// Refills the list from the database's newest entries (`newest_first`, as read after
    /// taking `ticket`), without racing concurrent pushes: one script merges them with what the
    /// list holds now by id (each id once), keeps the `recent_size` largest, rewrites the list
    /// largest first, and repairs the gaps raised up to the ticket, all atomically. An empty
    /// input is fine (it only repairs and reorders). Bounded by [`WRITE_DEADLINE`]. A ticket
    /// taken on a former primary writes nothing ([`BusError::PrimaryChanged`]).
    pub async fn refill(
        &self,
        ticket: RefillTicket,
        newest_first: &[Bytes],
    ) -> Result<(), BusError> {
        let mut command = redis::cmd("EVAL");
        command
            .arg(MERGE_SCRIPT.as_str())
            .arg(2)
            .arg(&self.keys.names.recent_key)
            .arg(&self.keys.gap)
            .arg(self.keys.names.recent_size)
            .arg("refill")
            .arg(ticket.gaps_raised);
        for entry in newest_first {
            command.arg(entry.as_ref());
        }
        let command = &command;
        self.reader
            .run(WRITE_DEADLINE, |mut connection| async move {
                if connection.generation != ticket.generation {
                    return Err(BusError::PrimaryChanged);
                }
                let _kept: i64 = command.query_async(&mut connection.manager).await?;
                Ok(())
            })
            .await
    }

    /// Adds to `pipeline` the command that loads the merge script into Redis's script cache,
    /// so that a following [`add_push`](Self::add_push) in the same pipeline finds it.
    pub(crate) fn add_load_script(&self, pipeline: &mut redis::Pipeline) {
        pipeline
            .cmd("SCRIPT")
            .arg("LOAD")
            .arg(MERGE_SCRIPT.as_str())
            .ignore();
    }

    /// Adds to `pipeline` the commands that put `list_entries` (increasing id order) into the
    /// list through the merge script (by SHA-1: see [`add_load_script`](Self::add_load_script)),
    /// with its fast path for entries newer than the head.
    pub(crate) fn add_push(&self, pipeline: &mut redis::Pipeline, list_entries: &[&Bytes]) {
        let command = pipeline
            .cmd("EVALSHA")
            .arg(MERGE_SCRIPT_SHA.as_str())
            .arg(2)
            .arg(&self.keys.names.recent_key)
            .arg(&self.keys.gap)
            .arg(self.keys.names.recent_size)
            .arg("push")
            .arg(0);
        for entry in list_entries {
            command.arg(entry.as_ref());
        }
        command.ignore();
    }

    /// Adds to `pipeline` the commands that mark a gap for every instance's readers: the
    /// list's gap hash, and a notice on the gap channel that the events created from
    /// `from_ms` on may be missing from the event channel.
    pub(crate) fn add_raise_gap(&self, pipeline: &mut redis::Pipeline, from_ms: i64) {
        self.add_gap_mark(pipeline);
        pipeline
            .cmd("PUBLISH")
            .arg(&self.keys.gap_channel)
            .arg(gap_notice(from_ms))
            .ignore();
    }

    /// Adds to `pipeline` the command that opens a gap in the list's gap hash, so that every
    /// instance's reads miss until a refill repairs it.
    fn add_gap_mark(&self, pipeline: &mut redis::Pipeline) {
        pipeline
            .cmd("HINCRBY")
            .arg(&self.keys.gap)
            .arg("raised")
            .arg(1)
            .ignore();
    }
}

/// The gap notice: `{"gap":{"fromMs":N}}`.
pub fn gap_notice(from_ms: i64) -> String {
    format!("{{\"gap\":{{\"fromMs\":{from_ms}}}}}")
}

/// The `fromMs` of a gap notice, if `message` is one.
pub fn read_gap_notice(message: &[u8]) -> Option<i64> {
    let digits = message
        .strip_prefix(b"{\"gap\":{\"fromMs\":")?
        .strip_suffix(b"}}")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Drops blank lines, whole-line comments and indentation (the script has no long strings).
fn strip_lua_comments(source: &str) -> String {
    source
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_sent_without_comments() {
        let script = MERGE_SCRIPT.as_str();
        assert!(
            script
                .lines()
                .all(|line| !line.trim_start().starts_with("--"))
        );
        assert!(script.contains("redis.call('LTRIM', list, 0, keep - 1)"));
        assert!(script.len() < include_str!("merge.lua").len());
    }

    fn names() -> BusNames {
        BusNames {
            recent_key: "events:recent".to_owned(),
            channel: "events:new".to_owned(),
            recent_size: 100,
        }
    }

    #[tokio::test]
    async fn bad_urls_are_rejected_without_showing_the_password() {
        for url in [
            "redis://:hunter2@127.0.0.1:notaport/",
            "redis://user:hunter2@127.0.0.1:6379/notadb",
            "http://user:hunter2@127.0.0.1:6379/",
        ] {
            let error = RedisBus::connect(url, names()).await.unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, BusError::InvalidUrl { .. }), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
            assert_eq!(message, message.to_lowercase());
        }
    }

    #[tokio::test]
    async fn tls_urls_are_understood() {
        // Built with TLS (rustls): a `rediss://` URL is configured, and connecting fails only
        // because nothing listens there, not because the URL is refused.
        let bus = RedisBus::connect_lazy("rediss://127.0.0.1:1/", names());
        assert!(bus.is_ok(), "{:?}", bus.err());
        let error = RedisBus::connect("rediss://127.0.0.1:1/", names())
            .await
            .unwrap_err();
        assert!(!matches!(error, BusError::InvalidUrl { .. }), "{error}");
    }

    #[tokio::test]
    async fn invalid_names_are_rejected_before_connecting() {
        let short = BusNames {
            recent_size: 50,
            ..names()
        };
        let error = RedisBus::connect("redis://127.0.0.1:1/", short)
            .await
            .unwrap_err();
        assert!(matches!(error, BusError::InvalidNames(_)), "{error}");
    }
}
