//! Which files a FILE source reads, with which partition numbers and how many rows to skip:
//! from the start, or resuming at a [`SourcePosition`]. A pure decision over the sorted list
//! of files matching the path, unit-tested without files.
//!
//! Rules: a file the position lists keeps its partition number; an ended one is not read
//! again, an unfinished one skips the rows already taken and is read first (it was open);
//! files the position does not list (not reached yet, or new) follow in path order with
//! numbers after every listed one. From the start with an unchanged set of files this
//! numbers files by their index in path order, as a reader that never stopped does.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::position::SourcePosition;

/// A file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedFile {
    /// Its partition number.
    pub(crate) partition: u32,
    pub(crate) path: PathBuf,
    /// Rows already taken from it, to skip.
    pub(crate) skip_rows: u64,
}

/// A listed file the position cannot resume: its path, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    pub(crate) file: String,
    pub(crate) reason: String,
}

/// The files to read, in reading order, given the files matching the path now (sorted) and
/// the position to resume at.
pub(crate) fn plan_files(
    files: &[PathBuf],
    position: &SourcePosition,
) -> Result<Vec<PlannedFile>, Mismatch> {
    let by_id: HashMap<String, &PathBuf> = files
        .iter()
        .map(|path| (path.display().to_string(), path))
        .collect();
    let mut listed: HashMap<&str, u32> = HashMap::new();
    let mut planned = Vec::new();
    for (partition, at) in position.partitions() {
        if let Some(other) = listed.insert(at.id.as_str(), partition) {
            return Err(Mismatch {
                file: at.id.clone(),
                reason: format!(
                    "the checkpoint lists it as both partition {other} and partition {partition}"
                ),
            });
        }
        let Some(path) = by_id.get(&at.id) else {
            return Err(Mismatch {
                file: at.id.clone(),
                reason: "the file is gone, or no longer matches the path".to_owned(),
            });
        };
        if !at.ended {
            planned.push(PlannedFile {
                partition,
                path: (*path).clone(),
                skip_rows: at.rows,
            });
        }
    }
    let mut next = position
        .partitions()
        .map(|(partition, _)| partition.saturating_add(1))
        .max()
        .unwrap_or(0);
    for path in files {
        if !listed.contains_key(path.display().to_string().as_str()) {
            planned.push(PlannedFile {
                partition: next,
                path: path.clone(),
                skip_rows: 0,
            });
            next = next.saturating_add(1);
        }
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::PartitionPosition;
    use crate::source::{SourceEvent, SourceReader};

    /// A reader whose partition `n` reads the file `f{n}`.
    struct Files;

    impl SourceReader for Files {
        fn next_event(&mut self) -> crate::Result<Option<SourceEvent>> {
            Ok(None)
        }

        fn partition_id(&self, partition: u32) -> String {
            format!("f{partition}")
        }
    }

    fn files(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(PathBuf::from).collect()
    }

    /// A position from `(partition, rows, ended)` of files `f{partition}`.
    fn position(entries: &[(u32, u64, bool)]) -> SourcePosition {
        let json = entries
            .iter()
            .map(|&(partition, rows, ended)| {
                let at = PartitionPosition {
                    id: Files.partition_id(partition),
                    rows,
                    ended,
                };
                (partition.to_string(), serde_json::to_value(at).unwrap())
            })
            .collect::<serde_json::Map<_, _>>();
        serde_json::from_value(serde_json::json!({ "partitions": json })).unwrap()
    }

    fn described(plan: &[PlannedFile]) -> Vec<(u32, String, u64)> {
        plan.iter()
            .map(|p| (p.partition, p.path.display().to_string(), p.skip_rows))
            .collect()
    }

    #[test]
    fn from_the_start_files_are_numbered_in_path_order() {
        let plan = plan_files(&files(&["f0", "f1", "f2"]), &SourcePosition::new()).unwrap();
        assert_eq!(
            described(&plan),
            [
                (0, "f0".to_owned(), 0),
                (1, "f1".to_owned(), 0),
                (2, "f2".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn resuming_skips_ended_files_and_taken_rows_and_numbers_new_files_after() {
        let now = files(&["f0", "f1", "f2", "f3", "new"]);
        let plan = plan_files(
            &now,
            &position(&[(0, 5, true), (1, 3, false), (2, 0, false)]),
        )
        .unwrap();
        assert_eq!(
            described(&plan),
            [
                (1, "f1".to_owned(), 3),
                (2, "f2".to_owned(), 0),
                (3, "f3".to_owned(), 0),
                (4, "new".to_owned(), 0)
            ]
        );
        // Every file ended: nothing to read.
        let done = plan_files(&files(&["f0"]), &position(&[(0, 5, true)])).unwrap();
        assert!(done.is_empty());
    }

    #[test]
    fn a_listed_file_that_is_gone_cannot_resume() {
        let error = plan_files(
            &files(&["f0", "f2"]),
            &position(&[(0, 1, true), (1, 2, false)]),
        )
        .unwrap_err();
        assert_eq!(error.file, "f1");
        assert!(error.reason.contains("gone"), "{}", error.reason);
    }
}
