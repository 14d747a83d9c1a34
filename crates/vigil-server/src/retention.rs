//! Deleting what has expired, in small batches that never stall ingest: events older than the
//! retention period (`VIGIL_RETENTION`, e.g. `30d`; off by default) and idempotency records
//! past their TTL (`VIGIL_IDEMPOTENCY_TTL`, always on).
//!
//! At 20,000 events/s a table grows by 1.7 billion rows a day, so a real site needs this. A
//! pass deletes [`BATCH_ROWS`] rows per statement, walking the `(created_at, id)` index (for
//! records, `expires_at`), with a pause between statements at least as long as the statement
//! took (and never under [`PAUSE`]), so deleting uses at most about half of the database's
//! time for this table even while it catches up on a large backlog: each statement holds the
//! SQLite writer (shared with the batcher) or MySQL row locks for a few milliseconds only, and
//! new rows, created now, never fall in the deleted range. Passes repeat every
//! [`Expiring::interval`]. Deleted rows and failed passes are counted for `/metrics`; a
//! failure (the database is down) is retried at the next pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigil_core::UnixMillis;
use vigil_store::Store;

/// Rows one delete statement removes at most.
pub const BATCH_ROWS: usize = 1000;
/// Shortest pause between two delete statements of a pass; a statement that took longer is
/// followed by a pause as long as it took.
pub const PAUSE: Duration = Duration::from_millis(20);

/// Retention's counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct RetentionStats {
    deleted: AtomicU64,
    passes: AtomicU64,
    errors: AtomicU64,
}

impl RetentionStats {
    /// Events deleted since start.
    pub fn deleted(&self) -> u64 {
        self.deleted.load(Ordering::Relaxed)
    }

    /// Passes completed.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Passes that stopped on a database error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// What a [`Retention`] task deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    /// Events created more than `keep` ago.
    Events { keep: Duration },
    /// Idempotency records past their expiry (written `ttl` after their request).
    IdempotencyRecords { ttl: Duration },
}

impl Expiring {
    /// How often a pass runs: a twentieth of the period, between one second and one minute.
    pub fn interval(self) -> Duration {
        let period = match self {
            Expiring::Events { keep } => keep,
            Expiring::IdempotencyRecords { ttl } => ttl,
        };
        (period / 20).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Deletes at most [`BATCH_ROWS`] expired rows, oldest first.
    async fn delete_some(self, store: &Store) -> Result<u64, vigil_store::StoreError> {
        let now = UnixMillis::now();
        match self {
            Expiring::Events { keep } => {
                let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
                let cutoff = UnixMillis(now.0.saturating_sub(keep_ms));
                store.delete_created_before(cutoff, BATCH_ROWS).await
            }
            Expiring::IdempotencyRecords { .. } => {
                store.purge_idempotency_records(now, BATCH_ROWS).await
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Expiring::Events { .. } => "events",
            Expiring::IdempotencyRecords { .. } => "idempotency records",
        }
    }
}

/// A running deletion task.
pub struct Retention {
    stats: Arc<RetentionStats>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Retention {
    /// Starts deleting what `expiring` names from `store`; the first pass runs at once.
    pub fn start(store: Store, expiring: Expiring) -> Retention {
        let stats = Arc::new(RetentionStats::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(store, expiring, Arc::clone(&stats), stop.clone()));
        Retention { stats, stop, task }
    }

    pub fn stats(&self) -> Arc<RetentionStats> {
        Arc::clone(&self.stats)
    }

    /// Stops after the statement in flight.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(
    store: Store,
    expiring: Expiring,
    stats: Arc<RetentionStats>,
    stop: CancellationToken,
) {
    let interval = expiring.interval();
    loop {
        let mut deleted = 0u64;
        loop {
            let started = tokio::time::Instant::now();
            let batch = tokio::select! {
                () = stop.cancelled() => return,
                batch = expiring.delete_some(&store) => batch,
            };
            let pause = started.elapsed().max(PAUSE);
            match batch {
                Ok(rows) => {
                    deleted += rows;
                    stats.deleted.fetch_add(rows, Ordering::Relaxed);
                    if rows < BATCH_ROWS as u64 {
                        stats.passes.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                Err(error) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, what = expiring.name(), "deleting expired rows failed; retrying at the next pass");
                    break;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, what = expiring.name(), "deleted expired rows");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Parses a retention period: a whole number and a unit, `s`, `m`, `h`, `d` or `w` (`30d`,
/// `12h`); `off` (or `0`) for none. At least one minute, so a typo cannot empty the table in
/// seconds.
pub fn parse_period(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") || text == "0" {
        return Ok(None);
    }
    parse_duration(text, 60).map(Some)
}

/// Parses a duration as [`parse_period`] does, with no `off`, at least `min_seconds`.
pub fn parse_duration(text: &str, min_seconds: u64) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: use s, m, h, d or w (e.g. 30d)"))?;
    let (digits, unit) = text.split_at(split);
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number (e.g. 30d)"))?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(format!(
                "{unit:?} is not a unit: use s, m, h, d or w (e.g. 30d)"
            ));
        }
    };
    let seconds = count
        .checked_mul(seconds_per_unit)
        .filter(|&seconds| seconds <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("{text:?} is longer than a century"))?;
    if seconds < min_seconds {
        return Err(format!(
            "{text:?} is shorter than the minimum of {min_seconds}s"
        ));
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_with_units_and_bounds() {
        assert_eq!(
            parse_period("30d").unwrap(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_period("12h").unwrap(),
            Some(Duration::from_secs(43_200))
        );
        assert_eq!(parse_period("1m").unwrap(), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_period("2w").unwrap(),
            Some(Duration::from_secs(1_209_600))
        );
        assert_eq!(parse_period("off").unwrap(), None);
        assert_eq!(parse_period("0").unwrap(), None);
        for bad in [
            "",
            "30",
            "d",
            "30x",
            "-1d",
            "1.5d",
            "59s",
            "99999999999w",
            "30 d",
        ] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("2s", 1).unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("24h", 1).unwrap(),
            Duration::from_secs(86_400)
        );
        assert!(parse_duration("0s", 1).is_err());
        assert!(parse_duration("off", 1).is_err());
    }

    #[test]
    fn passes_run_often_enough_and_not_too_often() {
        assert_eq!(
            Expiring::Events {
                keep: Duration::from_secs(60)
            }
            .interval(),
            Duration::from_secs(3)
        );
        assert_eq!(
            Expiring::Events {
                keep: Duration::from_secs(30 * 86_400)
            }
            .interval(),
            Duration::from_secs(60)
        );
        assert_eq!(
            Expiring::IdempotencyRecords {
                ttl: Duration::from_secs(2)
            }
            .interval(),
            Duration::from_secs(1)
        );
    }
}
