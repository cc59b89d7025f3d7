//! Encoding shared by the operators' snapshots (see [`crate::state`]): DataFusion accumulator
//! states and emitted result rows as columns of a state batch and back, a one-row part of
//! counters (watermark, late rows), typed access to restored columns, and the errors a
//! restore raises, naming the operator, the part and the column.
//!
//! An accumulator is persisted as its `Accumulator::state()` and restored by `merge_batch`
//! into a fresh one. `state()` may consume the accumulator (STRING_AGG, MEDIAN do) and a
//! merge into an empty accumulator need not reproduce its internals bit for bit (VARIANCE's
//! running mean), so a snapshot replaces each live accumulator it writes by one rebuilt the
//! same way a restore builds it: the recovered operator then continues exactly as the live
//! one does.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BinaryArray, BooleanArray, Int64Array, LargeListArray,
    RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Accumulator;

use crate::state::{restored_part, state_keys, RestoredPart, StatePart, STATE_KEY_COLUMN};

/// Name of the one-row part holding an operator's counters.
pub(crate) const COUNTERS_PART: &str = "counters";

/// A checkpoint's state does not fit the operator it is restored into: written by another
/// version, for another query, or damaged past its checksum.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    /// A part the operator always writes is missing.
    #[error("checkpoint state of operator {operator}: part `{part}` is missing")]
    MissingPart {
        /// The operator restoring.
        operator: &'static str,
        /// The missing part.
        part: &'static str,
    },
    /// A part the operator never writes.
    #[error("checkpoint state of operator {operator}: unexpected part `{part}`")]
    UnknownPart {
        /// The operator restoring.
        operator: &'static str,
        /// The unexpected part.
        part: String,
    },
    /// A column is missing or of another type.
    #[error(
        "checkpoint state of operator {operator}, part `{part}`: no column `{column}` of type \
         {expected}"
    )]
    Column {
        /// The operator restoring.
        operator: &'static str,
        /// The part read.
        part: String,
        /// The column.
        column: String,
        /// The type the operator writes.
        expected: String,
    },
    /// A value breaks a rule of the operator's encoding.
    #[error("checkpoint state of operator {operator}, part `{part}`: {problem}")]
    Malformed {
        /// The operator restoring.
        operator: &'static str,
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

/// A state batch: the entry keys, then `columns` (all nullable).
pub(crate) fn state_batch(
    keys: BinaryArray,
    columns: Vec<(String, ArrayRef)>,
) -> DfResult<RecordBatch> {
    let mut fields = vec![Field::new(STATE_KEY_COLUMN, DataType::Binary, false)];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(keys)];
    for (name, array) in columns {
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// `array` as the one value of a one-row list column, without copying it.
pub(crate) fn single_row_list(array: ArrayRef) -> ArrayRef {
    Arc::new(SingleRowListArrayBuilder::new(array).build_large_list_array())
}

/// The one-row part of an operator's counters, as named `Int64` columns.
pub(crate) fn counters_part(counters: &[(&str, i64)]) -> DfResult<StatePart> {
    let columns = counters
        .iter()
        .map(|(name, value)| {
            let column: ArrayRef = Arc::new(Int64Array::from(vec![*value]));
            ((*name).to_string(), column)
        })
        .collect();
    let keys = BinaryArray::from_iter_values([COUNTERS_PART.as_bytes()]);
    Ok(StatePart::new(
        COUNTERS_PART,
        vec![state_batch(keys, columns)?],
    ))
}

/// Checks that every restored part is one of `known`, and that the counters part is there
/// unless nothing was restored at all. Returns false when there is nothing to restore.
pub(crate) fn check_parts(
    operator: &'static str,
    parts: &[RestoredPart],
    known: &[&str],
) -> DfResult<bool> {
    if let Some(unknown) = parts.iter().find(|p| !known.contains(&p.name.as_str())) {
        return Err(StateError::UnknownPart {
            operator,
            part: unknown.name.clone(),
        }
        .into());
    }
    if parts
        .iter()
        .all(|p| p.batches.iter().all(|b| b.num_rows() == 0))
    {
        return Ok(false);
    }
    if restored_part(parts, COUNTERS_PART).is_none() {
        return Err(StateError::MissingPart {
            operator,
            part: COUNTERS_PART,
        }
        .into());
    }
    Ok(true)
}

/// The restored counters of an operator.
pub(crate) struct Counters<'a> {
    operator: &'static str,
    batch: &'a RecordBatch,
}

impl<'a> Counters<'a> {
    /// The counters among `parts` (checked by [`check_parts`]).
    pub(crate) fn read(operator: &'static str, parts: &'a [RestoredPart]) -> DfResult<Self> {
        let batch = restored_part(parts, COUNTERS_PART)
            .and_then(|part| part.batches.iter().find(|b| b.num_rows() > 0))
            .ok_or(StateError::MissingPart {
                operator,
                part: COUNTERS_PART,
            })?;
        Ok(Self { operator, batch })
    }

    /// The counter `name`.
    pub(crate) fn get(&self, name: &str) -> DfResult<i64> {
        let reader = PartReader::new(self.operator, COUNTERS_PART, self.batch);
        Ok(reader.int64(name)?.value(0))
    }
}

/// Typed access to the columns of one restored batch of a part.
pub(crate) struct PartReader<'a> {
    operator: &'static str,
    part: &'a str,
    batch: &'a RecordBatch,
}

impl<'a> PartReader<'a> {
    pub(crate) fn new(operator: &'static str, part: &'a str, batch: &'a RecordBatch) -> Self {
        Self {
            operator,
            part,
            batch,
        }
    }

    /// The batch's rows.
    pub(crate) fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The entry keys.
    pub(crate) fn keys(&self) -> DfResult<&'a BinaryArray> {
        state_keys(self.batch)
    }

    /// The column `name`, if present.
    pub(crate) fn column(&self, name: &str) -> Option<&'a ArrayRef> {
        self.batch.column_by_name(name)
    }

    fn typed<T: Array + 'static>(&self, name: &str, expected: &str) -> DfResult<&'a T> {
        self.column(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| self.column_error(name, expected))
    }

    /// An error about the column `name`, which should be of type `expected`.
    pub(crate) fn column_error(&self, name: &str, expected: &str) -> DataFusionError {
        StateError::Column {
            operator: self.operator,
            part: self.part.to_string(),
            column: name.to_string(),
            expected: expected.to_string(),
        }
        .into()
    }

    /// A required `Int64` column without NULLs.
    pub(crate) fn int64(&self, name: &str) -> DfResult<&'a Int64Array> {
        let column = self.typed::<Int64Array>(name, "Int64 (no NULL)")?;
        if column.null_count() > 0 {
            return Err(self.column_error(name, "Int64 (no NULL)"));
        }
        Ok(column)
    }

    /// A required `Boolean` column without NULLs.
    pub(crate) fn boolean(&self, name: &str) -> DfResult<&'a BooleanArray> {
        let column = self.typed::<BooleanArray>(name, "Boolean (no NULL)")?;
        if column.null_count() > 0 {
            return Err(self.column_error(name, "Boolean (no NULL)"));
        }
        Ok(column)
    }

    /// A required `Binary` column without NULLs.
    pub(crate) fn binary(&self, name: &str) -> DfResult<&'a BinaryArray> {
        let column = self.typed::<BinaryArray>(name, "Binary (no NULL)")?;
        if column.null_count() > 0 {
            return Err(self.column_error(name, "Binary (no NULL)"));
        }
        Ok(column)
    }

    /// The values of row `row` of a required list column (written by [`single_row_list`]),
    /// of type `values_type`.
    pub(crate) fn list_value(
        &self,
        name: &str,
        row: usize,
        values_type: &DataType,
    ) -> DfResult<ArrayRef> {
        let expected = || format!("LargeList of {values_type} (no NULL)");
        let column = self.typed::<LargeListArray>(name, &expected())?;
        if column.is_null(row) || column.value_type() != *values_type {
            return Err(self.column_error(name, &expected()));
        }
        Ok(column.value(row))
    }

    /// A required column of type `data_type`.
    pub(crate) fn column_of_type(
        &self,
        name: &str,
        data_type: &DataType,
    ) -> DfResult<&'a ArrayRef> {
        self.column(name)
            .filter(|c| c.data_type() == data_type)
            .ok_or_else(|| self.column_error(name, &data_type.to_string()))
    }

    /// An error about this part.
    pub(crate) fn malformed(&self, problem: impl Into<String>) -> DataFusionError {
        StateError::Malformed {
            operator: self.operator,
            part: self.part.to_string(),
            problem: problem.into(),
        }
        .into()
    }
}

/// Name of the column of field `field` of the state of aggregate call `call`.
pub(crate) fn state_column(call: usize, field: usize) -> String {
    format!("state_{call}_{field}")
}

/// Name of the column of the emitted value of aggregate call `call`.
fn emitted_column(call: usize) -> String {
    format!("emitted_{call}")
}

/// Name of the column telling whether an entry has an emitted row.
const EMITTED: &str = "emitted";

/// Gathers the accumulator states of many entries (one accumulator per aggregate call
/// each) as columns `state_<call>_<field>`.
pub(crate) struct AccumulatorStates {
    /// `[call][field][entry]`.
    values: Vec<Vec<Vec<ScalarValue>>>,
    entries: usize,
}

impl AccumulatorStates {
    /// Gathers states of entries with `calls` accumulators each.
    pub(crate) fn new(calls: usize) -> Self {
        Self {
            values: vec![Vec::new(); calls],
            entries: 0,
        }
    }

    /// Adds the states of one entry's `accumulators` (which must then be rebuilt with
    /// [`StateColumns::rebuild`]: taking a state may consume it).
    pub(crate) fn push(&mut self, accumulators: &mut [Box<dyn Accumulator>]) -> DfResult<()> {
        for (fields, accumulator) in self.values.iter_mut().zip(accumulators) {
            let state = accumulator.state()?;
            if self.entries == 0 {
                fields.resize_with(state.len(), Vec::new);
            } else if state.len() != fields.len() {
                return Err(DataFusionError::Internal(format!(
                    "an accumulator's state has {} fields, another's of the same call {}",
                    state.len(),
                    fields.len()
                )));
            }
            for (field, value) in fields.iter_mut().zip(state) {
                field.push(value);
            }
        }
        self.entries += 1;
        Ok(())
    }

    /// The gathered states as named columns, and as [`StateColumns`] to rebuild from.
    pub(crate) fn finish(self) -> DfResult<(Vec<(String, ArrayRef)>, StateColumns)> {
        let mut named = Vec::new();
        let mut calls = Vec::with_capacity(self.values.len());
        for (call, fields) in self.values.into_iter().enumerate() {
            let mut columns = Vec::with_capacity(fields.len());
            for (field, values) in fields.into_iter().enumerate() {
                let column = ScalarValue::iter_to_array(values)?;
                named.push((state_column(call, field), Arc::clone(&column)));
                columns.push(column);
            }
            calls.push(columns);
        }
        Ok((named, StateColumns { calls }))
    }
}

/// The types of the state fields of `accumulators` (`[call][field]`): fresh ones tell what
/// every state of theirs holds, so a restore checks a state before merging it (DataFusion's
/// merges trust their input's shape).
pub(crate) fn state_types(
    accumulators: &mut [Box<dyn Accumulator>],
) -> DfResult<Vec<Vec<DataType>>> {
    accumulators
        .iter_mut()
        .map(|accumulator| {
            Ok(accumulator
                .state()?
                .iter()
                .map(ScalarValue::data_type)
                .collect())
        })
        .collect()
}

/// Accumulator states as columns, one row per entry: what a snapshot wrote or a restore
/// read.
pub(crate) struct StateColumns {
    /// `[call][field]`.
    calls: Vec<Vec<ArrayRef>>,
}

impl StateColumns {
    /// The state columns in a restored batch of accumulators whose states have `types`
    /// (`[call][field]`, see [`state_types`]).
    pub(crate) fn read(reader: &PartReader<'_>, types: &[Vec<DataType>]) -> DfResult<Self> {
        let mut calls = Vec::with_capacity(types.len());
        for (call, fields) in types.iter().enumerate() {
            let columns = fields
                .iter()
                .enumerate()
                .map(|(field, data_type)| {
                    reader
                        .column_of_type(&state_column(call, field), data_type)
                        .cloned()
                })
                .collect::<DfResult<Vec<_>>>()?;
            calls.push(columns);
        }
        Ok(Self { calls })
    }

    /// Fresh `accumulators` (one per call) merged with the states of entry `row`.
    pub(crate) fn rebuild(
        &self,
        row: usize,
        mut accumulators: Vec<Box<dyn Accumulator>>,
    ) -> DfResult<Vec<Box<dyn Accumulator>>> {
        for (accumulator, fields) in accumulators.iter_mut().zip(&self.calls) {
            let state: Vec<ArrayRef> = fields.iter().map(|f| f.slice(row, 1)).collect();
            accumulator.merge_batch(&state)?;
        }
        Ok(accumulators)
    }
}

/// Gathers the result rows entries last emitted (to retract when they change), as a column
/// `emitted` (whether the entry has one) and one column `emitted_<call>` per call.
pub(crate) struct EmittedRows {
    present: Vec<bool>,
    /// `[call]`: values of the entries that have an emitted row.
    values: Vec<Vec<ScalarValue>>,
}

impl EmittedRows {
    /// Gathers rows of `calls` values each.
    pub(crate) fn new(calls: usize) -> Self {
        Self {
            present: Vec::new(),
            values: vec![Vec::new(); calls],
        }
    }

    /// Adds one entry's emitted row, if any.
    pub(crate) fn push(&mut self, emitted: Option<&Vec<ScalarValue>>) {
        self.present.push(emitted.is_some());
        if let Some(row) = emitted {
            for (values, value) in self.values.iter_mut().zip(row) {
                values.push(value.clone());
            }
        }
    }

    /// The named columns; `types` are the calls' result types, for a column no entry has a
    /// value in.
    pub(crate) fn finish(self, types: &[DataType]) -> DfResult<Vec<(String, ArrayRef)>> {
        // Entries without an emitted row take a NULL of the values' own type.
        let mut next = 0_u32;
        let positions: UInt32Array = self
            .present
            .iter()
            .map(|&present| {
                present.then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        let mut columns = vec![(
            EMITTED.to_string(),
            Arc::new(BooleanArray::from(self.present.clone())) as ArrayRef,
        )];
        for (call, (values, data_type)) in self.values.into_iter().zip(types).enumerate() {
            let column = if values.is_empty() {
                new_null_array(data_type, self.present.len())
            } else {
                take(&ScalarValue::iter_to_array(values)?, &positions, None)?
            };
            columns.push((emitted_column(call), column));
        }
        Ok(columns)
    }
}

/// Restored emitted rows.
pub(crate) struct EmittedColumns<'a> {
    present: &'a BooleanArray,
    values: Vec<&'a ArrayRef>,
}

impl<'a> EmittedColumns<'a> {
    /// The emitted rows of `calls` values each in a restored batch.
    pub(crate) fn read(reader: &PartReader<'a>, calls: usize) -> DfResult<Self> {
        let present = reader.boolean(EMITTED)?;
        let values = (0..calls)
            .map(|call| {
                let name = emitted_column(call);
                reader
                    .column(&name)
                    .ok_or_else(|| reader.column_error(&name, "the call's result type"))
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Self { present, values })
    }

    /// The row entry `row` last emitted, if any.
    pub(crate) fn at(&self, row: usize) -> DfResult<Option<Vec<ScalarValue>>> {
        if !self.present.value(row) {
            return Ok(None);
        }
        let values = self
            .values
            .iter()
            .map(|column| ScalarValue::try_from_array(column.as_ref(), row))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Some(values))
    }
}
