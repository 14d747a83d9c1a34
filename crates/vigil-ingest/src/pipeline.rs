//! The running pipeline: starts the batcher threads (one per store writer) on the queue's far
//! end, and stops them in order at shutdown.
//!
//! The one module that knows both halves: the queue (what handlers submit to) and the
//! batcher (what drains it), so that neither has to know the other.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use vigil_core::CommitSink;
use vigil_store::Store;

use crate::batcher::Batcher;
use crate::config::IngestConfig;
use crate::line::CommitLine;
use crate::queue::{IngestQueue, Shared, Submission};

/// The running pipeline: its queue and its batcher threads.
pub struct Ingest {
    queue: IngestQueue,
    /// Dropped to tell the batcher to drain and stop.
    stop: Option<Sender<()>>,
    /// Cancelled at the shutdown deadline: stop retrying, answer what is left.
    force: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Ingest {
    /// Starts the batcher threads writing to `store` and, after each commit, handing the
    /// batch's encoded events to `sink` if there is one: vigil-bus's `Publisher` (the
    /// Redis list and channel), or the server's in-process realtime feed when Redis is off.
    ///
    /// Each thread runs its own single-threaded tokio runtime and the store's write path uses
    /// only connections it opens itself (the writer, id reservations, outcome checks), so a
    /// batch's database round trips are driven by the batcher thread alone: no wake-up of a
    /// runtime worker and back per round trip, which profiles of the single-event load test
    /// showed as a large share of the server's CPU.
    pub fn start(
        store: Store,
        config: IngestConfig,
        sink: Option<Arc<dyn CommitSink>>,
    ) -> std::io::Result<Ingest> {
        assert!(config.queue_events > 0 && config.batch_max_rows > 0);
        assert!(!config.answer_timeout.is_zero());
        let (sender, receiver): (Sender<Submission>, Receiver<Submission>) =
            crossbeam_channel::bounded(config.queue_events);
        let (stop, stop_receiver) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared::new(config.queue_events, config.answer_timeout));
        let force = CancellationToken::new();
        let line = Arc::new(CommitLine::default());
        let mut ingest = Ingest {
            queue: IngestQueue::new(sender, Arc::clone(&shared)),
            stop: Some(stop),
            force: force.clone(),
            threads: Vec::new(),
        };
        // The first batcher forms every batch; the others help with large ones (see the
        // batcher's module docs). A rendezvous: a batch goes only to a helper that waits.
        let (to_helpers, helper_batches) = crossbeam_channel::bounded(0);
        for writer in 0..store.writers() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let batcher = Batcher::new(
                receiver.clone(),
                stop_receiver.clone(),
                store.clone(),
                writer,
                Arc::clone(&line),
                sink.clone(),
                config.clone(),
                Arc::clone(&shared),
                force.clone(),
            );
            let name = format!("vigil-batcher-{writer}");
            let thread = if writer == 0 {
                // With one writer there is no helper to hand anything to.
                let batcher = if store.writers() > 1 {
                    batcher.with_helpers(to_helpers.clone())
                } else {
                    batcher
                };
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || batcher.run(&runtime))?
            } else {
                let batches = helper_batches.clone();
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || batcher.run_helper(batches, &runtime))?
            };
            ingest.threads.push(thread);
        }
        Ok(ingest)
    }

    /// A handle for request handlers.
    pub fn queue(&self) -> IngestQueue {
        self.queue.clone()
    }

    /// Closes the queue to new events, lets the batcher commit and acknowledge everything
    /// already queued, and returns when it has stopped. At `deadline` the batcher stops
    /// retrying and answers whatever is left as not stored.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.queue.close();
        drop(self.stop.take());
        let threads = std::mem::take(&mut self.threads);
        if threads.is_empty() {
            return;
        }
        let (finished, mut finished_receiver) = oneshot::channel::<()>();
        let join = tokio::task::spawn_blocking(move || {
            // Every thread joined, then the first panic (if any) reported.
            let joined: Vec<_> = threads.into_iter().map(|thread| thread.join()).collect();
            let outcome: Result<(), _> = joined.into_iter().collect();
            let _ = finished.send(());
            outcome
        });
        if tokio::time::timeout(deadline, &mut finished_receiver)
            .await
            .is_err()
        {
            tracing::warn!(
                deadline_s = deadline.as_secs_f64(),
                "shutdown deadline reached with events still queued; answering the rest"
            );
            self.force.cancel();
        }
        if let Ok(Err(_panic)) = join.await {
            tracing::error!("a batcher thread panicked");
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // Without an orderly shutdown, still stop the thread rather than leak it.
        self.queue.close();
        self.force.cancel();
        drop(self.stop.take());
    }
}
