//! The `std` backend: positional writes (`pwrite`), `fdatasync` and `fsync` through
//! `std::fs`. Works on every Unix; the reference the io_uring backend is measured against.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{temp_path, DataFile, IoBackend, IoBackendKind};
use crate::error::{Result, StorageError};

/// Plain system calls through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdBackend;

impl IoBackend for StdBackend {
    fn kind(&self) -> IoBackendKind {
        IoBackendKind::Std
    }

    fn open_file(&self, path: &Path) -> Result<Arc<dyn DataFile>> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        Ok(Arc::new(StdFile {
            path: path.to_path_buf(),
            file,
        }))
    }

    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let temp = temp_path(path);
        let mut file = create_truncated(&temp)?;
        file.write_all(bytes)
            .map_err(|e| StorageError::io(&temp, e))?;
        file.sync_data().map_err(|e| StorageError::io(&temp, e))?;
        drop(file);
        std::fs::rename(&temp, path).map_err(|e| StorageError::io(path, e))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io(dir, e))
    }
}

/// Creates `path`, or empties it if it exists.
pub(super) fn create_truncated(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))
}

/// A file written with `pwrite` and synced with `fdatasync`.
#[derive(Debug)]
struct StdFile {
    path: PathBuf,
    file: File,
}

impl DataFile for StdFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_all_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| StorageError::io(&self.path, e))
    }

    fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(&self.path, e))
    }

    fn truncate(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| StorageError::io(&self.path, e))
    }
}
