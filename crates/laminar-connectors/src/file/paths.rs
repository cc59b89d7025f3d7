//! Expansion of a FILE `path` option into the sorted list of files to read. A plain path and a
//! glob go through the same code, so "no such file" and "glob matched nothing" report the same
//! way, naming the pattern.

use std::path::PathBuf;

use crate::error::{ConnectorError, Result};

/// Checks that `pattern` is a valid glob, at CREATE time.
pub(crate) fn validate_pattern(connector: &str, pattern: &str) -> Result<()> {
    glob::Pattern::new(pattern)
        .map(|_| ())
        .map_err(|e| ConnectorError::invalid_option(connector, "path", pattern, e.to_string()))
}

/// Regular files matching `pattern`, sorted by path; an error naming the pattern when none.
pub(crate) fn expand(connector: &str, pattern: &str) -> Result<Vec<PathBuf>> {
    let files = expand_any(connector, pattern)?;
    if files.is_empty() {
        return Err(ConnectorError::NoFilesMatched {
            pattern: pattern.to_owned(),
        });
    }
    Ok(files)
}

/// Regular files matching `pattern`, sorted by path; possibly none.
pub(crate) fn expand_any(connector: &str, pattern: &str) -> Result<Vec<PathBuf>> {
    let entries = glob::glob(pattern)
        .map_err(|e| ConnectorError::invalid_option(connector, "path", pattern, e.to_string()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| {
            let path = e.path().to_path_buf();
            ConnectorError::io(path, e.into())
        })?;
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
