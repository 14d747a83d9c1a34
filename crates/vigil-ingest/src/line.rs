//! The commit line: batches written by several batcher threads at once still commit in id
//! order.
//!
//! Each batcher thread has its own writer connection, so one batch's INSERT runs while the
//! previous batch commits, and the database uses more than one core for a single stream of
//! batches. What must not change is the order: ids increase in commit order within an
//! instance, and the publisher sends batches in that order. So a batch takes its place in
//! line when it takes its ids (under one lock, so places follow ids), and a batch that is not
//! first in line runs as a transaction whose COMMIT waits until every batch before it has left
//! the line. A batch leaves the line only when it is settled for good (committed and handed to
//! the sink, or certainly not stored), so its retries and its publication also come before
//! any later batch's COMMIT.
//!
//! While an earlier batch's outcome is being settled, a waiting batch does not hold its
//! transaction open: settling reads the earlier batch's ids with a locking read, which could
//! wait on the later batch's uncommitted rows while the later batch waits for the settling.
//! The waiting batch rolls back at once (certainly not stored) and is retried or answered by
//! its own batcher.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use vigil_store::{Store, StoreError};

/// What a batch that gave up waiting for its turn reports.
const WAIT_OPERATION: &str = "wait for earlier batches to commit";

/// Batches in flight, by their first id.
#[derive(Default)]
pub(crate) struct CommitLine {
    /// Held across an id allocation and the place it gives, so places follow ids.
    allocation: tokio::sync::Mutex<()>,
    in_line: Mutex<BTreeSet<u64>>,
    /// Batches whose outcome is being settled.
    settling: AtomicUsize,
    /// Woken whenever a batch leaves the line or a settling starts.
    changed: Notify,
}

impl CommitLine {
    /// Takes `count` ids from the store and the batch's place in line.
    pub(crate) async fn allocate(
        self: &Arc<Self>,
        store: &Store,
        count: usize,
    ) -> Result<(Vec<u64>, Place), StoreError> {
        let _allocating = self.allocation.lock().await;
        let ids = store.allocate_ids(count).await?;
        let place = self.enter(ids.first().copied().unwrap_or(0));
        Ok((ids, place))
    }

    /// The place of a batch whose first id is `first_id`, taken in id order.
    fn enter(self: &Arc<Self>, first_id: u64) -> Place {
        self.lock().insert(first_id);
        Place {
            line: Arc::clone(self),
            first_id,
        }
    }

    /// Marks a batch's outcome as being settled until the guard drops: batches waiting for
    /// their turn roll back meanwhile (see the module docs).
    pub(crate) fn settling(&self) -> Settling<'_> {
        self.settling.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        Settling { line: self }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        self.in_line.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A settling in progress; see [`CommitLine::settling`].
pub(crate) struct Settling<'a> {
    line: &'a CommitLine,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.line.settling.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A batch's place in the commit line; it leaves the line when dropped.
pub(crate) struct Place {
    line: Arc<CommitLine>,
    first_id: u64,
}

impl Place {
    /// Whether every batch before this one has left the line: it may then commit at once.
    pub(crate) fn is_first(&self) -> bool {
        self.line.lock().first() == Some(&self.first_id)
    }

    /// Resolves when this batch may commit; an error when `until` comes first or an earlier
    /// batch is being settled.
    pub(crate) async fn turn(&self, until: Instant) -> Result<(), StoreError> {
        let started = Instant::now();
        let waited = tokio::time::timeout_at(until.into(), async {
            loop {
                let changed = self.line.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.is_first() {
                    return Ok(());
                }
                if self.line.settling.load(Ordering::SeqCst) > 0 {
                    return Err(());
                }
                changed.await;
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) | Err(_) => Err(StoreError::Timeout {
                operation: WAIT_OPERATION,
                after: started.elapsed().max(Duration::from_millis(1)),
            }),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.line.lock().remove(&self.first_id);
        self.line.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `turn` is still waiting after a moment.
    async fn still_waiting(
        turn: &mut (impl Future<Output = Result<(), StoreError>> + Unpin),
    ) -> bool {
        tokio::time::timeout(Duration::from_millis(20), turn)
            .await
            .is_err()
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn a_batch_commits_only_after_every_earlier_one_left_the_line() {
        let line = Arc::new(CommitLine::default());
        let first = line.enter(1);
        let second = line.enter(11);
        let third = line.enter(21);
        assert!(first.is_first() && !second.is_first() && !third.is_first());

        let mut turn = Box::pin(third.turn(far()));
        assert!(still_waiting(&mut turn).await);
        drop(second);
        assert!(
            still_waiting(&mut turn).await,
            "the first batch is still in line"
        );
        drop(first);
        turn.await.expect("its turn came");
        assert!(third.is_first());
    }

    #[tokio::test]
    async fn a_waiting_batch_gives_up_while_an_earlier_one_is_settled() {
        let line = Arc::new(CommitLine::default());
        let _first = line.enter(1);
        let second = line.enter(2);
        let mut turn = Box::pin(second.turn(far()));
        assert!(still_waiting(&mut turn).await);
        let settling = line.settling();
        let error = turn.await.expect_err("no waiting while settling");
        assert!(matches!(
            error,
            StoreError::Timeout {
                operation: WAIT_OPERATION,
                ..
            }
        ));
        drop(settling);
        assert_eq!(line.settling.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_turn_that_does_not_come_by_the_deadline_is_an_error() {
        let line = Arc::new(CommitLine::default());
        let _first = line.enter(1);
        let second = line.enter(2);
        let until = Instant::now() + Duration::from_millis(10);
        assert!(second.turn(until).await.is_err());
        // The first in line never waits, whatever the deadline.
        let line = Arc::new(CommitLine::default());
        let only = line.enter(5);
        only.turn(Instant::now()).await.expect("first in line");
    }
}
