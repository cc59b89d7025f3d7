//! Laying state entries out as Arrow columns and reading them back (see [`crate::state`]):
//! building a state batch behind its key column, typed access to the columns of restored
//! batches, and the errors naming the state, part and column a malformed checkpoint broke,
//! so a bad file is refused with a message rather than a panic.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::state::{state_keys, RestoredPart, STATE_KEY_COLUMN};

/// Entries per state batch: a snapshot of a large state is cut into batches of this many
/// entries, so no Arrow array grows past its offset range and the storage layer can stream.
pub(crate) const STATE_BATCH_ENTRIES_MAX: usize = 4096;

/// A state batch: `keys` as [`STATE_KEY_COLUMN`], then `columns` as `(name, values,
/// nullable)`.
pub(crate) fn state_batch(
    keys: BinaryArray,
    columns: Vec<(&str, ArrayRef, bool)>,
) -> DfResult<RecordBatch> {
    let mut fields = Vec::with_capacity(columns.len() + 1);
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len() + 1);
    fields.push(Field::new(STATE_KEY_COLUMN, DataType::Binary, false));
    arrays.push(Arc::new(keys));
    for (name, values, nullable) in columns {
        fields.push(Field::new(name, values.data_type().clone(), nullable));
        arrays.push(values);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// A state batch holding a table's `rows` behind `keys`: the table's columns named by
/// position (`c0`, `c1`, ...), since a table may name one of its own columns `key`.
pub(crate) fn keyed_rows_batch(keys: BinaryArray, rows: &RecordBatch) -> DfResult<RecordBatch> {
    let mut fields = Vec::with_capacity(rows.num_columns() + 1);
    fields.push(Arc::new(Field::new(
        STATE_KEY_COLUMN,
        DataType::Binary,
        false,
    )));
    fields.extend(
        rows.schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(index, f)| Arc::new(f.as_ref().clone().with_name(format!("c{index}")))),
    );
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(rows.num_columns() + 1);
    columns.push(Arc::new(keys));
    columns.extend(rows.columns().iter().cloned());
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Reads the restored entries of one part of one operator's (or table's) state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartReader<'a> {
    /// What the state belongs to, for errors (e.g. `RegularJoin`).
    owner: &'a str,
    /// The part's name.
    part: &'a str,
}

impl<'a> PartReader<'a> {
    pub(crate) fn new(owner: &'a str, part: &'a str) -> Self {
        Self { owner, part }
    }

    /// An error saying what is wrong with this part of the checkpoint.
    pub(crate) fn error(&self, what: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::Execution(format!(
            "checkpoint state of {}, part `{}`: {what}",
            self.owner, self.part
        ))
    }

    /// The batch's key column.
    pub(crate) fn keys<'b>(&self, batch: &'b RecordBatch) -> DfResult<&'b BinaryArray> {
        state_keys(batch).map_err(|e| self.error(e))
    }

    /// The column `name` of `batch`, as `T`.
    pub(crate) fn column<'b, T: Array + 'static>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
    ) -> DfResult<&'b T> {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| self.error(format_args!("column `{name}` is missing")))?;
        column.as_any().downcast_ref::<T>().ok_or_else(|| {
            self.error(format_args!(
                "column `{name}` holds {}, not the type this version writes",
                column.data_type()
            ))
        })
    }

    /// The column `name` of `batch`, as `T`, without NULLs.
    pub(crate) fn required<'b, T: Array + 'static>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
    ) -> DfResult<&'b T> {
        let column = self.column::<T>(batch, name)?;
        if column.null_count() > 0 {
            return Err(self.error(format_args!("column `{name}` holds a NULL")));
        }
        Ok(column)
    }

    /// The table rows of a batch [`keyed_rows_batch`] wrote, as a batch of `schema`.
    pub(crate) fn keyed_rows(
        &self,
        batch: &RecordBatch,
        schema: &SchemaRef,
    ) -> DfResult<RecordBatch> {
        let columns = batch.columns().get(1..).unwrap_or_default().to_vec();
        if columns.len() != schema.fields().len() {
            return Err(self.error(format_args!(
                "rows of {} columns, the table has {}",
                columns.len(),
                schema.fields().len()
            )));
        }
        RecordBatch::try_new(Arc::clone(schema), columns)
            .map_err(|e| self.error(format_args!("rows do not fit the table: {e}")))
    }

    /// The only entry's row of a part that holds one entry (counters, progress).
    pub(crate) fn single<'b>(&self, part: &'b RestoredPart) -> DfResult<Option<&'b RecordBatch>> {
        let mut batches = part.batches.iter().filter(|b| b.num_rows() > 0);
        let batch = batches.next();
        if batch.is_some_and(|b| b.num_rows() > 1) || batches.next().is_some() {
            return Err(self.error("holds more than its one entry"));
        }
        Ok(batch)
    }
}

/// Refuses parts this state never writes: a checkpoint of another operator, or of another
/// version of this one.
pub(crate) fn check_part_names(
    owner: &str,
    parts: &[RestoredPart],
    known: &[&str],
) -> DfResult<()> {
    match parts.iter().find(|p| !known.contains(&p.name.as_str())) {
        Some(part) => Err(DataFusionError::Execution(format!(
            "checkpoint state of {owner} holds a part `{}` it never writes (known: {})",
            part.name,
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// An 8-byte entry key for a sequence number.
pub(crate) fn sequence_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// A 16-byte entry key for an event time and a number unique among equal times.
pub(crate) fn time_sequence_key(time: i64, sequence: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&time.to_be_bytes());
    key[8..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// True when `parts` hold no entry at all: nothing was ever snapshotted, and a fresh
/// instance is the restored state.
pub(crate) fn holds_no_entries(parts: &[RestoredPart]) -> bool {
    parts
        .iter()
        .all(|p| p.batches.iter().all(|b| b.num_rows() == 0))
}
