//! The checkpoint store's decisions, as pure functions of what it observed: when a state
//! needs a full snapshot again (compaction), and which files garbage collection deletes.

use std::collections::HashSet;

use super::naming::{is_state_file_name, is_temp_file_name};
use crate::manifest::{parse_manifest_file_name, Manifest, StateFileKind, StateFileRef};

/// Whether the next snapshot of a state whose current chain is `chain` should be full: when
/// it has no chain, or `compaction_deltas` deltas already, or its deltas together outweigh
/// its full snapshot. This bounds the files recovery reads and merges per state.
pub(crate) fn needs_full(chain: Option<&[StateFileRef]>, compaction_deltas: usize) -> bool {
    let Some((full, deltas)) = chain.and_then(<[StateFileRef]>::split_first) else {
        return true;
    };
    debug_assert_eq!(full.kind, StateFileKind::Full);
    let delta_bytes: u64 = deltas.iter().map(|d| d.bytes).sum();
    deltas.len() >= compaction_deltas || delta_bytes > full.bytes
}

/// Which of the files named `names` (the checkpoint directory's listing) garbage collection
/// deletes when `kept` are the manifests to keep: every other manifest, every state file no
/// kept manifest references, and every temporary file. Files the store did not name are
/// never touched.
pub(crate) fn garbage<'a>(names: &'a [String], kept: &[Manifest]) -> Vec<&'a str> {
    let kept_epochs: HashSet<u64> = kept.iter().map(|m| m.epoch).collect();
    let referenced: HashSet<&str> = kept
        .iter()
        .flat_map(|m| m.states.values().flatten())
        .map(|f| f.file.as_str())
        .collect();
    names
        .iter()
        .map(String::as_str)
        .filter(|name| match parse_manifest_file_name(name) {
            Some(epoch) => !kept_epochs.contains(&epoch),
            None => {
                (is_state_file_name(name) && !referenced.contains(name)) || is_temp_file_name(name)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::manifest::{manifest_file_name, MANIFEST_FORMAT_VERSION};

    fn file(name: &str, kind: StateFileKind, bytes: u64) -> StateFileRef {
        StateFileRef {
            file: name.into(),
            kind,
            bytes,
            crc32c: 0,
        }
    }

    fn manifest(epoch: u64, files: &[&str]) -> Manifest {
        let chain = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let kind = if i == 0 {
                    StateFileKind::Full
                } else {
                    StateFileKind::Delta
                };
                file(f, kind, 1)
            })
            .collect();
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            epoch,
            created_unix_ms: 0,
            workers: 1,
            states: BTreeMap::from([("s".to_string(), chain)]),
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            engine: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_full_snapshot_is_due_without_a_chain_or_after_enough_deltas() {
        assert!(needs_full(None, 8));
        let full = file("f", StateFileKind::Full, 100);
        let delta = file("d", StateFileKind::Delta, 10);
        assert!(!needs_full(Some(std::slice::from_ref(&full)), 8));
        assert!(!needs_full(
            Some(&[full.clone(), delta.clone(), delta.clone()]),
            3
        ));
        assert!(needs_full(
            Some(&[full.clone(), delta.clone(), delta.clone(), delta.clone()]),
            3
        ));
    }

    #[test]
    fn a_full_snapshot_is_due_when_deltas_outweigh_it() {
        let full = file("f", StateFileKind::Full, 100);
        let big = file("d", StateFileKind::Delta, 60);
        assert!(!needs_full(Some(&[full.clone(), big.clone()]), 8));
        assert!(needs_full(Some(&[full, big.clone(), big]), 8));
    }

    #[test]
    fn garbage_is_what_no_kept_manifest_needs() {
        let names: Vec<String> = [
            manifest_file_name(1),
            manifest_file_name(2),
            manifest_file_name(3),
            manifest_file_name(9),
            "state-a.full".into(),
            "state-b.delta".into(),
            "state-c.full".into(),
            "state-d.full.tmp".into(),
            format!("{}.tmp", manifest_file_name(4)),
            "notes.txt".into(),
            "state-x.weird".into(),
        ]
        .into_iter()
        .collect();
        let kept = [
            manifest(3, &["state-c.full"]),
            manifest(2, &["state-a.full", "state-b.delta"]),
        ];
        let mut deleted = garbage(&names, &kept);
        deleted.sort_unstable();
        assert_eq!(
            deleted,
            vec![
                "manifest-00000000000000000001",
                "manifest-00000000000000000004.tmp",
                "manifest-00000000000000000009",
                "state-d.full.tmp",
            ]
        );
    }
}
