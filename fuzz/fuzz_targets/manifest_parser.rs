//! Arbitrary bytes as a checkpoint manifest: a manifest or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let _ = laminar_storage::manifest::parse_manifest("manifest-fuzz".as_ref(), bytes);
});
