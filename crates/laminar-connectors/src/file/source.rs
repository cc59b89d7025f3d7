//! The FILE source connector: validates its options at CREATE time, expands `path` when opened,
//! and reads the matching files side by side, a batch of each in turn (up to
//! [`FILES_OPEN_MAX`] at once, in sorted path order). Each file is its own partition: its
//! batches keep their order and it has its own watermark, so files written side by side (one
//! per producer) are not late relative to each other.

use std::collections::VecDeque;
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
use crate::source::{
    SourceBatch, SourceConnector, SourceEvent, SourceMetrics, SourceReader, IDLE_TIMEOUT_OPTION,
};

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
/// Files read at once. Each holds a reader's buffers, and the source's watermark waits for
/// the slowest of them; a file further in path order opens when one of these ends.
pub(crate) const FILES_OPEN_MAX: usize = 16;

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

impl SourceConnector for FileSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn open(&self, batch_rows_max: usize) -> Result<Box<dyn SourceReader>> {
        let files = paths::expand(CONNECTOR, &self.pattern)?;
        let batch_rows_max = self
            .batch_rows
            .map_or(batch_rows_max, |rows| rows.min(batch_rows_max));
        Ok(Box::new(FileSourceReader {
            files,
            next_file: 0,
            open: Vec::new(),
            turn: 0,
            pending: VecDeque::new(),
            started: false,
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

/// Reads the matched files side by side; the partition of a batch is its file's index.
struct FileSourceReader {
    files: Vec<PathBuf>,
    next_file: usize,
    /// The files being read, each with its partition, in the order they take turns.
    open: Vec<(u32, FileReader)>,
    /// Index in `open` of the file whose turn it is.
    turn: usize,
    /// Partitions opened and ended, to report before the next batch.
    pending: VecDeque<SourceEvent>,
    started: bool,
    format: FileFormat,
    dialect: CsvDialect,
    on_error: OnError,
    schema: SchemaRef,
    metrics: Arc<SourceMetrics>,
    batch_rows_max: usize,
}

impl FileSourceReader {
    /// Opens files in path order until `FILES_OPEN_MAX` are open or none is left, reporting
    /// each as an opened partition.
    fn open_files(&mut self) -> Result<()> {
        while self.open.len() < FILES_OPEN_MAX {
            let Some(path) = self.files.get(self.next_file) else {
                return Ok(());
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
            self.open.push((partition, reader));
            self.pending
                .push_back(SourceEvent::PartitionOpened(partition));
        }
        Ok(())
    }
}

impl SourceReader for FileSourceReader {
    fn next_event(&mut self) -> Result<Option<SourceEvent>> {
        if !self.started {
            self.started = true;
            self.open_files()?;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.open.is_empty() {
                return Ok(None);
            }
            if self.turn >= self.open.len() {
                self.turn = 0;
            }
            let (partition, reader) = &mut self.open[self.turn];
            let partition = *partition;
            if let Some(batch) = reader.next_batch()? {
                self.turn += 1;
                return Ok(Some(SourceEvent::Batch(SourceBatch { partition, batch })));
            }
            // The next file in turn moves into this index; a newly opened one takes its
            // turn last.
            self.open.remove(self.turn);
            self.pending
                .push_back(SourceEvent::PartitionEnded(partition));
            self.open_files()?;
        }
    }
}
