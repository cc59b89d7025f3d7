//! Streaming newline-delimited JSON decoding for the FILE source. Lines are gathered into
//! chunks of at most `batch_rows_max` records and decoded with `arrow_json` in one go; only a
//! chunk that fails is re-decoded line by line to find, name and drop its bad lines. TIMESTAMP
//! columns are decoded as text and converted like CSV values, so a JSON number there is epoch
//! milliseconds; a JSON number or boolean in a VARCHAR column is taken as its text.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use arrow_json::reader::{Decoder, ReaderBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::malformed::{MalformedPolicy, Problem};
use super::text_columns::{convert_columns, nullable_schema, quote};
use crate::error::{ConnectorError, Result};

/// The schema `arrow_json` decodes into: the declared one, all nullable, timestamps as text.
pub(crate) fn decode_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let data_type = match f.data_type() {
                DataType::Timestamp(_, _) => DataType::Utf8,
                other => other.clone(),
            };
            Field::new(f.name(), data_type, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A decoder for `schema` with this module's settings that buffers more than `rows_max`
/// rows, so that it never stops early and an unexpected extra row shows in the count.
pub(crate) fn new_decoder(schema: SchemaRef, rows_max: usize) -> Result<Decoder> {
    ReaderBuilder::new(schema)
        .with_batch_size(rows_max.saturating_add(1))
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| ConnectorError::Internal {
            connector: "FILE source".to_owned(),
            message: format!("building a JSON decoder: {e}"),
        })
}

/// Reads one newline-delimited JSON file as batches of the declared schema.
pub(crate) struct JsonFileReader {
    input: BufReader<File>,
    file: String,
    schema: SchemaRef,
    decode_schema: SchemaRef,
    policy: MalformedPolicy,
    batch_rows_max: usize,
    /// Physical lines read so far.
    line_number: u64,
    /// Reused buffer for one line.
    line: Vec<u8>,
    /// The chunk's records, each followed by `\n`, and where each starts and on which line.
    chunk: Vec<u8>,
    starts: Vec<usize>,
    lines: Vec<u64>,
    pending_error: Option<ConnectorError>,
    finished: bool,
}

impl JsonFileReader {
    pub(crate) fn open(
        path: &Path,
        schema: SchemaRef,
        policy: MalformedPolicy,
        batch_rows_max: usize,
    ) -> Result<Self> {
        let file = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
        let decode_schema = decode_schema(&schema);
        Ok(Self {
            input: BufReader::new(file),
            file: path.display().to_string(),
            schema,
            decode_schema,
            policy,
            batch_rows_max,
            line_number: 0,
            line: Vec::new(),
            chunk: Vec::new(),
            starts: Vec::new(),
            lines: Vec::new(),
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
            self.read_lines()?;
            if self.starts.is_empty() {
                continue;
            }
            let batch = self.decode_chunk()?;
            if batch.num_rows() > 0 {
                return Ok(Some(batch));
            }
        }
    }

    /// Fills the chunk with up to `batch_rows_max` non-blank lines.
    fn read_lines(&mut self) -> Result<()> {
        self.chunk.clear();
        self.starts.clear();
        self.lines.clear();
        while self.starts.len() < self.batch_rows_max {
            self.line.clear();
            let read = self
                .input
                .read_until(b'\n', &mut self.line)
                .map_err(|e| ConnectorError::io(&self.file, e))?;
            if read == 0 {
                self.finished = true;
                break;
            }
            self.line_number += 1;
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.starts.push(self.chunk.len());
            self.lines.push(self.line_number);
            self.chunk.extend_from_slice(&self.line);
            if self.chunk.last() != Some(&b'\n') {
                self.chunk.push(b'\n');
            }
        }
        Ok(())
    }

    /// The bytes of chunk record `index`.
    fn record(&self, index: usize) -> &[u8] {
        let end = self
            .starts
            .get(index + 1)
            .copied()
            .unwrap_or(self.chunk.len());
        &self.chunk[self.starts[index]..end]
    }

    /// Decodes the chunk, line by line if decoding it whole fails, and applies the policy.
    fn decode_chunk(&mut self) -> Result<RecordBatch> {
        let (decoded, good_lines, mut problems) = match self.decode_all()? {
            Some(batch) => (batch, self.lines.clone(), Vec::new()),
            None => self.decode_line_by_line()?,
        };
        let (columns, bad_values) = convert_columns(&self.schema, decoded.columns())?;
        problems.extend(bad_values.into_iter().map(|bad| Problem {
            line: good_lines[bad.row],
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

    /// The whole chunk in one decode, or `None` if any line is bad.
    fn decode_all(&self) -> Result<Option<RecordBatch>> {
        let mut decoder = new_decoder(Arc::clone(&self.decode_schema), self.batch_rows_max)?;
        let Ok(consumed) = decoder.decode(&self.chunk) else {
            return Ok(None);
        };
        if consumed != self.chunk.len() || decoder.has_partial_record() {
            return Ok(None);
        }
        match decoder.flush() {
            Ok(Some(batch)) if batch.num_rows() == self.starts.len() => Ok(Some(batch)),
            _ => Ok(None),
        }
    }

    /// Decodes each line alone to find the bad ones, then the good ones together. Returns
    /// the batch, the line of each of its rows, and the problems of the bad lines.
    fn decode_line_by_line(&self) -> Result<(RecordBatch, Vec<u64>, Vec<Problem>)> {
        let mut good = Vec::with_capacity(self.starts.len());
        let mut good_lines = Vec::with_capacity(self.starts.len());
        let mut problems = Vec::new();
        for index in 0..self.starts.len() {
            let record = self.record(index);
            if decodes_alone(&self.decode_schema, record)? {
                good.extend_from_slice(record);
                good_lines.push(self.lines[index]);
            } else {
                let (column, message) = diagnose(&self.decode_schema, &self.schema, record)?;
                problems.push(Problem {
                    line: self.lines[index],
                    rows_before: good_lines.len(),
                    in_batch: false,
                    column,
                    message,
                });
                if self.policy.stops_at_first() {
                    break;
                }
            }
        }
        let mut decoder = new_decoder(Arc::clone(&self.decode_schema), self.batch_rows_max)?;
        decoder
            .decode(&good)
            .map_err(|e| internal(&self.file, &e))?;
        let batch = decoder
            .flush()
            .map_err(|e| internal(&self.file, &e))?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.decode_schema)));
        if batch.num_rows() != good_lines.len() {
            return Err(internal(
                &self.file,
                &format!(
                    "{} good lines decoded into {} rows",
                    good_lines.len(),
                    batch.num_rows()
                ),
            ));
        }
        Ok((batch, good_lines, problems))
    }
}

/// Whether `record` (one line) decodes into exactly one row of `schema`.
fn decodes_alone(schema: &SchemaRef, record: &[u8]) -> Result<bool> {
    let mut decoder = new_decoder(Arc::clone(schema), 1)?;
    let Ok(consumed) = decoder.decode(record) else {
        return Ok(false);
    };
    if consumed != record.len() || decoder.has_partial_record() {
        return Ok(false);
    }
    Ok(matches!(decoder.flush(), Ok(Some(batch)) if batch.num_rows() == 1))
}

/// Explains why a line does not decode: invalid JSON, not an object, or the first column
/// whose value does not fit its type.
fn diagnose(
    decode_schema: &SchemaRef,
    schema: &Schema,
    record: &[u8],
) -> Result<(Option<String>, String)> {
    let line = record.trim_ascii_end();
    let value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => {
            let text = e.to_string();
            let reason = text.split(" at line ").next().unwrap_or(&text);
            return Ok((
                None,
                format!("invalid JSON: {reason} at character {}", e.column()),
            ));
        }
    };
    let serde_json::Value::Object(object) = value else {
        return Ok((None, format!("expected a JSON object, found {value}")));
    };
    for (decode_field, field) in decode_schema.fields().iter().zip(schema.fields()) {
        let single = Arc::new(Schema::new(vec![decode_field.as_ref().clone()]));
        if !decodes_alone(&single, record)? {
            let shown = match object.get(field.name()) {
                Some(serde_json::Value::String(text)) => quote(text),
                Some(other) => other.to_string(),
                None => "a missing value".to_owned(),
            };
            return Ok((
                Some(field.name().clone()),
                format!("cannot parse {shown} as {}", field.data_type()),
            ));
        }
    }
    Ok((None, "the line does not decode as one record".to_owned()))
}

fn internal(file: &str, error: &dyn std::fmt::Display) -> ConnectorError {
    ConnectorError::Internal {
        connector: "FILE source".to_owned(),
        message: format!("assembling a batch from {file}: {error}"),
    }
}
