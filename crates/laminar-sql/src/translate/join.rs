//! Translation of a `Join` plan node. Each input reaches the join through an exchange keyed
//! by its side of the equi-join keys (cast to common types, so equal keys hash alike and
//! meet on one worker). When both inputs are append-only and the condition bounds one
//! input's event time by the other's (or equates their window ends), the join is an interval
//! (window) join whose state the watermark bounds; a stream joined with a reference table on
//! its primary key is a lookup join (see `lookup`); otherwise it is a regular join, which
//! keeps every row and emits a changelog.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::SortField;
use datafusion::common::{JoinType, NullEquality};
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::{Expr, ExprSchemable, Join, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use laminar_core::operator::{
    ExchangeOperator, IntervalJoinOperator, JoinSpec, KeyRouter, LookupJoinOperator, Operator,
    RegularJoinOperator, TimeBound,
};

use super::{Builder, Produced};
use crate::error::{Result, SqlError};
use crate::join_bounds::{time_bounds, without_implied};
use crate::parser::Emit;

/// The join keys of both inputs as physical expressions of equal types.
pub(super) struct Keys {
    pub(super) left: Vec<Arc<dyn PhysicalExpr>>,
    pub(super) right: Vec<Arc<dyn PhysicalExpr>>,
    pub(super) fields: Vec<SortField>,
}

impl Builder<'_> {
    /// A join: its operator over two keyed exchanges, one per input.
    pub(super) fn add_join(
        &mut self,
        join: &Join,
        parent: Option<(usize, usize)>,
    ) -> Result<Produced> {
        self.check_join(join)?;
        if let Some(produced) = self.add_lookup_source_join(join, parent)? {
            return Ok(produced);
        }
        let keys = self.join_keys(join)?;
        let filter = self.pair_filter(join, join.filter.clone())?;
        let spec = JoinSpec {
            join_type: join.join_type,
            keys: [keys.left.clone(), keys.right.clone()],
            key_fields: keys.fields.clone(),
            nulls_equal: join.null_equality == NullEquality::NullEqualsNull,
            filter,
            inputs: [
                Arc::clone(join.left.schema().inner()),
                Arc::clone(join.right.schema().inner()),
            ],
            schema: Arc::clone(join.schema.inner()),
        };
        // The operator goes in once its inputs are known: append-only inputs with event
        // times may make it an interval join.
        let node = self.push(Box::new(ExchangeOperator::new(Vec::new())), parent, 2, None);
        let left = self.add_keyed(&join.left, keys.left, keys.fields.clone(), (node, 0))?;
        let right = self.add_keyed(&join.right, keys.right, keys.fields, (node, 1))?;
        if self.check_table_sides(join, left)? {
            let operator = LookupJoinOperator::new(spec).map_err(|e| self.plan_error(&e))?;
            self.nodes[node].operator = Box::new(operator);
            // Stream columns come first, unchanged, and each row is emitted on arrival.
            return Ok(Produced {
                changelog: false,
                ..left
            });
        }
        let (operator, produced): (Box<dyn Operator>, Produced) =
            match interval_bound(join, left, right) {
                Ok(bound) => {
                    let spec = self.without_implied(join, bound, spec)?;
                    let operator =
                        IntervalJoinOperator::new(spec, bound).map_err(|e| self.plan_error(&e))?;
                    (
                        Box::new(operator),
                        interval_output(join, bound, left, right),
                    )
                }
                Err(reason) => {
                    if matches!(self.emit, Emit::OnWindowClose { .. }) {
                        return Err(self.unsupported(&format!(
                            "a regular join with EMIT ON WINDOW CLOSE ({reason}): a regular join \
                             keeps every row and emits as either input changes, so its rows are \
                             not final when a window closes; join windowed inputs on \
                             window_start and window_end (a window join), or bound one input's \
                             event time by the other's, e.g. b.ts BETWEEN a.ts - INTERVAL '1' \
                             MINUTE AND a.ts + INTERVAL '1' MINUTE (an interval join)"
                        )));
                    }
                    let changelog_inputs = left.changelog || right.changelog;
                    self.joins_changelog |= changelog_inputs;
                    let retracts = matches!(
                        join.join_type,
                        JoinType::Left
                            | JoinType::Right
                            | JoinType::Full
                            | JoinType::LeftAnti
                            | JoinType::RightAnti
                    );
                    let mut operator = RegularJoinOperator::new(spec, changelog_inputs)
                        .map_err(|e| self.plan_error(&e))?;
                    if let Some(ttl) = self.state_ttl {
                        operator = operator.with_state_ttl(ttl);
                    }
                    self.regular_joins += 1;
                    let produced = Produced {
                        changelog: changelog_inputs || retracts,
                        window_end: None,
                        event_time: None,
                        unordered: true,
                    };
                    (Box::new(operator), produced)
                }
            };
        self.nodes[node].operator = operator;
        Ok(produced)
    }

    /// `spec` without the conjuncts of its condition that `bound` enforces exactly.
    fn without_implied(&self, join: &Join, bound: TimeBound, spec: JoinSpec) -> Result<JoinSpec> {
        let schemas = [join.left.schema().as_ref(), join.right.schema().as_ref()];
        let residual = without_implied(join.filter.as_ref(), schemas, bound.columns);
        if residual.as_ref() == join.filter.as_ref() {
            return Ok(spec);
        }
        let filter = self.pair_filter(join, residual)?;
        Ok(JoinSpec { filter, ..spec })
    }

    /// `filter` (over a left row followed by a right row of `join`) as a physical
    /// expression.
    pub(super) fn pair_filter(
        &self,
        join: &Join,
        filter: Option<Expr>,
    ) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        let Some(filter) = filter else {
            return Ok(None);
        };
        let pair_schema = join
            .left
            .schema()
            .join(join.right.schema())
            .map_err(|e| self.plan_error(&e))?;
        self.state
            .create_physical_expr(filter, &pair_schema)
            .map(Some)
            .map_err(|e| self.plan_error(&e))
    }

    /// Refuses the joins without a streaming form, saying what to write instead.
    fn check_join(&self, join: &Join) -> Result<()> {
        if matches!(join.join_type, JoinType::LeftMark | JoinType::RightMark) {
            return Err(self.unsupported(
                "an IN or EXISTS subquery used as a value or under OR (only one in a WHERE \
                 condition, ANDed with the rest, becomes a join)",
            ));
        }
        if join.null_aware {
            return Err(self.unsupported(
                "NOT IN (subquery) over a column that may be NULL (one NULL among the \
                 subquery's values hides every row, which needs every row in one place); write \
                 NOT EXISTS (SELECT ... WHERE sub.k = outer.k), or declare both columns NOT NULL",
            ));
        }
        if join.on.is_empty() {
            return Err(self.unsupported(&format!(
                "{} without an equality between its inputs (a cross join, or only other \
                 comparisons): every row would be compared with every row of the other input; \
                 add an equality such as a.k = b.k to the condition",
                join_name(join.join_type)
            )));
        }
        Ok(())
    }

    /// The equi-join keys, each pair cast to the type both compare as.
    pub(super) fn join_keys(&self, join: &Join) -> Result<Keys> {
        let (left_schema, right_schema) = (join.left.schema(), join.right.schema());
        let mut keys = Keys {
            left: Vec::new(),
            right: Vec::new(),
            fields: Vec::new(),
        };
        for (left, right) in &join.on {
            let left_type = left
                .get_type(left_schema)
                .map_err(|e| self.plan_error(&e))?;
            let right_type = right
                .get_type(right_schema)
                .map_err(|e| self.plan_error(&e))?;
            let common = if left_type == right_type {
                left_type.clone()
            } else {
                comparison_coercion(&left_type, &right_type).ok_or_else(|| SqlError::Invalid {
                    context: self.context.to_string(),
                    message: format!(
                        "join keys {left} ({left_type}) and {right} ({right_type}) cannot be compared"
                    ),
                })?
            };
            let cast = |expr: &Expr, from: &DataType| {
                if *from == common {
                    expr.clone()
                } else {
                    Expr::Cast(Cast::new(Box::new(expr.clone()), common.clone()))
                }
            };
            let physical = |expr: Expr, schema| {
                self.state
                    .create_physical_expr(expr, schema)
                    .map_err(|e| self.plan_error(&e))
            };
            keys.left
                .push(physical(cast(left, &left_type), left_schema)?);
            keys.right
                .push(physical(cast(right, &right_type), right_schema)?);
            keys.fields.push(SortField::new(common));
        }
        Ok(keys)
    }

    /// `input` below an exchange routing its rows by `keys` into `parent`.
    pub(super) fn add_keyed(
        &mut self,
        input: &LogicalPlan,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        fields: Vec<SortField>,
        parent: (usize, usize),
    ) -> Result<Produced> {
        let router = KeyRouter::new(keys.clone(), fields).map_err(|e| self.plan_error(&e))?;
        let exchange = self.push(Box::new(ExchangeOperator::new(keys)), Some(parent), 1, None);
        self.nodes[exchange].router = Some(Arc::new(router));
        self.add(input, Some((exchange, 0)))
    }
}

/// How the SQL behind a join type reads, for errors.
pub(super) fn join_name(join_type: JoinType) -> &'static str {
    match join_type {
        JoinType::Inner => "a JOIN",
        JoinType::Left => "a LEFT JOIN",
        JoinType::Right => "a RIGHT JOIN",
        JoinType::Full => "a FULL JOIN",
        JoinType::LeftSemi | JoinType::RightSemi => "an IN or EXISTS subquery (a semi join)",
        JoinType::LeftAnti | JoinType::RightAnti => {
            "a NOT IN or NOT EXISTS subquery (an anti join)"
        }
        JoinType::LeftMark | JoinType::RightMark => "an IN or EXISTS subquery used as a value",
    }
}

/// The time bound that makes `join` an interval join, or why it is a regular join.
fn interval_bound(
    join: &Join,
    left: Produced,
    right: Produced,
) -> std::result::Result<TimeBound, String> {
    if left.changelog || right.changelog {
        return Err("an input is a changelog, whose rows can be retracted".into());
    }
    let schemas = [join.left.schema().as_ref(), join.right.schema().as_ref()];
    let times = |produced: Produced, side: usize| -> Vec<usize> {
        [produced.event_time, produced.window_end]
            .into_iter()
            .flatten()
            .filter(|&c| {
                matches!(
                    schemas[side].field(c).data_type(),
                    DataType::Timestamp(..) | DataType::Int64
                )
            })
            .collect()
    };
    let (left_times, right_times) = (times(left, 0), times(right, 1));
    for (side, columns) in [("left", &left_times), ("right", &right_times)] {
        if columns.is_empty() {
            return Err(format!(
                "the {side} input has no event-time column (a source's WATERMARK FOR column, \
                 or the window_end of windowed rows)"
            ));
        }
    }
    let bounds = time_bounds(
        &join.on,
        join.null_equality == NullEquality::NullEqualsNull,
        join.filter.as_ref(),
        schemas,
        [&left_times, &right_times],
    );
    let is_window = |b: &crate::join_bounds::PairBounds| {
        Some(b.left) == left.window_end
            && Some(b.right) == right.window_end
            && b.low_ms == 0
            && b.high_ms == 0
    };
    // Equal window ends first (a window join), then the narrowest bound.
    let chosen = bounds
        .iter()
        .min_by_key(|b| (!is_window(b), b.high_ms.saturating_sub(b.low_ms)))
        .ok_or_else(|| {
            "no condition bounds one input's event time by the other's from both sides, nor \
             equates their window ends"
                .to_string()
        })?;
    Ok(TimeBound {
        columns: [chosen.left, chosen.right],
        low_ms: chosen.low_ms,
        high_ms: chosen.high_ms,
        window: is_window(chosen),
    })
}

/// What an interval join's rows are: append-only, with the window end and event time of the
/// input whose columns every row holds.
fn interval_output(join: &Join, bound: TimeBound, left: Produced, right: Produced) -> Produced {
    let left_len = join.left.schema().fields().len();
    let (window_end, event_time) = match join.join_type {
        JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti => {
            (left.window_end, Some(bound.columns[0]))
        }
        JoinType::Right => (
            right.window_end.map(|c| c + left_len),
            Some(bound.columns[1] + left_len),
        ),
        JoinType::RightSemi | JoinType::RightAnti => (right.window_end, Some(bound.columns[1])),
        JoinType::Full | JoinType::LeftMark | JoinType::RightMark => (None, None),
    };
    Produced {
        changelog: false,
        window_end,
        event_time,
        unordered: false,
    }
}
