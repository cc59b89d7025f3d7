//! Streaming Parquet decoding for the FILE source. Each file is read with the arrow record
//! batch reader, projected to the source's columns (matched by name) and cast where the file's
//! type differs but can be cast; a column that is missing or cannot be cast is an error naming
//! the column, the file and both types.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::{can_cast_types, cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use crate::error::{ConnectorError, Result};

/// The arrow schema stored in a parquet file.
pub(crate) fn file_schema(path: &Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format(path, &e))?;
    Ok(Arc::clone(builder.schema()))
}

/// Reads one parquet file as batches of the source's schema.
pub(crate) struct ParquetFileReader {
    reader: ParquetRecordBatchReader,
    path: String,
    schema: SchemaRef,
    /// For each output column: its index in the projected file batch, and the cast to apply.
    plan: Vec<(usize, Option<DataType>)>,
    /// Rows in the file, from its footer.
    rows_total: u64,
}

impl ParquetFileReader {
    /// Opens `path` to read its rows after the first `skip_rows` (which are not decoded).
    pub(crate) fn open(
        path: &Path,
        schema: SchemaRef,
        batch_rows_max: usize,
        skip_rows: u64,
    ) -> Result<Self> {
        let file = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format(path, &e))?;
        let rows_total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let path_text = path.display().to_string();
        let file_schema = Arc::clone(builder.schema());
        let mut file_indices = Vec::with_capacity(schema.fields().len());
        let mut casts = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let index = find_column(&file_schema, field.name()).ok_or_else(|| {
                ConnectorError::ColumnNotFound {
                    column: field.name().clone(),
                    origin: format!("parquet file {path_text}"),
                    available: column_names(&file_schema),
                }
            })?;
            let actual = file_schema.field(index).data_type();
            let cast = if actual == field.data_type() {
                None
            } else if can_cast_types(actual, field.data_type()) {
                Some(field.data_type().clone())
            } else {
                return Err(ConnectorError::ColumnType {
                    column: field.name().clone(),
                    origin: format!("parquet file {path_text}"),
                    declared: field.data_type().to_string(),
                    actual: actual.to_string(),
                });
            };
            file_indices.push(index);
            casts.push(cast);
        }
        // The projected batch holds the selected columns in file order, each once.
        let mut selected = file_indices.clone();
        selected.sort_unstable();
        selected.dedup();
        let plan = file_indices
            .iter()
            .zip(casts)
            // `selected` holds every index, so the search always finds it.
            .map(|(index, cast)| {
                let (Ok(position) | Err(position)) = selected.binary_search(index);
                (position, cast)
            })
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), selected);
        let mut builder = builder
            .with_projection(mask)
            .with_batch_size(batch_rows_max);
        if skip_rows > 0 {
            builder = builder.with_offset(usize::try_from(skip_rows).unwrap_or(usize::MAX));
        }
        let reader = builder.build().map_err(|e| format(path, &e))?;
        Ok(Self {
            reader,
            path: path_text,
            schema,
            plan,
            rows_total,
        })
    }

    /// Rows in the file, skipped ones included.
    pub(crate) fn rows_total(&self) -> u64 {
        self.rows_total
    }

    /// The next batch, `Ok(None)` at end of file.
    pub(crate) fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let Some(read) = self.reader.next() else {
            return Ok(None);
        };
        let batch = read.map_err(|e| format(Path::new(&self.path), &e))?;
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.plan.len());
        for ((index, cast), field) in self.plan.iter().zip(self.schema.fields()) {
            let column = batch.column(*index);
            columns.push(match cast {
                None => Arc::clone(column),
                Some(target) => cast_with_options(column, target, &options).map_err(|e| {
                    ConnectorError::Format {
                        path: self.path.clone().into(),
                        message: format!(
                            "column {}: cannot cast {} to {target}: {e}",
                            field.name(),
                            column.data_type()
                        ),
                    }
                })?,
            });
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map(Some)
            .map_err(|e| format(Path::new(&self.path), &e))
    }
}

/// Index of `name` in `schema`: an exact match, else the only case-insensitive one.
fn find_column(schema: &Schema, name: &str) -> Option<usize> {
    if let Ok(index) = schema.index_of(name) {
        return Some(index);
    }
    let mut matches = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().eq_ignore_ascii_case(name))
        .map(|(i, _)| i);
    let first = matches.next()?;
    matches.next().is_none().then_some(first)
}

fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn format(path: &Path, error: &dyn std::fmt::Display) -> ConnectorError {
    ConnectorError::Format {
        path: path.to_path_buf(),
        message: format!("cannot read parquet: {error}"),
    }
}
