//! Window table functions, rewritten before planning: `FROM TUMBLE(t, ts, size)` becomes a
//! derived table over `t` adding `window_start` and `window_end` (half-open, aligned to the
//! epoch), which a `GROUP BY window_start, window_end` aggregates like any key. Whether a
//! window's result waits for the watermark is the aggregate's `EMIT` mode.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    FunctionArg, FunctionArgExpr, Query, SetExpr, Statement as SqlStatement, TableFactor, VisitMut,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Result, SqlError};
use crate::parser::quote_ident;

/// Rewrites every `TUMBLE(...)` table function of `query` in place.
pub(crate) fn rewrite_window_functions(query: &mut Query, context: &str) -> Result<()> {
    struct Rewrite<'a> {
        context: &'a str,
    }
    impl VisitorMut for Rewrite<'_> {
        type Break = SqlError;

        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SqlError> {
            let TableFactor::Table {
                name,
                args: Some(args),
                alias,
                ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            if !name.to_string().eq_ignore_ascii_case("tumble") {
                return ControlFlow::Continue(());
            }
            let replacement = tumble(
                &args.args,
                alias.as_ref().map(|a| a.name.value.clone()),
                self.context,
            );
            match replacement {
                Ok(derived) => {
                    *factor = derived;
                    ControlFlow::Continue(())
                }
                Err(error) => ControlFlow::Break(error),
            }
        }
    }
    match query.visit(&mut Rewrite { context }) {
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

/// `TUMBLE(table, time_column, size)` as a derived table.
fn tumble(args: &[FunctionArg], alias: Option<String>, context: &str) -> Result<TableFactor> {
    let exprs: Vec<String> = args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Ok(expr.to_string()),
            other => Err(invalid(
                context,
                format!("TUMBLE argument {other} is not a table, column or interval"),
            )),
        })
        .collect::<Result<_>>()?;
    let [table, time, size] = exprs.as_slice() else {
        return Err(invalid(
            context,
            format!(
                "TUMBLE takes (table, time column, size), e.g. TUMBLE(bids, ts, INTERVAL '10' SECOND); got {} arguments",
                exprs.len()
            ),
        ));
    };
    if !size.to_uppercase().starts_with("INTERVAL") {
        return Err(invalid(
            context,
            format!("TUMBLE size {size} must be an INTERVAL"),
        ));
    }
    let alias = alias.unwrap_or_else(|| table.clone());
    let bin = format!("date_bin({size}, {time}, TIMESTAMP '1970-01-01 00:00:00')");
    let sql = format!(
        "SELECT * FROM (SELECT *, {bin} AS window_start, {bin} + {size} AS window_end FROM {table}) AS {}",
        quote_ident(&alias)
    );
    let dialect = GenericDialect {};
    let statement = Parser::parse_sql(&dialect, &sql)
        .map_err(|e| invalid(context, format!("TUMBLE({table}, {time}, {size}): {e}")))?
        .pop();
    let Some(SqlStatement::Query(query)) = statement else {
        return Err(invalid(
            context,
            format!("TUMBLE({table}, {time}, {size}) could not be expanded"),
        ));
    };
    let SetExpr::Select(select) = *query.body else {
        return Err(invalid(context, "TUMBLE expansion is not a SELECT".into()));
    };
    select
        .from
        .into_iter()
        .next()
        .map(|from| from.relation)
        .ok_or_else(|| invalid(context, "TUMBLE expansion has no FROM".into()))
}
