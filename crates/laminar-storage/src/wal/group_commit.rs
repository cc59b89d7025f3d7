//! Group commit: many appenders waiting for their records to be durable share fdatasyncs,
//! and the first failure poisons the log for good.
//!
//! Leader/follower: an appender whose record is not yet durable becomes the leader if no sync
//! is running, and syncs everything written so far; the others wait, and the leader's sync
//! covers every record written before it started. Invariants: at most one sync runs at a
//! time through here; `durable_lsn` only grows; once poisoned, every waiter and every later
//! caller gets the same [`StorageError::Poisoned`].

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::error::{Result, StorageError};

/// The durable LSN, the sync in progress, and the poison.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    state: Mutex<CommitState>,
    changed: Condvar,
    poison: OnceLock<(PathBuf, String)>,
}

#[derive(Debug)]
struct CommitState {
    durable_lsn: u64,
    syncing: bool,
}

/// Locks `mutex`, also after a panic elsewhere while it was held: the data it guards is a
/// pair of counters that every update leaves consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupCommit {
    /// Every record through `durable_lsn` is already durable.
    pub(crate) fn new(durable_lsn: u64) -> Self {
        Self {
            state: Mutex::new(CommitState {
                durable_lsn,
                syncing: false,
            }),
            changed: Condvar::new(),
            poison: OnceLock::new(),
        }
    }

    /// The highest LSN known durable.
    pub(crate) fn durable_lsn(&self) -> u64 {
        lock(&self.state).durable_lsn
    }

    /// An error if the log is poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        match self.poison.get() {
            Some((path, reason)) => Err(StorageError::Poisoned {
                path: path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Poisons the log with `error` (the first poison wins) and returns the resulting error.
    pub(crate) fn poison(
        &self,
        fallback_path: &std::path::Path,
        error: &StorageError,
    ) -> StorageError {
        let path = match error {
            StorageError::Io { path, .. } => path.clone(),
            _ => fallback_path.to_path_buf(),
        };
        let _ = self.poison.set((path, error.to_string()));
        // Wake waiters so they see the poison instead of waiting for a sync that failed.
        self.changed.notify_all();
        self.check()
            .err()
            .unwrap_or_else(|| StorageError::Poisoned {
                path: fallback_path.to_path_buf(),
                reason: error.to_string(),
            })
    }

    /// Records that everything through `lsn` is durable (a sync outside the leader protocol,
    /// e.g. of a segment being closed).
    pub(crate) fn mark_durable(&self, lsn: u64) {
        let mut state = lock(&self.state);
        state.durable_lsn = state.durable_lsn.max(lsn);
        self.changed.notify_all();
    }

    /// Returns once `lsn` is durable. If no sync runs, the caller leads: `sync` syncs
    /// everything written so far and returns the highest LSN it covers (or fails, poisoning
    /// the log as `path`).
    pub(crate) fn wait_durable(
        &self,
        lsn: u64,
        path: &std::path::Path,
        sync: impl Fn() -> Result<u64>,
    ) -> Result<()> {
        let mut state = lock(&self.state);
        loop {
            self.check()?;
            if state.durable_lsn >= lsn {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            drop(state);
            let synced = sync();
            state = lock(&self.state);
            state.syncing = false;
            match synced {
                Ok(through) => state.durable_lsn = state.durable_lsn.max(through),
                Err(e) => {
                    drop(state);
                    return Err(self.poison(path, &e));
                }
            }
            self.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn one_sync_covers_every_waiter_it_reaches() {
        let commit = Arc::new(GroupCommit::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (commit, syncs, written) = (commit.clone(), syncs.clone(), written.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let lsn = written.fetch_add(1, Ordering::SeqCst) + 1;
                        commit
                            .wait_durable(lsn, Path::new("seg"), || {
                                syncs.fetch_add(1, Ordering::SeqCst);
                                Ok(written.load(Ordering::SeqCst))
                            })
                            .unwrap();
                        assert!(commit.durable_lsn() >= lsn);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(commit.durable_lsn(), 800);
        assert!(syncs.load(Ordering::SeqCst) <= 800);
    }

    #[test]
    fn a_failed_sync_poisons_every_later_call() {
        let commit = GroupCommit::new(3);
        let failed = commit.wait_durable(4, Path::new("seg-a"), || {
            Err(StorageError::io(
                "seg-b",
                std::io::Error::other("disk gone"),
            ))
        });
        let err = failed.unwrap_err();
        assert!(
            matches!(&err, StorageError::Poisoned { path, reason }
                if path == Path::new("seg-b") && reason.contains("disk gone")),
            "{err}"
        );
        // Even a record already durable is refused: the log accepts nothing more.
        assert!(matches!(
            commit.wait_durable(1, Path::new("seg-a"), || Ok(9)),
            Err(StorageError::Poisoned { .. })
        ));
        assert_eq!(commit.durable_lsn(), 3);
    }
}
