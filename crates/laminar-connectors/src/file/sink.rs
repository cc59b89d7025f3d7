//! The FILE sink connector: writes result rows as CSV, newline-delimited JSON or Parquet; a
//! changelog's rows get the `op` column (see `changelog`). Two outputs:
//!
//! - a **directory** (`path` ends with `/`): one part file per committed epoch
//!   (`part_sink`), exactly once across checkpoints and crashes. The option's text alone
//!   decides, not what exists on disk, so a sink's meaning never changes between runs;
//! - a **single file**: rows are written as they come and the file is finalized on close.
//!   It cannot be committed per epoch (a Parquet file cannot be appended to, and rolling a
//!   text file back would need a log of its committed lengths), so a transactional database
//!   gets an error asking for a directory.
//!
//! Nothing is created at CREATE time, so validating a sink never truncates an existing
//! output: the file or directory is created on the first write, or on close.

use std::path::{PathBuf, MAIN_SEPARATOR};

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::encoder::Encoder;
use super::part_sink::PartSink;
use super::{CsvDialect, FileFormat};
use crate::changelog::{changelog_rows, changelog_schema, ChangeMode};
use crate::error::{ConnectorError, Result};
use crate::options::ConnectorOptions;
use crate::sink::SinkConnector;

/// Connector name used in messages.
const CONNECTOR: &str = "FILE sink";
/// Options the FILE sink accepts.
const OPTIONS: [&str; 4] = ["path", "format", "header", "delimiter"];

/// Where the rows go.
enum Output {
    /// One file, and its encoder once the first batch arrived.
    File {
        encoder: Option<Encoder>,
        closed: bool,
    },
    /// A directory of part files.
    Directory(PartSink),
}

/// A FILE sink; see the module documentation.
pub(crate) struct FileSink {
    path: PathBuf,
    format: FileFormat,
    dialect: CsvDialect,
    /// The columns written: the result's, then `op` for a changelog.
    schema: SchemaRef,
    changes: ChangeMode,
    output: Output,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let output = match &self.output {
            Output::File { encoder, closed } => {
                format!("file (open: {}, closed: {closed})", encoder.is_some())
            }
            Output::Directory(parts) => format!("directory ({})", parts.describe()),
        };
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("dialect", &self.dialect)
            .field("changes", &self.changes)
            .field("output", &output)
            .finish_non_exhaustive()
    }
}

/// The error for exactly-once output asked of a single-file sink.
fn single_file_refusal(path: &std::path::Path) -> ConnectorError {
    let path = path.display();
    ConnectorError::Unsupported {
        connector: CONNECTOR.to_owned(),
        feature: format!(
            "exactly-once output to the single file '{path}', which a database with a data \
             directory needs; give a directory path ending in '/' (e.g. '{path}/') to write \
             one part file per checkpoint"
        ),
    }
}

/// Whether the sink `path` names a directory: it ends with a path separator.
fn is_directory(path: &str) -> bool {
    path.ends_with('/') || path.ends_with(MAIN_SEPARATOR)
}

impl FileSink {
    /// Validates options and schema without creating anything.
    pub(crate) fn create(
        options: &ConnectorOptions,
        schema: SchemaRef,
        changes: ChangeMode,
    ) -> Result<Self> {
        options.check_known(CONNECTOR, &OPTIONS)?;
        let path = options.required(CONNECTOR, "path")?;
        let format = FileFormat::from_options(CONNECTOR, options, path)?;
        let dialect = CsvDialect::from_options(CONNECTOR, options, format)?;
        if format == FileFormat::Csv {
            if let Some(field) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
                return Err(ConnectorError::UnsupportedType {
                    column: field.name().clone(),
                    data_type: field.data_type().to_string(),
                    format: format.name().to_owned(),
                });
            }
        }
        let schema = match changes {
            ChangeMode::AppendOnly => schema,
            ChangeMode::Changelog => changelog_schema(CONNECTOR, &schema)?,
        };
        let output = if is_directory(path) {
            Output::Directory(PartSink::new(
                PathBuf::from(path),
                format,
                dialect,
                schema.clone(),
            ))
        } else {
            Output::File {
                encoder: None,
                closed: false,
            }
        };
        Ok(Self {
            path: PathBuf::from(path),
            format,
            dialect,
            schema,
            changes,
            output,
        })
    }

    /// The directory output, or the error telling a transactional database to use one.
    fn parts(&mut self) -> Result<&mut PartSink> {
        match &mut self.output {
            Output::Directory(parts) => Ok(parts),
            Output::File { .. } => Err(single_file_refusal(&self.path)),
        }
    }

    /// `batch` as the rows the output holds: with `op` for a changelog.
    fn output_rows(
        &self,
        batch: &RecordBatch,
        weights: Option<&Int64Array>,
    ) -> Result<Option<RecordBatch>> {
        match (self.changes, weights) {
            (ChangeMode::Changelog, _) => {
                changelog_rows(CONNECTOR, &self.schema, batch, weights).map(Some)
            }
            (ChangeMode::AppendOnly, None) => Ok(None),
            (ChangeMode::AppendOnly, Some(_)) => Err(ConnectorError::Internal {
                connector: CONNECTOR.to_owned(),
                message: format!(
                    "retractions reached {}, created for append-only rows",
                    self.path.display()
                ),
            }),
        }
    }
}

impl SinkConnector for FileSink {
    fn write(&mut self, batch: &RecordBatch, weights: Option<&Int64Array>) -> Result<()> {
        let converted = self.output_rows(batch, weights)?;
        let batch = converted.as_ref().unwrap_or(batch);
        match &mut self.output {
            Output::Directory(parts) => parts.write(batch),
            Output::File { closed: true, .. } => Err(ConnectorError::Internal {
                connector: CONNECTOR.to_owned(),
                message: format!("write to {} after close", self.path.display()),
            }),
            Output::File { encoder, .. } => {
                if encoder.is_none() {
                    *encoder = Some(Encoder::create(
                        &self.path,
                        self.format,
                        self.dialect,
                        self.schema.clone(),
                    )?);
                }
                match encoder.as_mut() {
                    Some(encoder) => encoder.write(batch),
                    None => Ok(()),
                }
            }
        }
    }

    fn close(&mut self) -> Result<()> {
        match &mut self.output {
            Output::Directory(parts) => parts.close(),
            Output::File { closed: true, .. } => Ok(()),
            Output::File { encoder, closed } => {
                *closed = true;
                let encoder = match encoder.take() {
                    Some(encoder) => encoder,
                    None => {
                        Encoder::create(&self.path, self.format, self.dialect, self.schema.clone())?
                    }
                };
                encoder.finish().map(drop)
            }
        }
    }

    fn begin_epoch(&mut self, epoch: u64) -> Result<()> {
        self.parts()?.begin_epoch(epoch)
    }

    fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value> {
        self.parts()?.pre_commit(epoch)
    }

    fn commit(&mut self, epoch: u64, handle: &serde_json::Value) -> Result<()> {
        self.parts()?.commit(epoch, handle)
    }

    fn abort(&mut self, epoch: u64) -> Result<()> {
        self.parts()?.abort(epoch)
    }

    fn check_exactly_once(&self) -> Result<()> {
        match &self.output {
            Output::Directory(_) => Ok(()),
            Output::File { .. } => Err(single_file_refusal(&self.path)),
        }
    }

    fn recover(&mut self, committed: Option<(u64, &serde_json::Value)>) -> Result<()> {
        self.parts()?.recover(committed)
    }
}
