//! Damaged write-ahead logs: a segment truncated at every offset or with a bit flipped at
//! every offset. Each case is detected: an error naming the segment, or (only for the last
//! segment) a torn tail that drops exactly the damaged record and what follows. Never a wrong
//! record, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{offsets, Rng};
use laminar_storage::io::{Backend, StdBackend};
use laminar_storage::wal::{
    read_wal, scan_segment, segment_file_name, Durability, WalOptions, WalRead, WalWriter,
};
use laminar_storage::StorageError;

/// Bytes before the first record: magic, header frame header, version and first LSN.
const HEADER_BYTES: usize = 8 + 8 + 12;

fn payload(i: u64) -> Vec<u8> {
    format!("record {i} {}", "x".repeat((i % 7) as usize)).into_bytes()
}

/// A log of `records` records in segments of about `segment_bytes`; its segment files by
/// first LSN, with the byte ranges of each segment's records.
fn write_log(dir: &Path, records: u64, segment_bytes: u64) -> Vec<(PathBuf, Vec<u8>)> {
    let backend: Backend = Arc::new(StdBackend);
    let options = WalOptions {
        segment_bytes,
        backend,
        ..WalOptions::default()
    };
    let (wal, _) = WalWriter::open(dir, Durability::Sync, options).unwrap();
    for i in 1..=records {
        wal.append(&payload(i)).unwrap();
    }
    drop(wal);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Start offsets of the records in a segment's bytes (each frame: 8 + 8 + payload).
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = HEADER_BYTES;
    while pos < bytes.len() {
        starts.push(pos);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
    }
    starts
}

/// The index of the record containing byte `offset` (None for the header).
fn record_at(starts: &[usize], offset: usize) -> Option<usize> {
    if offset < HEADER_BYTES {
        return None;
    }
    Some(starts.iter().rposition(|s| *s <= offset).unwrap())
}

/// Records read must be exactly the originals with LSNs `first..first + n`.
fn assert_prefix(read: &WalRead, first: u64, n: usize, case: &str) {
    let lsns: Vec<u64> = read.records.iter().map(|r| r.lsn).collect();
    assert_eq!(
        lsns,
        (first..first + n as u64).collect::<Vec<_>>(),
        "{case}"
    );
    for r in &read.records {
        assert_eq!(
            r.payload,
            payload(r.lsn),
            "{case}: wrong payload at LSN {}",
            r.lsn
        );
    }
}

fn assert_names(err: &StorageError, file: &Path, case: &str) {
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(
        err.to_string().contains(name),
        "{case}: error does not name {name}: {err}"
    );
}

#[test]
fn truncating_the_last_segment_anywhere_loses_only_the_cut_records() {
    let source = tempfile::tempdir().unwrap();
    let files = write_log(source.path(), 40, 1 << 20);
    let [(path, bytes)] = files.as_slice() else {
        panic!("one segment expected")
    };
    let starts = record_starts(bytes);
    assert_eq!(starts.len(), 40);
    let ends: Vec<usize> = starts[1..].iter().copied().chain([bytes.len()]).collect();
    let name = path.file_name().unwrap();
    for cut in 0..bytes.len() {
        let case = format!("cut at {cut} of {}", bytes.len());
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(name);
        std::fs::write(&copy, &bytes[..cut]).unwrap();
        match read_wal(dir.path(), 0) {
            Ok(read) => {
                assert!(cut >= HEADER_BYTES, "{case}: a cut header must be an error");
                let whole = ends.iter().filter(|end| **end <= cut).count();
                assert_prefix(&read, 1, whole, &case);
                let at_boundary = cut == HEADER_BYTES || ends.contains(&cut);
                assert_eq!(read.torn_tail.is_some(), !at_boundary, "{case}");
                // The writer cuts the same tail and continues after the last whole record.
                let (_wal, report) = WalWriter::open(
                    dir.path(),
                    Durability::Sync,
                    WalOptions {
                        backend: Arc::new(StdBackend),
                        ..WalOptions::default()
                    },
                )
                .unwrap();
                assert_eq!(report.next_lsn, whole as u64 + 1, "{case}");
            }
            Err(e) => {
                assert!(cut < HEADER_BYTES, "{case}: {e}");
                assert_names(&e, &copy, &case);
            }
        }
    }
}

#[test]
fn a_flipped_bit_in_the_last_segment_is_detected_at_every_offset() {
    let source = tempfile::tempdir().unwrap();
    let files = write_log(source.path(), 40, 1 << 20);
    let [(path, bytes)] = files.as_slice() else {
        panic!("one segment expected")
    };
    let starts = record_starts(bytes);
    for offset in 0..bytes.len() {
        let mut damaged = bytes.clone();
        let bit = offset % 8;
        damaged[offset] ^= 1 << bit;
        let case = format!("bit {bit} of byte {offset}");
        let result = scan(path, &damaged, true);
        match record_at(&starts, offset) {
            // Header damage: always an error.
            None => assert_names(&result.unwrap_err(), path, &case),
            // The last record: nothing valid follows, so it is a torn tail.
            Some(index) if index + 1 == starts.len() => {
                let (records, torn) = result.unwrap();
                assert_eq!(records, (1..=index as u64).collect::<Vec<_>>(), "{case}");
                assert_eq!(torn, Some(starts[index] as u64), "{case}");
            }
            // A record with valid records after it: corruption in the middle.
            Some(index) => {
                let err = result.unwrap_err();
                assert_names(&err, path, &case);
                assert!(
                    matches!(err, StorageError::Corrupt { offset, .. } if offset == starts[index] as u64),
                    "{case}: {err}"
                );
            }
        }
    }
}

/// Scans segment bytes; the LSNs read and where a torn tail starts, checking payloads.
fn scan(path: &Path, bytes: &[u8], is_last: bool) -> Result<(Vec<u64>, Option<u64>), StorageError> {
    let mut lsns = Vec::new();
    let scan = scan_segment(path, bytes, is_last, |lsn, p| {
        assert_eq!(p, payload(lsn).as_slice(), "wrong payload at LSN {lsn}");
        lsns.push(lsn);
    })?;
    Ok((lsns, scan.torn_tail.map(|t| t.offset)))
}

#[test]
fn any_damage_to_a_segment_that_is_not_the_last_is_an_error() {
    let source = tempfile::tempdir().unwrap();
    let files = write_log(source.path(), 400, 4096);
    assert!(files.len() >= 3, "{} segments", files.len());
    let (first_path, first) = &files[0];
    let name = first_path.file_name().unwrap();
    let mut rng = Rng::new(7);
    let cuts = offsets(first.len(), 200, 1);
    let flips: Vec<(usize, usize)> = (0..200)
        .map(|_| (rng.below(first.len()), rng.below(8)))
        .collect();
    let cases = cuts
        .iter()
        .map(|c| (format!("cut at {c}"), first[..*c].to_vec()))
        .chain(flips.iter().map(|(o, b)| {
            let mut d = first.clone();
            d[*o] ^= 1 << b;
            (format!("bit {b} of byte {o}"), d)
        }));
    for (case, damaged) in cases {
        let dir = tempfile::tempdir().unwrap();
        for (path, bytes) in &files[1..] {
            std::fs::write(dir.path().join(path.file_name().unwrap()), bytes).unwrap();
        }
        let copy = dir.path().join(name);
        std::fs::write(&copy, &damaged).unwrap();
        let err = read_wal(dir.path(), 0).expect_err(&case);
        assert!(matches!(err, StorageError::Corrupt { .. }), "{case}: {err}");
        assert_names(&err, &copy, &case);
    }
}

#[test]
fn a_missing_middle_segment_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_log(dir.path(), 400, 4096);
    std::fs::remove_file(&files[1].0).unwrap();
    let err = read_wal(dir.path(), 0).unwrap_err();
    assert_names(&err, &files[2].0, "middle segment removed");
    assert!(err.to_string().contains("ends before LSN"), "{err}");
}

#[test]
fn random_bytes_never_panic_the_reader() {
    let mut rng = Rng::new(42);
    let header = {
        let dir = tempfile::tempdir().unwrap();
        let files = write_log(dir.path(), 1, 1 << 20);
        files[0].1[..HEADER_BYTES].to_vec()
    };
    for round in 0..300 {
        let len = rng.below(600);
        let mut bytes: Vec<u8> = if round % 2 == 0 {
            header.clone()
        } else {
            Vec::new()
        };
        bytes.extend((0..len).map(|_| rng.next() as u8));
        let path = Path::new("random.wal");
        for is_last in [true, false] {
            let _ = scan_segment(path, &bytes, is_last, |_, _| {});
        }
    }
    // The same through the directory reader, with a file name that matches.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = header;
    bytes.extend((0..500).map(|_| rng.next() as u8));
    std::fs::write(dir.path().join(segment_file_name(1)), &bytes).unwrap();
    let _ = read_wal(dir.path(), 0);
}
