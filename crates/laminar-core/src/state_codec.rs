//! Laying state entries out as Arrow columns and reading them back (see [`crate::state`]),
//! for every operator and table that snapshots: building a state batch behind its key
//! column, the one-row part of an operator's counters, typed access to the columns of
//! restored batches, and [`StateError`], which names the state, part and column a malformed
//! checkpoint broke, so a bad file is refused with a message rather than a panic.

use std::fmt::Display;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, Int64Array, LargeListArray, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::state::{restored_part, state_keys, RestoredPart, StatePart, STATE_KEY_COLUMN};

/// Entries per state batch: a snapshot of a large state is cut into batches of this many
/// entries, so no Arrow array grows past its offset range and the storage layer can stream.
pub(crate) const STATE_BATCH_ENTRIES_MAX: usize = 4096;

/// Name of the one-row part holding an operator's counters.
pub(crate) const COUNTERS_PART: &str = "counters";

/// A checkpoint's state does not fit the operator or table it is restored into: written by
/// another version, for another query, or damaged past its checksum.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    /// A part the state always writes is missing.
    #[error("checkpoint state of {owner}: part `{part}` is missing")]
    MissingPart {
        /// What the state belongs to (e.g. `RegularJoin`, `table t`).
        owner: String,
        /// The missing part.
        part: String,
    },
    /// A part the state never writes.
    #[error("checkpoint state of {owner} holds a part `{part}` it never writes (known: {known})")]
    UnknownPart {
        /// What the state belongs to.
        owner: String,
        /// The unexpected part.
        part: String,
        /// The parts this version writes, comma-separated.
        known: String,
    },
    /// A column is missing, of another type, or holds a NULL where none is written.
    #[error("checkpoint state of {owner}, part `{part}`: column `{column}` {problem}")]
    Column {
        /// What the state belongs to.
        owner: String,
        /// The part read.
        part: String,
        /// The column.
        column: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A value breaks a rule of the state's encoding.
    #[error("checkpoint state of {owner}, part `{part}`: {problem}")]
    Malformed {
        /// What the state belongs to.
        owner: String,
        /// The part read.
        part: String,
        /// What is wrong.
        problem: String,
    },
}

impl From<StateError> for DataFusionError {
    fn from(error: StateError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}

/// A column of a state batch: its name, values, and whether its field is nullable.
pub(crate) type StateColumn<N = String> = (N, ArrayRef, bool);

/// A state batch: `keys` as [`STATE_KEY_COLUMN`], then `columns`.
pub(crate) fn state_batch<N: Into<String>>(
    keys: BinaryArray,
    columns: Vec<StateColumn<N>>,
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
    // The table's own fields renamed, so their types, nullability and metadata stay.
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

/// `array` as the one value of a one-row list column, without copying it.
pub(crate) fn single_row_list(array: ArrayRef) -> ArrayRef {
    Arc::new(SingleRowListArrayBuilder::new(array).build_large_list_array())
}

/// Refuses parts this state never writes: a checkpoint of another operator, or of another
/// version of this one.
pub(crate) fn check_part_names(
    owner: &str,
    parts: &[RestoredPart],
    known: &[&str],
) -> DfResult<()> {
    match parts.iter().find(|p| !known.contains(&p.name.as_str())) {
        Some(part) => Err(StateError::UnknownPart {
            owner: owner.to_string(),
            part: part.name.clone(),
            known: known.join(", "),
        }
        .into()),
        None => Ok(()),
    }
}

/// True when `parts` hold no entry at all: nothing was ever snapshotted, and a fresh
/// instance is the restored state.
pub(crate) fn holds_no_entries(parts: &[RestoredPart]) -> bool {
    parts
        .iter()
        .all(|p| p.batches.iter().all(|b| b.num_rows() == 0))
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

/// The one-row part of an operator's counters, as named nullable `Int64` columns.
pub(crate) fn counters_part(counters: &[(&str, i64)]) -> DfResult<StatePart> {
    let columns = counters
        .iter()
        .map(|&(name, value)| {
            let column: ArrayRef = Arc::new(Int64Array::from(vec![value]));
            (name, column, true)
        })
        .collect();
    let keys = BinaryArray::from_iter_values([COUNTERS_PART.as_bytes()]);
    Ok(StatePart::new(
        COUNTERS_PART,
        vec![state_batch(keys, columns)?],
    ))
}

/// The restored counters of an operator (written by [`counters_part`]).
pub(crate) struct Counters<'a> {
    reader: PartReader<'a>,
    batch: &'a RecordBatch,
}

impl<'a> Counters<'a> {
    /// Checks that every part among `parts` is one of `known`, and reads the counters: `None`
    /// when nothing was restored at all, an error when entries were restored without them.
    pub(crate) fn restore(
        owner: &'a str,
        parts: &'a [RestoredPart],
        known: &[&str],
    ) -> DfResult<Option<Self>> {
        check_part_names(owner, parts, known)?;
        if holds_no_entries(parts) {
            return Ok(None);
        }
        let reader = PartReader::new(owner, COUNTERS_PART);
        let batch = match restored_part(parts, COUNTERS_PART) {
            Some(part) => reader.single(part)?,
            None => None,
        };
        match batch {
            Some(batch) => Ok(Some(Self { reader, batch })),
            None => Err(reader.missing()),
        }
    }

    /// The counter `name`.
    pub(crate) fn get(&self, name: &str) -> DfResult<i64> {
        Ok(self
            .reader
            .required::<Int64Array>(self.batch, name)?
            .value(0))
    }
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
    pub(crate) fn malformed(&self, problem: impl Display) -> DataFusionError {
        StateError::Malformed {
            owner: self.owner.to_string(),
            part: self.part.to_string(),
            problem: problem.to_string(),
        }
        .into()
    }

    /// An error saying this part, which the state always writes, is missing.
    pub(crate) fn missing(&self) -> DataFusionError {
        StateError::MissingPart {
            owner: self.owner.to_string(),
            part: self.part.to_string(),
        }
        .into()
    }

    /// An error saying what is wrong with the column `column` of this part.
    pub(crate) fn column_error(&self, column: &str, problem: impl Display) -> DataFusionError {
        StateError::Column {
            owner: self.owner.to_string(),
            part: self.part.to_string(),
            column: column.to_string(),
            problem: problem.to_string(),
        }
        .into()
    }

    /// The batch's key column.
    pub(crate) fn keys<'b>(&self, batch: &'b RecordBatch) -> DfResult<&'b BinaryArray> {
        state_keys(batch).map_err(|e| self.malformed(e))
    }

    /// The column `name` of `batch`, of any type.
    pub(crate) fn array<'b>(&self, batch: &'b RecordBatch, name: &str) -> DfResult<&'b ArrayRef> {
        batch
            .column_by_name(name)
            .ok_or_else(|| self.column_error(name, "is missing"))
    }

    /// The column `name` of `batch`, as `T`.
    pub(crate) fn column<'b, T: Array + 'static>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
    ) -> DfResult<&'b T> {
        let column = self.array(batch, name)?;
        column.as_any().downcast_ref::<T>().ok_or_else(|| {
            self.column_error(
                name,
                format_args!(
                    "holds {}, not the type this version writes",
                    column.data_type()
                ),
            )
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
            return Err(self.column_error(name, "holds a NULL"));
        }
        Ok(column)
    }

    /// The column `name` of `batch`, which must be of type `data_type`.
    pub(crate) fn column_of_type<'b>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
        data_type: &DataType,
    ) -> DfResult<&'b ArrayRef> {
        let column = self.array(batch, name)?;
        if column.data_type() != data_type {
            return Err(self.column_error(
                name,
                format_args!("holds {}, not {data_type}", column.data_type()),
            ));
        }
        Ok(column)
    }

    /// The values of row `row` of the list column `name` (written by [`single_row_list`]),
    /// which must be of type `values_type`.
    pub(crate) fn list_value(
        &self,
        batch: &RecordBatch,
        name: &str,
        row: usize,
        values_type: &DataType,
    ) -> DfResult<ArrayRef> {
        let column = self.column::<LargeListArray>(batch, name)?;
        if column.is_null(row) {
            return Err(self.column_error(name, format_args!("holds a NULL at row {row}")));
        }
        if column.value_type() != *values_type {
            return Err(self.column_error(
                name,
                format_args!("holds {}, not a list of {values_type}", column.data_type()),
            ));
        }
        Ok(column.value(row))
    }

    /// The table rows of a batch [`keyed_rows_batch`] wrote, as a batch of `schema`.
    pub(crate) fn keyed_rows(
        &self,
        batch: &RecordBatch,
        schema: &SchemaRef,
    ) -> DfResult<RecordBatch> {
        let columns = batch.columns().get(1..).unwrap_or_default().to_vec();
        if columns.len() != schema.fields().len() {
            return Err(self.malformed(format_args!(
                "rows of {} columns, the table has {}",
                columns.len(),
                schema.fields().len()
            )));
        }
        RecordBatch::try_new(Arc::clone(schema), columns)
            .map_err(|e| self.malformed(format_args!("rows do not fit the table: {e}")))
    }

    /// The only entry's row of a part that holds one entry (counters, progress).
    pub(crate) fn single<'b>(&self, part: &'b RestoredPart) -> DfResult<Option<&'b RecordBatch>> {
        let mut batches = part.batches.iter().filter(|b| b.num_rows() > 0);
        let batch = batches.next();
        if batch.is_some_and(|b| b.num_rows() > 1) || batches.next().is_some() {
            return Err(self.malformed("holds more than its one entry"));
        }
        Ok(batch)
    }
}
