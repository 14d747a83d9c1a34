//! A fixed-size bitset of event sequence numbers: which events a client received (to count
//! duplicates as they arrive) and which the server acknowledged (to count what is missing at
//! the end, a word at a time).
//!
//! A run knows how many events it will post before it starts, so every set is sized once:
//! one bit per event, no allocation while frames arrive.

/// What inserting a sequence number found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    New,
    Duplicate,
    /// Beyond the run's events: not one of this run's sequence numbers.
    OutOfRange,
}

/// A set of sequence numbers below a fixed bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet {
    words: Vec<u64>,
    /// Sequence numbers are below this.
    bound: u64,
    /// Members, kept as they are inserted.
    len: u64,
}

impl SeqSet {
    /// An empty set for sequence numbers `0..bound`.
    pub fn new(bound: u64) -> Self {
        Self {
            words: vec![0; bound.div_ceil(64) as usize],
            bound,
            len: 0,
        }
    }

    /// Every number of `0..bound` for which `member` is true.
    pub fn from_fn(bound: u64, mut member: impl FnMut(u64) -> bool) -> Self {
        let mut set = Self::new(bound);
        for seq in 0..bound {
            if member(seq) {
                set.insert(seq);
            }
        }
        set
    }

    pub fn bound(&self) -> u64 {
        self.bound
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn insert(&mut self, seq: u64) -> Insert {
        if seq >= self.bound {
            return Insert::OutOfRange;
        }
        let word = &mut self.words[(seq / 64) as usize];
        let bit = 1u64 << (seq % 64);
        if *word & bit != 0 {
            return Insert::Duplicate;
        }
        *word |= bit;
        self.len += 1;
        Insert::New
    }

    pub fn contains(&self, seq: u64) -> bool {
        seq < self.bound && self.words[(seq / 64) as usize] & (1u64 << (seq % 64)) != 0
    }

    /// The members of both sets.
    pub fn intersection(&self, other: &SeqSet) -> SeqSet {
        let bound = self.bound.min(other.bound);
        let words: Vec<u64> = self
            .words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| a & b)
            .collect();
        let len = words.iter().map(|word| u64::from(word.count_ones())).sum();
        SeqSet { words, bound, len }
    }

    /// How many members of `self` are not in `other`: with `self` the events a client should
    /// have received, its missing ones; the other way round, the ones it got unexpectedly.
    pub fn count_not_in(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(index, word)| {
                let theirs = other.words.get(index).copied().unwrap_or(0);
                u64::from((word & !theirs).count_ones())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserting_twice_is_a_duplicate() {
        let mut set = SeqSet::new(130);
        assert_eq!(set.insert(0), Insert::New);
        assert_eq!(set.insert(129), Insert::New);
        assert_eq!(set.insert(64), Insert::New);
        assert_eq!(set.insert(129), Insert::Duplicate);
        assert_eq!(set.insert(130), Insert::OutOfRange);
        assert_eq!(set.len(), 3);
        assert!(set.contains(64) && !set.contains(63) && !set.contains(1000));
    }

    #[test]
    fn missing_counts_expected_events_not_received() {
        let acked = SeqSet::from_fn(200, |seq| seq != 7);
        let matching = SeqSet::from_fn(200, |seq| seq % 2 == 1);
        let expected = acked.intersection(&matching);
        assert_eq!(expected.len(), 99);
        let mut received = SeqSet::new(200);
        for seq in (1..200).step_by(2).filter(|seq| seq % 5 != 0) {
            received.insert(seq);
        }
        // Odd multiples of five are missing (20 of them); 7 was never acked but was received.
        assert_eq!(expected.count_not_in(&received), 20);
        assert_eq!(received.count_not_in(&expected), 1);
    }

    #[test]
    fn empty_sets_count_nothing() {
        let empty = SeqSet::new(0);
        assert!(empty.is_empty());
        assert_eq!(empty.count_not_in(&SeqSet::new(64)), 0);
        assert_eq!(SeqSet::new(64).count_not_in(&empty), 0);
    }
}
