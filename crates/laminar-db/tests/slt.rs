//! Runs every sqllogictest file under `tests/slt/` at the repository root, each on a fresh
//! in-memory database, once with 1 worker and once with 4: the answers must not depend on
//! the number of workers. `__DATA__` in a statement is replaced by the path of
//! `tests/slt/data`, `__TMP__` by a fresh temporary directory of the file's own.

use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use laminar_db::{DbError, ExecuteResult, LaminarDB};
use sqllogictest::{DBOutput, DefaultColumnType};

struct SltDb {
    db: LaminarDB,
    data_dir: String,
    tmp_dir: tempfile::TempDir,
}

impl sqllogictest::DB for SltDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let sql = sql
            .replace("__DATA__", &self.data_dir)
            .replace("__TMP__", &self.tmp_dir.path().display().to_string());
        match self.db.execute(&sql)? {
            ExecuteResult::Rows { schema, batches } => {
                let types = schema
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        t if t.is_integer() => DefaultColumnType::Integer,
                        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
                            DefaultColumnType::FloatingPoint
                        }
                        _ => DefaultColumnType::Text,
                    })
                    .collect();
                let options = FormatOptions::default().with_null("NULL");
                let mut rows = Vec::new();
                for batch in &batches {
                    let formatters = batch
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| DbError::Internal(e.to_string()))?;
                    for row in 0..batch.num_rows() {
                        rows.push(
                            formatters
                                .iter()
                                .map(|f| {
                                    let text = f.value(row).to_string();
                                    if text.is_empty() {
                                        "(empty)".to_string()
                                    } else {
                                        text
                                    }
                                })
                                .collect(),
                        );
                    }
                }
                Ok(DBOutput::Rows { types, rows })
            }
            ExecuteResult::Inserted { rows } => Ok(DBOutput::StatementComplete(rows)),
            _ => Ok(DBOutput::StatementComplete(0)),
        }
    }
}

fn slt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/slt")
}

fn run_all(workers: usize) {
    let dir = slt_dir();
    let data_dir = dir
        .join("data")
        .canonicalize()
        .expect("tests/slt/data exists");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        // `SLT=window` runs only the files whose name contains `window`.
        .filter(|p| std::env::var("SLT").map_or(true, |only| p.to_string_lossy().contains(&only)))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files under {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let data = data_dir.display().to_string();
        let mut runner = sqllogictest::Runner::new(move || {
            let data = data.clone();
            async move {
                let db = LaminarDB::builder()
                    .workers(workers)
                    .pin_workers(false)
                    .in_memory()?;
                let tmp_dir = tempfile::tempdir().map_err(|e| DbError::Internal(e.to_string()))?;
                Ok(SltDb {
                    db,
                    data_dir: data,
                    tmp_dir,
                })
            }
        });
        // `onlyif one_worker` / `skipif one_worker` mark records whose answer depends on
        // how rows spread over workers (state held per worker).
        if workers == 1 {
            runner.add_label("one_worker");
        }
        if let Err(e) = runner.run_file(file) {
            failures.push(format!("{} ({workers} workers):\n{e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn sqllogictest_one_worker() {
    run_all(1);
}

#[test]
fn sqllogictest_four_workers() {
    run_all(4);
}
