//! State files through their public API: written durably by each backend and read back;
//! truncated at every offset and with a bit flipped at every offset, always detected.

mod common;

use std::path::Path;

use common::{backends, batch, delta, entries, kv};
use laminar_core::state::{merge_states, OperatorState, StateKind, StatePart};
use laminar_storage::snapshot::{parse_state_file, read_state_file, write_state_file};
use laminar_storage::StorageError;

fn sample() -> OperatorState {
    OperatorState {
        kind: StateKind::Delta,
        parts: vec![
            StatePart {
                name: "groups".into(),
                upserts: vec![batch(&[("a", 1), ("b", 2)]), batch(&[("c", 3)])],
                deletes: vec![b"gone".to_vec(), b"also gone".to_vec()],
            },
            StatePart::new("counters", vec![batch(&[("n", 99)])]),
        ],
    }
}

fn assert_names(err: &StorageError, path: &Path, case: &str) {
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        err.to_string().contains(name),
        "{case}: error does not name {name}: {err}"
    );
}

#[test]
fn a_state_file_round_trips_through_each_backend() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("op.state");
        let bytes = write_state_file(backend.as_ref(), &path, &sample()).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        let back = read_state_file(&path).unwrap();
        assert_eq!(back.kind, StateKind::Delta);
        let names: Vec<&str> = back.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["groups", "counters"]);
        assert_eq!(back.parts[0].deletes, sample().parts[0].deletes);
        assert_eq!(back.parts[0].upserts, sample().parts[0].upserts);
        // What was read merges like what was written.
        let full = OperatorState::full(vec![StatePart::new(
            "groups",
            vec![batch(&[("gone", 5), ("z", 0)])],
        )]);
        let merged = merge_states(&[full, back]).unwrap();
        assert_eq!(
            entries(&merged),
            kv(&[("a", 1), ("b", 2), ("c", 3), ("n", 99), ("z", 0)])
        );
    }
}

#[test]
fn truncation_at_every_offset_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("op.state");
    let state = delta(&[("k", 1), ("l", 2)], &["m"]);
    let std_backend = laminar_storage::io::StdBackend;
    write_state_file(&std_backend, &path, &state).unwrap();
    let whole = std::fs::read(&path).unwrap();
    for cut in 0..whole.len() {
        let case = format!("cut at {cut} of {}", whole.len());
        std::fs::write(&path, &whole[..cut]).unwrap();
        let err = read_state_file(&path).expect_err(&case);
        assert!(matches!(err, StorageError::Corrupt { .. }), "{case}: {err}");
        assert_names(&err, &path, &case);
    }
}

#[test]
fn a_flipped_bit_at_every_offset_is_detected() {
    let path = Path::new("checkpoints/state-7.delta");
    let state = sample();
    let whole = laminar_storage::snapshot::encode_state_file(path, &state).unwrap();
    for offset in 0..whole.len() {
        for bit in [offset % 8, (offset + 3) % 8] {
            let mut damaged = whole.clone();
            damaged[offset] ^= 1 << bit;
            let case = format!("bit {bit} of byte {offset}");
            let err = parse_state_file(path, &damaged).expect_err(&case);
            assert!(matches!(err, StorageError::Corrupt { .. }), "{case}: {err}");
            assert_names(&err, path, &case);
        }
    }
}
