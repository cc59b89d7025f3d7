//! Files written by the first version of each format, committed under `tests/fixtures/v1`:
//! this version must still read them exactly. A change that breaks this test changes a
//! format on disk and needs a new format version.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{entries, kv};
use laminar_storage::checkpoint::{CheckpointOptions, CheckpointStore};
use laminar_storage::io::StdBackend;
use laminar_storage::wal::read_wal;
use serde_json::json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

#[test]
fn a_version_1_log_reads_back() {
    let read = read_wal(fixtures().join("wal"), 0).unwrap();
    let records: Vec<(u64, &[u8])> = read
        .records
        .iter()
        .map(|r| (r.lsn, r.payload.as_slice()))
        .collect();
    assert_eq!(
        records,
        vec![(1, b"first".as_slice()), (2, b""), (3, b"third")]
    );
    assert_eq!((read.next_lsn, read.torn_tail), (4, None));
}

#[test]
fn a_version_1_checkpoint_recovers() {
    // Opened from a copy: a store owns its directory.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("checkpoint")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let options = CheckpointOptions {
        backend: Arc::new(StdBackend),
        ..CheckpointOptions::default()
    };
    let (_, recovered, warnings) = CheckpointStore::open_with(copy.path(), options).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let recovered = recovered.unwrap();
    assert_eq!(recovered.manifest.epoch, 2);
    assert_eq!(recovered.manifest.sources["bids"], json!({"offset": 9}));
    assert_eq!(recovered.manifest.engine, json!({"wal_lsn": 3}));
    assert_eq!(recovered.manifest.states["q1/agg@0"].len(), 2);
    let parts = recovered.load_state("q1/agg@0").unwrap();
    assert_eq!(entries(&parts), kv(&[("x", 10)]));
}
