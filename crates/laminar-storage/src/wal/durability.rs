//! How long an appended record may stay only in the operating system's cache: the choice
//! between the latency of an fdatasync per append and what a power loss may take.

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, StorageError};

/// When an append is acknowledged, and so what a crash can lose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Acknowledged once written and fdatasync'ed; concurrent appends share one fdatasync.
    /// Neither a process crash nor a power loss loses an acknowledged record.
    Sync,
    /// Acknowledged once written to the operating system (survives a process crash);
    /// fdatasync'ed by a background flusher at most the group-commit interval later. A power
    /// loss can lose the records acknowledged within that interval.
    #[default]
    Group,
    /// No write-ahead log: the engine writes none, and a crash loses everything since the last
    /// checkpoint. [`crate::wal::WalWriter::open`] refuses this mode.
    None,
}

impl Durability {
    /// The name the option takes: `sync`, `group` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Group => "group",
            Self::None => "none",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Durability {
    type Err = StorageError;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "sync" => Ok(Self::Sync),
            "group" => Ok(Self::Group),
            "none" => Ok(Self::None),
            _ => Err(StorageError::InvalidOption {
                option: "durability",
                value: text.to_string(),
                reason: "expected one of: sync, group, none".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_case_insensitively_and_print_back() {
        for mode in [Durability::Sync, Durability::Group, Durability::None] {
            assert_eq!(mode.to_string().parse::<Durability>().unwrap(), mode);
            assert_eq!(
                mode.name().to_uppercase().parse::<Durability>().unwrap(),
                mode
            );
        }
        assert_eq!(" Group ".parse::<Durability>().unwrap(), Durability::Group);
        assert_eq!(Durability::default(), Durability::Group);
    }

    #[test]
    fn a_bad_value_is_named_with_the_valid_ones() {
        let err = "fast".parse::<Durability>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid durability 'fast': expected one of: sync, group, none"
        );
    }
}
