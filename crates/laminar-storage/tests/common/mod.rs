//! Helpers shared by the storage tests: a backend that fails on demand, a seeded random
//! source, and small operator states.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{Array, BinaryArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use laminar_core::state::{
    state_keys, OperatorState, RestoredPart, StateKind, StatePart, STATE_KEY_COLUMN,
};
use laminar_storage::io::{Backend, DataFile, IoBackend, IoBackendKind, StdBackend};
use laminar_storage::{Result, StorageError};

/// Switches that make a [`FailingBackend`] fail.
#[derive(Debug, Default)]
pub struct Faults {
    pub writes: AtomicBool,
    pub syncs: AtomicBool,
}

impl Faults {
    pub fn fail_writes(&self, on: bool) {
        self.writes.store(on, Ordering::SeqCst);
    }
    pub fn fail_syncs(&self, on: bool) {
        self.syncs.store(on, Ordering::SeqCst);
    }
}

/// Wraps a backend; fails writes or syncs while the matching switch is on.
#[derive(Debug)]
pub struct FailingBackend {
    inner: Backend,
    faults: Arc<Faults>,
}

pub fn failing_backend(inner: Backend) -> (Backend, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let backend = Arc::new(FailingBackend {
        inner,
        faults: Arc::clone(&faults),
    });
    (backend, faults)
}

fn injected(path: &Path, what: &str) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("injected {what} failure")),
    }
}

impl IoBackend for FailingBackend {
    fn kind(&self) -> IoBackendKind {
        self.inner.kind()
    }

    fn open_file(&self, path: &Path) -> Result<Arc<dyn DataFile>> {
        Ok(Arc::new(FailingFile {
            inner: self.inner.open_file(path)?,
            faults: Arc::clone(&self.faults),
        }))
    }

    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        if self.faults.writes.load(Ordering::SeqCst) {
            return Err(injected(path, "write"));
        }
        self.inner.write_file_synced(path, bytes)
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        if self.faults.syncs.load(Ordering::SeqCst) {
            return Err(injected(dir, "sync"));
        }
        self.inner.sync_dir(dir)
    }
}

#[derive(Debug)]
struct FailingFile {
    inner: Arc<dyn DataFile>,
    faults: Arc<Faults>,
}

impl DataFile for FailingFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn write_all_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        if self.faults.writes.load(Ordering::SeqCst) {
            // Half the bytes land, as in a real short write followed by an error.
            let _ = self.inner.write_all_at(offset, &bytes[..bytes.len() / 2]);
            return Err(injected(self.path(), "write"));
        }
        self.inner.write_all_at(offset, bytes)
    }

    fn sync_data(&self) -> Result<()> {
        if self.faults.syncs.load(Ordering::SeqCst) {
            return Err(injected(self.path(), "sync"));
        }
        self.inner.sync_data()
    }

    fn truncate(&self, len: u64) -> Result<()> {
        self.inner.truncate(len)
    }
}

/// Both backends where io_uring works here, else std alone.
pub fn backends() -> Vec<Backend> {
    let mut all: Vec<Backend> = vec![Arc::new(StdBackend)];
    if let Ok(uring) = laminar_storage::io::backend(IoBackendKind::Uring) {
        all.push(uring);
    }
    all
}

/// xorshift64*: a seeded source of test positions without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every offset of a file of `len` bytes if it is small, else `samples` seeded ones.
pub fn offsets(len: usize, samples: usize, seed: u64) -> Vec<usize> {
    if len <= 4 * samples {
        return (0..len).collect();
    }
    let mut rng = Rng::new(seed);
    (0..samples).map(|_| rng.below(len)).collect()
}

/// A state batch of `(key, value)` entries.
pub fn batch(entries: &[(&str, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new(STATE_KEY_COLUMN, DataType::Binary, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let keys: BinaryArray = entries.iter().map(|(k, _)| Some(k.as_bytes())).collect();
    let values: Int64Array = entries.iter().map(|(_, v)| *v).collect();
    RecordBatch::try_new(schema, vec![Arc::new(keys), Arc::new(values)]).unwrap()
}

pub fn full(entries: &[(&str, i64)]) -> OperatorState {
    OperatorState::full(vec![StatePart::new("groups", vec![batch(entries)])])
}

pub fn delta(upserts: &[(&str, i64)], deletes: &[&str]) -> OperatorState {
    OperatorState {
        kind: StateKind::Delta,
        parts: vec![StatePart {
            name: "groups".into(),
            upserts: vec![batch(upserts)],
            deletes: deletes.iter().map(|k| k.as_bytes().to_vec()).collect(),
        }],
    }
}

/// The `(key, value)` entries of restored parts, sorted.
pub fn entries(parts: &[RestoredPart]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for part in parts {
        for b in &part.batches {
            let keys = state_keys(b).unwrap();
            let values = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                out.push((
                    String::from_utf8(keys.value(i).to_vec()).unwrap(),
                    values.value(i),
                ));
            }
            assert_eq!(values.null_count(), 0);
        }
    }
    out.sort();
    out
}

/// `(key, value)` pairs from string literals.
pub fn kv(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect();
    out.sort();
    out
}
