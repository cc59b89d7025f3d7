//! The persisted catalog: the canonical SQL of every source, stream, view and sink in
//! creation order, in `catalog.json` inside the database directory. Written atomically
//! (temp file, fsync, rename, directory fsync) so a crash leaves the old or the new catalog,
//! never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DbError, Result};

const CATALOG_FILE: &str = "catalog.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct CatalogFile {
    format_version: u32,
    statements: Vec<String>,
}

/// Reads and writes `catalog.json`.
#[derive(Debug)]
pub(crate) struct CatalogStore {
    dir: PathBuf,
    path: PathBuf,
}

impl CatalogStore {
    /// Opens (creating) `dir`; returns the store and the statements it holds.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Vec<String>)> {
        let path = dir.join(CATALOG_FILE);
        fs::create_dir_all(dir).map_err(|e| {
            catalog_error(&path, &format!("cannot create the database directory: {e}"))
        })?;
        let store = Self {
            dir: dir.to_path_buf(),
            path,
        };
        let statements = match fs::read(&store.path) {
            Ok(bytes) => {
                let file: CatalogFile = serde_json::from_slice(&bytes).map_err(|e| {
                    catalog_error(&store.path, &format!("is not a valid catalog: {e}"))
                })?;
                if file.format_version != FORMAT_VERSION {
                    return Err(catalog_error(
                        &store.path,
                        &format!(
                            "has format version {}, this LaminarDB reads version {FORMAT_VERSION}",
                            file.format_version
                        ),
                    ));
                }
                file.statements
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(catalog_error(&store.path, &format!("cannot be read: {e}"))),
        };
        Ok((store, statements))
    }

    /// Replaces the stored catalog with `statements`.
    pub(crate) fn save(&self, statements: &[String]) -> Result<()> {
        let file = CatalogFile {
            format_version: FORMAT_VERSION,
            statements: statements.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| DbError::Internal(format!("catalog serialization: {e}")))?;
        let temp = self.dir.join(format!("{CATALOG_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut out = File::create(&temp)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            fs::rename(&temp, &self.path)?;
            // The rename is durable only once the directory entry is.
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| catalog_error(&self.path, &format!("cannot be written: {e}")))
    }
}

fn catalog_error(path: &Path, message: &str) -> DbError {
    DbError::Catalog {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}
