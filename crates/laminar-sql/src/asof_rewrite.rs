//! ASOF joins, as parsed (an ordinary join whose `ON` condition starts with the marker
//! `laminar_asof_join(..)`, see `parser::asof`), rewritten before planning into a join on
//! `laminar_asof(left_time, right_time, 'comparison', tolerance_ms) AND <equalities>`: the
//! time comparison (`>=`, `>`, `<=`, `<` or `NEAREST(l.ts, r.ts)`) is found among the `ON`
//! conjuncts (DuckDB) or in `MATCH_CONDITION` (Snowflake), the `TOLERANCE` is read, and
//! anything else in the condition but equalities is refused.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Join,
    JoinConstraint, JoinOperator, Query, SetExpr, TableFactor, TableWithJoins, Visit, VisitMut,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::asof_udf::ASOF;
use crate::error::{Result, SqlError};
use crate::interval::interval_ms;
use crate::parser::{ASOF_JOIN_MARKER, ASOF_TOLERANCE};

/// Rewrites every ASOF join of `query` in place; returns whether there was one.
pub(crate) fn rewrite_asof_joins(query: &mut Query, context: &str) -> Result<bool> {
    struct Rewrite<'a> {
        context: &'a str,
        found: bool,
    }
    impl Rewrite<'_> {
        fn tables(&mut self, from: &mut TableWithJoins) -> Result<()> {
            for join in &mut from.joins {
                self.found |= rewrite_join(join, self.context)?;
            }
            Ok(())
        }

        fn set_expr(&mut self, body: &mut SetExpr) -> Result<()> {
            match body {
                SetExpr::Select(select) => {
                    for from in &mut select.from {
                        self.tables(from)?;
                    }
                }
                SetExpr::SetOperation { left, right, .. } => {
                    self.set_expr(left)?;
                    self.set_expr(right)?;
                }
                // Nested queries are visited on their own.
                _ => {}
            }
            Ok(())
        }
    }
    impl VisitorMut for Rewrite<'_> {
        type Break = SqlError;

        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<SqlError> {
            match self.set_expr(&mut query.body) {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => ControlFlow::Break(error),
            }
        }

        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SqlError> {
            let TableFactor::NestedJoin {
                table_with_joins, ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            match self.tables(table_with_joins) {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => ControlFlow::Break(error),
            }
        }

        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<SqlError> {
            // What is left of the markers was not where an ASOF join puts them.
            if is_marker(expr) || is_tolerance(expr) {
                return ControlFlow::Break(invalid(
                    self.context,
                    "TOLERANCE and the ASOF time comparison belong to the ON condition of an ASOF JOIN"
                        .to_string(),
                ));
            }
            ControlFlow::Continue(())
        }
    }
    let mut rewrite = Rewrite {
        context,
        found: false,
    };
    match query.visit(&mut rewrite) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(rewrite.found),
    }
}

/// True if `query` (as parsed) holds an ASOF join.
pub fn contains_asof_join(query: &Query) -> bool {
    holds_marker(query)
}

fn holds_marker<V: Visit>(node: &V) -> bool {
    visit_expressions(node, |expr| {
        if is_marker(expr) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

fn invalid(context: &str, message: String) -> SqlError {
    SqlError::Invalid {
        context: context.to_string(),
        message,
    }
}

fn function_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Function(function) => Some(function.name.to_string().to_lowercase()),
        _ => None,
    }
}

fn is_marker(expr: &Expr) -> bool {
    function_name(expr).as_deref() == Some(ASOF_JOIN_MARKER)
}

fn is_tolerance(expr: &Expr) -> bool {
    matches!(expr, Expr::Identifier(ident) if ident.value.eq_ignore_ascii_case(ASOF_TOLERANCE))
}

/// The unnamed arguments of a function call.
fn arguments(expr: &Expr) -> Option<Vec<&Expr>> {
    let Expr::Function(function) = expr else {
        return None;
    };
    match &function.args {
        FunctionArguments::None => Some(Vec::new()),
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|arg| match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Some(expr),
                _ => None,
            })
            .collect(),
        FunctionArguments::Subquery(_) => None,
    }
}

fn conjuncts(expr: Expr, into: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, into);
            conjuncts(*right, into);
        }
        Expr::Nested(inner) => conjuncts(*inner, into),
        other => into.push(other),
    }
}

/// `(left, right, comparison)` of a time comparison: `a >= b` (and `>`, `<=`, `<`) or
/// `NEAREST(a, b)`.
fn time_comparison(expr: &Expr) -> Option<(&Expr, &Expr, &'static str)> {
    if let Expr::BinaryOp { left, op, right } = expr {
        let comparison = match op {
            BinaryOperator::GtEq => ">=",
            BinaryOperator::Gt => ">",
            BinaryOperator::LtEq => "<=",
            BinaryOperator::Lt => "<",
            _ => return None,
        };
        return Some((left, right, comparison));
    }
    if function_name(expr).as_deref() == Some("nearest") {
        if let Some([left, right]) = arguments(expr).as_deref() {
            return Some((left, right, "nearest"));
        }
    }
    None
}

const NOT_A_CONJUNCTION: &str = "the ON condition of an ASOF JOIN holds equalities and one \
    time comparison (>=, >, <=, < or NEAREST(l.ts, r.ts)) joined by AND";

/// Rewrites `join` if it is an ASOF join; returns whether it was.
fn rewrite_join(join: &mut Join, context: &str) -> Result<bool> {
    let (outer, constraint) = match &mut join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => (false, c),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (true, c),
        _ => return Ok(false),
    };
    let JoinConstraint::On(condition) = constraint else {
        return Ok(false);
    };
    let mut parts = Vec::new();
    conjuncts(condition.clone(), &mut parts);
    let Some(marker) = parts.iter().position(is_marker) else {
        if holds_marker(condition) {
            return Err(invalid(context, NOT_A_CONJUNCTION.to_string()));
        }
        return Ok(false);
    };
    let marker = parts.remove(marker);
    let written: Vec<Expr> = arguments(&marker)
        .unwrap_or_default()
        .into_iter()
        .cloned()
        .collect();
    let mut match_condition = match written.as_slice() {
        [] => None,
        [condition] if time_comparison(condition).is_some() => Some(condition.clone()),
        _ => {
            let written: Vec<String> = written.iter().map(ToString::to_string).collect();
            return Err(invalid(
                context,
                format!(
                    "ASOF JOIN MATCH_CONDITION takes one time comparison (>=, >, <=, < or \
                     NEAREST(l.ts, r.ts)), not {}",
                    written.join(", ")
                ),
            ));
        }
    };
    let mut tolerance_ms = None;
    let mut keys = Vec::new();
    for part in parts {
        match part {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } if is_tolerance(&left) => {
                let ms = interval_ms(&right.to_string(), "TOLERANCE")?;
                if ms < 0 || tolerance_ms.replace(ms).is_some() {
                    return Err(invalid(
                        context,
                        format!("an ASOF JOIN takes one TOLERANCE, not negative: {right}"),
                    ));
                }
            }
            Expr::BinaryOp {
                op: BinaryOperator::Eq,
                ..
            } => keys.push(part),
            other if time_comparison(&other).is_some() && match_condition.is_none() => {
                match_condition = Some(other);
            }
            other => {
                return Err(invalid(
                    context,
                    format!("{NOT_A_CONJUNCTION}; {other} is neither"),
                ))
            }
        }
    }
    let Some(match_condition) = match_condition else {
        return Err(invalid(
            context,
            "an ASOF JOIN needs a time comparison: l.ts >= r.ts (latest at or before), >, \
             <= (earliest at or after), < or NEAREST(l.ts, r.ts)"
                .into(),
        ));
    };
    let Some((left, right, comparison)) = time_comparison(&match_condition) else {
        return Err(invalid(
            context,
            format!("{match_condition} is not a time comparison"),
        ));
    };
    let tolerance = tolerance_ms.map_or_else(|| "NULL".to_string(), |ms| ms.to_string());
    let marker = parse_expr(
        &format!("{ASOF}({left}, {right}, '{comparison}', {tolerance})"),
        context,
    )?;
    let condition = keys.into_iter().fold(marker, |all, key| Expr::BinaryOp {
        left: Box::new(all),
        op: BinaryOperator::And,
        right: Box::new(key),
    });
    let constraint = JoinConstraint::On(condition);
    join.join_operator = if outer {
        JoinOperator::LeftOuter(constraint)
    } else {
        JoinOperator::Inner(constraint)
    };
    Ok(true)
}

fn parse_expr(sql: &str, context: &str) -> Result<Expr> {
    let dialect = GenericDialect {};
    Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut parser| parser.parse_expr())
        .map_err(|e| invalid(context, format!("ASOF JOIN condition {sql}: {e}")))
}
