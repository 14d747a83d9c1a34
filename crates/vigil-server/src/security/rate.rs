//! Rate limits: token buckets keyed by token or client address, and a per-address count of
//! open WebSocket clients.
//!
//! Buckets live in a few independently locked shards (a request holds one shard's lock for a
//! hash lookup and a little arithmetic), and memory is bounded: a full shard first drops the
//! buckets that have refilled (an idle key is indistinguishable from a new one), then the
//! least recently used.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Independently locked parts of a limiter.
const SHARDS: usize = 16;
/// Most keys a limiter remembers (per-address limits see arbitrary many addresses).
pub const MAX_KEYS: usize = 65_536;

/// One key's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests it may still make now (fractional while refilling).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

/// `rate` requests per second per key, in bursts of at most `burst`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    keys_per_shard: usize,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<K, Bucket>>]>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(rate_per_s: f64, burst: u32) -> Self {
        Self::with_capacity(rate_per_s, burst, MAX_KEYS)
    }

    fn with_capacity(rate_per_s: f64, burst: u32, max_keys: usize) -> Self {
        debug_assert!(rate_per_s > 0.0 && burst > 0);
        RateLimiter {
            rate: rate_per_s,
            burst: f64::from(burst.max(1)),
            keys_per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes one request from `key`'s bucket; when it is empty, says how long until it holds
    /// one again.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut buckets = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.keys_per_shard {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Drops the buckets that have refilled; if none has, the least recently used one.
    fn make_room(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let refill = Duration::from_secs_f64(self.burst / self.rate);
        buckets.retain(|_, bucket| now.saturating_duration_since(bucket.updated) < refill);
        if buckets.len() >= self.keys_per_shard
            && let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, bucket)| bucket.updated)
                .map(|(key, _)| key.clone())
        {
            buckets.remove(&oldest);
        }
    }

    /// Keys remembered now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |buckets| buckets.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Open WebSocket clients per client address, at most `max` each.
#[derive(Debug)]
pub struct ConnectionsPerAddr {
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One open connection's place; gives it back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    owner: Arc<ConnectionsPerAddr>,
    addr: IpAddr,
}

impl ConnectionsPerAddr {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(ConnectionsPerAddr {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `addr`, unless it has `max` open already.
    pub fn acquire(self: &Arc<Self>, addr: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(addr).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            owner: Arc::clone(self),
            addr,
        })
    }

    /// Connections open from `addr`.
    pub fn open(&self, addr: IpAddr) -> u32 {
        self.open
            .lock()
            .map_or(0, |open| open.get(&addr).copied().unwrap_or(0))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(&"a", start).is_ok());
        }
        let wait = limiter.check(&"a", start).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(limiter.check(&"b", start).is_ok(), "keys are independent");
        let later = start + Duration::from_millis(500);
        assert!(limiter.check(&"a", later).is_ok());
        assert!(limiter.check(&"a", later).is_err());
    }

    #[test]
    fn memory_is_bounded_by_evicting_idle_then_old_keys() {
        let limiter = RateLimiter::with_capacity(1.0, 1, SHARDS * 2);
        let start = Instant::now();
        for key in 0..10_000u32 {
            let _ = limiter.check(&key, start + Duration::from_micros(u64::from(key)));
        }
        assert!(limiter.len() <= SHARDS * 2, "{}", limiter.len());
        // A key that was evicted comes back with a full bucket: never stricter than asked.
        assert!(limiter.check(&0, start + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn connection_slots_are_counted_per_address_and_given_back() {
        let counter = ConnectionsPerAddr::new(2);
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let first = counter.acquire(addr).unwrap();
        let _second = counter.acquire(addr).unwrap();
        assert!(counter.acquire(addr).is_none());
        assert!(counter.acquire("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        assert_eq!(counter.open(addr), 1);
        assert!(counter.acquire(addr).is_some());
    }
}
