//! The write-ahead log through its public API: round trips over segments, reopening, group
//! commit under concurrent appenders, truncation, torn-tail repair and poisoning.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{backends, failing_backend};
use laminar_storage::io::{Backend, StdBackend};
use laminar_storage::wal::{read_wal, segment_file_name, Durability, WalOptions, WalWriter};
use laminar_storage::StorageError;

fn options(backend: &Backend, segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        group_commit_interval: Duration::from_millis(2),
        backend: Arc::clone(backend),
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = 20 + (i * 37 % 180) as usize;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn segment_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "wal")
        })
        .count()
}

/// Waits until `done` holds, failing after a generous deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn records_round_trip_over_several_segments_and_reopening_continues_the_lsns() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, report) =
            WalWriter::open(dir.path(), Durability::Sync, options(&backend, 4096)).unwrap();
        assert_eq!(
            (report.next_lsn, report.segments, report.torn_tail),
            (1, 1, None)
        );
        for i in 1..=300 {
            assert_eq!(wal.append(&payload(i)).unwrap(), i, "{backend:?}");
        }
        assert_eq!((wal.last_lsn(), wal.durable_lsn()), (300, 300));
        drop(wal);
        let segments = segment_count(dir.path());
        assert!(segments > 5, "{segments} segments");

        let read = read_wal(dir.path(), 0).unwrap();
        assert_eq!(read.torn_tail, None);
        assert_eq!(read.next_lsn, 301);
        let expected: Vec<(u64, Vec<u8>)> = (1..=300).map(|i| (i, payload(i))).collect();
        let got: Vec<(u64, Vec<u8>)> = read
            .records
            .into_iter()
            .map(|r| (r.lsn, r.payload))
            .collect();
        assert_eq!(got, expected);

        let (wal, report) =
            WalWriter::open(dir.path(), Durability::Group, options(&backend, 4096)).unwrap();
        assert_eq!((report.next_lsn, report.segments), (301, segments));
        for i in 301..=320 {
            assert_eq!(wal.append(&payload(i)).unwrap(), i);
        }
        wal.close().unwrap();
        let read = read_wal(dir.path(), 250).unwrap();
        let lsns: Vec<u64> = read.records.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, (251..=320).collect::<Vec<_>>());
        assert!(read.records.iter().all(|r| r.payload == payload(r.lsn)));
    }
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Backend = Arc::new(StdBackend);
    let (wal, _) = WalWriter::open(dir.path(), Durability::Sync, options(&backend, 4096)).unwrap();
    let big = vec![7_u8; 10_000];
    assert_eq!(wal.append(b"small").unwrap(), 1);
    assert_eq!(wal.append(&big).unwrap(), 2);
    assert_eq!(wal.append(b"after").unwrap(), 3);
    drop(wal);
    assert_eq!(segment_count(dir.path()), 3);
    let read = read_wal(dir.path(), 0).unwrap();
    assert_eq!(read.records[1].payload, big);
    assert_eq!(read.records[2].payload, b"after");
}

#[test]
fn concurrent_appenders_get_every_lsn_once_and_read_back_their_records() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 150;
    for backend in backends() {
        for durability in [Durability::Sync, Durability::Group] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) =
                WalWriter::open(dir.path(), durability, options(&backend, 16 << 10)).unwrap();
            let wal = Arc::new(wal);
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let wal = Arc::clone(&wal);
                    std::thread::spawn(move || {
                        (0..PER_THREAD)
                            .map(|i| {
                                let body = format!("thread {t} record {i}").into_bytes();
                                let lsn = wal.append(&body).unwrap();
                                if durability == Durability::Sync {
                                    assert!(wal.durable_lsn() >= lsn);
                                }
                                (lsn, body)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut appended: Vec<(u64, Vec<u8>)> = threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            appended.sort();
            let lsns: HashSet<u64> = appended.iter().map(|(lsn, _)| *lsn).collect();
            assert_eq!(lsns, (1..=THREADS * PER_THREAD).collect::<HashSet<_>>());
            assert_eq!(wal.sync().unwrap(), THREADS * PER_THREAD);
            drop(wal);
            let read = read_wal(dir.path(), 0).unwrap();
            let got: Vec<(u64, Vec<u8>)> = read
                .records
                .into_iter()
                .map(|r| (r.lsn, r.payload))
                .collect();
            assert_eq!(got, appended, "{durability} over {backend:?}");
        }
    }
}

#[test]
fn group_durability_syncs_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Backend = Arc::new(StdBackend);
    let (wal, _) =
        WalWriter::open(dir.path(), Durability::Group, options(&backend, 1 << 20)).unwrap();
    let lsn = wal.append(b"x").unwrap();
    wait_until("the flusher to sync", || wal.durable_lsn() >= lsn);
}

#[test]
fn truncate_through_deletes_covered_segments_and_keeps_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Backend = Arc::new(StdBackend);
    let (wal, _) = WalWriter::open(dir.path(), Durability::Sync, options(&backend, 4096)).unwrap();
    for i in 1..=100 {
        wal.append(&payload(i)).unwrap();
    }
    let before = segment_count(dir.path());
    let removed = wal.truncate_through(50).unwrap();
    assert!(removed > 0 && removed < before, "{removed} of {before}");
    assert_eq!(segment_count(dir.path()), before - removed);
    let read = read_wal(dir.path(), 50).unwrap();
    assert_eq!(read.records.first().unwrap().lsn, 51);
    assert_eq!(read.records.len(), 50);
    // Records 1..50 are gone: asking for them is an error, not a silent gap.
    let err = read_wal(dir.path(), 0).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");

    // Everything covered: the active segment rolls, so the next LSN survives a reopen.
    wal.truncate_through(100).unwrap();
    assert_eq!(segment_count(dir.path()), 1);
    assert!(dir.path().join(segment_file_name(101)).exists());
    drop(wal);
    let (wal, report) =
        WalWriter::open(dir.path(), Durability::Sync, options(&backend, 4096)).unwrap();
    assert_eq!(report.next_lsn, 101);
    assert_eq!(wal.append(b"next").unwrap(), 101);
    assert_eq!(read_wal(dir.path(), 100).unwrap().records.len(), 1);
}

#[test]
fn a_failed_write_poisons_the_writer_and_the_torn_record_is_cut_at_reopen() {
    for durability in [Durability::Sync, Durability::Group] {
        let dir = tempfile::tempdir().unwrap();
        let (backend, faults) = failing_backend(Arc::new(StdBackend));
        let (wal, _) = WalWriter::open(dir.path(), durability, options(&backend, 1 << 20)).unwrap();
        assert_eq!(wal.append(b"kept").unwrap(), 1);
        faults.fail_writes(true);
        let err = wal.append(b"torn by the failure").unwrap_err();
        let segment = dir.path().join(segment_file_name(1));
        match &err {
            StorageError::Poisoned { path, reason } => {
                assert_eq!(path, &segment);
                assert!(reason.contains("injected write failure"), "{reason}");
            }
            other => panic!("expected Poisoned, got {other}"),
        }
        faults.fail_writes(false);
        // Every later append is refused with the first failure, even though writes work again.
        let later = wal.append(b"after").unwrap_err();
        assert_eq!(later.to_string(), err.to_string());
        assert!(matches!(wal.sync(), Err(StorageError::Poisoned { .. })));
        drop(wal);

        let (wal, report) =
            WalWriter::open(dir.path(), durability, options(&backend, 1 << 20)).unwrap();
        let torn = report.torn_tail.expect("half a record was written");
        assert_eq!(torn.path, segment);
        assert_eq!(report.next_lsn, 2);
        assert_eq!(wal.append(b"again").unwrap(), 2);
        drop(wal);
        let read = read_wal(dir.path(), 0).unwrap();
        let payloads: Vec<&[u8]> = read.records.iter().map(|r| r.payload.as_slice()).collect();
        assert_eq!(payloads, vec![b"kept".as_slice(), b"again"]);
    }
}

#[test]
fn a_failed_sync_poisons_a_sync_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, faults) = failing_backend(Arc::new(StdBackend));
    let (wal, _) =
        WalWriter::open(dir.path(), Durability::Sync, options(&backend, 1 << 20)).unwrap();
    wal.append(b"one").unwrap();
    faults.fail_syncs(true);
    let err = wal.append(b"two").unwrap_err();
    assert!(
        matches!(&err, StorageError::Poisoned { reason, .. } if reason.contains("injected sync failure")),
        "{err}"
    );
    faults.fail_syncs(false);
    assert!(matches!(
        wal.append(b"three"),
        Err(StorageError::Poisoned { .. })
    ));
    assert_eq!(wal.durable_lsn(), 1);
}

#[test]
fn a_failed_background_sync_poisons_a_group_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, faults) = failing_backend(Arc::new(StdBackend));
    let (wal, _) =
        WalWriter::open(dir.path(), Durability::Group, options(&backend, 1 << 20)).unwrap();
    faults.fail_syncs(true);
    wal.append(b"written, never synced").unwrap();
    wait_until("the flusher's failure to poison the log", || {
        matches!(wal.append(b"more"), Err(StorageError::Poisoned { .. }))
    });
    assert!(wal.close().is_err());
}

#[test]
fn a_torn_tail_is_cut_at_open_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Backend = Arc::new(StdBackend);
    let (wal, _) =
        WalWriter::open(dir.path(), Durability::Sync, options(&backend, 1 << 20)).unwrap();
    for i in 1..=3 {
        wal.append(&payload(i)).unwrap();
    }
    drop(wal);
    let segment = dir.path().join(segment_file_name(1));
    let valid_len = std::fs::metadata(&segment).unwrap().len();
    // Half of a record header and payload: what a crash mid-append leaves.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[100, 0, 0, 0, 1, 2, 3, 4, 4, 0, 0, 0, 0, 0, 0, 0, 9, 9]);
    std::fs::write(&segment, &bytes).unwrap();

    let read = read_wal(dir.path(), 0).unwrap();
    assert_eq!(read.records.len(), 3);
    assert_eq!(read.torn_tail.as_ref().unwrap().bytes_dropped, 18);

    let (wal, report) =
        WalWriter::open(dir.path(), Durability::Sync, options(&backend, 1 << 20)).unwrap();
    let torn = report.torn_tail.unwrap();
    assert_eq!(
        (torn.path, torn.offset, torn.bytes_dropped),
        (segment.clone(), valid_len, 18)
    );
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), valid_len);
    assert_eq!(wal.append(b"four").unwrap(), 4);
}

#[test]
fn leftover_temp_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Backend = Arc::new(StdBackend);
    drop(WalWriter::open(dir.path(), Durability::Sync, options(&backend, 1 << 20)).unwrap());
    let temp = dir.path().join(format!("{}.tmp", segment_file_name(9)));
    std::fs::write(&temp, b"half a segment").unwrap();
    let unrelated = dir.path().join("notes.txt");
    std::fs::write(&unrelated, b"mine").unwrap();
    let (_wal, report) =
        WalWriter::open(dir.path(), Durability::Sync, options(&backend, 1 << 20)).unwrap();
    assert_eq!(report.removed_temp_files, vec![temp.clone()]);
    assert!(!temp.exists() && unrelated.exists());
}

#[test]
fn durability_none_and_bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Backend = Arc::new(StdBackend);
    let err =
        WalWriter::open(dir.path(), Durability::None, options(&backend, 1 << 20)).unwrap_err();
    assert!(err.to_string().contains("durability 'none'"), "{err}");
    let err = WalWriter::open(dir.path(), Durability::Sync, options(&backend, 10)).unwrap_err();
    assert!(err.to_string().contains("segment size"), "{err}");
}

#[test]
fn reading_a_missing_directory_is_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let read = read_wal(dir.path().join("never-written"), 0).unwrap();
    assert!(read.records.is_empty());
    assert_eq!((read.next_lsn, read.torn_tail), (1, None));
}
