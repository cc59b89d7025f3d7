//! Arbitrary bytes as the last segment of a write-ahead log: the scan must return records,
//! a torn tail or an error, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let _ = laminar_storage::wal::scan_segment("fuzz.wal".as_ref(), bytes, true, |_, _| {});
});
