//! Event ids: blocks reserved in the database, handed out in increasing order from memory.
//!
//! Vigil names every row's id in its INSERT instead of letting `AUTO_INCREMENT` pick it, because
//! ids inferred from a multi-row insert are wrong under `innodb_autoinc_lock_mode=2`, with
//! Galera's `auto_increment_increment`, and MySQL 8 has no `INSERT … RETURNING`. Ids come from
//! the `vigil_id_blocks` row `events`: one autocommit
//! `UPDATE … SET next_id = LAST_INSERT_ID(next_id + n)` reserves `[new - n, new)` for this
//! process alone (SQLite: `UPDATE … RETURNING` under its single write lock). This module holds
//! the reserved range, the arithmetic and the allocation both backends share; the reservation
//! statements run in [`crate::mysql`] and [`crate::sqlite`]. The full argument is in
//! `ID_SCHEME.md` beside this crate.

use std::ops::Range;

use tracing::debug;

use crate::StoreError;

/// Fewest ids reserved per round trip: a block of this size serves many batches, so the
/// reservation's row lock is taken rarely even with many instances.
pub const MIN_BLOCK_SIZE: u64 = 4096;

pub use vigil_core::MAX_ID_EXCLUSIVE;

/// The reservation statement. `LAST_INSERT_ID(expr)` makes the server report the new
/// `next_id` in the OK packet of this very statement, so no second query (and no transaction)
/// is needed to learn it.
pub const RESERVE_SQL: &str =
    "UPDATE vigil_id_blocks SET next_id = LAST_INSERT_ID(next_id + ?) WHERE name = 'events'";

/// SQLite's reservation: one autocommit statement that takes the database's write lock (so
/// reservations from every connection and process serialise) and returns the new `next_id`.
pub const SQLITE_RESERVE_SQL: &str =
    "UPDATE vigil_id_blocks SET next_id = next_id + ? WHERE name = 'events' RETURNING next_id";

/// A backend's id blocks: the range it holds, and how it reserves the next one.
pub(crate) trait ReserveBlock {
    /// The reserved range not yet handed out.
    fn id_block(&self) -> &tokio::sync::Mutex<IdBlock>;

    /// Moves the database counter forward by `size` and returns the new `next_id`.
    fn reserve_block(&self, size: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// `count` fresh ids, increasing: from the backend's block, and when it runs out from a new
/// block of `max(missing, MIN_BLOCK_SIZE)` ids that `backend` reserves in the database. The
/// block's lock is held across the reservation, so concurrent callers wait for one round trip
/// instead of each reserving a block.
pub(crate) async fn allocate(
    backend: &impl ReserveBlock,
    count: usize,
) -> Result<Vec<u64>, StoreError> {
    let mut block = backend.id_block().lock().await;
    let mut ids = Vec::with_capacity(count);
    let mut missing = count as u64 - block.take_into(count as u64, &mut ids);
    if missing == 0 {
        return Ok(ids);
    }
    let size = block_size_for(missing);
    let new_next_id = backend.reserve_block(size).await?;
    let range = reserved_range(new_next_id, size).ok_or(StoreError::IdCounterMissing)?;
    block
        .refill(range.clone())
        .map_err(|problem| match problem {
            BlockProblem::Empty => StoreError::IdCounterMissing,
            BlockProblem::Exhausted { next_id } => StoreError::IdsExhausted { next_id },
            BlockProblem::WentBackwards {
                reserved_start,
                previous_end,
            } => StoreError::IdCounterWentBackwards {
                reserved_start,
                previous_end,
            },
        })?;
    debug!(
        start = range.start,
        end = range.end,
        "reserved event id block"
    );
    missing -= block.take_into(missing, &mut ids);
    debug_assert_eq!(missing, 0);
    debug_assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    Ok(ids)
}

/// The ids of the current block not yet handed out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdBlock {
    /// `[next, end)`: reserved for this process and not yet given to any caller.
    remaining: Range<u64>,
}

impl IdBlock {
    /// Ids still available without a round trip.
    pub fn available(&self) -> u64 {
        self.remaining.end - self.remaining.start
    }

    /// Appends up to `count` ids from this block to `out`, in increasing order; returns how many.
    pub fn take_into(&mut self, count: u64, out: &mut Vec<u64>) -> u64 {
        let taken = count.min(self.available());
        let start = self.remaining.start;
        out.extend(start..start + taken);
        self.remaining.start += taken;
        taken
    }

    /// Replaces the block with a freshly reserved one, after checking that it lies above every
    /// id handed out before (the database counter only moves forward) and below 2^53.
    pub fn refill(&mut self, reserved: Range<u64>) -> Result<(), BlockProblem> {
        if reserved.start == 0 || reserved.end <= reserved.start {
            return Err(BlockProblem::Empty);
        }
        if reserved.end > MAX_ID_EXCLUSIVE {
            return Err(BlockProblem::Exhausted {
                next_id: reserved.end,
            });
        }
        if reserved.start < self.remaining.start {
            return Err(BlockProblem::WentBackwards {
                reserved_start: reserved.start,
                previous_end: self.remaining.start,
            });
        }
        self.remaining = reserved;
        Ok(())
    }
}

/// How many ids to reserve when `still_needed` ids are missing from the cached block.
pub fn block_size_for(still_needed: u64) -> u64 {
    still_needed.max(MIN_BLOCK_SIZE)
}

/// The block a reservation of `size` ids produced, given the new `next_id` the server reported.
pub fn reserved_range(new_next_id: u64, size: u64) -> Option<Range<u64>> {
    let start = new_next_id.checked_sub(size)?;
    Some(start..new_next_id)
}

/// A reservation the store cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockProblem {
    /// The server reported an empty or zero-based block (the `events` row is missing).
    Empty,
    /// The counter would pass 2^53.
    Exhausted { next_id: u64 },
    /// The counter moved backwards (someone edited `vigil_id_blocks` by hand).
    WentBackwards {
        reserved_start: u64,
        previous_end: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_increasing_ids_and_refills_above_the_old_block() {
        let mut block = IdBlock::default();
        let mut out = Vec::new();
        assert_eq!(block.take_into(3, &mut out), 0);
        block.refill(1..4097).unwrap();
        assert_eq!(block.take_into(3, &mut out), 3);
        assert_eq!(out, vec![1, 2, 3]);
        assert_eq!(block.available(), 4093);
        assert_eq!(block.take_into(5000, &mut out), 4093);
        assert_eq!(block.available(), 0);
        block.refill(9000..13096).unwrap();
        block.take_into(2, &mut out);
        assert!(out.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(&out[out.len() - 2..], &[9000, 9001]);
    }

    #[test]
    fn refuses_blocks_that_go_backwards_or_past_2_pow_53() {
        let mut block = IdBlock::default();
        block.refill(100..200).unwrap();
        let mut out = Vec::new();
        block.take_into(10, &mut out);
        assert!(matches!(
            block.refill(50..150),
            Err(BlockProblem::WentBackwards { .. })
        ));
        assert!(matches!(
            block.refill(MAX_ID_EXCLUSIVE - 10..MAX_ID_EXCLUSIVE + 1),
            Err(BlockProblem::Exhausted { .. })
        ));
        block
            .refill(MAX_ID_EXCLUSIVE - 10..MAX_ID_EXCLUSIVE)
            .unwrap();
        assert_eq!(block.refill(0..0), Err(BlockProblem::Empty));
    }

    #[test]
    fn block_size_is_at_least_the_minimum() {
        assert_eq!(block_size_for(1), MIN_BLOCK_SIZE);
        assert_eq!(block_size_for(10_000), 10_000);
        assert_eq!(reserved_range(4097, 4096), Some(1..4097));
        assert_eq!(reserved_range(10, 4096), None);
    }
}
