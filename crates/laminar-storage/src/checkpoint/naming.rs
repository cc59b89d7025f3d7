//! File names in a checkpoint directory: manifests (`manifest-{epoch:020}`, see
//! [`crate::manifest`]) and state files named from their state id.
//!
//! A state id is the engine's (it may hold any characters), so a state file's name keeps a
//! readable, sanitized prefix of it and adds a 64-bit FNV-1a hash of the whole id:
//! `state-{epoch:020}-{sanitized id}-{hash:016x}.{full|delta}`. The manifest maps ids to
//! names, so nothing ever parses an id back out of a name.

use crate::io::TEMP_SUFFIX;
use crate::manifest::{parse_manifest_file_name, StateFileKind};

/// File name prefix of a state file.
const STATE_PREFIX: &str = "state-";
/// Characters of the id kept in a state file name.
const ID_CHARS_MAX: usize = 48;

/// The name of the state file holding `id`'s snapshot of `kind` taken at `epoch`.
pub(crate) fn state_file_name(epoch: u64, id: &str, kind: StateFileKind) -> String {
    let readable: String = id
        .chars()
        .take(ID_CHARS_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let extension = match kind {
        StateFileKind::Full => "full",
        StateFileKind::Delta => "delta",
    };
    format!(
        "{STATE_PREFIX}{epoch:020}-{readable}-{:016x}.{extension}",
        fnv1a(id.as_bytes())
    )
}

/// Whether `name` is a state file (one this store wrote).
pub(crate) fn is_state_file_name(name: &str) -> bool {
    // Exact, lower-case extensions: only names this store wrote count.
    name.starts_with(STATE_PREFIX)
        && matches!(
            std::path::Path::new(name)
                .extension()
                .and_then(|e| e.to_str()),
            Some("full" | "delta")
        )
}

/// Whether `name` is a temporary file of a state file or manifest being written.
pub(crate) fn is_temp_file_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX)
        .is_some_and(|base| is_state_file_name(base) || parse_manifest_file_name(base).is_some())
}

/// 64-bit FNV-1a: stable across versions and platforms, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::is_plain_file_name;

    #[test]
    fn any_id_gives_a_plain_distinct_name() {
        let ids = [
            "q1/agg#0@w3",
            "q1_agg_0_w3",
            "../../x",
            "",
            "ü",
            &"long".repeat(100),
        ];
        let names: Vec<String> = ids
            .iter()
            .map(|id| state_file_name(7, id, StateFileKind::Full))
            .collect();
        for name in &names {
            assert!(is_plain_file_name(name), "{name}");
            assert!(is_state_file_name(name), "{name}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(
            state_file_name(7, "q1/agg#0@w3", StateFileKind::Delta),
            format!(
                "state-00000000000000000007-q1_agg_0_w3-{:016x}.delta",
                fnv1a(b"q1/agg#0@w3")
            )
        );
    }

    #[test]
    fn temp_files_of_our_names_are_recognised() {
        assert!(is_temp_file_name("manifest-00000000000000000003.tmp"));
        assert!(is_temp_file_name(&format!(
            "{}.tmp",
            state_file_name(1, "a", StateFileKind::Full)
        )));
        assert!(!is_temp_file_name("notes.tmp"));
        assert!(!is_temp_file_name("manifest-00000000000000000003"));
    }
}
