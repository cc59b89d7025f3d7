//! The I/O layer under the write-ahead log and checkpoint writes: append bytes to a file,
//! fdatasync it, and write a whole file atomically (temp file, fsync, rename, directory
//! fsync). Two backends implement it: `std` (plain `std::fs` system calls) and, on Linux,
//! `io_uring`. [`detect`] picks one at first use; a caller can also pass any [`IoBackend`]
//! (tests wrap one to inject failures).
//!
//! Everything above this layer (reading files, listing and deleting them) uses `std::fs`
//! directly: it happens at recovery or cleanup, off the write path.

mod detect;
mod std_backend;
#[cfg(target_os = "linux")]
mod uring;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use detect::{
    active_name, backend, default_backend, detect, detection, Detection, BACKEND_ENV,
};
pub use std_backend::StdBackend;

use crate::error::{Result, StorageError};

/// Which implementation performs writes and syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoBackendKind {
    /// `std::fs`: `pwrite`, `fdatasync`, `fsync` system calls.
    Std,
    /// Linux io_uring: writes and syncs submitted to a ring per thread.
    Uring,
}

impl IoBackendKind {
    /// The name used in options, the environment variable and reports: `std` or `uring`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Std => "std",
            Self::Uring => "uring",
        }
    }
}

impl fmt::Display for IoBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for IoBackendKind {
    type Err = StorageError;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "std" => Ok(Self::Std),
            "uring" | "io_uring" | "io-uring" => Ok(Self::Uring),
            _ => Err(StorageError::InvalidOption {
                option: "I/O backend",
                value: text.to_string(),
                reason: "expected one of: std, uring".into(),
            }),
        }
    }
}

/// A shared handle on an I/O backend.
pub type Backend = Arc<dyn IoBackend>;

/// Writes and syncs files.
pub trait IoBackend: Send + Sync + fmt::Debug {
    /// Which implementation this is (a wrapper reports the one it wraps).
    fn kind(&self) -> IoBackendKind;

    /// Opens the existing file `path` for writing at offsets the caller tracks.
    fn open_file(&self, path: &Path) -> Result<Arc<dyn DataFile>>;

    /// Writes `bytes` as the whole content of `path`: to a temporary file beside it,
    /// fdatasync'ed, then renamed over `path`. The rename is durable only once the directory
    /// is synced ([`IoBackend::sync_dir`]), which lets a caller write several files and sync
    /// their directory once.
    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> Result<()>;

    /// fsyncs the directory `dir`, making file creations, renames and deletions in it durable.
    fn sync_dir(&self, dir: &Path) -> Result<()>;

    /// [`IoBackend::write_file_synced`] then [`IoBackend::sync_dir`] of its directory: after
    /// this returns, `path` holds `bytes` across a crash or power loss, and a crash before
    /// leaves either the old content or none, never a mix.
    fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.write_file_synced(path, bytes)?;
        self.sync_dir(parent_dir(path))
    }
}

/// An open file written at explicit offsets.
pub trait DataFile: Send + Sync + fmt::Debug {
    /// The file's path, for errors.
    fn path(&self) -> &Path;

    /// Writes all of `bytes` at `offset`. Several threads may call this and
    /// [`DataFile::sync_data`] at once, on disjoint ranges.
    fn write_all_at(&self, offset: u64, bytes: &[u8]) -> Result<()>;

    /// fdatasync: every write that returned before this call is durable once it returns.
    fn sync_data(&self) -> Result<()>;

    /// Cuts the file to `len` bytes and syncs it.
    fn truncate(&self, len: u64) -> Result<()>;
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// The temporary file `path` is written to before being renamed over it.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TEMP_SUFFIX);
    path.with_file_name(name)
}

/// Suffix of a file being written atomically; one left behind by a crash is garbage.
pub const TEMP_SUFFIX: &str = ".tmp";
