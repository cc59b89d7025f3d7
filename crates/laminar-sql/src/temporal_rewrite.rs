//! Joins written with `FOR SYSTEM_TIME AS OF` (an `ON` condition opening with the marker
//! `laminar_temporal_join(time)`, see `parser::temporal`), rewritten before planning once
//! the joined table is known: `PROCTIME()` drops the marker (a lookup join on the rows
//! current at arrival); an event time becomes the ASOF join `laminar_asof_join() AND
//! <condition> AND time >= table.<version time>`, which joins the version valid at that time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Join, JoinConstraint,
    JoinOperator, Query, SetExpr, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Result, SqlError};
use crate::parser::ddl_normalize::{normalize_ident, quote_ident};
use crate::parser::{ASOF_JOIN_MARKER, TEMPORAL_JOIN_MARKER};
use crate::translate::TableInfo;

/// Rewrites every temporal join of `query` in place.
pub(crate) fn rewrite_temporal_joins(
    query: &mut Query,
    context: &str,
    tables: &HashMap<String, TableInfo>,
) -> Result<()> {
    struct Rewrite<'a> {
        context: &'a str,
        tables: &'a HashMap<String, TableInfo>,
    }
    impl Rewrite<'_> {
        fn set_expr(&self, body: &mut SetExpr) -> Result<()> {
            match body {
                SetExpr::Select(select) => {
                    for from in &mut select.from {
                        for join in &mut from.joins {
                            rewrite_join(join, self.context, self.tables)?;
                        }
                    }
                }
                SetExpr::SetOperation { left, right, .. } => {
                    self.set_expr(left)?;
                    self.set_expr(right)?;
                }
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
    }
    match query.visit(&mut Rewrite { context, tables }) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn invalid(context: &str, message: String) -> SqlError {
    SqlError::Invalid {
        context: context.to_string(),
        message,
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
        other => into.push(other),
    }
}

/// The time argument of a marker call.
fn marker_time(expr: &Expr) -> Option<&Expr> {
    let Expr::Function(function) = expr else {
        return None;
    };
    if !function
        .name
        .to_string()
        .eq_ignore_ascii_case(TEMPORAL_JOIN_MARKER)
    {
        return None;
    }
    match &function.args {
        FunctionArguments::List(list) => match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(time))] => Some(time),
            _ => None,
        },
        _ => None,
    }
}

fn is_proctime(expr: &Expr) -> bool {
    let Expr::Function(function) = expr else {
        return false;
    };
    let no_arguments = match &function.args {
        FunctionArguments::None => true,
        FunctionArguments::List(list) => list.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    };
    no_arguments && function.name.to_string().eq_ignore_ascii_case("proctime")
}

/// Refuses a version time other than `PROCTIME()` for a lookup table, which keeps none.
fn check_versions(info: &TableInfo, time: &Expr, table: &str, context: &str) -> Result<()> {
    if info.lookup.is_some() && !is_proctime(time) {
        return Err(invalid(
            context,
            format!(
                "FOR SYSTEM_TIME AS OF {time} with lookup table {table}, which keeps no \
                 versions: its source is asked as each row arrives; write FOR SYSTEM_TIME AS OF \
                 PROCTIME(), or a plain JOIN"
            ),
        ));
    }
    Ok(())
}

fn rewrite_join(join: &mut Join, context: &str, tables: &HashMap<String, TableInfo>) -> Result<()> {
    let (supported, constraint) = match &mut join.join_operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c) => (true, c),
        JoinOperator::Right(c) | JoinOperator::RightOuter(c) | JoinOperator::FullOuter(c) => {
            (false, c)
        }
        _ => return Ok(()),
    };
    let JoinConstraint::On(condition) = constraint else {
        return Ok(());
    };
    let mut parts = Vec::new();
    conjuncts(condition.clone(), &mut parts);
    let Some(at) = parts.iter().position(|p| marker_time(p).is_some()) else {
        return Ok(());
    };
    let marker = parts.remove(at);
    let Some(time) = marker_time(&marker) else {
        return Ok(());
    };
    if !supported {
        return Err(invalid(
            context,
            "FOR SYSTEM_TIME AS OF in a RIGHT or FULL join; a temporal or lookup join keeps \
             the stream's rows: JOIN or LEFT JOIN"
                .into(),
        ));
    }
    let TableFactor::Table { name, alias, .. } = &join.relation else {
        return Err(invalid(
            context,
            "FOR SYSTEM_TIME AS OF follows a table's name".into(),
        ));
    };
    let table = match name.0.as_slice() {
        [part] => part.as_ident().map(normalize_ident),
        _ => None,
    }
    .unwrap_or_else(|| name.to_string());
    let Some(info) = tables.get(&table) else {
        return Err(invalid(
            context,
            format!(
                "FOR SYSTEM_TIME AS OF reads a reference table (CREATE TABLE ... PRIMARY KEY); \
                 {table} is not one"
            ),
        ));
    };
    let rest: Vec<String> = parts.iter().map(|p| format!("({p})")).collect();
    check_versions(info, time, &table, context)?;
    let rewritten = if is_proctime(time) {
        rest.join(" AND ")
    } else {
        let Some(time_column) = &info.time_column else {
            return Err(invalid(
                context,
                format!(
                    "FOR SYSTEM_TIME AS OF {time} joins the version of {table} valid at that \
                     time, but {table} has no version time: declare it with WATERMARK FOR \
                     <column> (the time each row is valid from), or write FOR SYSTEM_TIME AS OF \
                     PROCTIME() for a lookup join"
                ),
            ));
        };
        let qualifier = alias
            .as_ref()
            .map_or_else(|| quote_ident(&table), |a| a.name.to_string());
        let mut text = format!("{ASOF_JOIN_MARKER}()");
        for part in &rest {
            text.push_str(" AND ");
            text.push_str(part);
        }
        let _ = write!(
            text,
            " AND {time} >= {qualifier}.{}",
            quote_ident(time_column)
        );
        text
    };
    if rewritten.is_empty() {
        return Err(invalid(
            context,
            format!("a join with {table} needs an ON condition on its primary key"),
        ));
    }
    let parsed = Parser::new(&GenericDialect {})
        .try_with_sql(&rewritten)
        .and_then(|mut parser| parser.parse_expr())
        .map_err(|e| invalid(context, format!("cannot rewrite the temporal join: {e}")))?;
    *condition = parsed;
    Ok(())
}
