//! The checkpoint store through its public API: commit and recover, delta chains, the
//! compaction policy, garbage collection, and the rules a checkpoint must follow.

mod common;

use std::sync::Arc;

use common::{backends, batch, delta, entries, failing_backend, full, kv};
use laminar_core::state::{OperatorState, StatePart};
use laminar_storage::checkpoint::{CheckpointOptions, CheckpointStore};
use laminar_storage::io::{Backend, StdBackend};
use laminar_storage::manifest::{manifest_file_name, read_manifest, StateFileKind};
use laminar_storage::StorageError;
use serde_json::json;

fn options(backend: &Backend) -> CheckpointOptions {
    CheckpointOptions {
        backend: Arc::clone(backend),
        ..CheckpointOptions::default()
    }
}

fn std_options() -> CheckpointOptions {
    options(&(Arc::new(StdBackend) as Backend))
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn an_empty_directory_has_nothing_to_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recovered, warnings) = CheckpointStore::open(dir.path().join("cp")).unwrap();
    assert!(recovered.is_none() && warnings.is_empty());
    assert_eq!(store.last_epoch(), None);
    assert!(store.needs_full("anything"));
}

#[test]
fn a_checkpoint_round_trips_through_reopening() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _, _) = CheckpointStore::open_with(dir.path(), options(&backend)).unwrap();
        let mut cp = store.begin(1).unwrap();
        cp.add_state("q1/agg@0", &full(&[("a", 1), ("b", 2)]))
            .unwrap();
        cp.add_state("q1/agg@1", &full(&[("c", 3)])).unwrap();
        cp.set_source("bids", json!({"partition": 0, "offset": 42}));
        cp.set_sink("out", json!({"txn": "e1"}));
        cp.set_engine(json!({"wal_lsn": 17}));
        cp.set_workers(2);
        let committed = cp.commit().unwrap();
        drop(store);

        let (store, recovered, warnings) =
            CheckpointStore::open_with(dir.path(), options(&backend)).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let recovered = recovered.unwrap();
        assert_eq!(recovered.manifest, committed);
        assert_eq!(recovered.manifest.workers, 2);
        assert_eq!(
            recovered.manifest.sources["bids"],
            json!({"partition": 0, "offset": 42})
        );
        assert_eq!(recovered.manifest.engine, json!({"wal_lsn": 17}));
        assert_eq!(
            recovered.state_ids().collect::<Vec<_>>(),
            vec!["q1/agg@0", "q1/agg@1"]
        );
        assert_eq!(
            entries(&recovered.load_state("q1/agg@0").unwrap()),
            kv(&[("a", 1), ("b", 2)])
        );
        assert_eq!(
            entries(&recovered.load_state("q1/agg@1").unwrap()),
            kv(&[("c", 3)])
        );
        assert_eq!(store.last_epoch(), Some(1));
        let err = recovered.load_state("nope").unwrap_err();
        assert!(matches!(err, StorageError::UnknownState { .. }), "{err}");
    }
}

#[test]
fn deltas_extend_the_chain_and_merge_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    let mut cp = store.begin(1).unwrap();
    cp.add_state("s", &full(&[("a", 1), ("b", 2), ("c", 3)]))
        .unwrap();
    cp.commit().unwrap();
    let mut cp = store.begin(2).unwrap();
    cp.add_state("s", &delta(&[("a", 10)], &["b"])).unwrap();
    cp.commit().unwrap();
    let mut cp = store.begin(5).unwrap();
    cp.add_state("s", &delta(&[("b", 20), ("d", 4)], &["c"]))
        .unwrap();
    let manifest = cp.commit().unwrap();
    let kinds: Vec<StateFileKind> = manifest.states["s"].iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        vec![
            StateFileKind::Full,
            StateFileKind::Delta,
            StateFileKind::Delta
        ]
    );

    let (_, recovered, _) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    let parts = recovered.unwrap().load_state("s").unwrap();
    assert_eq!(entries(&parts), kv(&[("a", 10), ("b", 20), ("d", 4)]));
}

#[test]
fn a_full_snapshot_starts_a_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    let mut cp = store.begin(1).unwrap();
    cp.add_state("s", &full(&[("old", 1)])).unwrap();
    cp.commit().unwrap();
    let mut cp = store.begin(2).unwrap();
    cp.add_state("s", &delta(&[("d", 2)], &[])).unwrap();
    cp.commit().unwrap();
    let mut cp = store.begin(3).unwrap();
    cp.add_state("s", &full(&[("new", 3)])).unwrap();
    let manifest = cp.commit().unwrap();
    assert_eq!(manifest.states["s"].len(), 1);
    let (_, recovered, _) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    assert_eq!(
        entries(&recovered.unwrap().load_state("s").unwrap()),
        kv(&[("new", 3)])
    );
}

#[test]
fn the_rules_of_a_checkpoint_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    let mut cp = store.begin(3).unwrap();
    let err = cp.add_state("s", &delta(&[("a", 1)], &[])).unwrap_err();
    assert!(err.to_string().contains("no snapshot of it"), "{err}");
    cp.add_state("s", &full(&[("a", 1)])).unwrap();
    let err = cp.add_state("s", &full(&[("a", 1)])).unwrap_err();
    assert!(err.to_string().contains("added twice"), "{err}");
    let keyless = OperatorState::full(vec![StatePart::new("p", vec![int_only_batch()])]);
    let err = cp.add_state("t", &keyless).unwrap_err();
    assert!(err.to_string().contains("state 't': part 'p'"), "{err}");
    cp.commit().unwrap();
    for epoch in [2, 3] {
        let err = store.begin(epoch).unwrap_err();
        assert!(err.to_string().contains("epochs must increase"), "{err}");
    }
}

fn int_only_batch() -> datafusion::arrow::record_batch::RecordBatch {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    datafusion::arrow::record_batch::RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap()
}

#[test]
fn states_not_added_again_are_dropped_from_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    let mut cp = store.begin(1).unwrap();
    cp.add_state("kept", &full(&[("a", 1)])).unwrap();
    cp.add_state("dropped", &full(&[("b", 2)])).unwrap();
    cp.commit().unwrap();
    let mut cp = store.begin(2).unwrap();
    cp.add_state("kept", &delta(&[("a", 2)], &[])).unwrap();
    let manifest = cp.commit().unwrap();
    assert_eq!(manifest.states.keys().collect::<Vec<_>>(), vec!["kept"]);
    // A delta cannot build on a state the previous checkpoint dropped.
    let mut cp = store.begin(3).unwrap();
    assert!(cp.add_state("dropped", &delta(&[("b", 3)], &[])).is_err());
}

#[test]
fn a_full_snapshot_is_asked_for_after_enough_deltas_or_when_they_outweigh_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CheckpointOptions {
        compaction_deltas: 3,
        ..std_options()
    };
    let (mut store, _, _) = CheckpointStore::open_with(dir.path(), opts).unwrap();
    assert!(store.needs_full("small") && store.needs_full("big"));
    let many: Vec<(String, i64)> = (0..200).map(|i| (format!("key{i}"), i)).collect();
    let many: Vec<(&str, i64)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut cp = store.begin(1).unwrap();
    cp.add_state("small", &full(&[("a", 1)])).unwrap();
    cp.add_state("big", &full(&many)).unwrap();
    cp.commit().unwrap();
    let mut epoch = 1;
    for round in 0..3 {
        assert!(!store.needs_full("big"), "round {round}");
        epoch += 1;
        let mut cp = store.begin(epoch).unwrap();
        cp.add_state("small", &delta(&many, &[])).unwrap();
        cp.add_state("big", &delta(&[("a", round)], &[])).unwrap();
        cp.commit().unwrap();
        // One delta larger than the small full snapshot already outweighs it.
        assert!(store.needs_full("small"));
    }
    assert!(store.needs_full("big"), "3 deltas reach compaction_deltas");
}

#[test]
fn garbage_collection_keeps_the_newest_checkpoints_and_what_they_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    std::fs::write(dir.path().join("README"), b"not ours").unwrap();
    let mut cp = store.begin(1).unwrap();
    cp.add_state("s", &full(&[("a", 1)])).unwrap();
    cp.add_state("t", &full(&[("x", 1)])).unwrap();
    cp.commit().unwrap();
    for epoch in 2..=4 {
        let mut cp = store.begin(epoch).unwrap();
        cp.add_state("s", &delta(&[("a", epoch as i64)], &[]))
            .unwrap();
        cp.add_state("t", &full(&[("x", epoch as i64)])).unwrap();
        cp.commit().unwrap();
    }
    // A crash left a temp file and an orphan state file of an uncommitted checkpoint.
    let mut orphan = store.begin(5).unwrap();
    orphan.add_state("s", &full(&[("never", 0)])).unwrap();
    drop(orphan);
    std::fs::write(
        dir.path().join("manifest-00000000000000000005.tmp"),
        b"half",
    )
    .unwrap();
    let mut cp = store.begin(6).unwrap();
    cp.add_state("s", &delta(&[("a", 6)], &[])).unwrap();
    cp.add_state("t", &full(&[("x", 6)])).unwrap();
    let newest = cp.commit().unwrap();
    assert!(store.take_gc_warnings().is_empty());

    // Kept: manifests 4 and 6 and their files (s's chain from epoch 1 on, t's fulls).
    let at4 = read_manifest(&dir.path().join(manifest_file_name(4))).unwrap();
    let mut expected: Vec<String> = vec![
        "README".into(),
        manifest_file_name(4),
        manifest_file_name(6),
    ];
    for manifest in [&newest, &at4] {
        for file in manifest.states.values().flatten() {
            expected.push(file.file.clone());
        }
    }
    expected.sort();
    expected.dedup();
    assert_eq!(names(dir.path()), expected);
    assert_eq!(newest.states["s"].len(), 5);
}

#[test]
fn a_checkpoint_not_committed_leaves_the_previous_one_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, faults) = failing_backend(Arc::new(StdBackend));
    let (mut store, _, _) = CheckpointStore::open_with(dir.path(), options(&backend)).unwrap();
    let mut cp = store.begin(1).unwrap();
    cp.add_state("s", &full(&[("a", 1)])).unwrap();
    cp.commit().unwrap();

    let mut cp = store.begin(2).unwrap();
    cp.add_state("s", &full(&[("a", 2)])).unwrap();
    faults.fail_syncs(true);
    let err = cp.commit().unwrap_err();
    assert!(err.to_string().contains("injected sync failure"), "{err}");
    faults.fail_syncs(false);
    let mut cp = store.begin(2).unwrap();
    faults.fail_writes(true);
    assert!(cp.add_state("s", &full(&[("a", 2)])).is_err());
    faults.fail_writes(false);
    drop(cp);

    let (_, recovered, warnings) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    assert!(warnings.is_empty());
    let recovered = recovered.unwrap();
    assert_eq!(recovered.manifest.epoch, 1);
    assert_eq!(
        entries(&recovered.load_state("s").unwrap()),
        kv(&[("a", 1)])
    );
}

#[test]
fn parts_with_different_schemas_restore_each_in_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    let state = OperatorState::full(vec![
        StatePart::new("left", vec![batch(&[("l", 1)])]),
        StatePart::new("right", vec![keyed_strings()]),
    ]);
    let mut cp = store.begin(1).unwrap();
    cp.add_state("join", &state).unwrap();
    cp.commit().unwrap();
    let (_, recovered, _) = CheckpointStore::open_with(dir.path(), std_options()).unwrap();
    let parts = recovered.unwrap().load_state("join").unwrap();
    let right = parts.iter().find(|p| p.name == "right").unwrap();
    assert_eq!(right.batches, vec![keyed_strings()]);
}

fn keyed_strings() -> datafusion::arrow::record_batch::RecordBatch {
    use datafusion::arrow::array::{BinaryArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let keys: BinaryArray = vec![Some(b"r".as_slice())].into_iter().collect();
    datafusion::arrow::record_batch::RecordBatch::try_new(
        schema,
        vec![
            Arc::new(keys),
            Arc::new(StringArray::from(vec![Some("right side")])),
        ],
    )
    .unwrap()
}

#[test]
fn retaining_zero_checkpoints_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = CheckpointStore::open_with(
        dir.path(),
        CheckpointOptions {
            retain: 0,
            ..std_options()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}
