//! The malformed-record policy of the FILE source (`on_error = 'skip' | 'fail'`). Format
//! readers collect the problems of a chunk of records; [`MalformedPolicy::apply`] then counts
//! them in [`SourceMetrics`] and either drops the bad rows (skip) or keeps the rows before the
//! first bad record and turns it into the error returned after them (fail), so that no good
//! record before a bad one is lost.

use std::sync::Arc;

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{ConnectorError, Result};
use crate::source::SourceMetrics;

/// What to do with a record that does not fit the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnError {
    /// Drop it, count it, remember the first one.
    Skip,
    /// Stop the source with [`ConnectorError::MalformedRecord`].
    Fail,
}

/// One malformed record found while reading a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Physical 1-based line of the record.
    pub(crate) line: u64,
    /// Number of rows of the chunk's batch that come before this record.
    pub(crate) rows_before: usize,
    /// Whether the record is a row of the chunk's batch (at index `rows_before`) that must be
    /// removed, or was never added to it.
    pub(crate) in_batch: bool,
    /// The offending column, if the problem is one value.
    pub(crate) column: Option<String>,
    /// What is wrong.
    pub(crate) message: String,
}

/// The outcome of applying the policy to a chunk.
#[derive(Debug)]
pub(crate) struct Applied {
    /// Good rows to emit (possibly empty).
    pub(crate) batch: RecordBatch,
    /// The error to return after `batch` (fail mode only).
    pub(crate) error: Option<ConnectorError>,
}

/// Applies `on_error` to the problems of one file, reporting into shared metrics.
#[derive(Debug, Clone)]
pub(crate) struct MalformedPolicy {
    file: String,
    on_error: OnError,
    metrics: Arc<SourceMetrics>,
}

impl MalformedPolicy {
    pub(crate) fn new(file: String, on_error: OnError, metrics: Arc<SourceMetrics>) -> Self {
        Self {
            file,
            on_error,
            metrics,
        }
    }

    /// Whether a reader should stop reading a chunk at the first problem it detects.
    pub(crate) fn stops_at_first(&self) -> bool {
        self.on_error == OnError::Fail
    }

    /// Counts the chunk's problems and removes bad rows from `batch`. `problems` may be in any
    /// order but holds at most one entry per record.
    pub(crate) fn apply(&self, batch: RecordBatch, mut problems: Vec<Problem>) -> Result<Applied> {
        if problems.is_empty() {
            return Ok(Applied { batch, error: None });
        }
        problems.sort_by_key(|p| p.line);
        match self.on_error {
            OnError::Fail => {
                let first = problems.swap_remove(0);
                let error = self.to_error(first.line, first.column, first.message);
                self.metrics.record_malformed(&error.to_string());
                let kept = batch.slice(0, first.rows_before.min(batch.num_rows()));
                Ok(Applied {
                    batch: kept,
                    error: Some(error),
                })
            }
            OnError::Skip => {
                let mut keep = vec![true; batch.num_rows()];
                for problem in problems {
                    if problem.in_batch {
                        if let Some(slot) = keep.get_mut(problem.rows_before) {
                            *slot = false;
                        }
                    }
                    let error = self.to_error(problem.line, problem.column, problem.message);
                    self.metrics.record_malformed(&error.to_string());
                }
                let mask = BooleanArray::from(keep);
                let batch =
                    filter_record_batch(&batch, &mask).map_err(|e| ConnectorError::Internal {
                        connector: "FILE source".to_owned(),
                        message: format!("filtering malformed rows of {}: {e}", self.file),
                    })?;
                Ok(Applied { batch, error: None })
            }
        }
    }

    fn to_error(&self, line: u64, column: Option<String>, message: String) -> ConnectorError {
        ConnectorError::MalformedRecord {
            file: self.file.clone(),
            line,
            column,
            message,
        }
    }
}
