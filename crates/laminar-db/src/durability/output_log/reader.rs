//! Reading one epoch file of an output log, record by record, up to a length the reader is
//! told: the file may still be written behind that length (the open epoch), and it may be
//! renamed or deleted meanwhile (an open file stays readable), so a subscription reads the
//! file it opened and never looks it up by name again.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use laminar_core::ChangeBatch;
use laminar_storage::frame::{
    read_frame_at, FrameEvent, FRAME_HEADER_BYTES, MAX_FRAME_PAYLOAD_BYTES,
};

use super::record::{decode, Record};

/// An open epoch file and how far it has been read.
#[derive(Debug)]
pub(crate) struct EpochFile {
    epoch: u64,
    path: PathBuf,
    file: File,
    /// Bytes read so far; the file's own read position.
    read_bytes: u64,
    /// Change records read so far.
    changes_read: u64,
    /// The end record was read: the epoch is whole.
    complete: bool,
}

impl EpochFile {
    /// Opens epoch `epoch`'s file at `path`.
    pub(crate) fn open(epoch: u64, path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            epoch,
            path: path.to_path_buf(),
            file: File::open(path)?,
            read_bytes: 0,
            changes_read: 0,
            complete: false,
        })
    }

    /// The epoch the file holds.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The file's path when it was opened.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes read so far.
    pub(crate) fn read_bytes(&self) -> u64 {
        self.read_bytes
    }

    /// True once a change record was read (not only the header).
    pub(crate) fn has_changes(&self) -> bool {
        self.changes_read > 0
    }

    /// True once the end record, written when the epoch was pre-committed, was read.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// The file's length now: for a file no longer written, its final length.
    pub(crate) fn len(&self) -> Result<u64, String> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// The next change batch among the file's first `limit` bytes, which hold whole records
    /// only; `None` once they are read. The header is checked, not returned.
    pub(crate) fn next_changes(&mut self, limit: u64) -> Result<Option<ChangeBatch>, String> {
        while self.read_bytes < limit {
            let first = self.read_bytes == 0;
            if self.complete {
                return Err(self.damage(self.read_bytes, "a record after the end record"));
            }
            let record = self.read_record(limit)?;
            match record {
                Record::Header { epoch } if first && epoch == self.epoch => {}
                Record::Header { epoch } if first => {
                    return Err(self.damage(0, &format!("its header names epoch {epoch}")));
                }
                Record::Header { .. } => return Err(self.damage(0, "a second header")),
                Record::Changes(_) if first => return Err(self.damage(0, "no header")),
                Record::Changes(changes) => {
                    self.changes_read += 1;
                    return Ok(Some(changes));
                }
                Record::End { changes } if first || changes != self.changes_read => {
                    return Err(self.damage(
                        0,
                        &format!(
                            "its end record counts {changes} change records, {} were read",
                            self.changes_read
                        ),
                    ));
                }
                Record::End { .. } => self.complete = true,
            }
        }
        Ok(None)
    }

    /// Reads the record at the read position, verifying its checksum.
    fn read_record(&mut self, limit: u64) -> Result<Record, String> {
        let at = self.read_bytes;
        let past_limit =
            |bytes: u64| format!("a record of {bytes} bytes runs past the {limit} bytes written");
        let mut frame = vec![0_u8; FRAME_HEADER_BYTES];
        if limit - at < FRAME_HEADER_BYTES as u64 {
            return Err(self.damage(at, &past_limit(FRAME_HEADER_BYTES as u64)));
        }
        self.file
            .read_exact(&mut frame)
            .map_err(|e| self.damage(at, &e.to_string()))?;
        let mut length = [0_u8; 4];
        length.copy_from_slice(&frame[..4]);
        let payload_bytes = u32::from_le_bytes(length) as usize;
        let frame_bytes = (FRAME_HEADER_BYTES + payload_bytes) as u64;
        if payload_bytes > MAX_FRAME_PAYLOAD_BYTES || frame_bytes > limit - at {
            return Err(self.damage(at, &past_limit(frame_bytes)));
        }
        frame.resize(FRAME_HEADER_BYTES + payload_bytes, 0);
        self.file
            .read_exact(&mut frame[FRAME_HEADER_BYTES..])
            .map_err(|e| self.damage(at, &e.to_string()))?;
        self.read_bytes += frame_bytes;
        match read_frame_at(&frame, 0) {
            FrameEvent::Frame { payload, .. } => decode(payload).map_err(|e| self.damage(at, &e)),
            FrameEvent::Corrupt { reason, .. } | FrameEvent::Torn { reason, .. } => {
                Err(self.damage(at, &reason))
            }
            FrameEvent::End => Err(self.damage(at, "an empty record")),
        }
    }

    fn damage(&self, at: u64, reason: &str) -> String {
        format!("{}, byte {at}: {reason}", self.path.display())
    }
}
