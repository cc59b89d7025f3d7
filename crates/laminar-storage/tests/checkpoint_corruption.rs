//! Damaged checkpoints: manifests and state files truncated and bit-flipped at many offsets.
//! Every case falls back to the previous valid checkpoint with a warning naming the damaged
//! manifest, or fails with `NoValidCheckpoint` when none is left. Never a panic, never a
//! wrong state.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{delta, entries, full, kv, offsets, Rng};
use laminar_storage::checkpoint::{CheckpointOptions, CheckpointStore};
use laminar_storage::io::StdBackend;
use laminar_storage::manifest::{manifest_file_name, Manifest};
use laminar_storage::StorageError;

fn options() -> CheckpointOptions {
    CheckpointOptions {
        backend: Arc::new(StdBackend),
        ..CheckpointOptions::default()
    }
}

/// Two checkpoints: epoch 1 (full a, full b) and epoch 2 (a delta on a, a new full b).
fn two_checkpoints(dir: &Path) -> (Manifest, Manifest) {
    let (mut store, _, _) = CheckpointStore::open_with(dir, options()).unwrap();
    let mut cp = store.begin(1).unwrap();
    cp.add_state("a", &full(&[("x", 1), ("y", 1)])).unwrap();
    cp.add_state("b", &full(&[("z", 1)])).unwrap();
    let first = cp.commit().unwrap();
    let mut cp = store.begin(2).unwrap();
    cp.add_state("a", &delta(&[("x", 2)], &["y"])).unwrap();
    cp.add_state("b", &full(&[("z", 2)])).unwrap();
    let second = cp.commit().unwrap();
    (first, second)
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
    }
    to
}

/// Damage applied to one file of a copy of the store.
enum Damage {
    Cut(usize),
    Flip(usize, usize),
    Remove,
}

impl Damage {
    fn apply(&self, path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        match *self {
            Self::Cut(at) => bytes.truncate(at),
            Self::Flip(at, bit) => bytes[at] ^= 1 << bit,
            Self::Remove => return std::fs::remove_file(path).unwrap(),
        }
        std::fs::write(path, bytes).unwrap();
    }

    fn describe(&self, file: &str) -> String {
        match self {
            Self::Cut(at) => format!("{file} cut at {at}"),
            Self::Flip(at, bit) => format!("{file} bit {bit} of byte {at}"),
            Self::Remove => format!("{file} removed"),
        }
    }
}

/// Cuts at every (or ~200) offsets and single-bit flips at every (or ~200) offsets of a
/// file of `len` bytes.
fn damages(len: usize, seed: u64) -> Vec<Damage> {
    let mut rng = Rng::new(seed);
    let cuts = offsets(len, 200, seed).into_iter().map(Damage::Cut);
    let flips = offsets(len, 200, seed + 1)
        .into_iter()
        .map(move |at| Damage::Flip(at, rng.below(8)));
    cuts.chain(flips).collect()
}

/// Opening a copy with `file` damaged must recover epoch 1, warning about manifest 2.
fn assert_falls_back(source: &Path, file: &str, damage: &Damage) {
    let case = damage.describe(file);
    let copy = copy_dir(source);
    damage.apply(&copy.path().join(file));
    let (_, recovered, warnings) = CheckpointStore::open_with(copy.path(), options())
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let recovered = recovered.unwrap_or_else(|| panic!("{case}: nothing recovered"));
    assert_eq!(recovered.manifest.epoch, 1, "{case}");
    assert_eq!(warnings.len(), 1, "{case}: {warnings:?}");
    assert!(
        warnings[0].contains(&manifest_file_name(2)),
        "{case}: {}",
        warnings[0]
    );
    assert_eq!(
        entries(&recovered.load_state("a").unwrap()),
        kv(&[("x", 1), ("y", 1)]),
        "{case}"
    );
    assert_eq!(
        entries(&recovered.load_state("b").unwrap()),
        kv(&[("z", 1)]),
        "{case}"
    );
}

fn len(path: PathBuf) -> usize {
    std::fs::metadata(path).unwrap().len() as usize
}

#[test]
fn a_damaged_newest_manifest_falls_back_to_the_previous_checkpoint() {
    let source = tempfile::tempdir().unwrap();
    two_checkpoints(source.path());
    let manifest = manifest_file_name(2);
    let size = len(source.path().join(&manifest));
    for damage in damages(size, 11) {
        assert_falls_back(source.path(), &manifest, &damage);
    }
}

#[test]
fn a_damaged_state_file_of_the_newest_checkpoint_falls_back_to_the_previous_one() {
    let source = tempfile::tempdir().unwrap();
    let (first, second) = two_checkpoints(source.path());
    let only_in_second: Vec<String> = second
        .states
        .values()
        .flatten()
        .filter(|f| !first.states.values().flatten().any(|g| g.file == f.file))
        .map(|f| f.file.clone())
        .collect();
    assert_eq!(
        only_in_second.len(),
        2,
        "a's delta and b's new full snapshot"
    );
    for (i, file) in only_in_second.iter().enumerate() {
        let size = len(source.path().join(file));
        for damage in damages(size, 20 + i as u64) {
            assert_falls_back(source.path(), file, &damage);
        }
        assert_falls_back(source.path(), file, &Damage::Remove);
    }
}

#[test]
fn damage_to_what_every_checkpoint_needs_is_no_valid_checkpoint() {
    let source = tempfile::tempdir().unwrap();
    let (first, _) = two_checkpoints(source.path());
    // a's full snapshot of epoch 1 starts a's chain in both checkpoints.
    let shared = first.states["a"][0].file.clone();
    let size = len(source.path().join(&shared));
    let mut cases = damages(size, 30);
    cases.push(Damage::Remove);
    for damage in cases {
        let case = damage.describe(&shared);
        let copy = copy_dir(source.path());
        damage.apply(&copy.path().join(&shared));
        let err = CheckpointStore::open_with(copy.path(), options()).expect_err(&case);
        match &err {
            StorageError::NoValidCheckpoint { path, reason } => {
                assert_eq!(path, &copy.path().join(manifest_file_name(2)), "{case}");
                assert!(
                    reason.contains("older manifests are unusable too"),
                    "{case}: {reason}"
                );
            }
            other => panic!("{case}: expected NoValidCheckpoint, got {other}"),
        }
    }
}

#[test]
fn both_manifests_damaged_is_no_valid_checkpoint() {
    let source = tempfile::tempdir().unwrap();
    two_checkpoints(source.path());
    let copy = copy_dir(source.path());
    for epoch in [1, 2] {
        Damage::Flip(20, 3).apply(&copy.path().join(manifest_file_name(epoch)));
    }
    let err = CheckpointStore::open_with(copy.path(), options()).unwrap_err();
    assert!(
        matches!(err, StorageError::NoValidCheckpoint { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&manifest_file_name(2)), "{err}");
}

#[test]
fn a_state_file_damaged_after_opening_is_caught_when_loaded() {
    let source = tempfile::tempdir().unwrap();
    let (_, second) = two_checkpoints(source.path());
    let (_, recovered, _) = CheckpointStore::open_with(source.path(), options()).unwrap();
    let file = &second.states["b"][0].file;
    Damage::Flip(30, 0).apply(&source.path().join(file));
    let err = recovered.unwrap().load_state("b").unwrap_err();
    assert!(err.to_string().contains(file.as_str()), "{err}");
}

#[test]
fn after_a_fallback_the_next_commit_replaces_the_damaged_checkpoint() {
    let source = tempfile::tempdir().unwrap();
    two_checkpoints(source.path());
    Damage::Cut(30).apply(&source.path().join(manifest_file_name(2)));
    let (mut store, recovered, warnings) =
        CheckpointStore::open_with(source.path(), options()).unwrap();
    assert_eq!((recovered.unwrap().manifest.epoch, warnings.len()), (1, 1));
    // The coordinator continues from the recovered epoch; the delta builds on epoch 1's chain.
    let mut cp = store.begin(2).unwrap();
    cp.add_state("a", &delta(&[("w", 3)], &[])).unwrap();
    cp.commit().unwrap();
    let (_, recovered, warnings) = CheckpointStore::open_with(source.path(), options()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let recovered = recovered.unwrap();
    assert_eq!(recovered.manifest.epoch, 2);
    assert_eq!(
        entries(&recovered.load_state("a").unwrap()),
        kv(&[("w", 3), ("x", 1), ("y", 1)])
    );
}
