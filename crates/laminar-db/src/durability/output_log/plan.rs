//! The output log's decisions, as pure functions of what it observed: after which epochs a
//! subscription may resume (and from which epoch it then reads), which committed epochs
//! garbage collection removes, which files recovery deletes, and how a pre-committed epoch
//! is committed (again, after a crash).

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::naming::LogFile;

/// A pre-committed epoch, as a handle records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingEpoch {
    /// The epoch.
    pub(crate) epoch: u64,
    /// Length of its temp file when it was synced.
    pub(crate) bytes: u64,
}

/// What a pre-commit returns (into the checkpoint's manifest) and commit and recovery take
/// back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogHandle {
    /// The log's first epoch: the one its object was created in.
    pub(crate) begin: u64,
    /// Every pre-committed, uncommitted epoch up to the handle's own, in epoch order.
    pub(crate) pending: Vec<PendingEpoch>,
}

impl LogHandle {
    /// Checks that a handle given for `epoch` names only epochs from the log's beginning up
    /// to `epoch`, in increasing order.
    pub(crate) fn check(&self, epoch: u64) -> Result<(), String> {
        let mut previous = None;
        for pending in &self.pending {
            if pending.epoch > epoch || pending.epoch < self.begin {
                return Err(format!(
                    "the handle of epoch {epoch} names epoch {}, outside {}..={epoch}",
                    pending.epoch, self.begin
                ));
            }
            if previous.is_some_and(|p| p >= pending.epoch) {
                return Err(format!(
                    "the handle of epoch {epoch} names epoch {} out of order",
                    pending.epoch
                ));
            }
            previous = Some(pending.epoch);
        }
        Ok(())
    }
}

/// The epochs a log holds: every epoch from `begin` has a file, committed ones up to
/// `committed`, of which garbage collection removed those before `oldest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holdings {
    /// The log's first epoch.
    pub(crate) begin: u64,
    /// The newest committed epoch, if any.
    pub(crate) committed: Option<u64>,
    /// The oldest committed epoch whose file is kept, if any.
    pub(crate) oldest: Option<u64>,
}

/// Why a subscription cannot resume after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Epochs after it were removed; `oldest` is the oldest epoch one may resume after.
    Removed {
        /// The oldest epoch to resume after.
        oldest: u64,
    },
    /// It is not committed (yet); `newest` is the newest that is.
    NotCommitted {
        /// The newest committed epoch.
        newest: u64,
    },
}

impl Holdings {
    /// The newest epoch one may resume after: the newest committed, or the epoch before the
    /// log began (which holds nothing of it) when none is.
    pub(crate) fn newest(&self) -> u64 {
        self.committed
            .unwrap_or_else(|| self.begin.saturating_sub(1))
    }

    /// The oldest epoch one may resume after: any while the log still holds every epoch
    /// since it began, else the one before its oldest kept file.
    pub(crate) fn oldest_resumable(&self) -> u64 {
        match self.oldest {
            Some(oldest) if oldest > self.begin => oldest - 1,
            _ => 0,
        }
    }

    /// The first epoch a subscription resuming after epoch `after` reads: the log holds
    /// every epoch from it, so nothing after `after` is missed; epochs before the log began
    /// hold nothing of its object.
    pub(crate) fn first_to_read(&self, after: u64) -> Result<u64, Refusal> {
        if after > self.newest() {
            return Err(Refusal::NotCommitted {
                newest: self.newest(),
            });
        }
        if after < self.oldest_resumable() {
            return Err(Refusal::Removed {
                oldest: self.oldest_resumable(),
            });
        }
        Ok((after + 1).max(self.begin))
    }

    /// The committed epochs garbage collection removes once `committed` is: all but the
    /// newest `keep_epochs`. `None` when there are none.
    pub(crate) fn collectable(&self, keep_epochs: u64) -> Option<RangeInclusive<u64>> {
        let (committed, oldest) = (self.committed?, self.oldest?);
        let last = committed.checked_sub(keep_epochs)?;
        (oldest <= last).then_some(oldest..=last)
    }
}

/// How to commit one pre-committed epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitAction {
    /// Rename the temp file into place.
    Rename,
    /// The committed file is already in place: a repeated commit.
    AlreadyCommitted,
}

/// Decides how to commit `pending` given the lengths of its temp and committed files on
/// disk (`None`: absent); an error says why the pre-committed epoch cannot be committed.
pub(crate) fn decide_commit(
    pending: PendingEpoch,
    temp_bytes: Option<u64>,
    committed_bytes: Option<u64>,
) -> Result<CommitAction, String> {
    match (temp_bytes, committed_bytes) {
        (Some(bytes), _) if bytes == pending.bytes => Ok(CommitAction::Rename),
        (Some(bytes), _) => Err(format!(
            "its temp file has {bytes} bytes, but {} were synced at pre-commit",
            pending.bytes
        )),
        (None, Some(bytes)) if bytes == pending.bytes => Ok(CommitAction::AlreadyCommitted),
        (None, Some(bytes)) => Err(format!(
            "its committed file has {bytes} bytes, but {} were synced at pre-commit",
            pending.bytes
        )),
        (None, None) => {
            Err("neither its pre-committed temp file nor its committed file exists".into())
        }
    }
}

/// The files recovery deletes, given the restored checkpoint's epoch and the log's handle
/// in it (`None`: the checkpoint does not know the log, so the object's output is produced
/// again from the start) and the log's files on disk: every temp file the handle does not
/// name, and every committed file after the restored epoch (the sources replay its rows).
pub(crate) fn recovery_deletions(
    restored: Option<(u64, &LogHandle)>,
    on_disk: &[LogFile],
) -> Vec<LogFile> {
    let named = |epoch: u64| {
        restored.is_some_and(|(_, handle)| handle.pending.iter().any(|p| p.epoch == epoch))
    };
    let mut deletions: Vec<LogFile> = on_disk
        .iter()
        .copied()
        .filter(|file| match *file {
            LogFile::Temp(epoch) => !named(epoch),
            LogFile::Committed(epoch) => restored.is_none_or(|(last, _)| epoch > last),
        })
        .collect();
    deletions.sort_unstable();
    deletions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holdings(begin: u64, committed: Option<u64>, oldest: Option<u64>) -> Holdings {
        Holdings {
            begin,
            committed,
            oldest,
        }
    }

    #[test]
    fn a_log_holding_every_epoch_resumes_after_any_committed_one() {
        let log = holdings(3, Some(6), Some(3));
        assert_eq!(log.first_to_read(0), Ok(3));
        assert_eq!(log.first_to_read(2), Ok(3));
        assert_eq!(log.first_to_read(4), Ok(5));
        assert_eq!(log.first_to_read(6), Ok(7));
        assert_eq!(
            log.first_to_read(7),
            Err(Refusal::NotCommitted { newest: 6 })
        );
    }

    #[test]
    fn after_garbage_collection_older_epochs_are_refused_naming_the_oldest() {
        let log = holdings(1, Some(9), Some(5));
        assert_eq!(log.oldest_resumable(), 4);
        assert_eq!(log.first_to_read(4), Ok(5));
        assert_eq!(log.first_to_read(3), Err(Refusal::Removed { oldest: 4 }));
        assert_eq!(log.first_to_read(0), Err(Refusal::Removed { oldest: 4 }));
    }

    #[test]
    fn a_log_without_committed_epochs_resumes_only_from_before_it_began() {
        let log = holdings(5, None, None);
        assert_eq!(log.newest(), 4);
        assert_eq!(log.first_to_read(0), Ok(5));
        assert_eq!(log.first_to_read(4), Ok(5));
        assert_eq!(
            log.first_to_read(5),
            Err(Refusal::NotCommitted { newest: 4 })
        );
    }

    #[test]
    fn garbage_collection_keeps_the_newest_epochs() {
        assert_eq!(holdings(1, Some(9), Some(1)).collectable(2), Some(1..=7));
        assert_eq!(holdings(1, Some(9), Some(8)).collectable(2), None);
        assert_eq!(holdings(1, Some(2), Some(1)).collectable(2), None);
        assert_eq!(holdings(1, Some(1), Some(1)).collectable(2), None);
        assert_eq!(holdings(1, None, None).collectable(2), None);
    }

    #[test]
    fn commit_renames_a_synced_temp_and_accepts_a_repeat() {
        let pending = PendingEpoch {
            epoch: 3,
            bytes: 40,
        };
        assert_eq!(
            decide_commit(pending, Some(40), None),
            Ok(CommitAction::Rename)
        );
        assert_eq!(
            decide_commit(pending, None, Some(40)),
            Ok(CommitAction::AlreadyCommitted)
        );
        assert!(decide_commit(pending, None, None)
            .unwrap_err()
            .contains("neither"));
        assert!(decide_commit(pending, Some(12), None)
            .unwrap_err()
            .contains("12 bytes"));
        assert!(decide_commit(pending, None, Some(41))
            .unwrap_err()
            .contains("41 bytes"));
    }

    #[test]
    fn recovery_keeps_the_handle_and_earlier_epochs_only() {
        let handle = LogHandle {
            begin: 1,
            pending: vec![
                PendingEpoch { epoch: 4, bytes: 1 },
                PendingEpoch { epoch: 5, bytes: 1 },
            ],
        };
        let on_disk = [
            LogFile::Committed(2),
            LogFile::Committed(3),
            LogFile::Temp(4),
            LogFile::Committed(5),
            LogFile::Temp(6),
            LogFile::Committed(6),
            LogFile::Temp(1),
        ];
        assert_eq!(
            recovery_deletions(Some((5, &handle)), &on_disk),
            [LogFile::Committed(6), LogFile::Temp(1), LogFile::Temp(6)]
        );
        let mut all = on_disk.to_vec();
        all.sort_unstable();
        assert_eq!(recovery_deletions(None, &on_disk), all);
    }

    #[test]
    fn a_handle_names_its_epochs_in_order_within_the_log() {
        let handle = |epochs: &[u64]| LogHandle {
            begin: 2,
            pending: epochs
                .iter()
                .map(|&epoch| PendingEpoch { epoch, bytes: 0 })
                .collect(),
        };
        assert!(handle(&[3, 5]).check(5).is_ok());
        assert!(handle(&[]).check(5).is_ok());
        assert!(handle(&[6]).check(5).is_err());
        assert!(handle(&[1]).check(5).is_err());
        assert!(handle(&[4, 4]).check(5).unwrap_err().contains("order"));
        let json = serde_json::to_value(handle(&[3])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"begin": 2, "pending": [{"epoch": 3, "bytes": 0}]})
        );
        assert_eq!(
            serde_json::from_value::<LogHandle>(json).unwrap(),
            handle(&[3])
        );
    }
}
