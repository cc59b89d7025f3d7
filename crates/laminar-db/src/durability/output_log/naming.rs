//! File names of an output log's directory: `epoch-<20 digits>.arrow` for a committed epoch
//! (zero-padded, so name order is epoch order) and `.epoch-<epoch>.arrow.tmp` for the epoch
//! being written or pre-committed (hidden, so a reader listing the directory skips it).
//! Only names of exactly these shapes belong to the log; anything else is left alone.

/// A file of an output log's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum LogFile {
    /// The committed changes of this epoch.
    Committed(u64),
    /// The changes of this epoch, being written or pre-committed.
    Temp(u64),
}

/// The name of `epoch`'s committed file.
pub(crate) fn committed_name(epoch: u64) -> String {
    format!("epoch-{epoch:020}.arrow")
}

/// The name of `epoch`'s temp file.
pub(crate) fn temp_name(epoch: u64) -> String {
    format!(".epoch-{epoch}.arrow.tmp")
}

impl LogFile {
    /// The file's name.
    pub(crate) fn name(self) -> String {
        match self {
            Self::Committed(epoch) => committed_name(epoch),
            Self::Temp(epoch) => temp_name(epoch),
        }
    }

    /// The file `name` stands for, if it is one of the log's.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix(".epoch-") {
            return epoch_digits(rest.strip_suffix(".arrow.tmp")?).map(Self::Temp);
        }
        let digits = name.strip_prefix("epoch-")?.strip_suffix(".arrow")?;
        (digits.len() == 20)
            .then(|| epoch_digits(digits))
            .flatten()
            .map(Self::Committed)
    }
}

fn epoch_digits(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_epoch_and_parse_back() {
        assert_eq!(committed_name(7), "epoch-00000000000000000007.arrow");
        assert_eq!(temp_name(7), ".epoch-7.arrow.tmp");
        assert!(committed_name(9) < committed_name(10));
        for epoch in [0, 7, 10, u64::MAX] {
            for file in [LogFile::Committed(epoch), LogFile::Temp(epoch)] {
                assert_eq!(LogFile::parse(&file.name()), Some(file));
            }
        }
        for foreign in [
            "epoch-7.arrow",
            "epoch-0000000000000000000a.arrow",
            ".epoch-.arrow.tmp",
            ".epoch-x.arrow.tmp",
            "epoch-00000000000000000007.arrow.tmp",
            "notes.txt",
        ] {
            assert_eq!(LogFile::parse(foreign), None, "{foreign}");
        }
    }
}
