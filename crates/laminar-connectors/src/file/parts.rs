//! The commit protocol of a FILE sink writing a directory, as pure decisions over what is on
//! disk (the I/O is in `part_dir`). Each committed epoch is one part file
//! `part-{epoch:020}.{ext}`, so lexical order is commit order and the union of the parts is
//! the output. An epoch is written to the hidden temp file `.part-{epoch}.{ext}.tmp`;
//! pre-commit syncs it, and commit renames it into place.
//!
//! Invariants:
//! - a commit handle lists every pre-committed epoch not yet committed when it was made
//!   (with the byte length synced), so committing or recovering one handle completes all
//!   output up to its epoch, even if an earlier commit never ran;
//! - committing is idempotent: a part already renamed with the recorded length is done;
//! - recovery keeps exactly the parts up to the restored epoch: every temp file the handle
//!   does not name and every part of a later epoch is deleted, since replay writes them again.

use serde::{Deserialize, Serialize};

/// The pre-committed part of one epoch, as recorded in a commit handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartRecord {
    /// The epoch whose rows the part holds.
    pub(crate) epoch: u64,
    /// Length of the temp file when it was synced.
    pub(crate) bytes: u64,
}

/// What `pre_commit` returns and `commit`/`recover` take back: the parts to make visible.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommitHandle {
    /// Every pre-committed, uncommitted part up to the handle's epoch, in epoch order. Empty
    /// when those epochs had no rows.
    pub(crate) parts: Vec<PartRecord>,
}

/// A file of the sink's directory that the protocol owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PartFile {
    /// A committed part of this epoch.
    Part(u64),
    /// The temp file of this epoch (being written, or pre-committed).
    Temp(u64),
}

/// File names of the parts of one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartNames {
    /// Extension of the parts, without the dot: the format's name.
    pub(crate) extension: &'static str,
}

impl PartNames {
    /// The committed part of `epoch`.
    pub(crate) fn part(self, epoch: u64) -> String {
        format!("part-{epoch:020}.{}", self.extension)
    }

    /// The temp file of `epoch`: hidden, so that readers of the directory skip it.
    pub(crate) fn temp(self, epoch: u64) -> String {
        format!(".part-{epoch}.{}.tmp", self.extension)
    }

    /// The file `name` stands for, if it is one of this format's parts or temp files.
    pub(crate) fn parse(self, name: &str) -> Option<PartFile> {
        if let Some(rest) = name.strip_prefix(".part-") {
            let digits = rest.strip_suffix(".tmp")?.strip_suffix(self.extension)?;
            let digits = digits.strip_suffix('.')?;
            return epoch_digits(digits).map(PartFile::Temp);
        }
        let digits = name
            .strip_prefix("part-")?
            .strip_suffix(self.extension)?
            .strip_suffix('.')?;
        // Only the canonical width, so that a user's `part-7.csv` is never touched.
        (digits.len() == 20)
            .then(|| epoch_digits(digits))
            .flatten()
            .map(PartFile::Part)
    }
}

fn epoch_digits(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How to complete one part of a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartAction {
    /// Rename the temp file into place.
    Rename,
    /// The part is already in place: a repeated commit.
    AlreadyCommitted,
}

/// Decides how to commit `record` given the lengths of its temp file and of its part on disk
/// (`None`: absent). An error says why the pre-committed output cannot be committed.
pub(crate) fn decide_commit(
    record: PartRecord,
    temp_bytes: Option<u64>,
    part_bytes: Option<u64>,
) -> std::result::Result<PartAction, String> {
    match (temp_bytes, part_bytes) {
        (Some(bytes), _) if bytes == record.bytes => Ok(PartAction::Rename),
        (Some(bytes), _) => Err(format!(
            "its temp file has {bytes} bytes, but {} were synced at pre-commit",
            record.bytes
        )),
        (None, Some(bytes)) if bytes == record.bytes => Ok(PartAction::AlreadyCommitted),
        (None, Some(bytes)) => Err(format!(
            "its part file has {bytes} bytes, but {} were synced at pre-commit",
            record.bytes
        )),
        (None, None) => Err("neither its pre-committed temp file nor its part file exists".into()),
    }
}

/// The files recovery deletes, given the restored epoch and its handle (`None`: no
/// checkpoint, so all output is written again) and the protocol's files on disk: every temp
/// file the handle does not name, and every part after the restored epoch.
pub(crate) fn recovery_deletions(
    committed: Option<(u64, &CommitHandle)>,
    on_disk: &[PartFile],
) -> Vec<PartFile> {
    let named = |epoch: u64| {
        committed.is_some_and(|(_, handle)| handle.parts.iter().any(|p| p.epoch == epoch))
    };
    let mut deletions: Vec<PartFile> = on_disk
        .iter()
        .copied()
        .filter(|file| match *file {
            PartFile::Temp(epoch) => !named(epoch),
            PartFile::Part(epoch) => committed.is_none_or(|(last, _)| epoch > last),
        })
        .collect();
    deletions.sort_unstable();
    deletions
}

/// Checks that a handle given for `epoch` names only epochs up to it, in increasing order.
pub(crate) fn check_handle(epoch: u64, handle: &CommitHandle) -> std::result::Result<(), String> {
    let mut previous = None;
    for part in &handle.parts {
        if part.epoch > epoch {
            return Err(format!("the handle names epoch {}, after it", part.epoch));
        }
        if previous.is_some_and(|p| p >= part.epoch) {
            return Err(format!(
                "the handle names epoch {} out of order",
                part.epoch
            ));
        }
        previous = Some(part.epoch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: PartNames = PartNames { extension: "csv" };

    #[test]
    fn names_sort_in_commit_order_and_parse_back() {
        assert_eq!(CSV.part(7), "part-00000000000000000007.csv");
        assert_eq!(CSV.temp(7), ".part-7.csv.tmp");
        assert!(CSV.part(9) < CSV.part(10));
        assert!(CSV.part(99) < CSV.part(u64::MAX));
        for epoch in [0, 7, 10, u64::MAX] {
            assert_eq!(CSV.parse(&CSV.part(epoch)), Some(PartFile::Part(epoch)));
            assert_eq!(CSV.parse(&CSV.temp(epoch)), Some(PartFile::Temp(epoch)));
        }
        for foreign in [
            "part-7.csv",
            "part-00000000000000000007.json",
            ".part-7.json.tmp",
            ".part-.csv.tmp",
            ".part-x.csv.tmp",
            "part-0000000000000000000a.csv",
            "notes.txt",
            "part-00000000000000000007csv",
        ] {
            assert_eq!(CSV.parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn commit_renames_a_synced_temp_and_accepts_a_repeat() {
        let record = PartRecord {
            epoch: 3,
            bytes: 40,
        };
        assert_eq!(
            decide_commit(record, Some(40), None),
            Ok(PartAction::Rename)
        );
        // A crash between two renames of one handle: the temp is still whole.
        assert_eq!(
            decide_commit(record, Some(40), Some(40)),
            Ok(PartAction::Rename)
        );
        assert_eq!(
            decide_commit(record, None, Some(40)),
            Ok(PartAction::AlreadyCommitted)
        );
    }

    #[test]
    fn commit_refuses_missing_or_changed_output() {
        let record = PartRecord {
            epoch: 3,
            bytes: 40,
        };
        let lost = decide_commit(record, None, None).unwrap_err();
        assert!(lost.contains("neither"), "{lost}");
        let torn = decide_commit(record, Some(12), None).unwrap_err();
        assert!(torn.contains("temp file has 12 bytes"), "{torn}");
        let changed = decide_commit(record, None, Some(41)).unwrap_err();
        assert!(changed.contains("part file has 41 bytes"), "{changed}");
    }

    #[test]
    fn recovery_keeps_the_handle_and_earlier_parts_only() {
        let handle = CommitHandle {
            parts: vec![
                PartRecord { epoch: 4, bytes: 1 },
                PartRecord { epoch: 5, bytes: 1 },
            ],
        };
        let on_disk = [
            PartFile::Part(2),
            PartFile::Part(3),
            PartFile::Temp(4),
            PartFile::Part(5),
            PartFile::Temp(6),
            PartFile::Part(6),
            PartFile::Temp(1),
        ];
        assert_eq!(
            recovery_deletions(Some((5, &handle)), &on_disk),
            [PartFile::Part(6), PartFile::Temp(1), PartFile::Temp(6)]
        );
        // No checkpoint: every output is written again.
        let mut all = on_disk.to_vec();
        all.sort_unstable();
        assert_eq!(recovery_deletions(None, &on_disk), all);
    }

    #[test]
    fn a_handle_names_earlier_epochs_in_order() {
        let handle = |epochs: &[u64]| CommitHandle {
            parts: epochs
                .iter()
                .map(|&epoch| PartRecord { epoch, bytes: 0 })
                .collect(),
        };
        assert!(check_handle(5, &handle(&[3, 5])).is_ok());
        assert!(check_handle(5, &handle(&[])).is_ok());
        assert!(check_handle(5, &handle(&[6]))
            .unwrap_err()
            .contains("after"));
        assert!(check_handle(5, &handle(&[4, 4]))
            .unwrap_err()
            .contains("out of order"));
    }

    #[test]
    fn handles_round_trip_through_json() {
        let handle = CommitHandle {
            parts: vec![PartRecord {
                epoch: 9,
                bytes: 120,
            }],
        };
        let json = serde_json::to_value(&handle).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"parts": [{"epoch": 9, "bytes": 120}]})
        );
        assert_eq!(
            serde_json::from_value::<CommitHandle>(json).unwrap(),
            handle
        );
    }
}
