//! `CREATE TABLE ... FROM FILE (...)`: a reference table's first rows, read from a file
//! when the table is created (then kept current by `INSERT`). The whole file is read and
//! checked before the table exists, so a missing file, a malformed record or a row without
//! its key fails the statement and leaves nothing behind. Rows with the same key upsert in
//! file order: the last one stays. A reopened database restores the table's rows from its
//! checkpoint and log and does not read the file again.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use laminar_connectors::{create_source, ConnectorOptions, SourceEvent, SourceMetrics};
use laminar_sql::parser::ConnectorSpec;

use crate::error::{DbError, Result};

/// Rows per batch read from the file.
const LOAD_BATCH_ROWS: usize = 8192;

/// Reads every row of table `table`'s file; `key` are the primary key's column indices.
pub(crate) fn read_table_file(
    table: &str,
    spec: &ConnectorSpec,
    schema: &SchemaRef,
    key: &[usize],
) -> Result<Vec<RecordBatch>> {
    let failed = |message: String| DbError::BadBatch {
        source_name: table.to_string(),
        message,
    };
    let metrics = Arc::new(SourceMetrics::default());
    let options = ConnectorOptions::new(spec.options.iter().cloned());
    let connector = create_source(
        &spec.name.to_lowercase(),
        &options,
        Some(Arc::clone(schema)),
        Arc::clone(&metrics),
    )?;
    if !connector.is_bounded() {
        // A file always ends today; a connector that follows its input never would.
        return Err(failed(
            "a table loads its file once, at creation; this source would never end".into(),
        ));
    }
    let mut reader = connector.open(LOAD_BATCH_ROWS)?;
    let mut batches = Vec::new();
    while let Some(event) = reader.next_event()? {
        if let SourceEvent::Batch(batch) = event {
            batches.push(batch.batch);
        }
    }
    // A table's rows are looked up by key: a record the file connector would skip is an
    // error here, not a silently missing row.
    if metrics.records_malformed() > 0 {
        return Err(failed(format!(
            "{} malformed record(s) in its file, the first: {}",
            metrics.records_malformed(),
            metrics.first_error().unwrap_or_default()
        )));
    }
    for batch in &batches {
        for &column in key {
            if batch.column(column).null_count() > 0 {
                return Err(failed(format!(
                    "PRIMARY KEY column {} is NULL in a row of its file",
                    schema.field(column).name()
                )));
            }
        }
    }
    Ok(batches)
}
