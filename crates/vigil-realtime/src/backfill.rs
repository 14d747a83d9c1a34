//! Backfill: when the live feed may have lost events (the Redis subscription was down, a
//! publisher dropped batches, the in-process feed fell behind), re-read them from the
//! database and fan out the ones the hub has not.
//!
//! A request names the earliest `createdAt` that may be missing ([`Hub::request_backfill`]);
//! requests arriving while a run is going on are merged into the next run. A run reads every
//! event created from [`LOOKBACK`] before that moment, in `(createdAt, id)` order, page by page
//! (an index range, see `vigil_store::sql::forward`), and hands them to [`Hub::deliver`],
//! whose delivery log drops what was already fanned out. The look-back covers what `createdAt`
//! does not say exactly: clock skew between instances and the time between an event's
//! `createdAt` and its commit. A run that fails (the database is down too) is retried until it
//! succeeds, from the same moment.
//!
//! Clients connected during the loss receive the missing events late and out of id order, but
//! exactly once; clients that were disconnected resume (`/ws?since=`) instead.
//!
//! **While the Redis subscription is down** the bridge asks for a run every
//! `crate::bridge::POLL_INTERVAL`, from the previous poll's moment, so each run reads about
//! [`LOOKBACK`] + one interval (5.5 s) of events, however long the outage: in rows read, about
//! eleven times the ingest rate while Redis is away. Two bounds keep that exact:
//! - every id of the re-read window must still be in the hub's delivery log
//!   (`crate::hub::DELIVERY_LOG_EVENTS`, 262,144 ids), or it is sent a second time: exact up
//!   to about 47,000 events/s sustained. Past it the oldest events of a window may arrive
//!   twice, never not at all;
//! - a run reads at most [`MAX_EVENTS_PER_RUN`]: exact up to about 36,000 events/s. Past it a
//!   run stops before the newest events of its window, and those reach no connected client
//!   (a client resuming with `since` gets them).
//!
//! An event committed more than [`LOOKBACK`] after its `createdAt` (a batch whose outcome the
//! batcher settled late, after a database failure) is outside every poll's window; its
//! publisher's gap notice brings it once Redis is back.
//!
//! A backfill can carry thousands of events at once, more than a client's queue holds; it goes
//! out paced to the clients' queues ([`Hub::deliver_paced`]), like every other source.

use std::sync::atomic::Ordering;
use std::time::Duration;

use vigil_store::Store;

use crate::hub::Hub;

/// How far before the requested moment a backfill starts reading.
pub const LOOKBACK: Duration = Duration::from_secs(5);
/// Events one read returns.
const PAGE: usize = 1000;
/// Most events one run reads; a loss longer than this at the current rate is past what a
/// backfill can recover without stalling everyone (clients resume with `since` instead).
pub const MAX_EVENTS_PER_RUN: usize = 200_000;
/// Pause before retrying a failed run.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs backfills for `hub` from `store` until the hub shuts down.
pub fn start(hub: Hub, store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = hub.shutdown_token();
        loop {
            let from_ms = tokio::select! {
                () = shutdown.cancelled() => return,
                from_ms = hub.next_backfill() => from_ms,
            };
            let run = run(&hub, &store, from_ms);
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = run => result,
            };
            match result {
                Ok(report) => {
                    hub.stats().backfills.fetch_add(1, Ordering::Relaxed);
                    if report.missing > 0 || report.cut {
                        tracing::info!(
                            read = report.read,
                            missing = report.missing,
                            cut = report.cut,
                            "backfill fanned out events the live feed had missed"
                        );
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, from_ms, "backfill failed; retrying");
                    hub.request_backfill(from_ms);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        }
    })
}

/// What one run did.
struct Report {
    /// Events read from the database.
    read: usize,
    /// Of those, events the hub had not fanned out.
    missing: usize,
    /// Whether [`MAX_EVENTS_PER_RUN`] stopped the run.
    cut: bool,
}

async fn run(hub: &Hub, store: &Store, from_ms: i64) -> Result<Report, vigil_store::StoreError> {
    let from = vigil_core::UnixMillis(from_ms.saturating_sub(LOOKBACK.as_millis() as i64));
    let mut cursor = None;
    let mut report = Report {
        read: 0,
        missing: 0,
        cut: false,
    };
    let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(PAGE);
    loop {
        let page = store.events_created_since(from, cursor, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(report);
        };
        cursor = Some((last.created_at, last.id));
        report.read += page.len();
        encoded.clear();
        encoded.extend(page.iter().map(|event| event.as_ref().encode()));
        let messages: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let missing = hub.deliver_paced(&messages).await;
        report.missing += missing;
        hub.stats()
            .backfilled_events
            .fetch_add(missing as u64, Ordering::Relaxed);
        if page.len() < PAGE {
            return Ok(report);
        }
        if report.read >= MAX_EVENTS_PER_RUN {
            report.cut = true;
            tracing::warn!(
                read = report.read,
                "backfill stopped at its bound; clients that need older events must resume"
            );
            return Ok(report);
        }
    }
}
