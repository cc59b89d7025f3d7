//! `INSERT INTO source VALUES ... | SELECT ...`: the rows are computed by DataFusion, then
//! each value is converted to the declared column type. A value of an incompatible type or
//! one that does not parse is an error naming the column and both types, before any row of
//! the statement is pushed.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef};
use datafusion::arrow::compute::{cast_with_options, concat_batches, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::sql::sqlparser::ast::{Insert, Query, TableObject};
use laminar_sql::types::sql_type_name;

use crate::error::{DbError, Result};

/// The parts of an `INSERT` LaminarDB supports.
pub(crate) struct InsertTarget {
    pub(crate) table: String,
    pub(crate) columns: Vec<String>,
    pub(crate) source: Box<Query>,
}

/// Extracts target and rows of an `INSERT`, rejecting clauses that do not apply to streams.
pub(crate) fn parse_insert(insert: &Insert) -> Result<InsertTarget> {
    let unsupported = |construct: &str| {
        DbError::Sql(laminar_sql::SqlError::Unsupported {
            construct: construct.to_string(),
            context: "INSERT".to_string(),
        })
    };
    let TableObject::TableName(name) = &insert.table else {
        return Err(unsupported("INSERT INTO a table function"));
    };
    if insert.on.is_some() {
        return Err(unsupported("ON CONFLICT / ON DUPLICATE KEY"));
    }
    if insert.returning.is_some() {
        return Err(unsupported("RETURNING"));
    }
    if insert.overwrite {
        return Err(unsupported("INSERT OVERWRITE"));
    }
    let table = match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(normalize)
            .ok_or_else(|| unsupported("INSERT target that is not a name"))?,
        _ => return Err(unsupported("qualified INSERT target")),
    };
    let source = insert
        .source
        .clone()
        .ok_or_else(|| unsupported("INSERT without VALUES or SELECT"))?;
    Ok(InsertTarget {
        table,
        columns: insert
            .columns
            .iter()
            .map(|c| {
                c.0.last()
                    .and_then(|part| part.as_ident())
                    .map(normalize)
                    .ok_or_else(|| unsupported("INSERT column that is not a name"))
            })
            .collect::<Result<Vec<_>>>()?,
        source,
    })
}

fn normalize(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Converts computed rows into a batch of the source's schema.
pub(crate) fn to_source_batch(
    source: &str,
    schema: &SchemaRef,
    target_columns: &[String],
    computed_schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<RecordBatch> {
    let computed = concat_batches(computed_schema, batches).map_err(|e| DbError::Query {
        message: e.to_string(),
    })?;
    let targets: Vec<String> = if target_columns.is_empty() {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    } else {
        for (i, column) in target_columns.iter().enumerate() {
            if target_columns[..i].contains(column) {
                return Err(DbError::BadBatch {
                    source_name: source.to_string(),
                    message: format!("INSERT names column {column} twice"),
                });
            }
            if schema.field_with_name(column).is_err() {
                return Err(DbError::BadBatch {
                    source_name: source.to_string(),
                    message: format!(
                        "INSERT names column {column}, which the source does not declare"
                    ),
                });
            }
        }
        target_columns.to_vec()
    };
    if computed.num_columns() != targets.len() {
        return Err(DbError::BadBatch {
            source_name: source.to_string(),
            message: format!(
                "INSERT has {} values per row but {} target columns ({})",
                computed.num_columns(),
                targets.len(),
                targets.join(", ")
            ),
        });
    }
    let rows = computed.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match targets.iter().position(|t| t == field.name()) {
            Some(index) => convert(
                source,
                field.name(),
                field.data_type(),
                computed.column(index),
            )?,
            None => new_null_array(field.data_type(), rows),
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(DbError::BadBatch {
                source_name: source.to_string(),
                message: format!(
                    "column {} is NOT NULL but the INSERT gives it NULL",
                    field.name()
                ),
            });
        }
        columns.push(column);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options).map_err(|e| {
        DbError::BadBatch {
            source_name: source.to_string(),
            message: e.to_string(),
        }
    })
}

/// Converts one computed column to the declared type, refusing conversions SQL users would
/// call a type error (e.g. a number into a VARCHAR column).
fn convert(source: &str, column: &str, target: &DataType, values: &ArrayRef) -> Result<ArrayRef> {
    let from = values.data_type();
    let mismatch = |actual: String| DbError::TypeMismatch {
        source_name: source.to_string(),
        column: column.to_string(),
        expected: sql_type_name(target),
        actual,
    };
    if from == target {
        return Ok(Arc::clone(values));
    }
    if !compatible(from, target) {
        return Err(mismatch(sql_type_name(from)));
    }
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    cast_with_options(values, target, &options).map_err(|e| {
        mismatch(format!(
            "{} value that does not convert ({e})",
            sql_type_name(from)
        ))
    })
}

fn compatible(from: &DataType, to: &DataType) -> bool {
    let numeric = |t: &DataType| t.is_numeric();
    let temporal = |t: &DataType| {
        matches!(
            t,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
        )
    };
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    match from {
        DataType::Null => true,
        f if text(f) => !matches!(to, DataType::Binary | DataType::LargeBinary),
        f if numeric(f) => numeric(to) || matches!(to, DataType::Timestamp(..)),
        f if temporal(f) => temporal(to),
        DataType::Boolean => matches!(to, DataType::Boolean),
        f => f == to || (f.is_nested() && to.is_nested()),
    }
}
