//! Resuming a client (`/ws?since=`, or an SSE stream's `Last-Event-ID`): what it missed, read
//! from the store, and the seam between that replay and the live frames that queued up
//! meanwhile, so that it sees no gap and no duplicate. Both wires share it; each writes the
//! replay and the closing `{since, replayed, complete}` in its own framing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use vigil_core::EventFilter;
use vigil_store::{Store, StoredEvent};

use crate::event::Wire;
use crate::hub::{HubStats, ResumePoint};

/// Ids read per by-id lookup while replaying.
const REPLAY_IDS_PER_READ: usize = 1000;
/// How long a replayed id is remembered to drop its live copy: longer than any publish can
/// lag its commit (the publisher's queue is bounded by its own deadlines).
const REPLAY_DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// What a resuming client must be replayed before its live frames.
pub struct Resume {
    pub store: Store,
    /// The last id the client saw.
    pub since: u64,
    pub filter: EventFilter,
    /// Where `since` stands in the hub's delivery log ([`crate::Hub::join`]);
    /// `None` when it is not there.
    pub point: Option<ResumePoint>,
    /// At most this many events are replayed (`VIGIL_WS_RESUME_MAX`).
    pub max_events: usize,
}

impl Resume {
    /// The events the client missed, at most `max_events`, and whether that is all of them.
    ///
    /// When `since` is in the hub's delivery log, the client missed what was fanned out after
    /// it, whatever the ids (instances commit from different id blocks): replayed first, in
    /// fan-out order, so that resuming again from the last replayed id continues where this
    /// replay stopped. Then the stored events with ids above `since` that were not fanned out
    /// yet (committed, still on their way), in id order; their live copies are skipped.
    /// Events the channel lost reach the client through backfill.
    ///
    /// When `since` is older than the log, the stored events with larger ids are replayed in id
    /// order: exact for one instance; with several, an event committed with a smaller id
    /// (another instance's older block) just after `since` can be missed.
    async fn missed_events(&mut self) -> Result<(Vec<StoredEvent>, bool), vigil_store::StoreError> {
        let limit = self.max_events.saturating_add(1);
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut skip: HashSet<u64> = HashSet::new();
        if let Some(point) = self.point.take() {
            for ids in point.logged_after.chunks(REPLAY_IDS_PER_READ) {
                if events.len() >= limit {
                    break;
                }
                let mut found: HashMap<u64, StoredEvent> = self
                    .store
                    .events_by_ids(ids)
                    .await?
                    .into_iter()
                    .map(|event| (event.id, event))
                    .collect();
                events.extend(
                    ids.iter()
                        .filter_map(|id| found.remove(id))
                        .filter(|event| {
                            self.filter
                                .matches(&event.event_type, event.level, &event.source)
                        }),
                );
            }
            skip = point.seen_above;
            skip.extend(point.logged_after);
        }
        let mut cursor = self.since;
        while events.len() < limit {
            let page = self
                .store
                .events_after(cursor, &self.filter, REPLAY_IDS_PER_READ)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            cursor = last.id;
            let full = page.len() == REPLAY_IDS_PER_READ;
            events.extend(page.into_iter().filter(|event| !skip.contains(&event.id)));
            if !full {
                break;
            }
        }
        let complete = events.len() <= self.max_events;
        events.truncate(self.max_events);
        Ok((events, complete))
    }

    /// Reads what the client missed (counted in `stats`) and says how the replay went. A
    /// store that cannot answer makes an empty replay with `complete: false`: the client
    /// keeps its live feed and may resume again.
    pub async fn replay(mut self, stats: &HubStats) -> (Vec<StoredEvent>, ReplayOutcome) {
        let from_log = self.point.is_some();
        let (events, complete) = match self.missed_events().await {
            Ok(missed) => missed,
            Err(error) => {
                tracing::warn!(%error, since = self.since, "a resume could not read the store");
                (Vec::new(), false)
            }
        };
        stats.resumes.fetch_add(1, Ordering::Relaxed);
        stats
            .replayed_events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let outcome = ReplayOutcome {
            since: self.since,
            replayed: events.len(),
            complete,
            from_log,
        };
        (events, outcome)
    }
}

/// How a replay went: what the `resume` message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// The id the client resumed after.
    pub since: u64,
    /// Events replayed.
    pub replayed: usize,
    /// Whether that is every event the client missed.
    pub complete: bool,
    /// Whether `since` was in the hub's delivery log (the replay is in fan-out order then).
    pub from_log: bool,
}

impl ReplayOutcome {
    /// `{"since":N,"replayed":n,"complete":bool}`.
    pub fn json(&self) -> String {
        format!(
            r#"{{"since":{},"replayed":{},"complete":{}}}"#,
            self.since, self.replayed, self.complete
        )
    }
}

/// The live frames a resuming client must not be sent: those of the events just replayed
/// (their live copies queued up meanwhile), for [`REPLAY_DEDUPE_WINDOW`].
#[derive(Debug, Default)]
pub struct ReplaySeam {
    /// Ids just replayed…
    replayed: HashSet<u64>,
    /// …and, when the client resumed from an id this hub had not fanned out yet (still on its
    /// way, or older than the log), live frames with ids up to it, which the client says it
    /// has seen (the replay is in id order then)…
    seen_through: Option<u64>,
    /// …until then.
    until: Option<Instant>,
}

impl ReplaySeam {
    /// The seam after replaying `events`.
    pub fn after(events: &[StoredEvent], outcome: &ReplayOutcome) -> ReplaySeam {
        let seen_through = (!outcome.from_log).then_some(outcome.since);
        if events.is_empty() && seen_through.is_none() {
            return ReplaySeam::default();
        }
        ReplaySeam {
            replayed: events.iter().map(|event| event.id).collect(),
            seen_through,
            until: Some(Instant::now() + REPLAY_DEDUPE_WINDOW),
        }
    }

    /// Drops from `batch` (frames of `wire`) the live frames of events just replayed.
    pub fn skip_replayed(&mut self, wire: Wire, batch: &mut Vec<Bytes>) {
        let Some(until) = self.until else {
            return;
        };
        if Instant::now() >= until {
            *self = ReplaySeam::default();
            return;
        }
        let seen = |id: u64| {
            self.replayed.contains(&id) || self.seen_through.is_some_and(|through| id <= through)
        };
        batch.retain(|frame| wire.event_id(frame).is_none_or(|id| !seen(id)));
    }
}
