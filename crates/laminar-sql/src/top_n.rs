//! Recognizes top-N per group in a logical plan: a filter bounding a
//! `ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..)` from above (`rn <= N`, `rn < N`,
//! `rn = 1`, `N >= rn`) over the window node computing it, possibly through projections and
//! aliases. It is the one use of window functions with a streaming implementation; every
//! other use is refused with an error naming the function.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Filter, LogicalPlan, Operator, Window, WindowFunctionDefinition,
};

/// What continuous queries may do with window functions, for error messages.
const SUPPORTED: &str = "only top-N per group runs continuously: \
    ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) AS rn, filtered by rn <= N, rn < N or rn = 1";

/// A top-N per group found in a plan.
pub(crate) struct TopN<'a> {
    filter: &'a Filter,
    /// Projections and aliases between the filter and the window node, top first.
    pub(crate) chain: Vec<&'a LogicalPlan>,
    /// The window node computing the row number, as a plan node.
    pub(crate) window_plan: &'a LogicalPlan,
    /// The same node.
    pub(crate) window: &'a Window,
    /// The `ROW_NUMBER()` call.
    pub(crate) function: &'a WindowFunction,
    /// Rows kept per partition.
    pub(crate) limit: u64,
    /// The conjuncts of the filter that keeping `limit` rows does not already guarantee.
    residual: Vec<Expr>,
}

impl<'a> TopN<'a> {
    /// The top-N that `filter` selects, if it bounds a row number from above.
    pub(crate) fn find(filter: &'a Filter) -> Option<Self> {
        let (chain, window_plan, window) = window_below(&filter.input)?;
        let [expr] = window.window_expr.as_slice() else {
            return None;
        };
        let Expr::WindowFunction(function) = unaliased(expr) else {
            return None;
        };
        if !is_row_number(function) {
            return None;
        }
        // The row number follows the window node's input columns.
        let rank = window.input.schema().fields().len();
        let is_rank = |expr: &Expr| {
            let expr = match expr {
                Expr::Cast(c) if c.field.data_type().is_numeric() => c.expr.as_ref(),
                Expr::TryCast(c) if c.field.data_type().is_numeric() => c.expr.as_ref(),
                other => other,
            };
            let Expr::Column(column) = expr else {
                return false;
            };
            let index = filter.input.schema().index_of_column(column).ok();
            index.and_then(|i| trace(&filter.input, i)) == Some(rank)
        };
        let mut limit: Option<u64> = None;
        let mut residual = Vec::new();
        for conjunct in split_conjunction(&filter.predicate) {
            let bound = upper_bound(conjunct, &is_rank);
            if let Some((value, _)) = bound {
                limit = Some(limit.map_or(value, |limit| limit.min(value)));
            }
            if !bound.is_some_and(|(_, implied)| implied) {
                residual.push(conjunct.clone());
            }
        }
        Some(Self {
            filter,
            chain,
            window_plan,
            window,
            function,
            limit: limit?,
            residual,
        })
    }

    /// Why this top-N cannot run continuously, if it cannot.
    pub(crate) fn unsupported(&self) -> Option<String> {
        self.function
            .params
            .order_by
            .is_empty()
            .then(|| format!("ROW_NUMBER() OVER (...) without ORDER BY ({SUPPORTED})"))
    }

    /// The part of the filter left to apply to the numbered rows.
    pub(crate) fn residual(&self) -> Option<Expr> {
        conjunction(self.residual.iter().cloned())
    }

    /// Whether `exprs`, over the filter's output, read the row number (or a column computed
    /// above the window node, which might be derived from it).
    pub(crate) fn reads_rank<'e>(&self, exprs: impl IntoIterator<Item = &'e Expr>) -> bool {
        let schema = self.filter.input.schema();
        let rank = self.window.input.schema().fields().len();
        exprs.into_iter().flat_map(Expr::column_refs).any(|column| {
            let index = schema.index_of_column(column).ok();
            index
                .and_then(|i| trace(&self.filter.input, i))
                .is_none_or(|i| i >= rank)
        })
    }

    /// Whether the part of the filter left to apply reads the row number.
    pub(crate) fn residual_reads_rank(&self) -> bool {
        self.reads_rank(&self.residual)
    }
}

/// The construct a window node stands for when it is not part of a top-N.
pub(crate) fn unsupported_window(window: &Window) -> String {
    let functions: Vec<&WindowFunction> = window
        .window_expr
        .iter()
        .filter_map(|e| match unaliased(e) {
            Expr::WindowFunction(function) => Some(function.as_ref()),
            _ => None,
        })
        .collect();
    if let Some(other) = functions.iter().find(|f| !is_row_number(f)) {
        let kind = match other.fun {
            WindowFunctionDefinition::AggregateUDF(_) => "aggregate function",
            WindowFunctionDefinition::WindowUDF(_) => "window function",
        };
        let name = other.fun.name().to_uppercase();
        return format!("{kind} {name}() OVER (...) ({SUPPORTED})");
    }
    if functions.len() > 1 {
        return format!("several ROW_NUMBER() OVER the same window ({SUPPORTED})");
    }
    format!("ROW_NUMBER() OVER (...) without a filter rn <= N over it ({SUPPORTED})")
}

fn is_row_number(function: &WindowFunction) -> bool {
    matches!(&function.fun, WindowFunctionDefinition::WindowUDF(udf) if udf.name() == "row_number")
}

fn unaliased(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(alias) => unaliased(&alias.expr),
        other => other,
    }
}

/// The window node below `plan` through projections and aliases, with the nodes passed.
fn window_below(mut plan: &LogicalPlan) -> Option<(Vec<&LogicalPlan>, &LogicalPlan, &Window)> {
    let mut chain = Vec::new();
    loop {
        match plan {
            LogicalPlan::Projection(projection) => {
                chain.push(plan);
                plan = &projection.input;
            }
            LogicalPlan::SubqueryAlias(alias) => {
                chain.push(plan);
                plan = &alias.input;
            }
            LogicalPlan::Window(window) => return Some((chain, plan, window)),
            _ => return None,
        }
    }
}

/// The column of the window node's output that column `index` of `plan` passes on
/// unchanged, following projections and aliases down; `None` for a computed column.
fn trace(mut plan: &LogicalPlan, mut index: usize) -> Option<usize> {
    loop {
        match plan {
            LogicalPlan::Projection(projection) => {
                let Expr::Column(column) = unaliased(projection.expr.get(index)?) else {
                    return None;
                };
                index = projection.input.schema().index_of_column(column).ok()?;
                plan = &projection.input;
            }
            LogicalPlan::SubqueryAlias(alias) => plan = &alias.input,
            LogicalPlan::Window(_) => return Some(index),
            _ => return None,
        }
    }
}

/// `(N, implied)` when `conjunct` keeps only row numbers up to N; `implied` when keeping the
/// first N rows already makes it true.
fn upper_bound(conjunct: &Expr, is_rank: &impl Fn(&Expr) -> bool) -> Option<(u64, bool)> {
    let clamp = |value: i128| u64::try_from(value.max(0)).unwrap_or(u64::MAX);
    match conjunct {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = if is_rank(left) {
                (*op, integer(right)?)
            } else if is_rank(right) {
                (op.swap()?, integer(left)?)
            } else {
                return None;
            };
            match op {
                Operator::LtEq => Some((clamp(value), true)),
                Operator::Lt => Some((clamp(value - 1), true)),
                // Only `rn = 1` (or a value no row number has) is implied by the bound.
                Operator::Eq => Some((clamp(value), value <= 1)),
                _ => None,
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            high,
            ..
        }) if is_rank(expr) => Some((clamp(integer(high)?), false)),
        _ => None,
    }
}

/// The value of an integer literal.
fn integer(expr: &Expr) -> Option<i128> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::Int8(Some(v)) => Some(i128::from(*v)),
        ScalarValue::Int16(Some(v)) => Some(i128::from(*v)),
        ScalarValue::Int32(Some(v)) => Some(i128::from(*v)),
        ScalarValue::Int64(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt8(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt16(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt32(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt64(Some(v)) => Some(i128::from(*v)),
        _ => None,
    }
}
