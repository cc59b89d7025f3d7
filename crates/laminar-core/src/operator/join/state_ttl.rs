//! The expiry index of a regular join with a `state_ttl`: each key's last access (read or
//! write, processing time), ordered by that time, so finding the keys idle for the TTL costs
//! the expired keys rather than a scan of every key.

use datafusion::common::HashMap;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The longest pause between two expiry checks, whatever the TTL.
const CHECK_INTERVAL_MAX: Duration = Duration::from_secs(1);
/// The shortest pause between two expiry checks, so a tiny TTL does not spin the worker.
const CHECK_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// Last-access times of a join's keys, by key and by time.
#[derive(Debug)]
pub(super) struct KeyExpiry {
    ttl: Duration,
    last_access: HashMap<Box<[u8]>, Instant>,
    by_time: BTreeSet<(Instant, Box<[u8]>)>,
}

impl KeyExpiry {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            last_access: HashMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often expired keys are looked for: a quarter of the TTL, so a key outlives it by
    /// at most a quarter, between `CHECK_INTERVAL_MIN` and `CHECK_INTERVAL_MAX`.
    pub(super) fn check_interval(&self) -> Duration {
        (self.ttl / 4).clamp(CHECK_INTERVAL_MIN, CHECK_INTERVAL_MAX)
    }

    /// Records that `key` was read or written at `now`.
    pub(super) fn touch(&mut self, key: &[u8], now: Instant) {
        match self.last_access.get_mut(key) {
            // Rows of one batch share one `now`: the key is already filed under it.
            Some(last) if *last == now => {}
            Some(last) => {
                let previous = std::mem::replace(last, now);
                let entry = self.by_time.take(&(previous, Box::from(key)));
                let key = entry.map_or_else(|| Box::from(key), |(_, key)| key);
                self.by_time.insert((now, key));
            }
            None => {
                self.last_access.insert(Box::from(key), now);
                self.by_time.insert((now, Box::from(key)));
            }
        }
    }

    /// Forgets `key` (it holds no rows any more).
    pub(super) fn forget(&mut self, key: &[u8]) {
        if let Some(last) = self.last_access.remove(key) {
            self.by_time.remove(&(last, Box::from(key)));
        }
    }

    /// Removes and returns the keys not accessed for the TTL as of `now`.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<Box<[u8]>> {
        let mut expired = Vec::new();
        while let Some((last, _)) = self.by_time.first() {
            if now.saturating_duration_since(*last) < self.ttl {
                break;
            }
            if let Some((_, key)) = self.by_time.pop_first() {
                self.last_access.remove(&key);
                expired.push(key);
            }
        }
        expired
    }

    /// When `key` was last read or written, if it is indexed.
    pub(super) fn last_access(&self, key: &[u8]) -> Option<Instant> {
        self.last_access.get(key).copied()
    }

    /// Every indexed key with its last access.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&[u8], Instant)> {
        self.last_access.iter().map(|(key, at)| (&**key, *at))
    }

    /// Approximate bytes held by the index.
    pub(super) fn bytes(&self) -> u64 {
        let per_key = 2 * (std::mem::size_of::<(Box<[u8]>, Instant)>());
        self.last_access
            .keys()
            .map(|key| 2 * key.len() + per_key)
            .sum::<usize>() as u64
    }
}
