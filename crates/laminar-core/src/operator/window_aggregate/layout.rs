//! Which group keys a window's group table holds, and which it keeps once per window.
//!
//! Every row of one window has the same `window_end` (rows are assigned to windows by it),
//! and, from a window table function, the same `window_start`. Keying each window's table by
//! them too would only cost columns to hash and compare per row; without them the table of
//! `GROUP BY auction, window_start, window_end` is keyed by one `BIGINT`, which DataFusion
//! holds in its specialised single-column table.
//!
//! `window_end` is held once per window when its type is exact at millisecond precision.
//! `window_start` is held once per window *while the rows agree*: the operator checks each
//! batch against the window's value, and the first time rows of one window disagree (a
//! column merely named `window_start`), the key moves into the group tables for good and
//! every open window is rebuilt with it, so the answer never depends on the name.

use std::sync::Arc;

use datafusion::arrow::array::{new_empty_array, Array, ArrayRef, Scalar};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;

use crate::watermark::raw_i64;

/// Where each key of a window aggregate lives.
#[derive(Debug, Clone)]
pub(super) struct KeyLayout {
    /// The keys the group tables hold, by index among all keys.
    grouped: Vec<usize>,
    /// The keys held once per window, by index among all keys.
    constant: Vec<usize>,
    /// The index of `window_end` among all keys.
    window_end_key: usize,
    /// The schema of the keys in `grouped`.
    group_schema: SchemaRef,
    /// The schema of all keys.
    key_schema: SchemaRef,
}

impl KeyLayout {
    /// The layout of keys `key_fields`, `window_end` at `window_end_key` and `window_start`
    /// (if grouped by) at `window_start_key`. A table needs one key column at least, so a
    /// key stays grouped when it is the last one.
    pub(super) fn new(
        key_fields: &[Field],
        window_end_key: usize,
        window_start_key: Option<usize>,
    ) -> Self {
        let end_exact = matches!(
            key_fields[window_end_key].data_type(),
            DataType::Timestamp(TimeUnit::Second | TimeUnit::Millisecond, _) | DataType::Int64
        );
        let mut constant = Vec::new();
        if end_exact && key_fields.len() > 1 {
            constant.push(window_end_key);
        }
        if let Some(start) = window_start_key.filter(|&k| k != window_end_key) {
            if key_fields.len() > constant.len() + 1 {
                constant.push(start);
            }
        }
        Self::with_constant(key_fields, window_end_key, constant)
    }

    fn with_constant(key_fields: &[Field], window_end_key: usize, constant: Vec<usize>) -> Self {
        let grouped: Vec<usize> = (0..key_fields.len())
            .filter(|k| !constant.contains(k))
            .collect();
        let group_schema = Arc::new(Schema::new(
            grouped
                .iter()
                .map(|&k| key_fields[k].clone())
                .collect::<Vec<_>>(),
        ));
        Self {
            grouped,
            constant,
            window_end_key,
            group_schema,
            key_schema: Arc::new(Schema::new(key_fields.to_vec())),
        }
    }

    /// The same layout with `key` moved into the group tables.
    pub(super) fn grouping(&self, key: usize) -> Self {
        let constant = self
            .constant
            .iter()
            .copied()
            .filter(|&k| k != key)
            .collect();
        Self::with_constant(&self.key_fields(), self.window_end_key, constant)
    }

    /// The fields of all keys.
    pub(super) fn key_fields(&self) -> Vec<Field> {
        self.key_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect()
    }

    pub(super) fn group_schema(&self) -> &SchemaRef {
        &self.group_schema
    }

    pub(super) fn key_schema(&self) -> &SchemaRef {
        &self.key_schema
    }

    /// How many keys are held once per window.
    pub(super) fn constants(&self) -> usize {
        self.constant.len()
    }

    /// The columns of `keys` (all keys) that the group table holds.
    pub(super) fn grouped_columns(&self, keys: &[ArrayRef]) -> Vec<ArrayRef> {
        self.grouped.iter().map(|&k| Arc::clone(&keys[k])).collect()
    }

    /// Fills the window's once-held values (`held`, one per constant key) from the first
    /// row of `keys` where not yet known.
    pub(super) fn hold(&self, keys: &[ArrayRef], held: &mut Vec<Option<ArrayRef>>) {
        held.resize(self.constant.len(), None);
        for (slot, &k) in held.iter_mut().zip(&self.constant) {
            if slot.is_none() && !keys[k].is_empty() {
                *slot = Some(keys[k].slice(0, 1));
            }
        }
    }

    /// A key held once per window on which rows of `keys` (all of one window) disagree,
    /// with each other or with the window's `held` values. `window_end` is not checked:
    /// rows are assigned to windows by its exact value.
    pub(super) fn disagreeing(
        &self,
        keys: &[ArrayRef],
        held: &[Option<ArrayRef>],
    ) -> DfResult<Option<usize>> {
        for (slot, &k) in self.constant.iter().enumerate() {
            let column = &keys[k];
            if k == self.window_end_key || column.is_empty() {
                continue;
            }
            let value = match held.get(slot) {
                Some(Some(value)) => Arc::clone(value),
                _ => column.slice(0, 1),
            };
            if !all_equal(column, &value)? {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// The key columns of a window's `rows` groups, from the group table's `grouped`
    /// columns and the window's `held` values.
    pub(super) fn all_columns(
        &self,
        grouped: Vec<ArrayRef>,
        held: &[Option<ArrayRef>],
    ) -> DfResult<Vec<ArrayRef>> {
        if self.constant.is_empty() {
            return Ok(grouped);
        }
        let rows = grouped.first().map_or(0, Array::len);
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.key_schema.fields().len()];
        for (&k, column) in self.grouped.iter().zip(grouped) {
            columns[k] = Some(column);
        }
        for (slot, &k) in self.constant.iter().enumerate() {
            let column = match held.get(slot) {
                Some(Some(value)) => {
                    ScalarValue::try_from_array(value, 0)?.to_array_of_size(rows)?
                }
                _ => new_empty_array(self.key_schema.field(k).data_type()),
            };
            columns[k] = Some(column);
        }
        Ok(columns
            .into_iter()
            .enumerate()
            .map(|(k, column)| {
                column.unwrap_or_else(|| new_empty_array(self.key_schema.field(k).data_type()))
            })
            .collect())
    }
}

/// Whether every value of `column` equals the one value of `value` (nulls never do).
fn all_equal(column: &ArrayRef, value: &ArrayRef) -> DfResult<bool> {
    let no_nulls = column.null_count() == 0 && value.null_count() == 0;
    if let (true, Some(values), Some(&[expected])) =
        (no_nulls, raw_i64(column.as_ref()), raw_i64(value.as_ref()))
    {
        // The common case (timestamps, BIGINT): one branch-free pass per chunk, which the
        // compiler vectorizes, instead of a comparison kernel building a bitmap.
        return Ok(values
            .chunks(64)
            .all(|chunk| chunk.iter().filter(|v| **v != expected).count() == 0));
    }
    let same = eq(column, &Scalar::new(Arc::clone(value)))?;
    // A null compares as null, not true, so nulls count as disagreeing.
    Ok(same.true_count() == column.len())
}
