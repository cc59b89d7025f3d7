//! A lookup join's cache of a lookup source's answers on one worker: at most `capacity`
//! keys, least recently used evicted first, each answer (a row, or "no row") trusted for
//! `ttl` after it was loaded. Keys and rows are held in Arrow's row format, as bytes, so a
//! probe needs no allocation. The entries are slots of one vector linked in recency order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// No slot.
const NONE: usize = usize::MAX;

struct Slot {
    key: Box<[u8]>,
    /// The row, or `None` when the source has no row for the key.
    value: Option<Box<[u8]>>,
    loaded: Instant,
    /// Towards the most recently used.
    prev: usize,
    /// Towards the least recently used.
    next: usize,
}

/// A bounded least-recently-used map from key to answer, with a time to live.
pub struct LookupCache {
    capacity: usize,
    ttl: Option<Duration>,
    index: HashMap<Box<[u8]>, usize>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: evicted first.
    tail: usize,
    bytes: usize,
    evictions: u64,
    expirations: u64,
}

impl std::fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("len", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl LookupCache {
    /// A cache of at most `capacity` keys (0 caches nothing), each trusted for `ttl` (`None`:
    /// until evicted).
    pub fn new(capacity: usize, ttl: Option<Duration>) -> Self {
        Self {
            capacity,
            ttl,
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NONE,
            tail: NONE,
            bytes: 0,
            evictions: 0,
            expirations: 0,
        }
    }

    /// The slot holding `key`'s answer, made the most recently used, unless the key is
    /// absent or its answer is older than the time to live at `now` (then it goes).
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<usize> {
        let slot = *self.index.get(key)?;
        if self
            .ttl
            .is_some_and(|ttl| now.saturating_duration_since(self.slots[slot].loaded) >= ttl)
        {
            self.remove(slot);
            self.expirations += 1;
            return None;
        }
        self.unlink(slot);
        self.push_front(slot);
        Some(slot)
    }

    /// The answer in `slot` (from [`get`](Self::get), before any later insert): the row, or
    /// `None` for "no row".
    pub fn answer(&self, slot: usize) -> Option<&[u8]> {
        self.slots[slot].value.as_deref()
    }

    /// Stores `key`'s answer loaded at `loaded`, evicting the least recently used key when
    /// full.
    pub fn insert(&mut self, key: &[u8], value: Option<&[u8]>, loaded: Instant) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&slot) = self.index.get(key) {
            self.remove(slot);
        }
        if self.index.len() >= self.capacity && self.tail != NONE {
            self.remove(self.tail);
            self.evictions += 1;
        }
        let entry = Slot {
            key: key.into(),
            value: value.map(Into::into),
            loaded,
            prev: NONE,
            next: NONE,
        };
        self.bytes += entry_bytes(&entry);
        let slot = if let Some(slot) = self.free.pop() {
            self.slots[slot] = entry;
            slot
        } else {
            self.slots.push(entry);
            self.slots.len() - 1
        };
        self.index.insert(key.into(), slot);
        self.push_front(slot);
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of the keys and rows held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keys evicted to make room, since the cache was made.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Answers dropped for being older than the time to live, since the cache was made.
    pub fn expirations(&self) -> u64 {
        self.expirations
    }

    fn remove(&mut self, slot: usize) {
        self.unlink(slot);
        let entry = &mut self.slots[slot];
        self.bytes -= entry_bytes(entry);
        let key = std::mem::take(&mut entry.key);
        entry.value = None;
        self.index.remove(&key);
        self.free.push(slot);
    }

    fn unlink(&mut self, slot: usize) {
        let (prev, next) = (self.slots[slot].prev, self.slots[slot].next);
        if prev == NONE {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NONE {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
        self.slots[slot].prev = NONE;
        self.slots[slot].next = NONE;
    }

    fn push_front(&mut self, slot: usize) {
        self.slots[slot].next = self.head;
        if self.head != NONE {
            self.slots[self.head].prev = slot;
        }
        self.head = slot;
        if self.tail == NONE {
            self.tail = slot;
        }
    }
}

/// The bytes an entry holds (key twice: in its slot and in the index).
fn entry_bytes(entry: &Slot) -> usize {
    2 * entry.key.len() + entry.value.as_ref().map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached answer as text: the row's bytes, `-` for "no row"; `None` when not cached.
    fn answer(cache: &mut LookupCache, key: &[u8], now: Instant) -> Option<String> {
        let slot = cache.get(key, now)?;
        Some(cache.answer(slot).map_or_else(
            || "-".to_string(),
            |row| String::from_utf8_lossy(row).into_owned(),
        ))
    }

    #[test]
    fn the_least_recently_used_key_is_evicted_first() {
        let now = Instant::now();
        let mut cache = LookupCache::new(2, None);
        cache.insert(b"a", Some(b"1"), now);
        cache.insert(b"b", None, now);
        // Reading a makes b the least recently used.
        assert_eq!(answer(&mut cache, b"a", now), Some("1".into()));
        cache.insert(b"c", Some(b"3"), now);
        assert_eq!(answer(&mut cache, b"b", now), None);
        assert_eq!(answer(&mut cache, b"a", now), Some("1".into()));
        assert_eq!(answer(&mut cache, b"c", now), Some("3".into()));
        assert_eq!((cache.len(), cache.evictions()), (2, 1));
        // A key stored again replaces its answer without evicting.
        cache.insert(b"c", None, now);
        assert_eq!(answer(&mut cache, b"c", now), Some("-".into()));
        assert_eq!((cache.len(), cache.evictions()), (2, 1));
        // a: key twice and a row byte; c: key twice, no row.
        assert_eq!(cache.bytes(), 3 + 2);
    }

    #[test]
    fn an_answer_older_than_the_ttl_is_a_miss_and_leaves() {
        let start = Instant::now();
        let mut cache = LookupCache::new(10, Some(Duration::from_secs(60)));
        cache.insert(b"a", Some(b"1"), start);
        cache.insert(b"b", Some(b"2"), start + Duration::from_secs(30));
        let later = start + Duration::from_secs(61);
        assert_eq!(answer(&mut cache, b"a", later), None);
        assert_eq!(answer(&mut cache, b"b", later), Some("2".into()));
        assert_eq!((cache.len(), cache.expirations()), (1, 1));
        // Freed slots are reused; the recency list stays whole.
        for key in [b"c", b"d", b"e"] {
            cache.insert(key, None, later);
        }
        assert_eq!(cache.len(), 4);
        assert_eq!(answer(&mut cache, b"b", later), Some("2".into()));
    }

    #[test]
    fn a_cache_of_no_capacity_holds_nothing() {
        let now = Instant::now();
        let mut cache = LookupCache::new(0, None);
        cache.insert(b"a", Some(b"1"), now);
        assert_eq!(answer(&mut cache, b"a", now), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_long_run_of_inserts_keeps_exactly_the_most_recent_keys() {
        let now = Instant::now();
        let mut cache = LookupCache::new(100, None);
        for i in 0_u32..10_000 {
            cache.insert(&i.to_be_bytes(), Some(i.to_string().as_bytes()), now);
        }
        assert_eq!(cache.len(), 100);
        assert_eq!(cache.evictions(), 9_900);
        for i in 9_900_u32..10_000 {
            assert_eq!(
                answer(&mut cache, &i.to_be_bytes(), now),
                Some(i.to_string())
            );
        }
        assert_eq!(answer(&mut cache, &9_899_u32.to_be_bytes(), now), None);
    }
}
