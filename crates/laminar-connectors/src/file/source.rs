//! The FILE source connector: validates its options at CREATE time, expands `path` when opened,
//! and reads the matching files one after another in sorted order, each file being its own
//! partition (so its batches keep their order).

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::csv_reader::CsvFileReader;
use super::json_reader::{decode_schema, new_decoder, JsonFileReader};
use super::malformed::{MalformedPolicy, OnError};
use super::parquet_reader::{file_schema, ParquetFileReader};
use super::text_columns::readable_from_text;
use super::{paths, CsvDialect, FileFormat};
use crate::error::{ConnectorError, Result};
use crate::options::ConnectorOptions;
use crate::source::{SourceBatch, SourceConnector, SourceMetrics, SourceReader};

/// Connector name used in messages.
const CONNECTOR: &str = "FILE source";
/// Options the FILE source accepts.
const OPTIONS: [&str; 5] = ["path", "format", "header", "delimiter", "on_error"];

/// A validated FILE source.
#[derive(Debug)]
pub(crate) struct FileSource {
    pattern: String,
    format: FileFormat,
    dialect: CsvDialect,
    on_error: OnError,
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

impl SourceConnector for FileSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn open(&self, batch_rows_max: usize) -> Result<Box<dyn SourceReader>> {
        let files = paths::expand(CONNECTOR, &self.pattern)?;
        Ok(Box::new(FileSourceReader {
            files,
            next_file: 0,
            current: None,
            format: self.format,
            dialect: self.dialect,
            on_error: self.on_error,
            schema: Arc::clone(&self.schema),
            metrics: Arc::clone(&self.metrics),
            batch_rows_max: batch_rows_max.max(1),
        }))
    }
}

/// The reader of one open file, whatever its format.
enum FileReader {
    Csv(CsvFileReader),
    Json(JsonFileReader),
    Parquet(ParquetFileReader),
}

impl FileReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        match self {
            Self::Csv(reader) => reader.next_batch(),
            Self::Json(reader) => reader.next_batch(),
            Self::Parquet(reader) => reader.next_batch(),
        }
    }
}

/// Reads the matched files in order; the partition of a batch is its file's index.
struct FileSourceReader {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<(u32, FileReader)>,
    format: FileFormat,
    dialect: CsvDialect,
    on_error: OnError,
    schema: SchemaRef,
    metrics: Arc<SourceMetrics>,
    batch_rows_max: usize,
}

impl FileSourceReader {
    fn open_next(&mut self) -> Result<Option<(u32, FileReader)>> {
        let Some(path) = self.files.get(self.next_file) else {
            return Ok(None);
        };
        let partition = u32::try_from(self.next_file).unwrap_or(u32::MAX);
        self.next_file += 1;
        let schema = Arc::clone(&self.schema);
        let policy = MalformedPolicy::new(
            path.display().to_string(),
            self.on_error,
            Arc::clone(&self.metrics),
        );
        let reader = match self.format {
            FileFormat::Csv => FileReader::Csv(CsvFileReader::open(
                path,
                schema,
                self.dialect,
                policy,
                self.batch_rows_max,
            )?),
            FileFormat::Json => FileReader::Json(JsonFileReader::open(
                path,
                schema,
                policy,
                self.batch_rows_max,
            )?),
            FileFormat::Parquet => {
                FileReader::Parquet(ParquetFileReader::open(path, schema, self.batch_rows_max)?)
            }
        };
        Ok(Some((partition, reader)))
    }
}

impl SourceReader for FileSourceReader {
    fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        loop {
            if self.current.is_none() {
                self.current = self.open_next()?;
            }
            let Some((partition, reader)) = self.current.as_mut() else {
                return Ok(None);
            };
            match reader.next_batch()? {
                Some(batch) => {
                    return Ok(Some(SourceBatch {
                        partition: *partition,
                        batch,
                    }))
                }
                None => self.current = None,
            }
        }
    }
}
