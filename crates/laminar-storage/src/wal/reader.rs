//! Reading a write-ahead log back at recovery: every record after a given LSN, in order,
//! one segment in memory at a time.
//!
//! Invariants checked across segments: each segment starts at the LSN after the previous
//! one's last record, and the first segment read starts at or before the first LSN asked for
//! (a gap means records were lost). A torn tail of the last segment ends the log and is
//! reported; any other damage is [`StorageError::Corrupt`]. Never panics on any bytes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::segment::{list_segments, scan_segment, TornTail};
use crate::error::{Result, StorageError};

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Its sequence number.
    pub lsn: u64,
    /// What the appender wrote.
    pub payload: Vec<u8>,
}

/// Everything [`read_wal`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRead {
    /// The records after the LSN asked for, in LSN order.
    pub records: Vec<WalRecord>,
    /// The torn end of the last segment, not read (it was never acknowledged).
    pub torn_tail: Option<TornTail>,
    /// The LSN a writer opening this log gives its next record (1 for an empty log).
    pub next_lsn: u64,
}

/// Reads every record of the log in `dir` whose LSN is greater than `after_lsn`. A missing
/// directory is an empty log.
pub fn read_wal(dir: impl AsRef<Path>, after_lsn: u64) -> Result<WalRead> {
    let mut reader = WalReader::open(dir, after_lsn)?;
    let records = reader.by_ref().collect::<Result<Vec<_>>>()?;
    Ok(WalRead {
        records,
        torn_tail: reader.torn_tail,
        next_lsn: reader.next_lsn,
    })
}

/// Iterates over the records of a log after an LSN, loading one segment at a time. After it
/// returns `None`, [`WalReader::torn_tail`] and [`WalReader::next_lsn`] describe the log's
/// end; after an error it returns `None`.
#[derive(Debug)]
pub struct WalReader {
    segments: Vec<(u64, PathBuf)>,
    /// Index in `segments` of the next one to load.
    next_segment: usize,
    after_lsn: u64,
    /// The first LSN the next segment must start with, and the segment read before it.
    expected_first: Option<(u64, PathBuf)>,
    pending: VecDeque<WalRecord>,
    torn_tail: Option<TornTail>,
    next_lsn: u64,
    failed: bool,
}

impl WalReader {
    /// Lists the segments of the log in `dir` and skips those holding only records up to
    /// `after_lsn`.
    pub fn open(dir: impl AsRef<Path>, after_lsn: u64) -> Result<Self> {
        let segments = list_segments(dir.as_ref())?.segments;
        let wanted = after_lsn.saturating_add(1);
        // Segment i holds LSNs below the first LSN of segment i + 1.
        let start = segments
            .windows(2)
            .position(|pair| pair[1].0 > wanted)
            .unwrap_or(segments.len().saturating_sub(1));
        if let Some((first_lsn, path)) = segments.get(start) {
            if *first_lsn > wanted {
                return Err(StorageError::corrupt(
                    path,
                    0,
                    format!(
                        "records {wanted} to {} are missing: the log starts at LSN {first_lsn}",
                        first_lsn - 1
                    ),
                ));
            }
        }
        Ok(Self {
            segments,
            next_segment: start,
            after_lsn,
            expected_first: None,
            pending: VecDeque::new(),
            torn_tail: None,
            next_lsn: 1,
            failed: false,
        })
    }

    /// The torn end of the last segment, once reading reached it.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// The LSN after the log's last valid record, once reading reached the end.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Loads the next segment's wanted records into `pending`; false at the end of the log.
    fn load_next_segment(&mut self) -> Result<bool> {
        let Some((name_lsn, path)) = self.segments.get(self.next_segment) else {
            return Ok(false);
        };
        let is_last = self.next_segment + 1 == self.segments.len();
        self.next_segment += 1;
        let bytes = std::fs::read(path).map_err(|e| StorageError::io(path, e))?;
        let after_lsn = self.after_lsn;
        let pending = &mut self.pending;
        let scan = scan_segment(path, &bytes, is_last, |lsn, payload| {
            if lsn > after_lsn {
                pending.push_back(WalRecord {
                    lsn,
                    payload: payload.to_vec(),
                });
            }
        })?;
        if scan.first_lsn != *name_lsn {
            return Err(StorageError::corrupt(
                path,
                0,
                format!("the header says the first LSN is {}", scan.first_lsn),
            ));
        }
        if let Some((expected, previous)) = &self.expected_first {
            if scan.first_lsn != *expected {
                return Err(StorageError::corrupt(
                    path,
                    0,
                    format!(
                        "the segment starts at LSN {} but the previous one, {}, ends before LSN {expected}",
                        scan.first_lsn,
                        previous.display()
                    ),
                ));
            }
        }
        self.expected_first = Some((scan.next_lsn, path.clone()));
        self.next_lsn = scan.next_lsn;
        self.torn_tail = scan.torn_tail;
        Ok(true)
    }
}

impl Iterator for WalReader {
    type Item = Result<WalRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            if let Some(record) = self.pending.pop_front() {
                return Some(Ok(record));
            }
            match self.load_next_segment() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    self.pending.clear();
                    return Some(Err(e));
                }
            }
        }
        None
    }
}
