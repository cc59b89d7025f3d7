//! The FILE sink connector: writes every batch to one output file at `path` as CSV,
//! newline-delimited JSON or Parquet; a changelog's rows get the `op` column (see
//! `changelog`). The file (and its parent directories) is created on the first write, not at
//! CREATE time, so validating a sink never truncates an existing output; `close` finalizes it
//! (parquet footer) and creates it if nothing was written.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{CsvDialect, FileFormat};
use crate::changelog::{changelog_rows, changelog_schema, ChangeMode};
use crate::error::{ConnectorError, Result};
use crate::options::ConnectorOptions;
use crate::sink::SinkConnector;

/// Connector name used in messages.
const CONNECTOR: &str = "FILE sink";
/// Options the FILE sink accepts.
const OPTIONS: [&str; 4] = ["path", "format", "header", "delimiter"];

/// The open encoder of the output file.
enum Writer {
    Csv(Box<arrow_csv::Writer<BufWriter<File>>>),
    Json(arrow_json::LineDelimitedWriter<BufWriter<File>>),
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
}

/// A FILE sink; see the module documentation.
pub(crate) struct FileSink {
    path: PathBuf,
    format: FileFormat,
    dialect: CsvDialect,
    /// The columns written: the result's, then `op` for a changelog.
    schema: SchemaRef,
    changes: ChangeMode,
    writer: Option<Writer>,
    closed: bool,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("dialect", &self.dialect)
            .field("changes", &self.changes)
            .field("open", &self.writer.is_some())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Validates options and schema without touching the file system.
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
        Ok(Self {
            path: PathBuf::from(path),
            format,
            dialect,
            schema,
            changes,
            writer: None,
            closed: false,
        })
    }

    fn open(&self) -> Result<Writer> {
        if let Some(parent) = self.path.parent() {
            if !parent.as_os_str().is_empty() {
                fs::create_dir_all(parent).map_err(|e| ConnectorError::io(parent, e))?;
            }
        }
        let file = File::create(&self.path).map_err(|e| ConnectorError::io(&self.path, e))?;
        let out = BufWriter::new(file);
        Ok(match self.format {
            FileFormat::Csv => Writer::Csv(Box::new(
                arrow_csv::WriterBuilder::new()
                    .with_header(self.dialect.header)
                    .with_delimiter(self.dialect.delimiter)
                    .build(out),
            )),
            FileFormat::Json => Writer::Json(arrow_json::LineDelimitedWriter::new(out)),
            FileFormat::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                let writer = ArrowWriter::try_new(out, self.schema.clone(), Some(properties))
                    .map_err(|e| self.format_error(&e))?;
                Writer::Parquet(Box::new(writer))
            }
        })
    }

    fn format_error(&self, error: &dyn std::fmt::Display) -> ConnectorError {
        ConnectorError::Format {
            path: self.path.clone(),
            message: format!("cannot write {}: {error}", self.format.name()),
        }
    }

    fn flush(&self, mut out: BufWriter<File>) -> Result<()> {
        out.flush().map_err(|e| ConnectorError::io(&self.path, e))
    }
}

impl SinkConnector for FileSink {
    fn write(&mut self, batch: &RecordBatch, weights: Option<&Int64Array>) -> Result<()> {
        let bug = |message: String| ConnectorError::Internal {
            connector: CONNECTOR.to_owned(),
            message,
        };
        if self.closed {
            return Err(bug(format!("write to {} after close", self.path.display())));
        }
        let changelog;
        let batch = match (self.changes, weights) {
            (ChangeMode::Changelog, _) => {
                changelog = changelog_rows(CONNECTOR, &self.schema, batch, weights)?;
                &changelog
            }
            (ChangeMode::AppendOnly, None) => batch,
            (ChangeMode::AppendOnly, Some(_)) => {
                return Err(bug(format!(
                    "retractions reached {}, created for append-only rows",
                    self.path.display()
                )));
            }
        };
        if self.writer.is_none() {
            self.writer = Some(self.open()?);
        }
        let result = match self.writer.as_mut() {
            Some(Writer::Csv(writer)) => writer.write(batch),
            Some(Writer::Json(writer)) => writer.write(batch),
            Some(Writer::Parquet(writer)) => writer.write(batch).map_err(Into::into),
            None => Ok(()),
        };
        result.map_err(|e| self.format_error(&e))
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let writer = if let Some(writer) = self.writer.take() {
            writer
        } else {
            let mut writer = self.open()?;
            if let Writer::Csv(csv) = &mut writer {
                // An empty batch writes just the header, so an empty result is a valid CSV.
                csv.write(&RecordBatch::new_empty(self.schema.clone()))
                    .map_err(|e| self.format_error(&e))?;
            }
            writer
        };
        match writer {
            Writer::Csv(writer) => self.flush(writer.into_inner()),
            Writer::Json(mut writer) => {
                writer.finish().map_err(|e| self.format_error(&e))?;
                self.flush(writer.into_inner())
            }
            Writer::Parquet(writer) => {
                let out = writer.into_inner().map_err(|e| self.format_error(&e))?;
                self.flush(out)
            }
        }
    }
}
