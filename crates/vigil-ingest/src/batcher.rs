//! The back half of the pipeline: threads that turn queued requests into multi-row INSERTs
//! and answer each request after COMMIT, one thread per writer connection of the store.
//!
//! Group commit without a timer: the batcher blocks until a request arrives, then takes
//! everything else already queued (up to the row and byte bounds) and writes it as one
//! batch. While that write runs, new requests queue up and form the next batch, so batch
//! size follows load: a trickle is written one request at a time with no added wait, a
//! crowd of concurrent producers in batches of hundreds. A request is never split: the
//! first request of a batch always fits, however large.
//!
//! With several writers (MySQL), a batch is written while the previous one commits, and the
//! commit line ([`crate::line`]) keeps commits, and what is published after them, in id
//! order. One batcher (the first) takes requests from the queue and forms every batch; it
//! hands a batch of at least [`OVERLAP_MIN_ROWS`] rows to an idle helper (one per further
//! writer) and goes on to the next, and writes everything else itself. A trickle is thus
//! written exactly as with a single writer: splitting it over two would only make smaller
//! batches, each an INSERT and then a COMMIT that waits (one round trip more than an
//! autocommit INSERT), which gains nothing.
//!
//! Answers are truthful. Ids are allocated before the write and named in the INSERT, so a
//! write whose fate is unknown (the connection died after sending) can be settled by asking
//! the database whether those ids exist; the batcher keeps asking until it knows, and only
//! then answers. A retry reuses the same ids, so the primary key makes a duplicate row
//! impossible.
//!
//! Answers are also bounded in time. Every request has a deadline
//! ([`crate::IngestConfig::answer_timeout`] after it was submitted); a batch is retried only
//! until shortly before its oldest request's deadline and never sent again after it. If the
//! deadline comes while the batch's outcome is still unknown, its requests are answered
//! [`IngestError::OutcomeUnknown`] and the batcher goes on settling it: when it learns the
//! outcome it logs and counts it, and a batch that did commit is published like any other.
//! While the database cannot be reached, or a batch is being settled, the batcher marks the
//! store down ([`StoreState`]) so new requests are refused at once (503) instead of queueing
//! behind it; queued ones are answered 503 too, and the batcher checks the database every
//! [`PROBE_INTERVAL`] until it answers again.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, select};
use tokio_util::sync::CancellationToken;
use vigil_core::{CommitSink, CommittedBatch, PublishedEvent, UnixMillis};
use vigil_store::{Digest, EventRow, IdempotencyRecord, InsertError, Store};

use crate::config::IngestConfig;
use crate::error::IngestError;
use crate::idempotency::Stored;
use crate::line::{CommitLine, Place};
use crate::queue::{Shared, StoreState, Submission};

/// First pause between attempts against a failing database; doubles up to the cap.
const BACKOFF_START: Duration = Duration::from_millis(20);
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// Rounds of "a key of the batch is recorded" after which its keyed requests get a 503.
const MAX_KEY_CONFLICTS: u32 = 3;
/// How often the batcher logs its batch sizes while busy.
const STATS_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often the batcher checks whether a database it could not reach is back. Short, so that
/// ingest resumes within a second or so of the database's return; a check of a refused
/// connection costs microseconds.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long before a batch's oldest deadline the batcher stops retrying and answers, so that
/// its own (truthful) answer reaches the requests before their deadline does.
const ANSWER_MARGIN: Duration = Duration::from_millis(300);
/// Rows that must be waiting before a batch is started beside one in flight. 1,000-row
/// batches gain much from overlapping; batches of tens of rows gain nothing (see the module
/// docs), so the bar sits between.
pub const OVERLAP_MIN_ROWS: usize = 256;

/// Requests still to write, and how many times they were already refused for a recorded
/// idempotency key (see [`Batcher::answer_recorded_keys`]).
struct ToWrite {
    batch: Vec<Submission>,
    key_conflicts: u32,
}

/// Why a batch write did not commit.
enum WriteFailure {
    /// Answer every request of the batch with this.
    Answer(IngestError),
    /// A key of the batch is recorded already; nothing was stored.
    KeyTaken,
    /// The batch's answer deadline came while its outcome was unknown: answer
    /// `OutcomeUnknown`, then go on finding out.
    Unsettled {
        ids: Vec<u64>,
        created_at: UnixMillis,
    },
}

/// What the batcher does next.
enum Next {
    /// Write this request (and whatever is queued behind it).
    Request(Submission),
    /// Nothing arrived while the store is down: check whether it is back.
    Probe,
    /// Shut down: the queue is closed and empty.
    Stop,
}

pub(crate) struct Batcher {
    receiver: Receiver<Submission>,
    /// Disconnected when the pipeline shuts down.
    stop: Receiver<()>,
    stopping: bool,
    store: Store,
    /// The store writer this thread inserts on.
    writer: usize,
    /// Shared by every batcher thread of the pipeline.
    line: Arc<CommitLine>,
    /// The place in line of the batch being written, from its id allocation until it is
    /// settled and published.
    place: Option<Place>,
    /// The first batcher's way to the idle helpers: a rendezvous, so a batch is handed over
    /// only to a helper waiting for one.
    helpers: Option<Sender<Vec<Submission>>>,
    /// The runtime the store's read pool lives on (the one that started the pipeline), for the
    /// rare reads the batcher makes through the pool.
    pool_runtime: Option<tokio::runtime::Handle>,
    /// Receives every committed batch, encoded, after its requests are answered.
    sink: Option<Arc<dyn CommitSink>>,
    config: IngestConfig,
    shared: Arc<Shared>,
    force: CancellationToken,
    /// A request taken from the queue that did not fit the previous batch.
    carry: Option<Submission>,
    /// Set when a batch used its whole retry window; cleared by the next successful write.
    /// Later batches get one attempt each meanwhile.
    retries_spent: bool,
    last_stats_log: Instant,
    rows_since_log: u64,
    batches_since_log: u64,
    max_rows_since_log: usize,
}

impl Batcher {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        receiver: Receiver<Submission>,
        stop: Receiver<()>,
        store: Store,
        writer: usize,
        line: Arc<CommitLine>,
        sink: Option<Arc<dyn CommitSink>>,
        config: IngestConfig,
        shared: Arc<Shared>,
        force: CancellationToken,
    ) -> Self {
        Batcher {
            receiver,
            stop,
            stopping: false,
            store,
            writer,
            line,
            place: None,
            helpers: None,
            pool_runtime: tokio::runtime::Handle::try_current().ok(),
            sink,
            config,
            shared,
            force,
            carry: None,
            retries_spent: false,
            last_stats_log: Instant::now(),
            rows_since_log: 0,
            batches_since_log: 0,
            max_rows_since_log: 0,
        }
    }

    /// Serves the queue until shutdown, driving the store's I/O on the thread's own `runtime`.
    pub(crate) fn run(mut self, runtime: &tokio::runtime::Runtime) {
        loop {
            match self.next() {
                Next::Request(first) if self.shared.store_state() == StoreState::Up => {
                    let batch = self.fill_batch(first);
                    if let Some(batch) = self.hand_over(batch) {
                        self.write_and_answer(runtime, batch);
                    }
                    self.log_stats_now_and_then();
                }
                // Admitted just before the store was marked down: refuse it, and what queued
                // behind it, without a write that cannot succeed.
                Next::Request(first) => {
                    self.answer_all(vec![first], IngestError::StoreUnavailable);
                    self.refuse_queued();
                }
                Next::Probe => self.probe(runtime),
                Next::Stop => break,
            }
        }
        // Helpers finish the batch they hold, then stop.
        drop(self.helpers.take());
        self.log_stats();
        tracing::debug!("batcher stopped");
    }

    /// Makes this batcher the first one, handing large batches to `helpers`.
    pub(crate) fn with_helpers(mut self, helpers: Sender<Vec<Submission>>) -> Self {
        self.helpers = Some(helpers);
        self
    }

    /// A helper's life: writes the batches the first batcher hands over, until it stops.
    pub(crate) fn run_helper(
        mut self,
        batches: Receiver<Vec<Submission>>,
        runtime: &tokio::runtime::Runtime,
    ) {
        while let Ok(batch) = batches.recv() {
            self.write_and_answer(runtime, batch);
            self.log_stats_now_and_then();
        }
        self.log_stats();
        tracing::debug!(writer = self.writer, "batcher helper stopped");
    }

    /// Hands a large batch to an idle helper; the batch back when this batcher writes it.
    fn hand_over(&self, batch: Vec<Submission>) -> Option<Vec<Submission>> {
        let Some(helpers) = &self.helpers else {
            return Some(batch);
        };
        let rows: usize = batch.iter().map(|request| request.events.len()).sum();
        if rows < OVERLAP_MIN_ROWS {
            return Some(batch);
        }
        match helpers.try_send(batch) {
            Ok(()) => {
                self.shared
                    .stats
                    .overlapped_batches
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(refused) => Some(refused.into_inner()),
        }
    }

    /// Blocks for the next request the batcher should handle (one whose requester still
    /// waits); while the store is down, at most [`PROBE_INTERVAL`].
    fn next(&mut self) -> Next {
        // Taken already, when it did not fit the previous batch.
        if let Some(carried) = self.carry.take() {
            return Next::Request(carried);
        }
        loop {
            let next = self.next_submission();
            match next {
                Next::Request(submission) => {
                    if let Some(submission) = self.take(submission) {
                        return Next::Request(submission);
                    }
                }
                other => return other,
            }
        }
    }

    fn next_submission(&mut self) -> Next {
        if self.stopping {
            return self.receiver.try_recv().map_or(Next::Stop, Next::Request);
        }
        let received = if self.shared.store_state() == StoreState::Up {
            select! {
                recv(self.receiver) -> request => request.ok(),
                recv(self.stop) -> _ => None,
            }
        } else {
            select! {
                recv(self.receiver) -> request => request.ok(),
                recv(self.stop) -> _ => None,
                default(PROBE_INTERVAL) => return Next::Probe,
            }
        };
        match received {
            Some(request) => Next::Request(request),
            None => {
                self.stopping = true;
                self.receiver.try_recv().map_or(Next::Stop, Next::Request)
            }
        }
    }

    /// Takes a submission into the batcher's hands; `None` (its budget released) if its
    /// requester stopped waiting first and was told it is not stored.
    fn take(&self, submission: Submission) -> Option<Submission> {
        if submission.progress.take() {
            return Some(submission);
        }
        self.shared.release(submission.events.len());
        None
    }

    /// Answers everything queued `StoreUnavailable`: the store is down or settling, and these
    /// requests would otherwise wait for their deadline.
    fn refuse_queued(&mut self) {
        let mut refused: Vec<Submission> = self.carry.take().into_iter().collect();
        while let Ok(queued) = self.receiver.try_recv() {
            refused.extend(self.take(queued));
        }
        if !refused.is_empty() {
            tracing::debug!(
                requests = refused.len(),
                "refusing queued requests while the store is down"
            );
            self.answer_all(refused, IngestError::StoreUnavailable);
        }
    }

    /// While the store is down: whether the database answers again.
    fn probe(&mut self, runtime: &tokio::runtime::Runtime) {
        match runtime.block_on(self.store.check_writer(self.writer)) {
            Ok(()) => self.mark(StoreState::Up),
            Err(error) => {
                self.count_store_error();
                tracing::debug!(%error, "database still unavailable");
            }
        }
    }

    /// Records the store's state for the handlers, logging changes.
    fn mark(&self, state: StoreState) {
        let previous = self.shared.set_store_state(state);
        if previous == state {
            return;
        }
        match state {
            StoreState::Up => tracing::info!(
                was = previous.as_str(),
                "database available again; taking requests"
            ),
            StoreState::Down => tracing::error!(
                "database unreachable; refusing new requests with 503 until it answers"
            ),
            StoreState::Settling => tracing::warn!(
                "a batch outcome is unknown; refusing new requests with 503 until it is settled"
            ),
        }
    }

    /// Adds everything already queued that fits the bounds.
    fn fill_batch(&mut self, first: Submission) -> Vec<Submission> {
        let mut rows = first.events.len();
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while rows < self.config.batch_max_rows && bytes < self.config.batch_max_bytes {
            let Ok(next) = self.receiver.try_recv() else {
                break;
            };
            let Some(next) = self.take(next) else {
                continue;
            };
            if rows + next.events.len() > self.config.batch_max_rows
                || bytes + next.bytes > self.config.batch_max_bytes
            {
                self.carry = Some(next);
                break;
            }
            rows += next.events.len();
            bytes += next.bytes;
            batch.push(next);
        }
        batch
    }

    /// Writes `batch` and answers its requests. A write can leave some of them to be written
    /// again (see [`Batcher::write_once`]); those go next, before anything new is taken.
    fn write_and_answer(&mut self, runtime: &tokio::runtime::Runtime, batch: Vec<Submission>) {
        // A stack, so that what one write leaves is written before the next part of an earlier
        // split, in request order.
        let mut to_write = vec![ToWrite {
            batch,
            key_conflicts: 0,
        }];
        while let Some(next) = to_write.pop() {
            let left = self.write_once(runtime, next);
            to_write.extend(left.into_iter().rev());
        }
    }

    /// Writes one batch and answers what it can; returns the batches still to write: each
    /// request alone after the database rejected the batch, or the requests left after a
    /// recorded idempotency key refused it.
    fn write_once(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        ToWrite {
            batch,
            key_conflicts,
        }: ToWrite,
    ) -> Vec<ToWrite> {
        let left = self.write_once_in_line(runtime, batch, key_conflicts);
        // Settled and published (or certainly not stored): later batches may commit.
        self.place = None;
        left
    }

    fn write_once_in_line(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        mut batch: Vec<Submission>,
        key_conflicts: u32,
    ) -> Vec<ToWrite> {
        let rows: usize = batch.iter().map(|request| request.events.len()).sum();
        let started = Instant::now();
        let written = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(self.write(&batch, rows))
        }));
        self.shared
            .stats
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match written {
            Ok(Err(WriteFailure::KeyTaken)) => {
                return self
                    .answer_recorded_keys(runtime, batch, key_conflicts)
                    .into_iter()
                    .collect();
            }
            Ok(Err(WriteFailure::Unsettled { ids, created_at })) => {
                self.settle_late(runtime, batch, &ids, created_at);
                return Vec::new();
            }
            Ok(Err(WriteFailure::Answer(error))) => Err(error),
            Ok(Ok(written)) => Ok(written),
            Err(_) => {
                tracing::error!(rows, "batch write panicked; its outcome is unknown");
                Err(IngestError::OutcomeUnknown)
            }
        };
        if outcome == Err(IngestError::Rejected) && batch.len() > 1 {
            // Nothing was stored. One request's rows may be what the database refuses (a check
            // Vigil's validation does not make): write each request alone, so the others are
            // stored and only the refused one is answered with the error.
            tracing::warn!(
                requests = batch.len(),
                "the database rejected a batch; writing its requests one by one to find the refused one"
            );
            return batch
                .into_iter()
                .map(|request| ToWrite {
                    batch: vec![request],
                    key_conflicts: 0,
                })
                .collect();
        }
        match outcome {
            Ok((ids, created_at)) => {
                self.record_commit(rows);
                let mut remaining = &ids[..];
                for request in &mut batch {
                    let (own, rest) = remaining.split_at(request.events.len());
                    remaining = rest;
                    request.answer(Ok(Stored::Committed(own.to_vec())));
                    self.shared.release(request.events.len());
                }
                // Answers first: a slow or absent Redis never delays an ack.
                if let Some(sink) = &self.sink {
                    sink.committed(encode_batch(&batch, &ids, created_at));
                }
            }
            Err(error) => self.answer_all(batch, error),
        }
        Vec::new()
    }

    /// Writes the batch, retrying within the window; on COMMIT the ids in request order and
    /// the batch's `createdAt`.
    async fn write(
        &mut self,
        batch: &[Submission],
        row_count: usize,
    ) -> Result<(Vec<u64>, UnixMillis), WriteFailure> {
        let window = if self.retries_spent {
            Duration::ZERO
        } else {
            self.config.retry_window
        };
        // Retried until the window ends or shortly before the oldest request's deadline,
        // whichever is first; never sent again after that.
        let answer_by = batch
            .iter()
            .map(|request| request.deadline)
            .min()
            .unwrap_or_else(Instant::now)
            .checked_sub(ANSWER_MARGIN)
            .unwrap_or_else(Instant::now);
        if Instant::now() >= answer_by {
            // Waited in the queue behind a failing database until there is no time left to
            // write and answer: certainly not stored, and never will be.
            return Err(WriteFailure::Answer(IngestError::StoreUnavailable));
        }
        let retry_until = answer_by.min(Instant::now() + window);
        let mut backoff = BACKOFF_START;

        let ids = loop {
            let allocated = self.line.allocate(&self.store, row_count).await;
            if let Err(error) = &allocated {
                self.count_store_error();
                if error.is_unreachable() {
                    self.mark(StoreState::Down);
                }
            }
            match allocated {
                Ok((ids, place)) => {
                    self.place = Some(place);
                    break ids;
                }
                Err(error) if error.is_retriable() && self.may_retry(retry_until) => {
                    tracing::warn!(%error, "id allocation failed; retrying");
                    self.pause(&mut backoff).await;
                }
                Err(error) => return Err(WriteFailure::Answer(self.gave_up(&error, row_count))),
            }
        };
        debug_assert_eq!(ids.len(), row_count);

        let created_at = UnixMillis::now();
        let rows: Vec<EventRow<'_>> = events_of(batch)
            .zip(&ids)
            .map(|((event, request_id), &id)| EventRow {
                id,
                event,
                created_at,
                request_id,
            })
            .collect();
        let keys = self.idempotency_records(batch, &ids, created_at);

        loop {
            // The oldest batch in flight commits at once; a later one when its turn comes.
            let turn = self
                .place
                .as_ref()
                .filter(|place| !place.is_first())
                .map(|place| Box::pin(place.turn(answer_by)) as vigil_store::CommitTurn<'_>);
            let inserted = self
                .store
                .insert_on_writer(self.writer, &rows, &keys, turn)
                .await;
            if let Err(InsertError::NotCommitted(error) | InsertError::OutcomeUnknown(error)) =
                &inserted
            {
                self.count_store_error();
                if error.is_unreachable() {
                    self.mark(StoreState::Down);
                }
            }
            let failure = match inserted {
                Ok(()) => {
                    self.wrote();
                    return Ok((ids, created_at));
                }
                Err(InsertError::NotCommitted(error)) => error,
                // Nothing stored; the batcher answers those requests from the records.
                Err(InsertError::KeyTaken(error)) => {
                    tracing::info!(%error, "an idempotency key of the batch is recorded already");
                    return Err(WriteFailure::KeyTaken);
                }
                // A duplicate id on a retry means an earlier attempt of this batch committed.
                Err(InsertError::OutcomeUnknown(error) | InsertError::DuplicateIds(error)) => {
                    tracing::warn!(%error, rows = row_count, "batch outcome unknown; asking the database");
                    self.mark(StoreState::Settling);
                    match self.settle(&ids, answer_by).await {
                        Some(true) => {
                            self.wrote();
                            return Ok((ids, created_at));
                        }
                        Some(false) => {
                            // Settled: the database answers, so the next attempt is an
                            // ordinary one.
                            self.mark(StoreState::Up);
                            error
                        }
                        None => return Err(WriteFailure::Unsettled { ids, created_at }),
                    }
                }
            };
            if !(failure.is_retriable() && self.may_retry(retry_until)) {
                return Err(WriteFailure::Answer(self.gave_up(&failure, row_count)));
            }
            tracing::warn!(error = %failure, rows = row_count, "batch insert failed; retrying");
            self.pause(&mut backoff).await;
        }
    }

    /// The idempotency records of the batch's keyed requests, with the ids they are given.
    fn idempotency_records(
        &self,
        batch: &[Submission],
        ids: &[u64],
        created_at: UnixMillis,
    ) -> Vec<IdempotencyRecord> {
        let ttl_ms = i64::try_from(self.config.idempotency_ttl.as_millis()).unwrap_or(i64::MAX);
        let mut records = Vec::new();
        let mut remaining = ids;
        for request in batch {
            let (own, rest) = remaining.split_at(request.events.len());
            remaining = rest;
            if let Some(key) = &request.key {
                records.push(IdempotencyRecord {
                    key: key.key.clone(),
                    body: key.body.clone(),
                    request_id: request.request_id.clone(),
                    ids: own.to_vec(),
                    created_at,
                    expires_at: UnixMillis(created_at.0.saturating_add(ttl_ms)),
                });
            }
        }
        records
    }

    /// After a batch was refused because a key of it is recorded (nothing of it stored):
    /// answers each keyed request whose key has a live record from that record (the same body:
    /// the ids it stored; another body: a mismatch), frees keys whose records expired, and
    /// returns the rest, to write again. Another instance's writer is the only source of such
    /// records while a key is claimed here, so this is rare; after [`MAX_KEY_CONFLICTS`] rounds
    /// without progress the keyed requests are answered 503 rather than looping.
    fn answer_recorded_keys(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        batch: Vec<Submission>,
        key_conflicts: u32,
    ) -> Option<ToWrite> {
        let keys: Vec<Digest> = batch
            .iter()
            .filter_map(|request| request.key.as_ref().map(|key| key.key.clone()))
            .collect();
        let now = UnixMillis::now();
        let store = self.store.clone();
        let lookup = async move {
            let records = store.idempotency_records(&keys, now).await?;
            store.delete_expired_idempotency_keys(&keys, now).await?;
            Ok::<_, vigil_store::StoreError>(records)
        };
        // These use the store's read pool, whose connections belong to the runtime that made
        // them: run them there. A pooled connection opened on this thread's runtime would
        // later be driven by a reactor that only runs while the batcher writes, and a request
        // handler using it would hang until its statement timeout.
        let looked_up = match &self.pool_runtime {
            Some(pool_runtime) => runtime.block_on(pool_runtime.spawn(lookup)).unwrap_or(Err(
                vigil_store::StoreError::Timeout {
                    operation: "idempotency lookup (task ended)",
                    after: Duration::ZERO,
                },
            )),
            None => runtime.block_on(lookup),
        };
        let records = match looked_up {
            Ok(records) if key_conflicts < MAX_KEY_CONFLICTS => records,
            outcome => {
                if let Err(error) = &outcome {
                    self.count_store_error();
                    tracing::warn!(%error, "could not read the recorded idempotency keys");
                } else {
                    tracing::error!("idempotency keys kept conflicting; answering 503");
                }
                let (keyed, rest): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|request| request.key.is_some());
                self.answer_all(keyed, IngestError::StoreUnavailable);
                return (!rest.is_empty()).then_some(ToWrite {
                    batch: rest,
                    key_conflicts: 0,
                });
            }
        };
        let mut rest = Vec::with_capacity(batch.len());
        for mut request in batch {
            let record = request.key.as_ref().and_then(|key| {
                records
                    .iter()
                    .find(|record| record.key == key.key)
                    .map(|record| (record, record.body == key.body))
            });
            match record {
                Some((record, true)) => request.answer(Ok(Stored::Replayed(record.clone()))),
                Some((_, false)) => request.answer(Err(IngestError::IdempotencyMismatch)),
                None => {
                    rest.push(request);
                    continue;
                }
            }
            self.shared.release(request.events.len());
        }
        (!rest.is_empty()).then_some(ToWrite {
            batch: rest,
            key_conflicts: key_conflicts + 1,
        })
    }

    fn answer_all(&self, batch: Vec<Submission>, error: IngestError) {
        self.shared
            .stats
            .failed_requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for mut request in batch {
            request.answer(Err(error.clone()));
            self.shared.release(request.events.len());
        }
    }

    /// Asks the database whether `ids` committed until it answers or `answer_by` comes
    /// (`None`), refusing what queues meanwhile.
    async fn settle(&mut self, ids: &[u64], answer_by: Instant) -> Option<bool> {
        let line = Arc::clone(&self.line);
        let _settling = line.settling();
        let mut backoff = BACKOFF_START;
        loop {
            match self.store.resolve(ids).await {
                Ok(committed) => {
                    tracing::info!(committed, rows = ids.len(), "batch outcome settled");
                    return Some(committed);
                }
                Err(error) => {
                    self.count_store_error();
                    tracing::warn!(%error, "could not settle the batch outcome yet");
                }
            }
            self.refuse_queued();
            if self.force.is_cancelled() || Instant::now() + backoff >= answer_by {
                return None;
            }
            self.pause(&mut backoff).await;
        }
    }

    /// After a batch's requests were answered `OutcomeUnknown`: goes on asking the database
    /// until it knows (or the shutdown deadline comes), refusing new requests meanwhile. A
    /// batch that committed is counted and published like any other, so live clients and the
    /// cache get its events; producers learn its outcome by retrying with their
    /// `Idempotency-Key`.
    fn settle_late(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        mut batch: Vec<Submission>,
        ids: &[u64],
        created_at: UnixMillis,
    ) {
        let rows = ids.len();
        tracing::error!(
            requests = batch.len(),
            rows,
            "answer deadline reached with the batch outcome unknown; answering outcome_unknown and settling it"
        );
        self.shared
            .stats
            .failed_requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for request in &mut batch {
            request.answer(Err(IngestError::OutcomeUnknown));
            self.shared.release(request.events.len());
        }
        let settled = runtime.block_on(async {
            let far = Instant::now() + Duration::from_secs(365 * 24 * 60 * 60);
            self.settle(ids, far).await
        });
        match settled {
            Some(true) => {
                self.shared
                    .stats
                    .settled_late_committed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    rows,
                    "a batch answered outcome_unknown turned out committed; publishing its events"
                );
                self.wrote();
                self.record_commit(rows);
                if let Some(sink) = &self.sink {
                    sink.committed(encode_batch(&batch, ids, created_at));
                }
            }
            Some(false) => {
                self.shared
                    .stats
                    .settled_late_not_committed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    rows,
                    "a batch answered outcome_unknown turned out not committed"
                );
                self.mark(StoreState::Up);
            }
            None => tracing::error!(
                rows,
                "shutdown deadline came before the outcome of a batch answered outcome_unknown was known"
            ),
        }
    }

    /// A write went through: the store is up and retries are available again.
    fn wrote(&mut self) {
        self.retries_spent = false;
        self.mark(StoreState::Up);
    }

    fn count_store_error(&self) {
        self.shared
            .stats
            .store_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    fn may_retry(&self, retry_until: Instant) -> bool {
        !self.force.is_cancelled() && Instant::now() < retry_until
    }

    fn gave_up(&mut self, error: &vigil_store::StoreError, rows: usize) -> IngestError {
        if error.is_retriable() {
            if !self.retries_spent {
                tracing::error!(%error, rows, "database unavailable; answering 503 until a write succeeds");
            }
            self.retries_spent = true;
            if self.shared.store_state() != StoreState::Up {
                self.refuse_queued();
            }
            IngestError::StoreUnavailable
        } else {
            tracing::error!(%error, rows, "database rejected a batch");
            IngestError::Rejected
        }
    }

    async fn pause(&self, backoff: &mut Duration) {
        tokio::select! {
            () = tokio::time::sleep(*backoff) => {}
            () = self.force.cancelled() => {}
        }
        *backoff = (*backoff * 2).min(BACKOFF_CAP);
    }

    fn record_commit(&mut self, rows: usize) {
        let stats = &self.shared.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
        stats
            .max_batch_rows
            .fetch_max(rows as u64, Ordering::Relaxed);
        stats.batch_rows.observe(rows as f64);
        self.batches_since_log += 1;
        self.rows_since_log += rows as u64;
        self.max_rows_since_log = self.max_rows_since_log.max(rows);
        tracing::trace!(rows, "batch committed");
    }

    fn log_stats_now_and_then(&mut self) {
        if self.last_stats_log.elapsed() >= STATS_LOG_INTERVAL {
            self.log_stats();
        }
    }

    /// One line showing how batch sizes follow load.
    fn log_stats(&mut self) {
        if self.batches_since_log > 0 {
            tracing::info!(
                batches = self.batches_since_log,
                rows = self.rows_since_log,
                mean_rows = self.rows_since_log / self.batches_since_log,
                max_rows = self.max_rows_since_log,
                seconds = self.last_stats_log.elapsed().as_secs(),
                "ingest batches"
            );
        }
        self.last_stats_log = Instant::now();
        self.batches_since_log = 0;
        self.rows_since_log = 0;
        self.max_rows_since_log = 0;
    }
}

/// Every event of the batch with its request's id, in request order (the order ids follow).
fn events_of(batch: &[Submission]) -> impl Iterator<Item = (&vigil_core::NewEvent, &str)> {
    batch.iter().flat_map(|request| {
        request
            .events
            .iter()
            .map(move |event| (event, request.request_id.as_str()))
    })
}

/// The batch's events as every reader will see them, encoded once, in commit (id) order.
fn encode_batch(batch: &[Submission], ids: &[u64], created_at: UnixMillis) -> CommittedBatch {
    let events = events_of(batch)
        .zip(ids)
        .map(|((event, request_id), &id)| PublishedEvent {
            id,
            json: Bytes::from(event.as_stored(id, created_at, request_id).encode()),
        })
        .collect();
    CommittedBatch { events, created_at }
}
