//! The state an output log's writer shares with the subscriptions reading it: which epochs
//! exist and where (being written, pre-committed, committed, removed), how many bytes of the
//! open epoch are whole records, and whether the input ended or the writer stopped. Every
//! change bumps a version and wakes the waiting subscriptions (blocking ones through a
//! condvar, async ones through their wakers). Epoch files are renamed and deleted under its
//! lock, so a subscription that opens a file by the name the state gives never races them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::naming::LogFile;
use super::plan::Holdings;

/// Where one epoch of the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochStatus {
    /// Being written: its first `bytes` bytes are whole records.
    Open {
        /// Bytes of whole records.
        bytes: u64,
    },
    /// Pre-committed (synced), waiting for its checkpoint's commit.
    Pending {
        /// The file's length.
        bytes: u64,
    },
    /// Committed, its file in place.
    Committed,
    /// Committed, and its file removed by garbage collection.
    Removed,
    /// Not begun yet.
    NotBegun,
}

/// What the writer publishes.
#[derive(Debug, Default)]
pub(crate) struct LogState {
    /// Recovery is done and the first epoch began: subscriptions may start.
    pub(crate) ready: bool,
    /// The log's first epoch, once known.
    pub(crate) begin: Option<u64>,
    /// The newest committed epoch.
    pub(crate) committed: Option<u64>,
    /// The oldest committed epoch whose file is kept.
    pub(crate) oldest: Option<u64>,
    /// Pre-committed epochs and their files' lengths.
    pub(crate) pending: BTreeMap<u64, u64>,
    /// The epoch being written and its bytes of whole records.
    pub(crate) open: Option<(u64, u64)>,
    /// Every row of the object's stream has reached the log.
    pub(crate) input_ended: bool,
    /// The writer stopped (the object was dropped or the database closed).
    pub(crate) closed: bool,
    /// The failure that stopped the log.
    pub(crate) failed: Option<String>,
    version: u64,
    /// Wakers of async subscriptions waiting for a change, by subscription.
    wakers: Vec<(u64, Waker)>,
}

impl LogState {
    /// What the log holds for resumption; `None` before its first epoch is known.
    pub(crate) fn holdings(&self) -> Option<Holdings> {
        Some(Holdings {
            begin: self.begin?,
            committed: self.committed,
            oldest: self.oldest,
        })
    }

    /// Where epoch `epoch` is.
    pub(crate) fn status(&self, epoch: u64) -> EpochStatus {
        if let Some((open, bytes)) = self.open.filter(|(open, _)| *open == epoch) {
            debug_assert_eq!(open, epoch);
            return EpochStatus::Open { bytes };
        }
        if let Some(&bytes) = self.pending.get(&epoch) {
            return EpochStatus::Pending { bytes };
        }
        match self.committed {
            Some(committed) if epoch <= committed => {
                if self.oldest.is_some_and(|oldest| epoch >= oldest) {
                    EpochStatus::Committed
                } else {
                    EpochStatus::Removed
                }
            }
            _ => EpochStatus::NotBegun,
        }
    }

    /// The file epoch `epoch` is in now, if it has one.
    pub(crate) fn file(&self, epoch: u64) -> Option<LogFile> {
        match self.status(epoch) {
            EpochStatus::Open { .. } | EpochStatus::Pending { .. } => Some(LogFile::Temp(epoch)),
            EpochStatus::Committed => Some(LogFile::Committed(epoch)),
            EpochStatus::Removed | EpochStatus::NotBegun => None,
        }
    }

    /// Changes so far; a waiting subscription waits for it to move on.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }
}

/// An output log's shared state.
#[derive(Debug)]
pub(crate) struct LogShared {
    object: String,
    dir: PathBuf,
    keep_epochs: u64,
    state: Mutex<LogState>,
    changed: Condvar,
    next_subscription: AtomicU64,
}

impl LogShared {
    /// The state of the log of `object` in `dir`, which keeps the newest `keep_epochs`
    /// committed epochs.
    pub(crate) fn new(object: &str, dir: PathBuf, keep_epochs: u64) -> Self {
        Self {
            object: object.to_string(),
            dir,
            keep_epochs,
            state: Mutex::new(LogState::default()),
            changed: Condvar::new(),
            next_subscription: AtomicU64::new(0),
        }
    }

    /// The object whose changes the log holds.
    pub(crate) fn object(&self) -> &str {
        &self.object
    }

    /// The log's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Committed epochs kept.
    pub(crate) fn keep_epochs(&self) -> u64 {
        self.keep_epochs
    }

    /// The path of `file`.
    pub(crate) fn path(&self, file: LogFile) -> PathBuf {
        self.dir.join(file.name())
    }

    /// An id for a new subscription's waker.
    pub(crate) fn subscription_id(&self) -> u64 {
        self.next_subscription.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LogState> {
        // Every change is made whole under the lock; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state (with its lock held throughout `change`) and wakes every
    /// waiting subscription.
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut LogState) -> R) -> R {
        let mut state = self.lock();
        let result = change(&mut state);
        state.version += 1;
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        self.changed.notify_all();
        for (_, waker) in wakers {
            waker.wake();
        }
        result
    }

    /// Blocks until the state changes from version `seen`.
    pub(crate) fn wait_change(&self, seen: u64) {
        let state = self.lock();
        let _unchanged = self
            .changed
            .wait_while(state, |state| state.version == seen)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Has `waker` woken at the next change, unless the state already moved on from
    /// version `seen` (then returns false: look again).
    pub(crate) fn wake_on_change(&self, subscription: u64, seen: u64, waker: &Waker) -> bool {
        let mut state = self.lock();
        if state.version != seen {
            return false;
        }
        match state.wakers.iter_mut().find(|(id, _)| *id == subscription) {
            Some((_, registered)) => registered.clone_from(waker),
            None => state.wakers.push((subscription, waker.clone())),
        }
        true
    }

    /// Forgets the waker of a subscription that is gone.
    pub(crate) fn forget_waker(&self, subscription: u64) {
        self.lock().wakers.retain(|(id, _)| *id != subscription);
    }

    /// Waits up to `timeout` until epoch `epoch` is committed, or the log failed or
    /// stopped; returns whether it is committed.
    pub(crate) fn wait_committed(&self, epoch: u64, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |state| {
                state.committed < Some(epoch) && state.failed.is_none() && !state.closed
            })
            .unwrap_or_else(PoisonError::into_inner);
        state.committed >= Some(epoch)
    }

    /// Waits up to `timeout` until the writer recovered the log and began its first epoch;
    /// returns the state locked, or why the log is unusable.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> Result<MutexGuard<'_, LogState>, String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(failed) = &state.failed {
                return Err(failed.clone());
            }
            if state.ready {
                return Ok(state);
            }
            if state.closed {
                return Err("its writer stopped before it recovered".into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "it was not recovered within {} ms",
                    timeout.as_millis()
                ));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_is_open_pending_committed_or_removed() {
        let state = LogState {
            begin: Some(1),
            committed: Some(5),
            oldest: Some(4),
            pending: BTreeMap::from([(6, 100)]),
            open: Some((7, 30)),
            ..LogState::default()
        };
        assert_eq!(state.status(3), EpochStatus::Removed);
        assert_eq!(state.status(4), EpochStatus::Committed);
        assert_eq!(state.status(5), EpochStatus::Committed);
        assert_eq!(state.status(6), EpochStatus::Pending { bytes: 100 });
        assert_eq!(state.status(7), EpochStatus::Open { bytes: 30 });
        assert_eq!(state.status(8), EpochStatus::NotBegun);
        assert_eq!(state.file(5), Some(LogFile::Committed(5)));
        assert_eq!(state.file(6), Some(LogFile::Temp(6)));
        assert_eq!(state.file(3), None);
    }
}
