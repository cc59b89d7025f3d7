//! `SourceHandle`: pushing rows into a source from the application, as Arrow batches or as
//! `serde::Serialize` rows. Every batch is checked against the source's schema first, so a
//! wrong column or type is an error naming it and nothing reaches the engine half-checked.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use laminar_core::runtime::IngressHandle;
use laminar_sql::types::sql_type_name;
use serde::Serialize;

use crate::durability::{InputGate, RecordKind, SourceLog};
use crate::error::{DbError, Result};

/// Pushes rows into one source. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct SourceHandle {
    name: String,
    schema: SchemaRef,
    ingress: Arc<IngressHandle>,
    /// With a data directory: the source's log, and the gate checkpoints close.
    durable: Option<(Arc<InputGate>, Option<Arc<SourceLog>>)>,
}

impl SourceHandle {
    pub(crate) fn new(
        name: String,
        schema: SchemaRef,
        ingress: Arc<IngressHandle>,
        durable: Option<(Arc<InputGate>, Option<Arc<SourceLog>>)>,
    ) -> Self {
        Self {
            name,
            schema,
            ingress,
            durable,
        }
    }

    /// Logs `batch` (durable under the database's durability mode) and hands it to the
    /// workers, as one step a checkpoint never splits.
    fn push_logged(&self, batch: RecordBatch) -> Result<()> {
        let Some((gate, wal)) = &self.durable else {
            self.ingress.push(batch)?;
            return Ok(());
        };
        let _entered = gate.enter();
        if let Some(wal) = wal {
            wal.append(RecordKind::Push, &batch)?;
        }
        self.ingress.push(batch)?;
        Ok(())
    }

    /// The number of pushes (and `INSERT`s) the source's log holds since it was created:
    /// after a reopen, an application resumes pushing after this many. 0 without a log.
    pub fn logged_pushes(&self) -> u64 {
        self.durable
            .as_ref()
            .and_then(|(_, wal)| wal.as_ref())
            .map_or(0, |wal| wal.pushes())
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Pushes a batch, waiting while the engine's input queue is full (backpressure).
    /// Columns are matched by name; a missing nullable column is filled with NULLs.
    pub fn push(&self, batch: RecordBatch) -> Result<()> {
        let batch = conform_batch(&self.name, &self.schema, batch)?;
        self.push_logged(batch)
    }

    /// Pushes a batch without waiting: fails with a `Full` error when the queue is full.
    pub fn try_push(&self, batch: RecordBatch) -> Result<()> {
        let batch = conform_batch(&self.name, &self.schema, batch)?;
        let Some((gate, wal)) = &self.durable else {
            self.ingress.try_push(batch)?;
            return Ok(());
        };
        let _entered = gate.enter();
        // Logged only once accepted: a refused batch must not come back on recovery.
        self.ingress.try_push(batch.clone())?;
        if let Some(wal) = wal {
            wal.append(RecordKind::Push, &batch)?;
        }
        Ok(())
    }

    /// Pushes typed rows (structs whose field names are the source's columns).
    /// Timestamps are given as epoch values in the column's unit or as RFC 3339 strings.
    pub fn push_rows<T: Serialize>(&self, rows: &[T]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let bad = |message: String| DbError::BadBatch {
            source_name: self.name.clone(),
            message,
        };
        let mut decoder = arrow_json::ReaderBuilder::new(self.schema.clone())
            .with_batch_size(rows.len())
            .build_decoder()
            .map_err(|e| bad(e.to_string()))?;
        decoder.serialize(rows).map_err(|e| bad(e.to_string()))?;
        let Some(batch) = decoder.flush().map_err(|e| bad(e.to_string()))? else {
            return Ok(());
        };
        self.push_logged(batch)
    }

    /// Ends the source: no more rows will come, so every query reading it finishes.
    pub fn finish(&self) -> Result<()> {
        // The end of input is input too: a checkpoint's cut never splits it.
        let _entered = self.durable.as_ref().map(|(gate, _)| gate.enter());
        self.ingress.finish()?;
        Ok(())
    }
}

/// Checks `batch` against the source schema and rebuilds it with exactly that schema.
pub(crate) fn conform_batch(
    source: &str,
    schema: &SchemaRef,
    batch: RecordBatch,
) -> Result<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    let bad = |message: String| DbError::BadBatch {
        source_name: source.to_string(),
        message,
    };
    let given = batch.schema();
    for field in given.fields() {
        if schema.field_with_name(field.name()).is_err() {
            let declared: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(bad(format!(
                "the batch has column '{}', which the source does not declare (columns: {})",
                field.name(),
                declared.join(", ")
            )));
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match given.index_of(field.name()) {
            Ok(index) => {
                let column = batch.column(index);
                if column.data_type() != field.data_type() {
                    return Err(DbError::TypeMismatch {
                        source_name: source.to_string(),
                        column: field.name().clone(),
                        expected: sql_type_name(field.data_type()),
                        actual: sql_type_name(column.data_type()),
                    });
                }
                if !field.is_nullable() && column.null_count() > 0 {
                    return Err(bad(format!(
                        "column {} is NOT NULL but the batch has {} NULL values",
                        field.name(),
                        column.null_count()
                    )));
                }
                columns.push(Arc::clone(column));
            }
            Err(_) if field.is_nullable() => {
                columns.push(new_null_array(field.data_type(), batch.num_rows()));
            }
            Err(_) => {
                return Err(bad(format!(
                    "the batch lacks column {} (declared {} NOT NULL)",
                    field.name(),
                    sql_type_name(field.data_type())
                )))
            }
        }
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
        .map_err(|e| bad(e.to_string()))
}
