//! The encoder of one output file of the FILE sink: creates the file, writes batches as CSV,
//! newline-delimited JSON or Parquet, and finishes it (CSV header of an empty file, JSON
//! flush, Parquet footer). Shared by the single-file output and the part files of a
//! directory, so both write exactly the same bytes for the same rows.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{CsvDialect, FileFormat};
use crate::error::{ConnectorError, Result};

/// The format-specific writer.
enum Writer {
    Csv(Box<arrow_csv::Writer<BufWriter<File>>>),
    Json(arrow_json::LineDelimitedWriter<BufWriter<File>>),
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
}

/// One open output file; see the module documentation.
pub(crate) struct Encoder {
    path: PathBuf,
    format: FileFormat,
    schema: SchemaRef,
    writer: Writer,
    /// Whether a batch (possibly empty) was written: a CSV file without one has no header yet.
    written: bool,
}

impl Encoder {
    /// Creates (or truncates) `path`, with its parent directories, for rows of `schema`.
    pub(crate) fn create(
        path: &Path,
        format: FileFormat,
        dialect: CsvDialect,
        schema: SchemaRef,
    ) -> Result<Self> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                fs::create_dir_all(parent).map_err(|e| ConnectorError::io(parent, e))?;
            }
        }
        let file = File::create(path).map_err(|e| ConnectorError::io(path, e))?;
        let out = BufWriter::new(file);
        let writer = match format {
            FileFormat::Csv => Writer::Csv(Box::new(
                arrow_csv::WriterBuilder::new()
                    .with_header(dialect.header)
                    .with_delimiter(dialect.delimiter)
                    .build(out),
            )),
            FileFormat::Json => Writer::Json(arrow_json::LineDelimitedWriter::new(out)),
            FileFormat::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                let writer = ArrowWriter::try_new(out, schema.clone(), Some(properties))
                    .map_err(|e| format_error(path, format, &e))?;
                Writer::Parquet(Box::new(writer))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            format,
            schema,
            writer,
            written: false,
        })
    }

    /// Encodes `batch`, which has the encoder's schema.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.written = true;
        let result = match &mut self.writer {
            Writer::Csv(writer) => writer.write(batch),
            Writer::Json(writer) => writer.write(batch),
            Writer::Parquet(writer) => writer.write(batch).map_err(Into::into),
        };
        result.map_err(|e| format_error(&self.path, self.format, &e))
    }

    /// Completes the file so that it is valid even without rows (a CSV header only, an
    /// empty JSON file, a Parquet file with no rows) and returns it, flushed to the
    /// operating system but not synced.
    pub(crate) fn finish(mut self) -> Result<File> {
        if !self.written && matches!(self.writer, Writer::Csv(_)) {
            // An empty batch writes just the header, so an empty result is a valid CSV.
            self.write(&RecordBatch::new_empty(self.schema.clone()))?;
        }
        let (path, format) = (self.path, self.format);
        let out = match self.writer {
            Writer::Csv(writer) => writer.into_inner(),
            Writer::Json(mut writer) => {
                writer
                    .finish()
                    .map_err(|e| format_error(&path, format, &e))?;
                writer.into_inner()
            }
            Writer::Parquet(writer) => writer
                .into_inner()
                .map_err(|e| format_error(&path, format, &e))?,
        };
        let mut out = out;
        out.flush().map_err(|e| ConnectorError::io(&path, e))?;
        out.into_inner()
            .map_err(|e| ConnectorError::io(&path, e.into_error()))
    }
}

fn format_error(path: &Path, format: FileFormat, error: &dyn std::fmt::Display) -> ConnectorError {
    ConnectorError::Format {
        path: path.to_path_buf(),
        message: format!("cannot write {}: {error}", format.name()),
    }
}
