//! Keyed watermarks in planning. A source declared `WATERMARK FOR ts AS ts - d PER KEY (k,
//! ...)` gives every key its own watermark, `max(ts of the key) - d`. An `EMIT ON WINDOW
//! CLOSE` aggregation that reads such a source directly (through projections, filters,
//! aliases and the `UNION ALL` a `HOP` becomes) tracks those watermarks itself when it groups
//! by every key column (tumbling and hopping windows) or its sessions are partitioned by
//! exactly the key columns; every other query over the source uses its one global watermark.
//! Windows need each row's event time, which DataFusion's optimizer prunes when the query
//! does not read it: it is re-exposed here, after optimization, as a trailing column of each
//! node down to the scan. A session row's own window starts at its event time already.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Column, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    lit, Aggregate, Expr, Filter, LogicalPlan, Projection, SubqueryAlias, TableScanBuilder, Union,
};
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr as SqlExpr, Value};
use laminar_core::operator::SessionWindow;

use crate::error::{Result, SqlError};
use crate::interval::interval_ms;
use crate::parser::ddl_normalize::normalize_ident;
use crate::parser::WatermarkSpec;

/// Name of the re-exposed event-time column; no query can refer to it.
const EVENT_TIME_COLUMN: &str = "__laminar_event_time";

/// A source's keyed watermark, as planning needs it.
#[derive(Debug, Clone)]
pub(crate) struct KeyedSource {
    /// Index of the event-time (`WATERMARK FOR`) column.
    event_time: usize,
    event_time_type: DataType,
    /// Indices of the key columns, in `PER KEY` order.
    pub(crate) keys: Vec<usize>,
    /// How far a key's watermark trails the latest event time of its rows.
    delay_ms: i64,
}

impl KeyedSource {
    /// Validates the `PER KEY` watermark `spec` of source `source` over its `schema`.
    pub(crate) fn new(source: &str, spec: &WatermarkSpec, schema: &Schema) -> Result<Self> {
        let invalid = |message: String| SqlError::Invalid {
            context: format!("CREATE SOURCE {source}"),
            message,
        };
        let event_time = schema
            .index_of(&spec.column)
            .map_err(|_| invalid(format!("WATERMARK FOR {}: no such column", spec.column)))?;
        let event_time_type = schema.field(event_time).data_type().clone();
        if !matches!(event_time_type, DataType::Timestamp(..) | DataType::Int64) {
            return Err(invalid(format!(
                "a PER KEY watermark needs a TIMESTAMP or BIGINT (epoch milliseconds) event time; \
                 {} is {event_time_type}",
                spec.column
            )));
        }
        let mut keys = Vec::with_capacity(spec.per_key.len());
        let mut fields = Vec::with_capacity(spec.per_key.len());
        for key in &spec.per_key {
            let index = schema
                .index_of(key)
                .map_err(|_| invalid(format!("PER KEY {key}: no such column")))?;
            keys.push(index);
            fields.push(SortField::new(schema.field(index).data_type().clone()));
        }
        RowConverter::new(fields)
            .map_err(|e| invalid(format!("PER KEY ({}): {e}", spec.per_key.join(", "))))?;
        let delay_ms = delay_ms(spec).ok_or_else(|| {
            invalid(format!(
                "a PER KEY watermark is its event-time column minus a constant delay, e.g. \
                 {0} - INTERVAL '5' SECOND (or {0} - 5000 for a BIGINT); got {1}",
                spec.column, spec.expr
            ))
        })?;
        Ok(Self {
            event_time,
            event_time_type,
            keys,
            delay_ms,
        })
    }
}

/// The delay of a watermark `ts`, `ts - INTERVAL '..'` or `ts - <milliseconds>`.
fn delay_ms(spec: &WatermarkSpec) -> Option<i64> {
    let is_event_time = |expr: &SqlExpr| matches!(expr, SqlExpr::Identifier(ident) if normalize_ident(ident) == spec.column);
    match &spec.expr {
        expr if is_event_time(expr) => Some(0),
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } if is_event_time(left) => match right.as_ref() {
            SqlExpr::Interval(_) => interval_ms(&right.to_string(), "PER KEY").ok(),
            SqlExpr::Value(value) => match &value.value {
                Value::Number(number, _) => number.parse::<i64>().ok().filter(|ms| *ms >= 0),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// An aggregation's input that reports every row's event time, for keyed watermarks.
pub(crate) struct KeyedInput {
    /// The aggregation's input with the event time as an extra last column; the columns
    /// before it are the original input's.
    pub(crate) input: LogicalPlan,
    /// Index of the event-time column in `input`.
    pub(crate) event_time: usize,
    /// Positions of the watermark's key columns among the aggregation's group keys.
    pub(crate) key_positions: Vec<usize>,
    /// The source's watermark delay.
    pub(crate) delay_ms: i64,
}

/// How an `EMIT ON WINDOW CLOSE` aggregation follows keyed watermarks.
pub(crate) enum KeyedAggregate {
    /// Tumbling or hopping windows, fed the event time.
    Windows(Box<KeyedInput>),
    /// Session windows partitioned by exactly the watermark's keys.
    Sessions {
        /// The source's watermark delay.
        delay_ms: i64,
    },
}

/// How `aggregate` (emitting on window close; a session window when `session` is given)
/// follows keyed watermarks, when it reads one keyed source directly and groups by all its
/// key columns; `None` when it runs on the source's global watermark.
pub(crate) fn keyed_aggregate(
    aggregate: &Aggregate,
    session: Option<SessionWindow>,
    sources: &HashMap<String, KeyedSource>,
) -> DfResult<Option<KeyedAggregate>> {
    let Some(source) = scanned_source(&aggregate.input).and_then(|name| sources.get(&name)) else {
        return Ok(None);
    };
    let origins: Vec<Option<usize>> = aggregate
        .group_expr
        .iter()
        .map(|key| match key.clone().unalias() {
            Expr::Column(column) => origin(&aggregate.input, &column),
            _ => None,
        })
        .collect();
    if let Some(SessionWindow { start_key, end_key }) = session {
        // Sessions form per partition: the partition must be the key, or a partition's rows
        // would be split over several keys' watermarks.
        let mut partition: Vec<Option<usize>> = (0..origins.len())
            .filter(|i| *i != start_key && *i != end_key)
            .map(|i| origins[i])
            .collect();
        partition.sort_unstable();
        let mut keys: Vec<Option<usize>> = source.keys.iter().copied().map(Some).collect();
        keys.sort_unstable();
        return Ok((partition == keys).then_some(KeyedAggregate::Sessions {
            delay_ms: source.delay_ms,
        }));
    }
    let key_positions = source
        .keys
        .iter()
        .map(|key| origins.iter().position(|origin| *origin == Some(*key)))
        .collect::<Option<Vec<_>>>();
    let Some(key_positions) = key_positions else {
        return Ok(None);
    };
    let Some((input, event_time)) = expose(&aggregate.input, source, true)? else {
        return Ok(None);
    };
    Ok(Some(KeyedAggregate::Windows(Box::new(KeyedInput {
        input,
        event_time,
        key_positions,
        delay_ms: source.delay_ms,
    }))))
}

/// The one table every scan below `plan` reads, if `plan` is made only of projections,
/// filters, aliases and unions over scans of it.
fn scanned_source(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::Projection(Projection { input, .. })
        | LogicalPlan::Filter(Filter { input, .. })
        | LogicalPlan::SubqueryAlias(SubqueryAlias { input, .. }) => scanned_source(input),
        LogicalPlan::Union(union) => {
            let mut names = union.inputs.iter().map(|input| scanned_source(input));
            let first = names.next()??;
            names
                .all(|name| name.as_ref() == Some(&first))
                .then_some(first)
        }
        LogicalPlan::TableScan(scan) => Some(scan.table_name.table().to_string()),
        _ => None,
    }
}

/// The source column `column` of `plan` passes through unchanged, if it does.
fn origin(plan: &LogicalPlan, column: &Column) -> Option<usize> {
    match plan {
        LogicalPlan::Projection(projection) => {
            let index = projection.schema.index_of_column(column).ok()?;
            match projection.expr.get(index)?.clone().unalias() {
                Expr::Column(inner) => origin(&projection.input, &inner),
                _ => None,
            }
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let index = alias.schema.index_of_column(column).ok()?;
            origin(&alias.input, &column_at(&alias.input, index))
        }
        LogicalPlan::Filter(filter) => origin(&filter.input, column),
        LogicalPlan::Union(union) => {
            let index = union.schema.index_of_column(column).ok()?;
            let mut origins = union
                .inputs
                .iter()
                .map(|input| origin(input, &column_at(input, index)));
            let first = origins.next()??;
            origins.all(|o| o == Some(first)).then_some(first)
        }
        LogicalPlan::TableScan(scan) => {
            let index = scan.projected_schema.index_of_column(column).ok()?;
            match &scan.projection {
                Some(projection) => projection.get(index).copied(),
                None => Some(index),
            }
        }
        _ => None,
    }
}

fn column_at(plan: &LogicalPlan, index: usize) -> Column {
    Column::from(plan.schema().qualified_field(index))
}

/// `plan` with each row's event time as an extra last column (or, for a table scan, the
/// scan's own event-time column), and that column's index; `None` for a node that cannot
/// carry it. With `real` off the column is NULL: a row copy that must not advance its key's
/// watermark.
fn expose(
    plan: &LogicalPlan,
    source: &KeyedSource,
    real: bool,
) -> DfResult<Option<(LogicalPlan, usize)>> {
    let exposed = match plan {
        LogicalPlan::Projection(projection) if !real => {
            let null = lit(ScalarValue::try_from(&source.event_time_type)?);
            appended(
                projection.expr.clone(),
                null,
                projection.input.as_ref().clone(),
            )?
        }
        LogicalPlan::Projection(projection) => {
            let Some((input, index)) = expose(&projection.input, source, true)? else {
                return Ok(None);
            };
            let time = Expr::Column(column_at(&input, index));
            appended(projection.expr.clone(), time, input)?
        }
        LogicalPlan::Filter(filter) => {
            let Some((input, index)) = expose(&filter.input, source, real)? else {
                return Ok(None);
            };
            let filter = Filter::try_new(filter.predicate.clone(), Arc::new(input))?;
            (LogicalPlan::Filter(filter), index)
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let Some((input, index)) = expose(&alias.input, source, real)? else {
                return Ok(None);
            };
            let alias = SubqueryAlias::try_new(Arc::new(input), alias.alias.clone())?;
            (LogicalPlan::SubqueryAlias(alias), index)
        }
        LogicalPlan::Union(union) => {
            let width = union.schema.fields().len();
            let last = union.inputs.len().saturating_sub(1);
            let mut inputs = Vec::with_capacity(union.inputs.len());
            for (position, input) in union.inputs.iter().enumerate() {
                // A HOP reaches the aggregation as one copy of each row per window, one per
                // union input, in input order. Only the last copy carries the event time, so
                // a key's watermark advances once every copy of a batch was counted.
                let Some((input, index)) = expose(input, source, real && position == last)? else {
                    return Ok(None);
                };
                let input = if index == width {
                    input
                } else {
                    let time = Expr::Column(column_at(&input, index));
                    appended(columns_of(&input), time, input)?.0
                };
                inputs.push(Arc::new(input));
            }
            (LogicalPlan::Union(Union::try_new(inputs)?), width)
        }
        LogicalPlan::TableScan(_) if !real => {
            let null = lit(ScalarValue::try_from(&source.event_time_type)?);
            appended(columns_of(plan), null, plan.clone())?
        }
        LogicalPlan::TableScan(scan) => {
            let column = source.event_time;
            let Some(projection) = &scan.projection else {
                return Ok(Some((plan.clone(), column)));
            };
            if let Some(index) = projection.iter().position(|&c| c == column) {
                return Ok(Some((plan.clone(), index)));
            }
            let mut projection = projection.clone();
            projection.push(column);
            let index = projection.len() - 1;
            let scan = TableScanBuilder::from(scan.clone())
                .with_projection(Some(projection))
                .build()?;
            (LogicalPlan::TableScan(scan), index)
        }
        _ => return Ok(None),
    };
    Ok(Some(exposed))
}

/// A projection of `exprs` and then `time`, as the event-time column, over `input`.
fn appended(
    mut exprs: Vec<Expr>,
    time: Expr,
    input: LogicalPlan,
) -> DfResult<(LogicalPlan, usize)> {
    let index = exprs.len();
    exprs.push(time.alias(EVENT_TIME_COLUMN));
    let projection = Projection::try_new(exprs, Arc::new(input))?;
    Ok((LogicalPlan::Projection(projection), index))
}

/// Every column of `plan`, as expressions passing them through a projection.
fn columns_of(plan: &LogicalPlan) -> Vec<Expr> {
    plan.schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect()
}
