//! The sink half of the connector SDK: the [`SinkConnector`] trait the engine writes result
//! batches to, and [`create_sink`], which maps a connector name to its implementation.

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::changelog::ChangeMode;
use crate::error::{ConnectorError, Result};
use crate::file::FileSink;
use crate::options::ConnectorOptions;

/// Names accepted by [`create_sink`], for error messages.
const SINK_CONNECTORS: &str = "file";

/// A destination for the rows of a sink. Written from one thread.
pub trait SinkConnector: Send + std::fmt::Debug {
    /// Writes one batch of result rows (the schema the sink was created with) with their
    /// change weights: `None` when every row is an insert, as always for
    /// [`ChangeMode::AppendOnly`].
    fn write(&mut self, batch: &RecordBatch, weights: Option<&Int64Array>) -> Result<()>;
    /// Flushes and finalizes the output (parquet footer etc.). Called once at end of input or shutdown.
    fn close(&mut self) -> Result<()>;
}

/// Creates the sink connector named `connector` (case-insensitive: `file`) for result rows
/// of `schema` arriving as `changes`, validating `options`. Touches no file: output is
/// created on the first write.
pub fn create_sink(
    connector: &str,
    options: &ConnectorOptions,
    schema: SchemaRef,
    changes: ChangeMode,
) -> Result<Box<dyn SinkConnector>> {
    match connector.trim().to_ascii_lowercase().as_str() {
        "file" => Ok(Box::new(FileSink::create(options, schema, changes)?)),
        _ => Err(ConnectorError::UnknownConnector {
            role: "sink",
            name: connector.to_owned(),
            known: SINK_CONNECTORS.to_owned(),
        }),
    }
}
