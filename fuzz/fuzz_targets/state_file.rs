//! Arbitrary bytes as a state file: an operator state or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let _ = laminar_storage::snapshot::parse_state_file("fuzz.state".as_ref(), bytes);
});
