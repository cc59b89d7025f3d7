//! The checkpoint manifest: which state files make up a checkpoint, and the source offsets,
//! sink transactions and engine facts recorded with it.
//!
//! On disk, `manifest-{epoch:020}`: the 8-byte magic `LMDBMAN\0`, then one frame (see
//! [`crate::frame`]) holding the manifest as JSON, and nothing after it. It is written
//! atomically (temp file, fdatasync, rename, directory fsync), so a manifest that exists is
//! whole unless the disk damaged it, which the checksum detects.
//!
//! Invariants [`parse_manifest`] checks beyond the bytes: the format version is this one,
//! every chain starts with a full snapshot followed only by deltas, and every file it
//! references is a plain name inside the checkpoint directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::frame::{encode_frame, read_frame_at, FrameEvent, FRAME_HEADER_BYTES};
use crate::io::IoBackend;

/// The first bytes of every manifest.
pub const MANIFEST_MAGIC: &[u8; 8] = b"LMDBMAN\0";
/// The manifest format this version writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// File name prefix of a manifest; the epoch follows, zero-padded to 20 digits.
pub const MANIFEST_PREFIX: &str = "manifest-";
/// The longest file name a manifest may reference.
const FILE_NAME_BYTES_MAX: usize = 255;

/// A committed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format of this manifest and the files it references.
    pub format_version: u32,
    /// The checkpoint's epoch (the barrier it was taken at).
    pub epoch: u64,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Worker threads of the engine that wrote it (state is partitioned by worker).
    pub workers: usize,
    /// Per state id, the files to restore it from: a full snapshot, then deltas, oldest first.
    pub states: BTreeMap<String, Vec<StateFileRef>>,
    /// Per source, the position to resume reading from (the source's own encoding).
    pub sources: BTreeMap<String, serde_json::Value>,
    /// Per sink, the transaction pre-committed at this epoch (the sink's own encoding).
    pub sinks: BTreeMap<String, serde_json::Value>,
    /// Facts of the engine (e.g. the write-ahead log position the checkpoint covers).
    pub engine: serde_json::Value,
}

/// One state file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFileRef {
    /// The file's name in the checkpoint directory.
    pub file: String,
    /// Whether it holds a whole state or changes.
    pub kind: StateFileKind,
    /// Its size.
    pub bytes: u64,
    /// CRC32C of its whole content.
    pub crc32c: u32,
}

/// Whether a state file holds a whole state or the changes since the previous file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateFileKind {
    /// A whole state: starts a chain.
    Full,
    /// Changes since the previous file of the chain.
    Delta,
}

/// `manifest-{epoch:020}`: zero-padded so names sort by epoch.
pub fn manifest_file_name(epoch: u64) -> String {
    format!("{MANIFEST_PREFIX}{epoch:020}")
}

/// The epoch a manifest file name stands for, if it is one.
pub fn parse_manifest_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(MANIFEST_PREFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The bytes of `manifest` on disk (`path` names it in errors).
pub fn encode_manifest(path: &Path, manifest: &Manifest) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(manifest)
        .map_err(|e| StorageError::format(path, format!("cannot encode the manifest: {e}")))?;
    let mut out = MANIFEST_MAGIC.to_vec();
    encode_frame(&mut out, &[&json])
        .map_err(|e| StorageError::format(path, format!("manifest: {e}")))?;
    Ok(out)
}

/// Writes `manifest` atomically as `dir/manifest-{epoch:020}` and returns the path.
pub fn write_manifest(backend: &dyn IoBackend, dir: &Path, manifest: &Manifest) -> Result<PathBuf> {
    let path = dir.join(manifest_file_name(manifest.epoch));
    let bytes = encode_manifest(&path, manifest)?;
    backend.write_file_atomic(&path, &bytes)?;
    Ok(path)
}

/// Reads and checks the manifest `path`.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).map_err(|e| StorageError::io(path, e))?;
    parse_manifest(path, &bytes)
}

/// Parses and checks the bytes of manifest `path` (named in errors). Never panics on any
/// bytes.
pub fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Manifest> {
    if bytes.get(..MANIFEST_MAGIC.len()) != Some(MANIFEST_MAGIC.as_slice()) {
        return Err(StorageError::corrupt(
            path,
            0,
            "not a checkpoint manifest (bad magic)",
        ));
    }
    let json = match read_frame_at(bytes, MANIFEST_MAGIC.len()) {
        FrameEvent::Frame { payload, .. } => payload,
        FrameEvent::End => {
            return Err(StorageError::corrupt(
                path,
                8,
                "truncated: no manifest after the magic",
            ))
        }
        FrameEvent::Torn { offset, reason } => {
            return Err(StorageError::corrupt(
                path,
                offset,
                format!("truncated: {reason}"),
            ))
        }
        FrameEvent::Corrupt { offset, reason } => {
            return Err(StorageError::corrupt(path, offset, reason))
        }
    };
    let end = MANIFEST_MAGIC.len() + FRAME_HEADER_BYTES + json.len();
    if end != bytes.len() {
        return Err(StorageError::corrupt(
            path,
            end as u64,
            "bytes after the manifest",
        ));
    }
    let version: FormatVersion = serde_json::from_slice(json).map_err(|e| {
        StorageError::corrupt(path, 8, format!("the manifest is not valid JSON: {e}"))
    })?;
    if version.format_version != MANIFEST_FORMAT_VERSION {
        return Err(StorageError::format(
            path,
            format!(
                "manifest format version {} is not supported (this version reads {MANIFEST_FORMAT_VERSION})",
                version.format_version
            ),
        ));
    }
    let manifest: Manifest = serde_json::from_slice(json)
        .map_err(|e| StorageError::corrupt(path, 8, format!("the manifest is malformed: {e}")))?;
    validate(path, &manifest)?;
    Ok(manifest)
}

/// The one field read before the rest, so a newer manifest is refused as such rather than as
/// a parse error of fields it changed.
#[derive(Deserialize)]
struct FormatVersion {
    format_version: u32,
}

/// The rules a manifest's content must follow.
fn validate(path: &Path, manifest: &Manifest) -> Result<()> {
    for (id, chain) in &manifest.states {
        let broken =
            |reason: String| StorageError::corrupt(path, 8, format!("state '{id}': {reason}"));
        match chain.first() {
            None => return Err(broken("no files".into())),
            Some(first) if first.kind != StateFileKind::Full => {
                return Err(broken(
                    "the chain does not start with a full snapshot".into(),
                ));
            }
            Some(_) => {}
        }
        if chain.iter().skip(1).any(|f| f.kind != StateFileKind::Delta) {
            return Err(broken("a full snapshot in the middle of the chain".into()));
        }
        if let Some(bad) = chain.iter().find(|f| !is_plain_file_name(&f.file)) {
            return Err(broken(format!("'{}' is not a plain file name", bad.file)));
        }
    }
    Ok(())
}

/// A name that stays inside the directory it is joined to: `[A-Za-z0-9._-]`, not starting
/// with a dot.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= FILE_NAME_BYTES_MAX
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let full = StateFileRef {
            file: "state-1.full".into(),
            kind: StateFileKind::Full,
            bytes: 10,
            crc32c: 7,
        };
        let delta = StateFileRef {
            file: "state-2.delta".into(),
            kind: StateFileKind::Delta,
            bytes: 3,
            crc32c: 9,
        };
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            epoch: 2,
            created_unix_ms: 1_700_000_000_000,
            workers: 4,
            states: BTreeMap::from([("q1/agg".to_string(), vec![full, delta])]),
            sources: BTreeMap::from([("bids".to_string(), serde_json::json!({"offset": 42}))]),
            sinks: BTreeMap::new(),
            engine: serde_json::json!({"wal_lsn": 17}),
        }
    }

    fn bytes_with_json(json: &str) -> Vec<u8> {
        let mut bytes = MANIFEST_MAGIC.to_vec();
        encode_frame(&mut bytes, &[json.as_bytes()]).unwrap();
        bytes
    }

    #[test]
    fn a_manifest_round_trips() {
        let path = Path::new("m");
        let m = manifest();
        let bytes = encode_manifest(path, &m).unwrap();
        assert_eq!(parse_manifest(path, &bytes).unwrap(), m);
    }

    #[test]
    fn names_sort_by_epoch_and_parse_back() {
        assert_eq!(manifest_file_name(5), "manifest-00000000000000000005");
        assert_eq!(parse_manifest_file_name(&manifest_file_name(5)), Some(5));
        assert_eq!(parse_manifest_file_name("manifest-5"), None);
        assert_eq!(
            parse_manifest_file_name("manifest-00000000000000000005.tmp"),
            None
        );
    }

    #[test]
    fn a_newer_format_version_is_refused_as_such() {
        let err = parse_manifest(Path::new("m"), &bytes_with_json(r#"{"format_version": 2}"#))
            .unwrap_err();
        assert!(matches!(err, StorageError::Format { .. }), "{err}");
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn a_chain_must_start_full_and_name_plain_files() {
        let path = Path::new("m");
        let mut m = manifest();
        m.states.get_mut("q1/agg").unwrap().reverse();
        let err = parse_manifest(path, &encode_manifest(path, &m).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("does not start with a full"),
            "{err}"
        );
        let mut m = manifest();
        m.states.get_mut("q1/agg").unwrap()[0].file = "../../etc/passwd".into();
        let err = parse_manifest(path, &encode_manifest(path, &m).unwrap()).unwrap_err();
        assert!(err.to_string().contains("not a plain file name"), "{err}");
    }

    #[test]
    fn json_that_is_not_a_manifest_is_corrupt() {
        for json in ["{", "[]", r#"{"format_version": 1}"#, "\u{0}"] {
            let err = parse_manifest(Path::new("m"), &bytes_with_json(json)).unwrap_err();
            assert!(matches!(err, StorageError::Corrupt { .. }), "{json}: {err}");
        }
    }
}
