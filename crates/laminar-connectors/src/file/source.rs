//! The FILE source connector: validates its options at CREATE time, and expands `path` when
//! opened, from the start or resuming at a position (`resume` decides which files to read,
//! `source_reader` reads them side by side). Each file is its own partition: its batches
//! keep their order and it has its own watermark, so files written side by side (one per
//! producer) are not late relative to each other.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use super::json_reader::{decode_schema, new_decoder};
use super::malformed::OnError;
use super::parquet_reader::file_schema;
use super::resume::{plan_files, Mismatch, PlannedFile};
use super::source_reader::{FileReading, FileSourceReader};
use super::text_columns::readable_from_text;
use super::{paths, CsvDialect, FileFormat};
use crate::error::{ConnectorError, Result};
use crate::options::ConnectorOptions;
use crate::position::SourcePosition;
use crate::source::{SourceConnector, SourceMetrics, SourceReader, IDLE_TIMEOUT_OPTION};

/// Connector name used in messages.
const CONNECTOR: &str = "FILE source";
/// Options the FILE source accepts.
const OPTIONS: [&str; 7] = [
    "path",
    "format",
    "header",
    "delimiter",
    "on_error",
    "batch_rows",
    IDLE_TIMEOUT_OPTION,
];

/// A validated FILE source.
#[derive(Debug)]
pub(crate) struct FileSource {
    pattern: String,
    format: FileFormat,
    dialect: CsvDialect,
    on_error: OnError,
    /// The `batch_rows` option: at most this many rows per batch.
    batch_rows: Option<usize>,
    schema: SchemaRef,
    metrics: Arc<SourceMetrics>,
}

impl FileSource {
    /// Validates options and schema. Reads the first file only for parquet without declared
    /// columns, whose schema comes from that file.
    pub(crate) fn create(
        options: &ConnectorOptions,
        declared: Option<SchemaRef>,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self> {
        options.check_known(CONNECTOR, &OPTIONS)?;
        let pattern = options.required(CONNECTOR, "path")?.to_owned();
        paths::validate_pattern(CONNECTOR, &pattern)?;
        let format = FileFormat::from_options(CONNECTOR, options, &pattern)?;
        let dialect = CsvDialect::from_options(CONNECTOR, options, format)?;
        let on_error = match options.choice(CONNECTOR, "on_error", &["skip", "fail"])? {
            Some("fail") => OnError::Fail,
            _ => OnError::Skip,
        };
        let batch_rows = options.parse::<usize>(CONNECTOR, "batch_rows")?;
        if batch_rows == Some(0) {
            return Err(ConnectorError::invalid_option(
                CONNECTOR,
                "batch_rows",
                options.get("batch_rows").unwrap_or_default(),
                "expected at least 1",
            ));
        }
        let schema = match (format, declared) {
            (FileFormat::Parquet, Some(schema)) => schema,
            (FileFormat::Parquet, None) => {
                let files = paths::expand(CONNECTOR, &pattern)?;
                let first = files
                    .first()
                    .ok_or_else(|| ConnectorError::NoFilesMatched {
                        pattern: pattern.clone(),
                    })?;
                file_schema(first)?
            }
            (_, None) => {
                return Err(ConnectorError::SchemaRequired {
                    connector: CONNECTOR.to_owned(),
                    detail: format!("format '{}'", format.name()),
                })
            }
            (FileFormat::Csv, Some(schema)) => {
                if let Some(field) = schema
                    .fields()
                    .iter()
                    .find(|f| !readable_from_text(f.data_type()))
                {
                    return Err(unsupported_column(field.name(), field.data_type(), format));
                }
                schema
            }
            (FileFormat::Json, Some(schema)) => {
                for field in schema.fields() {
                    let single =
                        decode_schema(&datafusion::arrow::datatypes::Schema::new(vec![field
                            .as_ref()
                            .clone()]));
                    if new_decoder(single, 1).is_err() {
                        return Err(unsupported_column(field.name(), field.data_type(), format));
                    }
                }
                schema
            }
        };
        Ok(Self {
            pattern,
            format,
            dialect,
            on_error,
            batch_rows,
            schema,
            metrics,
        })
    }
}

fn unsupported_column(
    name: &str,
    data_type: &datafusion::arrow::datatypes::DataType,
    format: FileFormat,
) -> ConnectorError {
    ConnectorError::UnsupportedType {
        column: name.to_owned(),
        data_type: data_type.to_string(),
        format: format.name().to_owned(),
    }
}

impl FileSource {
    /// A reader of `planned` files (in reading order).
    fn reader(&self, batch_rows_max: usize, planned: Vec<PlannedFile>) -> FileSourceReader {
        let batch_rows_max = self
            .batch_rows
            .map_or(batch_rows_max, |rows| rows.min(batch_rows_max));
        FileSourceReader::new(
            FileReading {
                origin: self.pattern.clone(),
                format: self.format,
                dialect: self.dialect,
                on_error: self.on_error,
                schema: Arc::clone(&self.schema),
                metrics: Arc::clone(&self.metrics),
                batch_rows_max: batch_rows_max.max(1),
            },
            planned,
        )
    }

    /// The error for a position that does not fit the files matching the path.
    fn mismatch(&self, mismatch: Mismatch) -> ConnectorError {
        ConnectorError::ResumeImpossible {
            connector: CONNECTOR.to_owned(),
            origin: self.pattern.clone(),
            partition: mismatch.file,
            reason: mismatch.reason,
        }
    }
}

impl SourceConnector for FileSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn open(&self, batch_rows_max: usize) -> Result<Box<dyn SourceReader>> {
        let files = paths::expand(CONNECTOR, &self.pattern)?;
        let planned = plan_files(&files, &SourcePosition::new()).map_err(|m| self.mismatch(m))?;
        Ok(Box::new(self.reader(batch_rows_max, planned)))
    }

    /// Resumes at `position`. The files that were open (at most `FILES_OPEN_MAX`) are
    /// opened and skipped here, so that a file that is gone or shorter than the rows taken
    /// from it is an error now; files ended before the position are only checked to exist.
    fn open_at(
        &self,
        batch_rows_max: usize,
        position: &SourcePosition,
    ) -> Result<Box<dyn SourceReader>> {
        let files = paths::expand_any(CONNECTOR, &self.pattern)?;
        if files.is_empty() && position.partitions().next().is_none() {
            return Err(ConnectorError::NoFilesMatched {
                pattern: self.pattern.clone(),
            });
        }
        let planned = plan_files(&files, position).map_err(|m| self.mismatch(m))?;
        let mut reader = self.reader(batch_rows_max, planned);
        reader.start()?;
        Ok(Box::new(reader))
    }
}
