//! Translation of a join carrying the `laminar_asof` marker into the ASOF join operator, fed
//! by one exchange per side routing rows by the equality keys (all rows to one worker
//! without keys). Both sides' times must be their inputs' event-time columns, since the
//! watermark is what settles an answer.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::row::SortField;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, NullEquality};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, ExprSchemable, Join, JoinType, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use laminar_core::operator::{
    AsofDirection, AsofJoinOperator, AsofJoinSide, AsofJoinSpec, ExchangeOperator, KeyRouter,
};

use super::{Builder, Produced};
use crate::asof_udf::{asof_call, AsofCall};
use crate::error::{Result, SqlError};
use crate::parser::Emit;

/// The marker call in `join`'s condition, if it is an ASOF join.
pub(super) fn asof_marker(join: &Join) -> Option<AsofCall<'_>> {
    join.filter
        .as_ref()
        .and_then(|filter| split_conjunction(filter).into_iter().find_map(asof_call))
}

/// Number of `laminar_asof` marker calls anywhere in `plan`.
pub(super) fn marker_calls(plan: &LogicalPlan) -> usize {
    let mut count = 0;
    // The closures never fail, so neither can the traversal.
    let _ = plan.apply(|node| {
        let _ = node.apply_expressions(|expr| {
            expr.apply(|e| {
                if asof_call(e).is_some() {
                    count += 1;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(TreeNodeRecursion::Continue)
    });
    count
}

/// True if `column` of `plan`'s rows is an event-time column: one a source declared with
/// `WATERMARK FOR`, or a view's or stream's that is one, passed on unchanged (by
/// projections, filters, unions and the left side of ASOF joins).
pub(super) fn is_event_time(
    plan: &LogicalPlan,
    column: &Column,
    event_times: &HashMap<String, usize>,
) -> bool {
    let Ok(index) = plan.schema().index_of_column(column) else {
        return false;
    };
    let field_of = |input: &LogicalPlan, index: usize| {
        let (qualifier, field) = input.schema().qualified_field(index);
        Column::new(qualifier.cloned(), field.name())
    };
    match plan {
        LogicalPlan::Projection(projection) => match projection.expr.get(index) {
            Some(expr) => match expr.clone().unalias() {
                Expr::Column(inner) => is_event_time(&projection.input, &inner, event_times),
                _ => false,
            },
            None => false,
        },
        LogicalPlan::SubqueryAlias(alias) => {
            is_event_time(&alias.input, &field_of(&alias.input, index), event_times)
        }
        LogicalPlan::Filter(filter) => is_event_time(&filter.input, column, event_times),
        LogicalPlan::Union(union) => union
            .inputs
            .iter()
            .all(|input| is_event_time(input, &field_of(input, index), event_times)),
        LogicalPlan::Join(join) if asof_marker(join).is_some() => {
            index < join.left.schema().fields().len()
                && is_event_time(&join.left, &field_of(&join.left, index), event_times)
        }
        LogicalPlan::TableScan(scan) => {
            let source_column = scan
                .projection
                .as_ref()
                .map_or(Some(index), |p| p.get(index).copied());
            source_column.is_some()
                && event_times.get(scan.table_name.table()).copied() == source_column
        }
        _ => false,
    }
}

/// The output column holding the event time: the left row's, passed through first. The
/// operator holds its output watermark at the oldest row still waiting, so the watermark
/// bounds it, unless rows are emitted early and corrected.
fn output_event_time(join: &Join, left_time: &Expr, early: bool) -> Option<usize> {
    match left_time {
        Expr::Column(column) if !early => join.left.schema().index_of_column(column).ok(),
        _ => None,
    }
}

/// Which side of `join` an expression reads: `Some(true)` left, `Some(false)` right.
fn side_of(join: &Join, expr: &Expr) -> Option<bool> {
    let columns = expr.column_refs();
    if columns.is_empty() {
        return None;
    }
    if columns.iter().all(|c| join.left.schema().has_column(c)) {
        Some(true)
    } else if columns.iter().all(|c| join.right.schema().has_column(c)) {
        Some(false)
    } else {
        None
    }
}

impl Builder<'_> {
    /// An ASOF join: the operator with two ports, each fed by an exchange on its keys.
    #[allow(
        clippy::too_many_lines,
        reason = "the checks of an ASOF join's condition, then its operator, in one place"
    )]
    pub(super) fn add_asof_join(
        &mut self,
        join: &Join,
        parent: Option<(usize, usize)>,
    ) -> Result<Produced> {
        let marker = asof_marker(join).ok_or_else(|| self.invalid("not an ASOF join".into()))?;
        let outer = match join.join_type {
            JoinType::Inner => false,
            JoinType::Left => true,
            other => return Err(self.unsupported(&format!("ASOF JOIN as a {other} join"))),
        };
        if join.null_equality != NullEquality::NullEqualsNothing {
            return Err(self.unsupported("IS NOT DISTINCT FROM in an ASOF JOIN condition"));
        }
        if let Some(other) = join
            .filter
            .iter()
            .flat_map(split_conjunction)
            .find(|e| asof_call(e).is_none())
        {
            return Err(self.invalid(format!(
                "the ON condition of an ASOF JOIN holds equalities between the two sides and one \
                 time comparison; {other} is neither"
            )));
        }
        let (left_time, right_time, comparison) = match (
            side_of(join, marker.left_time),
            side_of(join, marker.right_time),
        ) {
            (Some(true), Some(false)) => (marker.left_time, marker.right_time, marker.comparison),
            (Some(false), Some(true)) => {
                let flipped = match marker.comparison {
                    ">=" => "<=",
                    ">" => "<",
                    "<=" => ">=",
                    "<" => ">",
                    other => other,
                };
                (marker.right_time, marker.left_time, flipped)
            }
            _ => {
                return Err(self.invalid(format!(
                    "the ASOF JOIN time comparison must compare a time of each side, not {} and {}",
                    marker.left_time, marker.right_time
                )))
            }
        };
        let (direction, inclusive) = match comparison {
            ">=" => (AsofDirection::Backward, true),
            ">" => (AsofDirection::Backward, false),
            "<=" => (AsofDirection::Forward, true),
            "<" => (AsofDirection::Forward, false),
            _ => (AsofDirection::Nearest, true),
        };
        let mut spec = AsofJoinSpec {
            direction,
            inclusive,
            tolerance_ms: marker.tolerance_ms,
            outer,
            early: self.emit == Emit::OnUpdate,
            versioned_right: false,
        };
        let (left_keys, right_keys): (Vec<&Expr>, Vec<&Expr>) =
            join.on.iter().map(|(l, r)| (l, r)).unzip();
        spec.versioned_right = self.check_table_key(&join.right, &right_keys, "a temporal join")?;
        let left = self.asof_side(&join.left, &left_keys, left_time)?;
        let right = self.asof_side(&join.right, &right_keys, right_time)?;
        let key_fields = left_keys
            .iter()
            .map(|e| e.get_type(join.left.schema()).map(SortField::new))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| self.plan_error(&e))?;
        // The operator goes in once its inputs are known to be append-only.
        let node = self.push(Box::new(ExchangeOperator::new(Vec::new())), parent, 2, None);
        for (port, (side, input)) in [(&left, &join.left), (&right, &join.right)]
            .into_iter()
            .enumerate()
        {
            let router = KeyRouter::new(side.keys.clone(), key_fields.clone())
                .map_err(|e| self.plan_error(&e))?;
            let exchange = self.push(
                Box::new(ExchangeOperator::new(side.keys.clone())),
                Some((node, port)),
                1,
                None,
            );
            self.nodes[exchange].router = Some(Arc::new(router));
            // A table on the right is versioned: its changelog's inserts are its versions.
            if self.add(input, Some((exchange, 0)))?.changelog
                && !(port == 1 && spec.versioned_right)
            {
                return Err(self.unsupported(
                    "ASOF JOIN over a changelog (a view or stream that itself aggregates); \
                     its inputs must be append-only",
                ));
            }
        }
        self.check_event_time(&join.left, left_time)?;
        self.check_event_time(&join.right, right_time)?;
        let schema = Arc::clone(join.schema.inner());
        let operator =
            AsofJoinOperator::new(left, right, spec, schema).map_err(|e| self.plan_error(&e))?;
        self.nodes[node].operator = Box::new(operator);
        self.asof_markers_planned += 1;
        Ok(Produced {
            changelog: spec.early,
            window_end: None,
            event_time: output_event_time(join, left_time, spec.early),
            unordered: false,
        })
    }

    /// One side of an ASOF join as the operator sees it.
    fn asof_side(&self, input: &LogicalPlan, keys: &[&Expr], time: &Expr) -> Result<AsofJoinSide> {
        let physical = |e: &Expr| -> Result<Arc<dyn PhysicalExpr>> {
            self.state
                .create_physical_expr(e.clone(), input.schema())
                .map_err(|e| self.plan_error(&e))
        };
        Ok(AsofJoinSide {
            keys: keys
                .iter()
                .map(|e| physical(e))
                .collect::<Result<Vec<_>>>()?,
            time: physical(time)?,
            schema: Arc::clone(input.schema().inner()),
        })
    }

    /// The watermark settles ASOF answers, so a side's time must be its event time.
    fn check_event_time(&self, input: &LogicalPlan, time: &Expr) -> Result<()> {
        let is_event_time = match time {
            Expr::Column(column) => is_event_time(input, column, self.inputs.event_times),
            _ => false,
        };
        if is_event_time {
            return Ok(());
        }
        Err(self.unsupported(&format!(
            "ASOF JOIN comparing {time}, which is not its input's event-time column (the column of \
             a source's WATERMARK FOR, passed on unchanged); the watermark decides when an ASOF \
             answer is final"
        )))
    }

    fn invalid(&self, message: String) -> SqlError {
        SqlError::Invalid {
            context: self.context.to_string(),
            message,
        }
    }
}
