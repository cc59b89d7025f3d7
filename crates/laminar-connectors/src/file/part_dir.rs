//! The file-system side of a FILE sink writing a directory: creates temp files, syncs them
//! and the directory, renames parts into place and deletes what recovery discards, carrying
//! out the decisions of `parts`. Every change of a directory entry that the protocol relies
//! on (a synced temp file, a rename, a deletion) is followed by a sync of the directory.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::parts::{decide_commit, CommitHandle, PartAction, PartFile, PartNames};
use crate::error::{ConnectorError, Result};

/// The output directory of one sink.
#[derive(Debug, Clone)]
pub(crate) struct PartDir {
    dir: PathBuf,
    names: PartNames,
}

impl PartDir {
    pub(crate) fn new(dir: PathBuf, names: PartNames) -> Self {
        Self { dir, names }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Path of the temp file of `epoch`.
    pub(crate) fn temp_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(self.names.temp(epoch))
    }

    /// Path of the committed part of `epoch`.
    pub(crate) fn part_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(self.names.part(epoch))
    }

    /// Creates the directory (and its parents) if needed.
    pub(crate) fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| ConnectorError::io(&self.dir, e))
    }

    /// Syncs `file` (the finished temp file of `epoch`) and the directory holding its entry,
    /// and returns its length: the part survives a crash from now on.
    pub(crate) fn sync_temp(&self, epoch: u64, file: &File) -> Result<u64> {
        let path = self.temp_path(epoch);
        file.sync_all().map_err(|e| ConnectorError::io(&path, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| ConnectorError::io(&path, e))?
            .len();
        self.sync()?;
        Ok(bytes)
    }

    /// Commits every part of `handle` (given for `epoch`): renames each temp file into place
    /// unless it already is, then syncs the directory.
    pub(crate) fn commit(&self, epoch: u64, handle: &CommitHandle) -> Result<()> {
        for record in &handle.parts {
            let temp = self.temp_path(record.epoch);
            let part = self.part_path(record.epoch);
            let action =
                decide_commit(*record, file_len(&temp)?, file_len(&part)?).map_err(|reason| {
                    ConnectorError::CommitFailed {
                        path: self.dir.clone(),
                        epoch,
                        reason: format!("the part of epoch {}: {reason}", record.epoch),
                    }
                })?;
            if action == PartAction::Rename {
                fs::rename(&temp, &part).map_err(|e| ConnectorError::io(&temp, e))?;
            }
        }
        if !handle.parts.is_empty() {
            self.sync()?;
        }
        Ok(())
    }

    /// The protocol's files in the directory; none when it does not exist.
    pub(crate) fn list(&self) -> Result<Vec<PartFile>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ConnectorError::io(&self.dir, e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ConnectorError::io(&self.dir, e))?;
            if let Some(file) = entry.file_name().to_str().and_then(|n| self.names.parse(n)) {
                files.push(file);
            }
        }
        Ok(files)
    }

    /// Deletes `files` (missing ones are fine) and syncs the directory.
    pub(crate) fn delete(&self, files: &[PartFile]) -> Result<()> {
        for file in files {
            let path = match *file {
                PartFile::Part(epoch) => self.part_path(epoch),
                PartFile::Temp(epoch) => self.temp_path(epoch),
            };
            remove_if_present(&path)?;
        }
        if !files.is_empty() {
            self.sync()?;
        }
        Ok(())
    }

    /// Syncs the directory, so that its entries (created, renamed, removed) are durable.
    fn sync(&self) -> Result<()> {
        sync_dir(&self.dir)
    }
}

/// Removes `path`; a file that is already gone is fine.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(ConnectorError::io(path, e)),
        _ => Ok(()),
    }
}

/// The length of the file at `path`, `None` when there is none.
fn file_len(path: &Path) -> Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(Some(metadata.len())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConnectorError::io(path, e)),
    }
}

/// Makes the entries of directory `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ConnectorError::io(dir, e))
}

/// Directories cannot be opened for syncing on this platform; its file system orders
/// metadata updates itself (NTFS journals them).
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}
