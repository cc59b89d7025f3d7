//! Finds session windows in an optimized plan: an `Aggregate` whose `window_start` and
//! `window_end` keys are defined (through projections and aliases) by the session marker
//! functions. Markers anywhere else would give each row a window of its own, a wrong
//! answer, so the translation counts them and refuses any it did not plan as a session.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Column;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use laminar_core::operator::SessionWindow;

use crate::session_udf::session_gap_ms;

/// How an aggregate's keys relate to a session window.
pub(crate) enum SessionMatch {
    /// No key is a session bound.
    None,
    /// Both bounds are keys, at these positions.
    Session(SessionWindow),
    /// Only one bound is a key; the message says what is missing.
    Incomplete(&'static str),
}

/// The session window among `aggregate`'s keys, if any.
pub(crate) fn session_keys(aggregate: &Aggregate) -> SessionMatch {
    let mut start = None;
    let mut end = None;
    for (index, key) in aggregate.group_expr.iter().enumerate() {
        let definition = match key.clone().unalias() {
            Expr::Column(column) => resolve(&aggregate.input, &column),
            other => Some(other),
        };
        match definition.as_ref().and_then(session_gap_ms) {
            Some((false, _)) => start = Some(index),
            Some((true, _)) => end = Some(index),
            None => {}
        }
    }
    match (start, end) {
        (Some(start_key), Some(end_key)) => {
            SessionMatch::Session(SessionWindow { start_key, end_key })
        }
        (None, None) => SessionMatch::None,
        (Some(_), None) => SessionMatch::Incomplete("window_end"),
        (None, Some(_)) => SessionMatch::Incomplete("window_start"),
    }
}

/// The expression that defines `column` below `plan`, looking through projections,
/// aliases and filters.
fn resolve(plan: &LogicalPlan, column: &Column) -> Option<Expr> {
    match plan {
        LogicalPlan::Projection(projection) => {
            let index = projection.schema.index_of_column(column).ok()?;
            match projection.expr.get(index)?.clone().unalias() {
                Expr::Column(inner) => resolve(&projection.input, &inner),
                other => Some(other),
            }
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let index = alias.schema.index_of_column(column).ok()?;
            let (qualifier, field) = alias.input.schema().qualified_field(index);
            resolve(&alias.input, &Column::new(qualifier.cloned(), field.name()))
        }
        LogicalPlan::Filter(filter) => resolve(&filter.input, column),
        _ => None,
    }
}

/// Number of session marker calls anywhere in `plan`.
pub(crate) fn marker_calls(plan: &LogicalPlan) -> usize {
    let mut count = 0;
    // The closures never fail, so neither can the traversal.
    let _ = plan.apply(|node| {
        let _ = node.apply_expressions(|expr| {
            expr.apply(|e| {
                if session_gap_ms(e).is_some() {
                    count += 1;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(TreeNodeRecursion::Continue)
    });
    count
}
