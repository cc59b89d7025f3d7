//! Which keyed entries of an operator (groups, windows, sessions, partitions) changed since
//! its previous snapshot, so a delta snapshot writes only those and deletes the entries a
//! checkpoint holds that are gone.
//!
//! The hot path pays one flag test per entry touched: an entry is listed once, when it is
//! first touched after a snapshot, and only while snapshots are being taken (nothing is
//! recorded before the first one, so an operator never checkpointed keeps no lists).
//!
//! Invariants: every entry created or changed since the previous snapshot is dirty and
//! listed in `written`; every entry a snapshot wrote (`persisted`) and that has gone since is
//! listed in `removed`. An entry removed and created again is listed in both; the snapshot
//! then writes it and does not delete it.

/// Per-entry bookkeeping, kept in the entry itself.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EntryFlags {
    /// Changed since the previous snapshot, and listed in the tracker's `written`.
    dirty: bool,
    /// A snapshot wrote the entry: its removal must be recorded.
    persisted: bool,
}

impl EntryFlags {
    /// The flags of an entry just restored from a checkpoint: persisted, unchanged.
    pub(crate) fn restored() -> Self {
        Self {
            dirty: false,
            persisted: true,
        }
    }

    /// Changed since the previous snapshot (a listed entry whose flag was cleared has been
    /// written already).
    pub(crate) fn is_dirty(self) -> bool {
        self.dirty
    }

    /// Records that a snapshot wrote the entry.
    pub(crate) fn written(&mut self) {
        *self = Self::restored();
    }
}

/// The entries of one kind changed and removed since the previous snapshot.
#[derive(Debug)]
pub(crate) struct ChangeTracker<K> {
    /// Off until the first snapshot; on once the state is in a checkpoint.
    tracking: bool,
    /// The next snapshot must be full: entries went wholesale (e.g. every key's watermark
    /// at the end of input) without being listed.
    force_full: bool,
    /// Keys of entries that became dirty, each when it did.
    written: Vec<K>,
    /// Keys of persisted entries removed since.
    removed: Vec<K>,
}

impl<K> Default for ChangeTracker<K> {
    fn default() -> Self {
        Self {
            tracking: false,
            force_full: false,
            written: Vec::new(),
            removed: Vec::new(),
        }
    }
}

impl<K: Ord> ChangeTracker<K> {
    /// Records that the entry with `flags` (key made by `key` if needed) changed.
    #[inline]
    pub(crate) fn touch(&mut self, flags: &mut EntryFlags, key: impl FnOnce() -> K) {
        if self.tracking && !flags.dirty {
            flags.dirty = true;
            self.written.push(key());
        }
    }

    /// Records that the entry with `flags` (key made by `key` if needed) is gone.
    #[inline]
    pub(crate) fn remove(&mut self, flags: EntryFlags, key: impl FnOnce() -> K) {
        if self.tracking && flags.persisted {
            self.removed.push(key());
        }
    }

    /// Entries went without being listed: the next snapshot must be full.
    pub(crate) fn lost_track(&mut self) {
        self.force_full = true;
    }

    /// A delta cannot describe the changes: no snapshot was taken yet, or entries went
    /// unlisted.
    pub(crate) fn needs_full(&self) -> bool {
        !self.tracking || self.force_full
    }

    /// Starts a snapshot: returns the keys that became dirty (possibly repeated; the flags
    /// tell which are still to write) and the keys removed (sorted, without repeats), and
    /// starts over. A full snapshot ignores both.
    pub(crate) fn take(&mut self) -> (Vec<K>, Vec<K>) {
        self.tracking = true;
        self.force_full = false;
        let written = std::mem::take(&mut self.written);
        let mut removed = std::mem::take(&mut self.removed);
        removed.sort_unstable();
        removed.dedup();
        (written, removed)
    }

    /// The state was just restored from a checkpoint: changes from here on are deltas
    /// against it.
    pub(crate) fn restored(&mut self) {
        self.tracking = true;
        self.force_full = false;
        self.written.clear();
        self.removed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_listed_before_the_first_snapshot() {
        let mut tracker: ChangeTracker<u32> = ChangeTracker::default();
        let mut flags = EntryFlags::default();
        tracker.touch(&mut flags, || 1);
        tracker.remove(EntryFlags::restored(), || 2);
        assert!(tracker.needs_full());
        assert_eq!(tracker.take(), (vec![], vec![]));
        assert!(!flags.is_dirty());
    }

    #[test]
    fn an_entry_is_listed_once_until_written_and_removals_only_when_persisted() {
        let mut tracker: ChangeTracker<u32> = ChangeTracker::default();
        tracker.take();
        let mut flags = EntryFlags::default();
        for _ in 0..3 {
            tracker.touch(&mut flags, || 7);
        }
        let mut fresh = EntryFlags::default();
        tracker.touch(&mut fresh, || 8);
        // Created and removed between snapshots: no checkpoint holds it.
        tracker.remove(fresh, || 8);
        let persisted = EntryFlags::restored();
        tracker.remove(persisted, || 9);
        tracker.remove(persisted, || 9);
        assert!(!tracker.needs_full());
        assert_eq!(tracker.take(), (vec![7, 8], vec![9]));
        flags.written();
        tracker.touch(&mut flags, || 7);
        assert_eq!(tracker.take(), (vec![7], vec![]));
        tracker.lost_track();
        assert!(tracker.needs_full());
    }
}
