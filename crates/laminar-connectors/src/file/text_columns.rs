//! Conversion of text columns (every CSV column, JSON timestamp columns) into the declared
//! column types, reporting per row which value did not convert instead of failing the batch.
//! TIMESTAMP values are a date-time text (`2024-01-01 00:00:01`, `2024-01-01T00:00:01Z`,
//! fractional seconds allowed, naive values are UTC) or an integer count of epoch milliseconds.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray,
};
use datafusion::arrow::compute::{can_cast_types, cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{ConnectorError, Result};
use crate::timestamp::parse_timestamp;

/// Longest excerpt of a bad value quoted in an error message.
const QUOTED_VALUE_CHARS_MAX: usize = 60;

/// A value that did not convert: the first bad column of its row, in schema order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadValue {
    /// Row index within the chunk.
    pub(crate) row: usize,
    /// Column index within the schema.
    pub(crate) column: usize,
    /// Why, e.g. `cannot parse 'abc' as Int64`.
    pub(crate) message: String,
}

/// Whether values of `data_type` can be read from text: scalar types Arrow can cast from text.
pub(crate) fn readable_from_text(data_type: &DataType) -> bool {
    !data_type.is_nested()
        && (matches!(data_type, DataType::Timestamp(_, _))
            || can_cast_types(&DataType::Utf8, data_type))
}

/// `schema` with every field nullable, so a chunk can hold bad rows until they are removed.
pub(crate) fn nullable_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// Converts `columns` (text where the target type is not text) to the types of `schema`.
/// Returns the converted columns and at most one [`BadValue`] per row; NULL in a NOT NULL
/// column is a bad value too.
pub(crate) fn convert_columns(
    schema: &Schema,
    columns: &[ArrayRef],
) -> Result<(Vec<ArrayRef>, Vec<BadValue>)> {
    let rows = columns.first().map_or(0, Array::len);
    let mut row_is_bad = vec![false; rows];
    let mut bad = Vec::new();
    let mut converted = Vec::with_capacity(columns.len());
    for (index, (field, column)) in schema.fields().iter().zip(columns).enumerate() {
        let (array, failures) = convert_column(column, field.data_type(), field.name())?;
        for (row, message) in failures {
            if !row_is_bad[row] {
                row_is_bad[row] = true;
                bad.push(BadValue {
                    row,
                    column: index,
                    message,
                });
            }
        }
        if !field.is_nullable() && array.null_count() > 0 {
            for (row, is_bad) in row_is_bad.iter_mut().enumerate() {
                if array.is_null(row) && !*is_bad {
                    *is_bad = true;
                    bad.push(BadValue {
                        row,
                        column: index,
                        message: "missing value in a NOT NULL column".to_owned(),
                    });
                }
            }
        }
        converted.push(array);
    }
    Ok((converted, bad))
}

/// Converts one column; returns `(row, message)` for every value that did not convert.
fn convert_column(
    column: &ArrayRef,
    target: &DataType,
    name: &str,
) -> Result<(ArrayRef, Vec<(usize, String)>)> {
    if column.data_type() == target {
        return Ok((Arc::clone(column), Vec::new()));
    }
    let Some(text) = column.as_any().downcast_ref::<StringArray>() else {
        return Err(internal(format!(
            "column {name} arrived as {} instead of text",
            column.data_type()
        )));
    };
    if let DataType::Timestamp(unit, timezone) = target {
        let mut failures = Vec::new();
        let values: Vec<Option<i64>> = text
            .iter()
            .enumerate()
            .map(|(row, value)| {
                let value = value?;
                let parsed = parse_timestamp(value, *unit);
                if parsed.is_none() {
                    failures.push((row, cannot_parse(value, target)));
                }
                parsed
            })
            .collect();
        let tz = timezone.clone();
        let array: ArrayRef = match unit {
            TimeUnit::Second => Arc::new(TimestampSecondArray::from(values).with_timezone_opt(tz)),
            TimeUnit::Millisecond => {
                Arc::new(TimestampMillisecondArray::from(values).with_timezone_opt(tz))
            }
            TimeUnit::Microsecond => {
                Arc::new(TimestampMicrosecondArray::from(values).with_timezone_opt(tz))
            }
            TimeUnit::Nanosecond => {
                Arc::new(TimestampNanosecondArray::from(values).with_timezone_opt(tz))
            }
        };
        return Ok((array, failures));
    }
    let options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    let array = cast_with_options(column, target, &options)
        .map_err(|e| internal(format!("casting column {name} from text to {target}: {e}")))?;
    let failures = (0..text.len())
        .filter(|&row| text.is_valid(row) && array.is_null(row))
        .map(|row| (row, cannot_parse(text.value(row), target)))
        .collect();
    Ok((array, failures))
}

/// `cannot parse 'value' as Type`, quoting at most [`QUOTED_VALUE_CHARS_MAX`] characters.
pub(crate) fn cannot_parse(value: &str, target: &DataType) -> String {
    format!("cannot parse {} as {target}", quote(value))
}

/// A value in single quotes, shortened with `...` when long.
pub(crate) fn quote(value: &str) -> String {
    if value.chars().count() > QUOTED_VALUE_CHARS_MAX {
        let head: String = value.chars().take(QUOTED_VALUE_CHARS_MAX).collect();
        format!("'{head}...'")
    } else {
        format!("'{value}'")
    }
}

fn internal(message: String) -> ConnectorError {
    ConnectorError::Internal {
        connector: "FILE source".to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_reported_per_row_first_column_first() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Float64, false),
        ]);
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("1"), Some("x"), None]));
        let b: ArrayRef = Arc::new(StringArray::from(vec![Some("1.5"), Some("y"), None]));
        let (columns, bad) = convert_columns(&schema, &[a, b]).unwrap();
        assert_eq!(columns[0].data_type(), &DataType::Int64);
        assert_eq!(
            bad,
            vec![
                BadValue {
                    row: 1,
                    column: 0,
                    message: "cannot parse 'x' as Int64".to_owned()
                },
                BadValue {
                    row: 2,
                    column: 1,
                    message: "missing value in a NOT NULL column".to_owned()
                },
            ]
        );
    }
}
