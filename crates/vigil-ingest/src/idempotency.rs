//! Idempotency keys on the ingest path: which keys this instance has in flight, and what a
//! keyed request carries to the batcher.
//!
//! A handler [`claims`](crate::IngestQueue::claim_key) its request's key and submits; the
//! claim travels with the submission until the batcher answers it, so
//! a second request with the key while the first is queued or being written is refused (409)
//! instead of writing twice. The claim is released *before* the answer is sent: by the time a
//! producer hears the outcome, a retry either finds the committed record or, after a failure,
//! may write again. There is no lookup before the write: a key already recorded (a retry, or
//! another instance given the same key at once) makes the database refuse the batch on the
//! record's primary key, and the batcher answers that request from the recorded one
//! ([`Stored::Replayed`], or a mismatch for another body) and writes the rest of its batch
//! again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use vigil_store::{Digest, IdempotencyRecord};

/// Keys whose requests this instance is handling.
#[derive(Clone, Default)]
pub(crate) struct KeyClaims(Arc<Mutex<HashSet<Digest>>>);

impl KeyClaims {
    pub fn claim(&self, key: Digest) -> Option<KeyClaim> {
        let mut claimed = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        claimed.insert(key.clone()).then(|| KeyClaim {
            key,
            claims: self.clone(),
        })
    }
}

/// A key this instance is handling; released when dropped.
pub struct KeyClaim {
    key: Digest,
    claims: KeyClaims,
}

impl KeyClaim {
    pub fn key(&self) -> &Digest {
        &self.key
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        let mut claimed = self
            .claims
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        claimed.remove(&self.key);
    }
}

/// What a request with an `Idempotency-Key` adds to its submission.
pub struct KeyedRequest {
    /// The claimed key (its SHA-256 with the scope).
    pub claim: KeyClaim,
    /// SHA-256 of the request body.
    pub body: Digest,
}

/// How a request's events are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Committed now, with these ids.
    Committed(Vec<u64>),
    /// An earlier request with the same key and body stored them (another instance got there
    /// first); nothing was written now.
    Replayed(IdempotencyRecord),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_claimed_once_until_released() {
        let claims = KeyClaims::default();
        let key = Digest::from_sha256(&[1; 32]);
        let claim = claims.claim(key.clone()).expect("free");
        assert!(claims.claim(key.clone()).is_none());
        assert!(claims.claim(Digest::from_sha256(&[2; 32])).is_some());
        drop(claim);
        assert!(claims.claim(key).is_some());
    }
}
