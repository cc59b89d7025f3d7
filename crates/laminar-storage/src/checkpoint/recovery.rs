//! Finding the checkpoint to recover from, and reading its states back.
//!
//! A manifest is usable when it parses, names its own epoch, and every state file it
//! references exists with the recorded size and CRC32C. Recovery takes the newest usable one;
//! each newer unusable one is reported as a warning, never silently skipped.

use std::path::{Path, PathBuf};

use laminar_core::state::{merge_states, OperatorState, RestoredPart, StateKind};

use crate::error::{Result, StorageError};
use crate::manifest::{
    parse_manifest_file_name, read_manifest, Manifest, StateFileKind, StateFileRef,
};
use crate::snapshot::parse_state_file;

/// The checkpoint recovery starts from.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Its manifest.
    pub manifest: Manifest,
    root: PathBuf,
}

impl Recovered {
    pub(crate) fn new(manifest: Manifest, root: PathBuf) -> Self {
        Self { manifest, root }
    }

    /// The ids of the states it holds, in order.
    pub fn state_ids(&self) -> impl Iterator<Item = &str> {
        self.manifest.states.keys().map(String::as_str)
    }

    /// The restored state `id`: its full snapshot and deltas read and merged (the latest
    /// entry per key of every part).
    pub fn load_state(&self, id: &str) -> Result<Vec<RestoredPart>> {
        let chain = self
            .manifest
            .states
            .get(id)
            .ok_or_else(|| StorageError::UnknownState {
                epoch: self.manifest.epoch,
                id: id.to_string(),
            })?;
        let states = chain
            .iter()
            .map(|file| read_checked(&self.root, file))
            .collect::<Result<Vec<_>>>()?;
        merge_states(&states).map_err(|e| {
            let first = chain.first().map(|f| f.file.as_str()).unwrap_or_default();
            StorageError::format(
                self.root.join(first),
                format!("cannot merge the snapshots of state '{id}': {e}"),
            )
        })
    }
}

/// The state file `file` refers to, checked against the manifest's record of it.
fn read_checked(root: &Path, file: &StateFileRef) -> Result<OperatorState> {
    let path = root.join(&file.file);
    let bytes = std::fs::read(&path).map_err(|e| StorageError::io(&path, e))?;
    check_bytes(&path, &bytes, file)?;
    let state = parse_state_file(&path, &bytes)?;
    let kind = match state.kind {
        StateKind::Full => StateFileKind::Full,
        StateKind::Delta => StateFileKind::Delta,
    };
    if kind != file.kind {
        return Err(StorageError::corrupt(
            &path,
            0,
            format!(
                "the manifest records a {:?} snapshot but the file holds a {kind:?} one",
                file.kind
            ),
        ));
    }
    Ok(state)
}

/// Whether `bytes`, the content of `path`, are what the manifest recorded.
fn check_bytes(path: &Path, bytes: &[u8], file: &StateFileRef) -> Result<()> {
    if bytes.len() as u64 != file.bytes {
        return Err(StorageError::corrupt(
            path,
            0,
            format!(
                "the file has {} bytes but its checkpoint recorded {}",
                bytes.len(),
                file.bytes
            ),
        ));
    }
    if crc32c::crc32c(bytes) != file.crc32c {
        return Err(StorageError::corrupt(
            path,
            0,
            "the file's CRC32C differs from the one its checkpoint recorded",
        ));
    }
    Ok(())
}

/// The manifest files in `root`, newest epoch first.
pub(crate) fn list_manifests(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut manifests = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| StorageError::io(root, e))? {
        let entry = entry.map_err(|e| StorageError::io(root, e))?;
        if let Some(epoch) = entry
            .file_name()
            .to_str()
            .and_then(parse_manifest_file_name)
        {
            manifests.push((epoch, entry.path()));
        }
    }
    manifests.sort_unstable_by_key(|(epoch, _)| std::cmp::Reverse(*epoch));
    Ok(manifests)
}

/// The manifest `path` of `epoch`, if it is usable: it parses, names its epoch, and every
/// state file it references is whole.
pub(crate) fn usable_manifest(root: &Path, epoch: u64, path: &Path) -> Result<Manifest> {
    let manifest = read_manifest(path)?;
    if manifest.epoch != epoch {
        return Err(StorageError::corrupt(
            path,
            0,
            format!(
                "the manifest is named for epoch {epoch} but records epoch {}",
                manifest.epoch
            ),
        ));
    }
    for file in manifest.states.values().flatten() {
        let file_path = root.join(&file.file);
        let bytes = match std::fs::read(&file_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::corrupt(
                    path,
                    0,
                    format!("the state file {} it references is missing", file.file),
                ));
            }
            Err(e) => return Err(StorageError::io(file_path, e)),
        };
        check_bytes(&file_path, &bytes, file)?;
    }
    Ok(manifest)
}

/// What [`find_usable`] found.
pub(crate) struct Found {
    /// The newest usable manifest, if any.
    pub(crate) recovered: Option<Manifest>,
    /// Older manifests that parse, newest first, at most `older_max` (kept for fallback).
    pub(crate) older: Vec<Manifest>,
    /// One warning per newer unusable manifest.
    pub(crate) warnings: Vec<String>,
}

/// Walks the manifests in `root` from the newest until one is usable. Errors with
/// [`StorageError::NoValidCheckpoint`] if manifests exist but none is usable.
pub(crate) fn find_usable(root: &Path, older_max: usize) -> Result<Found> {
    let manifests = list_manifests(root)?;
    let mut warnings = Vec::new();
    let mut newest_failure: Option<(PathBuf, String)> = None;
    for (index, (epoch, path)) in manifests.iter().enumerate() {
        match usable_manifest(root, *epoch, path) {
            Ok(manifest) => {
                let older = manifests[index + 1..]
                    .iter()
                    .filter_map(|(_, p)| read_manifest(p).ok())
                    .take(older_max)
                    .collect();
                return Ok(Found {
                    recovered: Some(manifest),
                    older,
                    warnings,
                });
            }
            Err(e) => {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                warnings.push(format!(
                    "checkpoint {name} is unusable, recovering from an older one: {e}"
                ));
                newest_failure.get_or_insert_with(|| (path.clone(), e.to_string()));
            }
        }
    }
    match newest_failure {
        Some((path, reason)) => {
            let reason = if manifests.len() > 1 {
                format!(
                    "{reason} (and the {} older manifests are unusable too)",
                    manifests.len() - 1
                )
            } else {
                reason
            };
            Err(StorageError::NoValidCheckpoint { path, reason })
        }
        None => Ok(Found {
            recovered: None,
            older: Vec::new(),
            warnings,
        }),
    }
}
