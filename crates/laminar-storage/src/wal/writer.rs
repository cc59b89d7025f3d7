//! The write-ahead log writer: appends records to the active segment of one log directory,
//! rolls to a new segment when it is full, and makes records durable under the chosen
//! [`Durability`].
//!
//! Invariants: LSNs are assigned under one lock in write order, so the file order is the LSN
//! order; a record is acknowledged only once written (and, under `Sync`, synced); a segment is
//! synced before the next one is created, so only the last segment can hold unsynced bytes;
//! the first failed write or sync poisons the writer and nothing is accepted after it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::group_commit::{lock, GroupCommit};
use super::segment::{
    encode_record, encode_segment_header, list_segments, scan_segment, segment_file_name,
    SegmentListing, TornTail, MAX_RECORD_BYTES, SEGMENT_HEADER_BYTES,
};
use super::Durability;
use crate::error::{Result, StorageError};
use crate::io::{default_backend, Backend, DataFile};

/// Default size at which the writer rolls to a new segment.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Default longest time a `Group` append stays unsynced.
pub const GROUP_COMMIT_INTERVAL_DEFAULT: Duration = Duration::from_millis(5);
/// The smallest segment size accepted: a header and a few records.
const SEGMENT_BYTES_MIN: u64 = 4 << 10;
/// Capacity of the encoding buffer kept between appends; a larger record's buffer is freed.
const RETAINED_BUFFER_BYTES: usize = 1 << 20;

/// How a [`WalWriter`] writes.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Roll to a new segment when the next record would make the active one larger than this
    /// (a single larger record gets a segment of its own).
    pub segment_bytes: u64,
    /// Under [`Durability::Group`], how often the background flusher syncs.
    pub group_commit_interval: Duration,
    /// The I/O backend writes and syncs go through.
    pub backend: Backend,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            group_commit_interval: GROUP_COMMIT_INTERVAL_DEFAULT,
            backend: default_backend(),
        }
    }
}

/// What [`WalWriter::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOpenReport {
    /// Segments in the log after opening.
    pub segments: usize,
    /// The LSN the next append gets.
    pub next_lsn: u64,
    /// The torn end of the last segment, cut off (it was never acknowledged).
    pub torn_tail: Option<TornTail>,
    /// Temporary files of a segment creation a crash interrupted, deleted.
    pub removed_temp_files: Vec<PathBuf>,
}

/// Appends records to one log directory. Send + Sync: appenders on many threads share it.
#[derive(Debug)]
pub struct WalWriter {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    backend: Backend,
    log: Mutex<Log>,
    commit: GroupCommit,
    /// Set to stop the flusher; its condition variable wakes it early.
    stop: (Mutex<bool>, Condvar),
}

/// The log's write position, changed under one lock.
#[derive(Debug)]
struct Log {
    /// Every segment, by first LSN; the last one is active.
    segments: Vec<(u64, PathBuf)>,
    active: Arc<dyn DataFile>,
    /// Where the next record goes in the active segment.
    offset: u64,
    next_lsn: u64,
    buffer: Vec<u8>,
}

impl Log {
    fn active_first_lsn(&self) -> u64 {
        self.segments
            .last()
            .map_or(self.next_lsn, |(first, _)| *first)
    }
}

impl WalWriter {
    /// Opens (creating if needed) the log in `dir`: cuts a torn tail off its last segment,
    /// deletes leftover temporary files and continues the LSN sequence (1 for a new log).
    /// Refuses [`Durability::None`]: with it the engine writes no log.
    pub fn open(
        dir: impl AsRef<Path>,
        durability: Durability,
        options: WalOptions,
    ) -> Result<(Self, WalOpenReport)> {
        let dir = dir.as_ref().to_path_buf();
        validate(durability, &options)?;
        let (log, report) = open_log(&dir, &options.backend)?;
        let shared = Arc::new(Shared {
            dir,
            durability,
            segment_bytes: options.segment_bytes,
            backend: options.backend,
            commit: GroupCommit::new(log.next_lsn - 1),
            log: Mutex::new(log),
            stop: (Mutex::new(false), Condvar::new()),
        });
        let flusher = match durability {
            Durability::Group => Some(spawn_flusher(&shared, options.group_commit_interval)?),
            Durability::Sync | Durability::None => None,
        };
        Ok((Self { shared, flusher }, report))
    }

    /// Appends `payload` as the next record and returns its LSN once it is durable under
    /// the writer's [`Durability`]. After a failed write or sync, this and every later
    /// append returns [`StorageError::Poisoned`].
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        let lsn = self.shared.write(payload)?;
        if self.shared.durability == Durability::Sync {
            self.shared.wait_durable(lsn)?;
        }
        Ok(lsn)
    }

    /// Syncs every record written so far and returns the durable LSN: call it before a
    /// checkpoint that covers records appended under `Group` is committed.
    pub fn sync(&self) -> Result<u64> {
        let last = self.last_lsn();
        self.shared.wait_durable(last)?;
        Ok(self.durable_lsn())
    }

    /// The LSN of the last record written (0 if none ever was).
    pub fn last_lsn(&self) -> u64 {
        lock(&self.shared.log).next_lsn - 1
    }

    /// The highest LSN known to be on disk.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.commit.durable_lsn()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Deletes the segments whose records all have LSNs <= `lsn` (a checkpoint covers them)
    /// and returns how many. If the active segment is covered too, the writer first rolls to
    /// a new, empty one, which keeps the LSN sequence on disk.
    pub fn truncate_through(&self, lsn: u64) -> Result<usize> {
        self.shared.truncate_through(lsn)
    }

    /// Stops the flusher and syncs what was written, reporting a failure that dropping the
    /// writer could only ignore.
    pub fn close(mut self) -> Result<()> {
        self.stop_flusher();
        self.sync().map(drop)
    }

    fn stop_flusher(&mut self) {
        let Some(flusher) = self.flusher.take() else {
            return;
        };
        *lock(&self.shared.stop.0) = true;
        self.shared.stop.1.notify_all();
        // A panicked flusher has nothing left to report: its failures poison the log.
        let _ = flusher.join();
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        self.stop_flusher();
        // Best effort: a failure here poisons a writer nobody uses any more; `close` reports
        // it to a caller that wants to know.
        let _ = self.sync();
    }
}

fn validate(durability: Durability, options: &WalOptions) -> Result<()> {
    if durability == Durability::None {
        return Err(StorageError::InvalidOption {
            option: "durability",
            value: durability.to_string(),
            reason: "a write-ahead log is written only with sync or group durability; with none the engine writes no log".into(),
        });
    }
    if options.segment_bytes < SEGMENT_BYTES_MIN {
        return Err(StorageError::InvalidOption {
            option: "segment size",
            value: options.segment_bytes.to_string(),
            reason: format!("must be at least {SEGMENT_BYTES_MIN} bytes"),
        });
    }
    if options.group_commit_interval.is_zero() {
        return Err(StorageError::InvalidOption {
            option: "group commit interval",
            value: "0".into(),
            reason: "must be longer than zero (use sync durability to sync every append)".into(),
        });
    }
    Ok(())
}

/// Scans the log in `dir` and positions a writer after its last valid record.
fn open_log(dir: &Path, backend: &Backend) -> Result<(Log, WalOpenReport)> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    if created {
        backend.sync_dir(crate::io::parent_dir(dir))?;
    }
    let SegmentListing {
        mut segments,
        temps,
    } = list_segments(dir)?;
    for temp in &temps {
        std::fs::remove_file(temp).map_err(|e| StorageError::io(temp, e))?;
    }
    let mut torn_tail = None;
    let (active, offset, next_lsn) = if let Some((first_lsn, path)) = segments.last() {
        let bytes = std::fs::read(path).map_err(|e| StorageError::io(path, e))?;
        let scan = scan_segment(path, &bytes, true, |_, _| {})?;
        if scan.first_lsn != *first_lsn {
            return Err(StorageError::corrupt(
                path,
                0,
                format!("the header says the first LSN is {}", scan.first_lsn),
            ));
        }
        let file = backend.open_file(path)?;
        if scan.torn_tail.is_some() {
            file.truncate(scan.end_offset)?;
        } else {
            // What an earlier process wrote may still sit in the page cache.
            file.sync_data()?;
        }
        torn_tail = scan.torn_tail;
        (file, scan.end_offset, scan.next_lsn)
    } else {
        let path = dir.join(segment_file_name(1));
        backend.write_file_atomic(&path, &encode_segment_header(1))?;
        segments.push((1, path.clone()));
        (backend.open_file(&path)?, SEGMENT_HEADER_BYTES, 1)
    };
    if !temps.is_empty() {
        backend.sync_dir(dir)?;
    }
    let report = WalOpenReport {
        segments: segments.len(),
        next_lsn,
        torn_tail,
        removed_temp_files: temps,
    };
    let log = Log {
        segments,
        active,
        offset,
        next_lsn,
        buffer: Vec::new(),
    };
    Ok((log, report))
}

fn spawn_flusher(shared: &Arc<Shared>, interval: Duration) -> Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    let dir = shared.dir.clone();
    std::thread::Builder::new()
        .name("laminar-wal-flush".into())
        .spawn(move || shared.flush_until_stopped(interval))
        .map_err(|e| StorageError::io(dir, e))
}

impl Shared {
    /// Writes `payload` as the next record and returns its LSN (not yet synced).
    fn write(&self, payload: &[u8]) -> Result<u64> {
        let mut log = lock(&self.log);
        self.commit.check()?;
        if payload.len() > MAX_RECORD_BYTES {
            return Err(StorageError::format(
                log.active.path(),
                format!(
                    "a record of {} bytes exceeds the maximum of {MAX_RECORD_BYTES} bytes",
                    payload.len()
                ),
            ));
        }
        let lsn = log.next_lsn;
        let mut buffer = std::mem::take(&mut log.buffer);
        buffer.clear();
        // The size was checked above, so the record frames.
        let _ = encode_record(&mut buffer, lsn, payload);
        let record_bytes = buffer.len() as u64;
        if log.offset > SEGMENT_HEADER_BYTES && log.offset + record_bytes > self.segment_bytes {
            self.roll(&mut log)?;
        }
        if let Err(e) = log.active.write_all_at(log.offset, &buffer) {
            return Err(self.commit.poison(log.active.path(), &e));
        }
        log.offset += record_bytes;
        log.next_lsn += 1;
        if buffer.capacity() <= RETAINED_BUFFER_BYTES {
            log.buffer = buffer;
        }
        Ok(lsn)
    }

    /// Syncs the active segment and creates the next one, starting at the next LSN.
    fn roll(&self, log: &mut Log) -> Result<()> {
        let poison = |e: &StorageError| self.commit.poison(&self.dir, e);
        log.active.sync_data().map_err(|e| poison(&e))?;
        self.commit.mark_durable(log.next_lsn - 1);
        let first_lsn = log.next_lsn;
        let path = self.dir.join(segment_file_name(first_lsn));
        self.backend
            .write_file_atomic(&path, &encode_segment_header(first_lsn))
            .map_err(|e| poison(&e))?;
        log.active = self.backend.open_file(&path).map_err(|e| poison(&e))?;
        log.offset = SEGMENT_HEADER_BYTES;
        log.segments.push((first_lsn, path));
        Ok(())
    }

    /// Waits until `lsn` is durable, leading a sync if none runs.
    fn wait_durable(&self, lsn: u64) -> Result<()> {
        self.commit.wait_durable(lsn, &self.dir, || {
            // The active segment holds every record not yet durable: a roll syncs the
            // segment it closes.
            let (file, through) = {
                let log = lock(&self.log);
                (Arc::clone(&log.active), log.next_lsn - 1)
            };
            file.sync_data()?;
            Ok(through)
        })
    }

    fn truncate_through(&self, lsn: u64) -> Result<usize> {
        let mut log = lock(&self.log);
        self.commit.check()?;
        let has_records = log.next_lsn > log.active_first_lsn();
        if has_records && log.next_lsn - 1 <= lsn {
            self.roll(&mut log)?;
        }
        let mut removed = 0;
        while let [(_, oldest), (next_first, _), ..] = log.segments.as_slice() {
            if next_first - 1 > lsn {
                break;
            }
            std::fs::remove_file(oldest).map_err(|e| StorageError::io(oldest, e))?;
            log.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            self.backend.sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// The `Group` flusher: syncs what was written every `interval` until stopped.
    fn flush_until_stopped(&self, interval: Duration) {
        let (stop, wake) = &self.stop;
        let mut stopped = lock(stop);
        while !*stopped {
            stopped = wake
                .wait_timeout(stopped, interval)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
            if *stopped {
                break;
            }
            drop(stopped);
            let written = lock(&self.log).next_lsn - 1;
            if self.commit.durable_lsn() < written && self.wait_durable(written).is_err() {
                // Poisoned: appenders get the error; nothing more to flush.
                return;
            }
            stopped = lock(stop);
        }
    }
}
