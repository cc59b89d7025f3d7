//! One write-ahead log segment file: its name, header and records, and the scan that
//! validates it.
//!
//! Layout: the 8-byte magic `LMDBWAL\0`, a header frame (`u32 LE` format version, `u64 LE`
//! LSN of the segment's first record), then one frame per record whose payload is
//! `[u64 LE lsn][user payload]`. The file is named `{first_lsn:020}.wal`.
//!
//! Invariants the scan checks: the name, the header and the records agree on LSNs; records
//! carry consecutive LSNs; every frame's checksum matches. A segment is created atomically
//! (temp file, fsync, rename), so its header is never torn. Only the last segment may end in
//! a torn record, and only if no valid record follows the damage (see
//! [`crate::frame::find_frame_after`]): anything else is corruption.

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::frame::{encode_frame, find_frame_after, read_frame_at, FrameEvent, FrameTooLarge};
use crate::frame::{FRAME_HEADER_BYTES, MAX_FRAME_PAYLOAD_BYTES};

/// The first bytes of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"LMDBWAL\0";
/// The segment format this version writes and reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// File name extension of a segment.
pub const SEGMENT_EXTENSION: &str = "wal";
/// Bytes of a record's LSN, the start of its frame payload.
const LSN_BYTES: usize = 8;
/// Bytes of the header frame's payload: format version and first LSN.
const HEADER_PAYLOAD_BYTES: usize = 4 + 8;
/// Bytes before a segment's first record.
pub(crate) const SEGMENT_HEADER_BYTES: u64 =
    (SEGMENT_MAGIC.len() + FRAME_HEADER_BYTES + HEADER_PAYLOAD_BYTES) as u64;
/// The largest user payload of one record.
pub const MAX_RECORD_BYTES: usize = MAX_FRAME_PAYLOAD_BYTES - LSN_BYTES;
/// Bytes of the smallest record: a frame header and an LSN (a user payload may be empty).
const MIN_RECORD_BYTES: usize = FRAME_HEADER_BYTES + LSN_BYTES;

/// `{first_lsn:020}.wal`: zero-padded so names sort in LSN order.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.{SEGMENT_EXTENSION}")
}

/// The first LSN a segment file name stands for, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The bytes a new segment starts with.
pub(crate) fn encode_segment_header(first_lsn: u64) -> Vec<u8> {
    let mut out = SEGMENT_MAGIC.to_vec();
    let mut payload = [0_u8; HEADER_PAYLOAD_BYTES];
    payload[..4].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    payload[4..].copy_from_slice(&first_lsn.to_le_bytes());
    // A 12-byte payload always fits a frame.
    let _ = encode_frame(&mut out, &[&payload]);
    out
}

/// Appends the frame of record `lsn` holding `payload` to `out`.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    lsn: u64,
    payload: &[u8],
) -> std::result::Result<(), FrameTooLarge> {
    encode_frame(out, &[&lsn.to_le_bytes(), payload])
}

/// The end of a log's last segment that a crash cut short: never acknowledged, dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub path: PathBuf,
    /// Where the incomplete or damaged record starts: the segment's valid length.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub bytes_dropped: u64,
    /// What was wrong with the record at `offset`.
    pub reason: String,
}

/// What scanning a segment found, besides the records handed to the visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The LSN of the segment's first record (from its header).
    pub first_lsn: u64,
    /// The LSN the record after the segment's last valid one carries.
    pub next_lsn: u64,
    /// Where the valid part of the segment ends.
    pub end_offset: u64,
    /// A torn record at the end, only ever reported for the last segment.
    pub torn_tail: Option<TornTail>,
}

/// Scans the bytes of segment `path` (used only to name it in errors), calling `on_record`
/// with each record's LSN and user payload in order. `is_last` says whether it is the log's
/// last segment, the only one allowed a torn tail. Never panics on any bytes.
pub fn scan_segment<'a>(
    path: &Path,
    bytes: &'a [u8],
    is_last: bool,
    mut on_record: impl FnMut(u64, &'a [u8]),
) -> Result<SegmentScan> {
    let first_lsn = read_header(path, bytes)?;
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let mut next_lsn = first_lsn;
    loop {
        let damage = match read_frame_at(bytes, pos) {
            FrameEvent::Frame { payload, offset } => {
                let lsn = record_lsn(payload).ok_or_else(|| {
                    StorageError::corrupt(path, offset, "record shorter than its sequence number")
                })?;
                if lsn != next_lsn {
                    return Err(StorageError::corrupt(
                        path,
                        offset,
                        format!("expected the record with LSN {next_lsn}, found LSN {lsn}"),
                    ));
                }
                on_record(lsn, &payload[LSN_BYTES..]);
                next_lsn += 1;
                pos += FRAME_HEADER_BYTES + payload.len();
                continue;
            }
            FrameEvent::End => None,
            FrameEvent::Torn { reason, .. } | FrameEvent::Corrupt { reason, .. } => Some(reason),
        };
        let torn_tail = match damage {
            None => None,
            Some(reason) => Some(classify_damage(
                path, bytes, pos, next_lsn, is_last, reason,
            )?),
        };
        return Ok(SegmentScan {
            first_lsn,
            next_lsn,
            end_offset: pos as u64,
            torn_tail,
        });
    }
}

/// The first LSN the header of segment `path` records, checked.
fn read_header(path: &Path, bytes: &[u8]) -> Result<u64> {
    if bytes.get(..SEGMENT_MAGIC.len()) != Some(SEGMENT_MAGIC.as_slice()) {
        return Err(StorageError::corrupt(
            path,
            0,
            "not a write-ahead log segment (bad magic)",
        ));
    }
    let payload = match read_frame_at(bytes, SEGMENT_MAGIC.len()) {
        FrameEvent::Frame { payload, .. } => payload,
        FrameEvent::End => {
            return Err(StorageError::corrupt(path, 8, "segment header missing"));
        }
        FrameEvent::Torn { offset, reason } | FrameEvent::Corrupt { offset, reason } => {
            return Err(StorageError::corrupt(
                path,
                offset,
                format!("segment header: {reason}"),
            ));
        }
    };
    let (Ok(version), Ok(first_lsn)) = (
        <[u8; 4]>::try_from(payload.get(..4).unwrap_or_default()),
        <[u8; 8]>::try_from(payload.get(4..).unwrap_or_default()),
    ) else {
        return Err(StorageError::corrupt(
            path,
            8,
            "segment header has the wrong size",
        ));
    };
    let version = u32::from_le_bytes(version);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(StorageError::format(
            path,
            format!(
                "write-ahead log segment format version {version} is not supported (this version reads {SEGMENT_FORMAT_VERSION})"
            ),
        ));
    }
    let first_lsn = u64::from_le_bytes(first_lsn);
    if first_lsn == 0 {
        return Err(StorageError::corrupt(
            path,
            8,
            "segment header names LSN 0 (LSNs start at 1)",
        ));
    }
    Ok(first_lsn)
}

/// The LSN at the start of a record's frame payload.
fn record_lsn(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(
        payload.get(..LSN_BYTES)?.try_into().ok()?,
    ))
}

/// Damage at `pos` where the record with LSN `next_lsn` should start: a torn tail if this is
/// the last segment and no valid later record follows, else corruption.
fn classify_damage(
    path: &Path,
    bytes: &[u8],
    pos: usize,
    next_lsn: u64,
    is_last: bool,
    reason: String,
) -> Result<TornTail> {
    if !is_last {
        return Err(StorageError::corrupt(
            path,
            pos as u64,
            format!("{reason}, in a segment that is not the log's last"),
        ));
    }
    let remaining = bytes.len().saturating_sub(pos);
    let highest_possible = next_lsn.saturating_add((remaining / MIN_RECORD_BYTES) as u64);
    let later = find_frame_after(bytes, pos, |payload| {
        record_lsn(payload).is_some_and(|lsn| lsn > next_lsn && lsn <= highest_possible)
    });
    if let Some(valid) = later {
        return Err(StorageError::corrupt(
            path,
            pos as u64,
            format!("{reason}, but a valid record follows at byte {valid}"),
        ));
    }
    Ok(TornTail {
        path: path.to_path_buf(),
        offset: pos as u64,
        bytes_dropped: remaining as u64,
        reason,
    })
}

/// The files of a log directory.
#[derive(Debug, Default)]
pub(crate) struct SegmentListing {
    /// Segments by first LSN.
    pub(crate) segments: Vec<(u64, PathBuf)>,
    /// Temporary files a crash left while creating a segment.
    pub(crate) temps: Vec<PathBuf>,
}

/// The segments in `dir` and leftover temporary files. A missing directory holds none.
pub(crate) fn list_segments(dir: &Path) -> Result<SegmentListing> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SegmentListing::default()),
        Err(e) => return Err(StorageError::io(dir, e)),
    };
    let mut segments = Vec::new();
    let mut temps = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_lsn) = parse_segment_file_name(name) {
            segments.push((first_lsn, entry.path()));
        } else if name
            .strip_suffix(crate::io::TEMP_SUFFIX)
            .and_then(parse_segment_file_name)
            .is_some()
        {
            temps.push(entry.path());
        }
    }
    segments.sort_unstable_by_key(|(first_lsn, _)| *first_lsn);
    Ok(SegmentListing { segments, temps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(first_lsn: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = encode_segment_header(first_lsn);
        for (i, p) in payloads.iter().enumerate() {
            encode_record(&mut bytes, first_lsn + i as u64, p).unwrap();
        }
        bytes
    }

    type Records = Vec<(u64, Vec<u8>)>;

    fn scan(bytes: &[u8], is_last: bool) -> Result<(Records, SegmentScan)> {
        let mut records = Vec::new();
        let scan = scan_segment(Path::new("x.wal"), bytes, is_last, |lsn, p| {
            records.push((lsn, p.to_vec()));
        })?;
        Ok((records, scan))
    }

    #[test]
    fn names_sort_by_lsn_and_parse_back() {
        assert_eq!(segment_file_name(42), "00000000000000000042.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.wal"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal.tmp"),
            None
        );
    }

    #[test]
    fn a_segment_yields_its_records_in_order() {
        let bytes = segment(7, &[b"a", b"", b"ccc"]);
        let (records, scan) = scan(&bytes, false).unwrap();
        assert_eq!(
            records,
            vec![(7, b"a".to_vec()), (8, Vec::new()), (9, b"ccc".to_vec())]
        );
        assert_eq!(scan.next_lsn, 10);
        assert_eq!(scan.end_offset, bytes.len() as u64);
        assert_eq!(scan.torn_tail, None);
    }

    #[test]
    fn a_cut_last_record_is_a_torn_tail_only_in_the_last_segment() {
        let whole = segment(1, &[b"first", b"second"]);
        let cut = &whole[..whole.len() - 3];
        let (records, scan) = scan(cut, true).unwrap();
        assert_eq!(records, vec![(1, b"first".to_vec())]);
        let torn = scan.torn_tail.unwrap();
        assert_eq!(torn.offset, scan.end_offset);
        assert_eq!(torn.offset + torn.bytes_dropped, cut.len() as u64);
        let err = scan_segment(Path::new("x.wal"), cut, false, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("not the log's last"), "{err}");
    }

    #[test]
    fn damage_followed_by_a_valid_record_is_corruption_even_in_the_last_segment() {
        let mut bytes = segment(1, &[b"first", b"second", b"third"]);
        let second = SEGMENT_HEADER_BYTES as usize + FRAME_HEADER_BYTES + 8 + 5;
        bytes[second + FRAME_HEADER_BYTES + 9] ^= 1;
        let err = scan(&bytes, true).unwrap_err();
        assert!(
            matches!(&err, StorageError::Corrupt { offset, .. } if *offset == second as u64),
            "{err}"
        );
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let mut bytes = segment(1, &[b"first"]);
        let end = bytes.len() as u64;
        bytes.extend_from_slice(&[0; 4096]);
        let (records, scan) = scan(&bytes, true).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(scan.torn_tail.unwrap().offset, end);
    }

    #[test]
    fn an_lsn_out_of_sequence_is_corruption() {
        let mut bytes = encode_segment_header(5);
        encode_record(&mut bytes, 5, b"a").unwrap();
        encode_record(&mut bytes, 7, b"b").unwrap();
        let err = scan(&bytes, true).unwrap_err();
        assert!(
            err.to_string().contains("expected the record with LSN 6"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_magic_or_version_is_refused() {
        let mut bytes = segment(1, &[b"a"]);
        bytes[0] = b'X';
        assert!(scan(&bytes, true)
            .unwrap_err()
            .to_string()
            .contains("bad magic"));
        let mut header = SEGMENT_MAGIC.to_vec();
        let mut payload = 2_u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&1_u64.to_le_bytes());
        encode_frame(&mut header, &[&payload]).unwrap();
        let err = scan(&header, true).unwrap_err();
        assert!(matches!(err, StorageError::Format { .. }), "{err}");
    }
}
