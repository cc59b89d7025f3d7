//! Streaming CSV decoding for the FILE source. Records are read one at a time with the `csv`
//! crate (so every record keeps its physical line number), gathered into text columns of at
//! most `batch_rows_max` rows, then converted to the declared types. Columns are matched by
//! position; an empty field is NULL; the header line, when present, is skipped after checking
//! its field count.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::malformed::{MalformedPolicy, Problem};
use super::text_columns::{convert_columns, nullable_schema};
use super::CsvDialect;
use crate::error::{ConnectorError, Result};

/// Reads one CSV file as batches of the declared schema.
pub(crate) struct CsvFileReader {
    reader: csv::Reader<File>,
    file: String,
    schema: SchemaRef,
    /// Which columns keep their text verbatim (string targets); others are trimmed.
    keeps_whitespace: Vec<bool>,
    header: bool,
    header_checked: bool,
    policy: MalformedPolicy,
    batch_rows_max: usize,
    record: csv::ByteRecord,
    /// Error to return once the rows before it have been emitted.
    pending_error: Option<ConnectorError>,
    finished: bool,
}

impl CsvFileReader {
    pub(crate) fn open(
        path: &Path,
        schema: SchemaRef,
        dialect: CsvDialect,
        policy: MalformedPolicy,
        batch_rows_max: usize,
    ) -> Result<Self> {
        let file = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(dialect.delimiter)
            .from_reader(file);
        let keeps_whitespace = schema
            .fields()
            .iter()
            .map(|f| {
                matches!(
                    f.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            })
            .collect();
        Ok(Self {
            reader,
            file: path.display().to_string(),
            schema,
            keeps_whitespace,
            header: dialect.header,
            header_checked: false,
            policy,
            batch_rows_max,
            record: csv::ByteRecord::new(),
            pending_error: None,
            finished: false,
        })
    }

    /// The next batch of good rows, `Ok(None)` at end of file.
    pub(crate) fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(error) = self.pending_error.take() {
                self.finished = true;
                return Err(error);
            }
            if self.finished {
                return Ok(None);
            }
            let batch = self.read_chunk()?;
            if batch.num_rows() > 0 {
                return Ok(Some(batch));
            }
        }
    }

    /// Reads up to `batch_rows_max` records and applies the malformed-record policy.
    fn read_chunk(&mut self) -> Result<RecordBatch> {
        let columns_len = self.schema.fields().len();
        let mut builders: Vec<StringBuilder> = (0..columns_len)
            .map(|_| StringBuilder::with_capacity(self.batch_rows_max, self.batch_rows_max * 8))
            .collect();
        let mut lines: Vec<u64> = Vec::with_capacity(self.batch_rows_max);
        let mut problems = Vec::new();
        while lines.len() < self.batch_rows_max {
            let more = self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(|e| csv_error(&self.file, e))?;
            if !more {
                self.finished = true;
                break;
            }
            let line = self.record.position().map_or(0, csv::Position::line);
            if self.header && !self.header_checked {
                self.header_checked = true;
                if self.record.len() != columns_len {
                    return Err(ConnectorError::MalformedRecord {
                        file: self.file.clone(),
                        line,
                        column: None,
                        message: format!(
                            "header has {} fields but the source declares {columns_len} columns",
                            self.record.len()
                        ),
                    });
                }
                continue;
            }
            if let Some((column, message)) = self.check_record(columns_len) {
                problems.push(Problem {
                    line,
                    rows_before: lines.len(),
                    in_batch: false,
                    column,
                    message,
                });
                if self.policy.stops_at_first() {
                    break;
                }
                continue;
            }
            for ((builder, field), verbatim) in builders
                .iter_mut()
                .zip(self.record.iter())
                .zip(&self.keeps_whitespace)
            {
                // check_record verified every field is UTF-8.
                let text = std::str::from_utf8(field).unwrap_or_default();
                let text = if *verbatim { text } else { text.trim() };
                if text.is_empty() {
                    builder.append_null();
                } else {
                    builder.append_value(text);
                }
            }
            lines.push(line);
        }
        let texts: Vec<ArrayRef> = builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let (columns, bad_values) = convert_columns(&self.schema, &texts)?;
        problems.extend(bad_values.into_iter().map(|bad| Problem {
            line: lines[bad.row],
            rows_before: bad.row,
            in_batch: true,
            column: Some(self.schema.field(bad.column).name().clone()),
            message: bad.message,
        }));
        let relaxed = RecordBatch::try_new(nullable_schema(&self.schema), columns)
            .map_err(|e| internal(&self.file, &e))?;
        let applied = self.policy.apply(relaxed, problems)?;
        self.pending_error = applied.error;
        RecordBatch::try_new(Arc::clone(&self.schema), applied.batch.columns().to_vec())
            .map_err(|e| internal(&self.file, &e))
    }

    /// Structural problems of the current record: field count and UTF-8.
    fn check_record(&self, columns_len: usize) -> Option<(Option<String>, String)> {
        if self.record.len() != columns_len {
            return Some((
                None,
                format!("expected {columns_len} fields, found {}", self.record.len()),
            ));
        }
        self.record
            .iter()
            .zip(self.schema.fields())
            .find(|(field, _)| std::str::from_utf8(field).is_err())
            .map(|(_, column)| (Some(column.name().clone()), "invalid UTF-8".to_owned()))
    }
}

fn csv_error(file: &str, error: csv::Error) -> ConnectorError {
    let line = error.position().map_or(0, csv::Position::line);
    match error.into_kind() {
        csv::ErrorKind::Io(source) => ConnectorError::io(file, source),
        other => ConnectorError::MalformedRecord {
            file: file.to_owned(),
            line,
            column: None,
            message: format!("{other:?}"),
        },
    }
}

fn internal(file: &str, error: &dyn std::fmt::Display) -> ConnectorError {
    ConnectorError::Internal {
        connector: "FILE source".to_owned(),
        message: format!("assembling a batch from {file}: {error}"),
    }
}
