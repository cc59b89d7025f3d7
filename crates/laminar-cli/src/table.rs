//! Rows as aligned text tables: query results, live change batches (with an `op` column
//! marking inserts `+` and retractions `-` when a stream carries weights) and the small
//! two-column reports of `bench`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use laminar_db::ChangeBatch;

/// Name of the column that marks each row of a changelog as insert or retraction.
const OP_COLUMN: &str = "op";

/// Rows as a table.
pub fn rows(batches: &[RecordBatch]) -> Result<String, ArrowError> {
    Ok(pretty_format_batches(batches)?.to_string())
}

/// A statement's result as a table; with no rows, the column headers still show.
pub fn result(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, ArrowError> {
    if batches.is_empty() {
        rows(&[RecordBatch::new_empty(Arc::clone(schema))])
    } else {
        rows(batches)
    }
}

/// Change batches as one table. Rows of an append-only stream print as they are; when any
/// batch carries weights, an `op` column comes first: `+` per inserted row, `-` per
/// retracted row (`+3`/`-2` for a weight other than one).
pub fn changes(batches: &[ChangeBatch]) -> Result<String, ArrowError> {
    if batches.iter().all(ChangeBatch::is_insert_only) {
        let plain: Vec<RecordBatch> = batches.iter().map(|c| c.batch().clone()).collect();
        return rows(&plain);
    }
    let marked = batches
        .iter()
        .map(with_op_column)
        .collect::<Result<Vec<_>, _>>()?;
    rows(&marked)
}

fn with_op_column(change: &ChangeBatch) -> Result<RecordBatch, ArrowError> {
    let batch = change.batch();
    let ops: StringArray = match change.weights() {
        None => std::iter::repeat_n(Some("+"), batch.num_rows()).collect(),
        Some(weights) => weights
            .iter()
            .map(|weight| {
                Some(match weight {
                    Some(1) | None => "+".to_string(),
                    Some(-1) => "-".to_string(),
                    Some(w) => format!("{w:+}"),
                })
            })
            .collect(),
    };
    let mut fields = vec![Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false))];
    fields.extend(batch.schema().fields().iter().cloned());
    let mut columns: Vec<ArrayRef> = vec![Arc::new(ops)];
    columns.extend(batch.columns().iter().cloned());
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// A two-column table of labelled values.
pub fn key_values(
    header: (&str, &str),
    entries: &[(String, String)],
) -> Result<String, ArrowError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(header.0, DataType::Utf8, false),
        Field::new(header.1, DataType::Utf8, false),
    ]));
    let keys: StringArray = entries.iter().map(|(k, _)| Some(k.as_str())).collect();
    let values: StringArray = entries.iter().map(|(_, v)| Some(v.as_str())).collect();
    let batch = RecordBatch::try_new(schema, vec![Arc::new(keys), Arc::new(values)])?;
    rows(&[batch])
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))])
            .expect("one Int64 column matches its schema")
    }

    #[test]
    fn empty_results_keep_their_headers() {
        let text = result(&batch(&[]).schema(), &[]).expect("formats");
        assert!(text.contains("| n |"), "{text}");
    }

    #[test]
    fn append_only_changes_print_plain() {
        let text = changes(&[ChangeBatch::insert_only(batch(&[7]))]).expect("formats");
        assert!(text.contains("| n |"), "{text}");
        assert!(!text.contains(OP_COLUMN), "{text}");
    }

    #[test]
    fn weighted_changes_get_an_op_column() {
        let retract =
            ChangeBatch::with_weights(batch(&[1, 2, 3]), Int64Array::from(vec![1, -1, 2]));
        let text = changes(&[ChangeBatch::insert_only(batch(&[4])), retract]).expect("formats");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("| op |"), "{text}");
        for expected in ["| +  | 4 |", "| +  | 1 |", "| -  | 2 |", "| +2 | 3 |"] {
            assert!(text.contains(expected), "{expected} missing in\n{text}");
        }
    }
}
