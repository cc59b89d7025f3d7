//! The FILE connector: a source reading CSV, newline-delimited JSON or Parquet files (one path
//! or a glob), and a sink writing one output file or a directory of part files committed per
//! checkpoint. This module holds the option vocabulary the two share; the reading and
//! writing live in the submodules.

mod csv_reader;
mod encoder;
mod json_reader;
mod malformed;
mod parquet_reader;
mod part_dir;
mod part_sink;
mod parts;
mod paths;
mod resume;
mod sink;
mod source;
mod source_reader;
mod text_columns;

use std::path::Path;

pub(crate) use sink::FileSink;
pub(crate) use source::FileSource;

use crate::error::{ConnectorError, Result};
use crate::options::ConnectorOptions;

/// How a file's bytes encode rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileFormat {
    /// Comma (or `delimiter`) separated values.
    Csv,
    /// One JSON object per line.
    Json,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    const NAMES: [&'static str; 3] = ["csv", "json", "parquet"];

    /// The `format` option, or the format implied by the path's extension when it is absent.
    fn from_options(connector: &str, options: &ConnectorOptions, path: &str) -> Result<Self> {
        if let Some(name) = options.choice(connector, "format", &Self::NAMES)? {
            return Ok(Self::from_name(name));
        }
        let extension = Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("csv") => Ok(Self::Csv),
            Some("json" | "jsonl" | "ndjson") => Ok(Self::Json),
            Some("parquet") => Ok(Self::Parquet),
            _ => Err(ConnectorError::MissingOption {
                connector: connector.to_owned(),
                option: "format".to_owned(),
            }),
        }
    }

    fn from_name(name: &str) -> Self {
        match name {
            "csv" => Self::Csv,
            "json" => Self::Json,
            _ => Self::Parquet,
        }
    }

    /// Lowercase name, as written in the `format` option.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Parquet => "parquet",
        }
    }
}

/// CSV dialect options shared by the source and the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CsvDialect {
    /// Whether the first line is a header (read: skipped; write: emitted).
    pub(crate) header: bool,
    /// Field separator byte.
    pub(crate) delimiter: u8,
}

impl CsvDialect {
    /// Reads `header` and `delimiter`; both are rejected for formats other than CSV.
    fn from_options(
        connector: &str,
        options: &ConnectorOptions,
        format: FileFormat,
    ) -> Result<Self> {
        if format != FileFormat::Csv {
            for key in ["header", "delimiter"] {
                if let Some(value) = options.get(key) {
                    return Err(ConnectorError::invalid_option(
                        connector,
                        key,
                        value,
                        format!(
                            "option '{key}' applies only to format 'csv', not '{}'",
                            format.name()
                        ),
                    ));
                }
            }
        }
        let header = options.bool(connector, "header")?.unwrap_or(true);
        let delimiter = match options.get("delimiter") {
            None => b',',
            Some(raw) => parse_delimiter(raw).ok_or_else(|| {
                ConnectorError::invalid_option(
                    connector,
                    "delimiter",
                    raw,
                    "expected a single ASCII character, or '\\t' for tab",
                )
            })?,
        };
        Ok(Self { header, delimiter })
    }
}

fn parse_delimiter(raw: &str) -> Option<u8> {
    match raw {
        "\\t" | "tab" => Some(b'\t'),
        _ => match raw.as_bytes() {
            [byte] if byte.is_ascii() && *byte != b'\n' && *byte != b'\r' && *byte != b'"' => {
                Some(*byte)
            }
            _ => None,
        },
    }
}

#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod tests;
