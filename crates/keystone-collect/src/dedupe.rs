//! Duplicate messageIds per write key, within a time window.
//!
//! SDKs retry a batch whose answer they did not get, so the same messageId
//! can arrive twice. Each accepted event leaves a 128-bit digest of
//! `(source, messageId)` here for the window (default 24 h); a later event
//! with the same digest is dropped (and counted). The index is rebuilt at
//! start from the lake (events received within the window) and from the
//! WAL segments not yet flushed, so it survives restarts and crashes.
//!
//! An entry whose request is not yet durable carries that request's outcome:
//! a retry that arrives meanwhile waits for it instead of answering 200 for
//! events that might still be lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// Where a request's events stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Durable,
    Failed,
}

/// The outcome of one request, shared with the duplicates that wait on it.
pub type Pending = Arc<watch::Receiver<Outcome>>;

#[derive(Debug)]
struct Entry {
    at: i64,
    pending: Option<Pending>,
}

/// The index; callers hold it under a lock.
#[derive(Debug)]
pub struct Dedupe {
    window_micros: i64,
    map: HashMap<u128, Entry>,
    order: VecDeque<(i64, u128)>,
}

/// The digest of one event's identity.
pub fn digest(source: &str, message_id: &str) -> u128 {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(message_id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

impl Dedupe {
    pub fn new(window_micros: i64) -> Self {
        Self {
            window_micros,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Remember an event already durable (seeding at start).
    pub fn seed(&mut self, key: u128, at: i64) {
        if self.map.insert(key, Entry { at, pending: None }).is_none() {
            self.order.push_back((at, key));
        }
    }

    /// Forget entries older than the window before `now`. Seeds may come
    /// out of time order, so an entry is only dropped when its own time is old.
    fn evict(&mut self, now: i64) {
        let horizon = now.saturating_sub(self.window_micros);
        while let Some(&(at, key)) = self.order.front() {
            if at >= horizon {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|e| e.at <= at) {
                self.map.remove(&key);
            }
        }
    }

    /// Claim `key` for a request: `Ok(())` when it is new (now held by
    /// `pending`), `Err(earlier)` when it is a duplicate (with the earlier
    /// request's outcome if that is not yet settled).
    pub fn claim(&mut self, key: u128, now: i64, pending: &Pending) -> Result<(), Option<Pending>> {
        self.evict(now);
        if let Some(e) = self.map.get(&key) {
            return Err(e.pending.clone());
        }
        self.map.insert(
            key,
            Entry {
                at: now,
                pending: Some(pending.clone()),
            },
        );
        self.order.push_back((now, key));
        Ok(())
    }

    /// Give back the keys a failed request claimed.
    pub fn release(&mut self, keys: &[u128], pending: &Pending) {
        for k in keys {
            if self
                .map
                .get(k)
                .is_some_and(|e| e.pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, pending)))
            {
                self.map.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> (watch::Sender<Outcome>, Pending) {
        let (tx, rx) = watch::channel(Outcome::Pending);
        (tx, Arc::new(rx))
    }

    #[test]
    fn a_key_is_claimed_once_per_window_and_per_source() {
        let mut d = Dedupe::new(1_000);
        let (_tx, p) = pending();
        let k = digest("web", "m1");
        assert!(d.claim(k, 10, &p).is_ok());
        assert!(d.claim(k, 20, &p).is_err());
        assert!(d.claim(digest("app", "m1"), 20, &p).is_ok());
        assert_ne!(digest("a", "bc"), digest("ab", "c"));
        // Past the window the id is new again.
        assert!(d.claim(k, 2_000, &p).is_ok());
    }

    #[test]
    fn a_failed_request_gives_its_keys_back() {
        let mut d = Dedupe::new(1_000);
        let (_a_tx, a) = pending();
        let (_b_tx, b) = pending();
        let k = digest("web", "m1");
        d.claim(k, 1, &a).expect("new");
        let Err(Some(earlier)) = d.claim(k, 2, &b) else {
            panic!("duplicate of a pending request");
        };
        assert!(Arc::ptr_eq(&earlier, &a));
        d.release(&[k], &b); // not b's: kept
        assert!(d.claim(k, 3, &b).is_err());
        d.release(&[k], &a);
        assert!(d.claim(k, 4, &b).is_ok());
    }

    #[test]
    fn seeds_are_duplicates_already_settled() {
        let mut d = Dedupe::new(1_000);
        let (_tx, p) = pending();
        d.seed(digest("web", "old"), 500);
        assert!(matches!(d.claim(digest("web", "old"), 600, &p), Err(None)));
        assert_eq!(d.len(), 1);
    }
}
