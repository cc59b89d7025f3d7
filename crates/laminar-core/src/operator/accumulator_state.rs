//! DataFusion accumulator states and emitted result rows as columns of a state batch and
//! back, for the aggregate operators' snapshots (the generic layout is [`crate::state_codec`]).
//!
//! An accumulator is persisted as its `Accumulator::state()` and restored by `merge_batch`
//! into a fresh one. `state()` may consume the accumulator (STRING_AGG, MEDIAN do) and a
//! merge into an empty accumulator need not reproduce its internals bit for bit (VARIANCE's
//! running mean), so a snapshot replaces each live accumulator it writes by one rebuilt the
//! same way a restore builds it: the recovered operator then continues exactly as the live
//! one does.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Accumulator;

use crate::state_codec::{PartReader, StateColumn};

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

    /// The gathered states as named nullable columns, and as [`StateColumns`] to rebuild
    /// from.
    pub(crate) fn finish(self) -> DfResult<(Vec<StateColumn>, StateColumns)> {
        let mut named = Vec::new();
        let mut calls = Vec::with_capacity(self.values.len());
        for (call, fields) in self.values.into_iter().enumerate() {
            let mut columns = Vec::with_capacity(fields.len());
            for (field, values) in fields.into_iter().enumerate() {
                let column = ScalarValue::iter_to_array(values)?;
                named.push((state_column(call, field), Arc::clone(&column), true));
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
    pub(crate) fn read(
        reader: &PartReader<'_>,
        batch: &RecordBatch,
        types: &[Vec<DataType>],
    ) -> DfResult<Self> {
        let mut calls = Vec::with_capacity(types.len());
        for (call, fields) in types.iter().enumerate() {
            let columns = fields
                .iter()
                .enumerate()
                .map(|(field, data_type)| {
                    reader
                        .column_of_type(batch, &state_column(call, field), data_type)
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

    /// The named nullable columns; `types` are the calls' result types, for a column no
    /// entry has a value in.
    pub(crate) fn finish(self, types: &[DataType]) -> DfResult<Vec<StateColumn>> {
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
            true,
        )];
        for (call, (values, data_type)) in self.values.into_iter().zip(types).enumerate() {
            let column = if values.is_empty() {
                new_null_array(data_type, self.present.len())
            } else {
                take(&ScalarValue::iter_to_array(values)?, &positions, None)?
            };
            columns.push((emitted_column(call), column, true));
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
    /// The emitted rows of `calls` values each in a restored `batch`.
    pub(crate) fn read(
        reader: &PartReader<'_>,
        batch: &'a RecordBatch,
        calls: usize,
    ) -> DfResult<Self> {
        let present = reader.required::<BooleanArray>(batch, EMITTED)?;
        let values = (0..calls)
            .map(|call| reader.array(batch, &emitted_column(call)))
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
