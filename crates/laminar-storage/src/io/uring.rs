//! The io_uring backend (Linux): writes and fdatasyncs are submitted to an io_uring ring owned
//! by the calling thread, and the thread waits for their completion. A ring per thread keeps
//! concurrent appenders and the group-commit syncer from queueing behind one lock.
//!
//! Opening, renaming and truncating files stay `std::fs` calls: they are rare and io_uring
//! gains nothing there.
//!
//! Safety: pushing a submission entry is `unsafe` because the kernel reads the buffer and
//! uses the file descriptor the entry names until the operation completes. Every write goes
//! through a staging buffer owned by the ring, and every operation is waited for before the
//! call returns. If waiting fails, the ring and its staging buffer are leaked (never freed),
//! so an operation the kernel may still run never touches freed memory.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::std_backend::create_truncated;
use super::{temp_path, DataFile, IoBackend, IoBackendKind};
use crate::error::{Result, StorageError};

/// Submission queue entries per ring: one operation is in flight at a time.
const RING_ENTRIES: u32 = 8;
/// Bytes copied into the staging buffer per write submission; larger writes are split.
const STAGING_BYTES: usize = 1 << 20;
/// How often an interrupted or busy `io_uring_enter` is retried before the ring is given up.
const ENTER_RETRIES_MAX: usize = 1_000;

/// Whether io_uring can run the operations this backend needs here: creating a ring fails
/// with ENOSYS or EPERM in many containers, and old kernels lack the write and fsync opcodes.
pub(super) fn probe() -> std::result::Result<(), String> {
    let ring =
        IoUring::new(RING_ENTRIES).map_err(|e| format!("cannot create an io_uring ring: {e}"))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("cannot probe io_uring opcodes: {e}"))?;
    for (code, name) in [
        (opcode::Write::CODE, "write"),
        (opcode::Fsync::CODE, "fsync"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("the kernel's io_uring lacks the {name} operation"));
        }
    }
    let mut staged = Ring {
        ring,
        staging: Vec::new(),
    };
    match staged.run(&opcode::Nop::new().build()) {
        Ok(_) => Ok(()),
        Err(RingError::Op(e) | RingError::Broken(e)) => {
            Err(format!("an io_uring no-op did not complete: {e}"))
        }
    }
}

/// Files written and synced through the calling thread's io_uring ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct UringBackend;

impl IoBackend for UringBackend {
    fn kind(&self) -> IoBackendKind {
        IoBackendKind::Uring
    }

    fn open_file(&self, path: &Path) -> Result<Arc<dyn DataFile>> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        Ok(Arc::new(UringFile {
            path: path.to_path_buf(),
            file,
        }))
    }

    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let temp = temp_path(path);
        let file = create_truncated(&temp)?;
        write_all_at(&file, 0, bytes).map_err(|e| StorageError::io(&temp, e))?;
        fdatasync(&file).map_err(|e| StorageError::io(&temp, e))?;
        drop(file);
        std::fs::rename(&temp, path).map_err(|e| StorageError::io(path, e))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        let handle = File::open(dir).map_err(|e| StorageError::io(dir, e))?;
        fsync(&handle).map_err(|e| StorageError::io(dir, e))
    }
}

/// A file written and synced through io_uring.
#[derive(Debug)]
struct UringFile {
    path: PathBuf,
    file: File,
}

impl DataFile for UringFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_all_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        write_all_at(&self.file, offset, bytes).map_err(|e| StorageError::io(&self.path, e))
    }

    fn sync_data(&self) -> Result<()> {
        fdatasync(&self.file).map_err(|e| StorageError::io(&self.path, e))
    }

    fn truncate(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| StorageError::io(&self.path, e))?;
        fsync(&self.file).map_err(|e| StorageError::io(&self.path, e))
    }
}

/// Why an operation on a ring failed.
enum RingError {
    /// The operation completed with this error; the ring is fine.
    Op(io::Error),
    /// The ring could not submit or complete the operation: its state is unknown.
    Broken(io::Error),
}

/// A ring and the buffer its write submissions point into.
struct Ring {
    ring: IoUring,
    staging: Vec<u8>,
}

impl Ring {
    fn new() -> io::Result<Self> {
        Ok(Self {
            ring: IoUring::new(RING_ENTRIES)?,
            staging: Vec::with_capacity(STAGING_BYTES),
        })
    }

    /// Submits `entry` and waits for its completion; its result (bytes written for a
    /// write, 0 for a sync).
    fn run(&mut self, entry: &squeue::Entry) -> std::result::Result<u32, RingError> {
        // SAFETY: `entry` names either no buffer or `self.staging`, and a file descriptor
        // borrowed by the caller for the whole call. Below we wait for the completion
        // before returning; if waiting fails, `with_ring` leaks this ring with its staging
        // buffer, so the kernel never reads freed memory.
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| RingError::Broken(io::Error::other("io_uring submission queue full")))?;
        let mut retries = 0;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e)
                    if retries < ENTER_RETRIES_MAX
                        && matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                        ) =>
                {
                    retries += 1;
                    continue;
                }
                Err(e) => return Err(RingError::Broken(e)),
            }
            if let Some(completion) = self.ring.completion().next() {
                let result = completion.result();
                return u32::try_from(result)
                    .map_err(|_| RingError::Op(io::Error::from_raw_os_error(-result)));
            }
            if retries >= ENTER_RETRIES_MAX {
                return Err(RingError::Broken(io::Error::other(
                    "io_uring returned without a completion",
                )));
            }
            retries += 1;
        }
    }

    /// Writes all of `bytes` to `file` at `offset`, through the staging buffer.
    fn write_all_at(
        &mut self,
        file: &File,
        mut offset: u64,
        mut bytes: &[u8],
    ) -> std::result::Result<(), RingError> {
        while !bytes.is_empty() {
            let chunk = &bytes[..bytes.len().min(STAGING_BYTES)];
            self.staging.clear();
            // Within the capacity reserved in `new`: the buffer never moves.
            self.staging.extend_from_slice(chunk);
            let entry = opcode::Write::new(
                types::Fd(file.as_raw_fd()),
                self.staging.as_ptr(),
                chunk.len() as u32,
            )
            .offset(offset)
            .build();
            let written = self.run(&entry)? as usize;
            if written == 0 {
                return Err(RingError::Op(io::ErrorKind::WriteZero.into()));
            }
            bytes = &bytes[written.min(bytes.len())..];
            offset += written as u64;
        }
        Ok(())
    }
}

thread_local! {
    /// The calling thread's ring, created at its first operation.
    static RING: RefCell<Option<Ring>> = const { RefCell::new(None) };
}

/// Runs `op` on the calling thread's ring. A ring whose state is unknown after a failure is
/// leaked (see the module doc) and replaced at the next call.
fn with_ring<T>(op: impl FnOnce(&mut Ring) -> std::result::Result<T, RingError>) -> io::Result<T> {
    RING.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| io::Error::other("io_uring ring used re-entrantly (a bug)"))?;
        let ring = match &mut *slot {
            Some(ring) => ring,
            empty => empty.insert(Ring::new()?),
        };
        match op(ring) {
            Ok(value) => Ok(value),
            Err(RingError::Op(e)) => Err(e),
            Err(RingError::Broken(e)) => {
                std::mem::forget(slot.take());
                Err(e)
            }
        }
    })
}

fn write_all_at(file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    with_ring(|ring| ring.write_all_at(file, offset, bytes))
}

fn fdatasync(file: &File) -> io::Result<()> {
    let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
        .flags(types::FsyncFlags::DATASYNC)
        .build();
    with_ring(|ring| ring.run(&entry).map(drop))
}

fn fsync(file: &File) -> io::Result<()> {
    let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd())).build();
    with_ring(|ring| ring.run(&entry).map(drop))
}
