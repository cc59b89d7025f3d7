//! The plain-rows form of a changelog, for sinks whose output has no notion of a retraction
//! (files): a change of weight `w` becomes `|w|` copies of its row with one more column, `op`,
//! holding `+` for an insert and `-` for a retraction (the marks `laminardb run` prints).
//! Adding a row for every `+` and removing one for every `-` gives the result's final rows.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, StringArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{ConnectorError, Result};

/// Name of the column holding the change kind, last in every changelog row.
pub(crate) const OP_COLUMN: &str = "op";
/// `op` of an inserted row.
pub(crate) const OP_INSERT: &str = "+";
/// `op` of a retracted row.
pub(crate) const OP_RETRACT: &str = "-";

/// What a sink receives: rows that are only ever added, or a changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeMode {
    /// Every row is an insert; the output has the result's columns.
    AppendOnly,
    /// Rows carry weights (+1 insert, -1 retraction); the output adds the `op` column.
    Changelog,
}

/// The schema of `connector`'s changelog rows: the result's columns, then `op`. A result
/// that already has an `op` column is refused, since a reader could not tell them apart.
pub(crate) fn changelog_schema(connector: &str, result: &Schema) -> Result<SchemaRef> {
    if result
        .fields()
        .iter()
        .any(|f| f.name().eq_ignore_ascii_case(OP_COLUMN))
    {
        return Err(ConnectorError::ColumnClash {
            connector: connector.to_owned(),
            column: OP_COLUMN.to_owned(),
        });
    }
    let mut fields: Vec<Arc<Field>> = result.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false)));
    Ok(Arc::new(Schema::new(fields)))
}

/// `batch` with its `weights` (none: every row an insert) as rows of `schema` (from
/// [`changelog_schema`]); rows of weight 0 are dropped.
pub(crate) fn changelog_rows(
    connector: &str,
    schema: &SchemaRef,
    batch: &RecordBatch,
    weights: Option<&Int64Array>,
) -> Result<RecordBatch> {
    let bug = |message: String| ConnectorError::Internal {
        connector: connector.to_owned(),
        message,
    };
    let (mut columns, ops): (Vec<ArrayRef>, StringArray) = match weights {
        None => (
            batch.columns().to_vec(),
            std::iter::repeat_n(Some(OP_INSERT), batch.num_rows()).collect(),
        ),
        Some(weights)
            if weights.null_count() == 0 && weights.values().iter().all(|w| w.abs() == 1) =>
        {
            let ops = weights
                .values()
                .iter()
                .map(|&w| Some(if w > 0 { OP_INSERT } else { OP_RETRACT }))
                .collect();
            (batch.columns().to_vec(), ops)
        }
        Some(weights) => {
            let mut indices = Vec::with_capacity(weights.len());
            let mut ops = Vec::with_capacity(weights.len());
            for (row, weight) in weights.iter().enumerate() {
                let weight = weight.unwrap_or(1);
                let op = if weight > 0 { OP_INSERT } else { OP_RETRACT };
                for _ in 0..weight.unsigned_abs() {
                    indices.push(row as u32);
                    ops.push(Some(op));
                }
            }
            let indices = UInt32Array::from(indices);
            let columns = batch
                .columns()
                .iter()
                .map(|column| take(column.as_ref(), &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bug(format!("repeating changelog rows: {e}")))?;
            (columns, ops.into_iter().collect())
        }
    };
    columns.push(Arc::new(ops));
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| bug(format!("changelog rows do not fit the sink's schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> RecordBatch {
        let schema = Schema::new(vec![Field::new("k", DataType::Utf8, true)]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(vec!["a", "b", "c"]))],
        )
        .expect("valid batch")
    }

    /// `k` and `op` of each written row, as `k op`.
    fn written(weights: Option<&Int64Array>) -> Vec<String> {
        let batch = result();
        let schema = changelog_schema("test", &batch.schema()).expect("schema");
        let rows = changelog_rows("test", &schema, &batch, weights).expect("rows");
        let column = |index: usize| {
            rows.column(index)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("strings")
                .clone()
        };
        let (keys, ops) = (column(0), column(1));
        (0..rows.num_rows())
            .map(|row| format!("{} {}", keys.value(row), ops.value(row)))
            .collect()
    }

    #[test]
    fn weights_become_op_marks_and_repeated_rows() {
        assert_eq!(written(None), ["a +", "b +", "c +"]);
        assert_eq!(
            written(Some(&Int64Array::from(vec![-1, 1, 1]))),
            ["a -", "b +", "c +"]
        );
        assert_eq!(
            written(Some(&Int64Array::from(vec![2, 0, -3]))),
            ["a +", "a +", "c -", "c -", "c -"]
        );
    }

    #[test]
    fn a_result_with_its_own_op_column_is_refused() {
        let schema = Schema::new(vec![Field::new("OP", DataType::Int64, true)]);
        let error = changelog_schema("FILE sink", &schema).expect_err("clash");
        assert!(error.to_string().contains("column op"), "{error}");
    }
}
