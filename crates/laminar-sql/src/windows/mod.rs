//! Window table functions, rewritten before planning: `FROM TUMBLE(t, ts, size)` becomes a
//! derived table over `t` adding `window_start` and `window_end` (half-open, aligned to the
//! epoch), which a `GROUP BY window_start, window_end` aggregates like any key.
//! `HOP(t, ts, slide, size)` puts each row in the `size / slide` windows containing it: a
//! `UNION ALL` of that many shifted copies. Whether a window's result waits for the watermark
//! is the aggregate's `EMIT` mode. `SESSION` windows are in [`session`].

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query, SelectItem,
    SetExpr, Statement as SqlStatement, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Result, SqlError};
use crate::interval::interval_ms;
use crate::parser::quote_ident;
use crate::window_udf::WINDOW_BOUND;

mod session;

pub(crate) use session::PARTITION_BY;

/// Rewrites every `TUMBLE(...)` / `HOP(...)` table function of `query` in place, after
/// turning the group-window spelling (`GROUP BY k, TUMBLE(ts, size)`) into it.
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
            let function = name.to_string().to_lowercase();
            let alias = alias.as_ref().map(|a| normalized(&a.name));
            let replacement = match function.as_str() {
                "tumble" => tumble(&args.args, alias.as_deref(), self.context),
                "hop" => hop(&args.args, alias.as_deref(), self.context),
                "session" => session::session(&args.args, alias.as_deref(), self.context),
                _ => return ControlFlow::Continue(()),
            };
            match replacement {
                Ok(derived) => {
                    *factor = derived;
                    ControlFlow::Continue(())
                }
                Err(error) => ControlFlow::Break(error),
            }
        }
    }
    rewrite_group_windows(query, context)?;
    match query.visit(&mut Rewrite { context }) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// `SELECT ..., TUMBLE_START(ts, size) FROM t GROUP BY k, TUMBLE(ts, size)` (Flink's and
/// Calcite's group-window spelling) becomes `... FROM TUMBLE(t, ts, size) GROUP BY k,
/// window_start, window_end`, with `TUMBLE_START`/`TUMBLE_END` (and `HOP_*`) read from those
/// columns.
fn rewrite_group_windows(query: &mut Query, context: &str) -> Result<()> {
    struct Rewrite<'a> {
        context: &'a str,
    }
    impl VisitorMut for Rewrite<'_> {
        type Break = SqlError;

        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<SqlError> {
            match rewrite_select(query, self.context) {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => ControlFlow::Break(error),
            }
        }
    }
    match query.visit(&mut Rewrite { context }) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn function_name(expr: &Expr) -> Option<(String, Vec<String>)> {
    let Expr::Function(function) = expr else {
        return None;
    };
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    let args = list
        .args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Some(expr.to_string()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((function.name.to_string().to_lowercase(), args))
}

fn rewrite_select(query: &mut Query, context: &str) -> Result<()> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(());
    };
    session::check_partitions(select, context)?;
    let GroupByExpr::Expressions(keys, _) = &mut select.group_by else {
        return Ok(());
    };
    let Some(position) = keys.iter().position(|key| {
        function_name(key)
            .is_some_and(|(name, _)| matches!(name.as_str(), "tumble" | "hop" | "session"))
    }) else {
        return Ok(());
    };
    let Some((function, args)) = function_name(&keys[position]) else {
        return Ok(());
    };
    let [from] = select.from.as_mut_slice() else {
        return Err(invalid(
            context,
            format!(
                "GROUP BY {}(...) needs exactly one table in FROM",
                function.to_uppercase()
            ),
        ));
    };
    let TableFactor::Table {
        name,
        args: None,
        alias,
        ..
    } = &from.relation
    else {
        return Err(invalid(
            context,
            format!(
                "GROUP BY {}(...) needs a plain table in FROM",
                function.to_uppercase()
            ),
        ));
    };
    if !from.joins.is_empty() {
        return Err(invalid(
            context,
            format!("GROUP BY {}(...) with a JOIN", function.to_uppercase()),
        ));
    }
    let table = name.to_string();
    let alias = alias
        .as_ref()
        .map_or_else(|| default_alias(&table), |a| normalized(&a.name));
    let call = format!("{}({table}, {})", function.to_uppercase(), args.join(", "));
    let dialect = GenericDialect {};
    let parsed = Parser::parse_sql(
        &dialect,
        &format!("SELECT * FROM {call} AS {}", quote_ident(&alias)),
    )
    .map_err(|e| invalid(context, format!("GROUP BY {call}: {e}")))?
    .pop();
    let Some(SqlStatement::Query(parsed)) = parsed else {
        return Err(invalid(
            context,
            format!("GROUP BY {call} could not be rewritten"),
        ));
    };
    let SetExpr::Select(parsed) = *parsed.body else {
        return Err(invalid(
            context,
            format!("GROUP BY {call} could not be rewritten"),
        ));
    };
    let Some(relation) = parsed.from.into_iter().next().map(|f| f.relation) else {
        return Err(invalid(
            context,
            format!("GROUP BY {call} could not be rewritten"),
        ));
    };
    from.relation = relation;
    keys.splice(
        position..=position,
        [
            Expr::Identifier(Ident::new("window_start")),
            Expr::Identifier(Ident::new("window_end")),
        ],
    );
    rename_window_calls(&mut select.projection);
    Ok(())
}

/// `TUMBLE_START(..)`/`HOP_START(..)` and `*_END(..)` in a select list read the window columns.
fn rename_window_calls(projection: &mut [SelectItem]) {
    for item in projection.iter_mut() {
        let (expr, named) = match item {
            SelectItem::UnnamedExpr(expr) => (expr.clone(), false),
            SelectItem::ExprWithAlias { expr, .. } => (expr.clone(), true),
            _ => continue,
        };
        let name = function_name(&expr).map(|(name, _)| name);
        let column = match name.as_deref() {
            Some("tumble_start" | "hop_start") => "window_start",
            Some("tumble_end" | "hop_end") => "window_end",
            Some(other) => match session::bound_column(other) {
                Some(column) => column,
                None => continue,
            },
            None => continue,
        };
        let identifier = Expr::Identifier(Ident::new(column));
        if named {
            if let SelectItem::ExprWithAlias { expr, .. } = item {
                *expr = identifier;
            }
        } else {
            // Keep the column name users see for an unaliased call.
            *item = SelectItem::ExprWithAlias {
                expr: identifier,
                alias: Ident::new(column),
            };
        }
    }
}

/// The alias a table name gives its rows: the name as DataFusion resolves it.
fn default_alias(table: &str) -> String {
    if table.starts_with('"') {
        table.trim_matches('"').to_string()
    } else {
        table.to_lowercase()
    }
}

/// An alias as DataFusion resolves it: unquoted names are lower-cased.
fn normalized(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn invalid(context: &str, message: String) -> SqlError {
    SqlError::Invalid {
        context: context.to_string(),
        message,
    }
}

/// Upper bound on the windows one row falls into (`HOP` size / slide).
const HOP_WINDOWS_PER_ROW_MAX: i64 = 64;

fn arguments(args: &[FunctionArg], function: &str, context: &str) -> Result<Vec<String>> {
    args.iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Ok(expr.to_string()),
            other => Err(invalid(
                context,
                format!("{function} argument {other} is not a table, column or interval"),
            )),
        })
        .collect()
}

/// Parses `SELECT * FROM (<inner>) AS alias` and returns its FROM relation.
fn derived(inner: &str, alias: &str, function: &str, context: &str) -> Result<TableFactor> {
    let sql = format!("SELECT * FROM ({inner}) AS {}", quote_ident(alias));
    let dialect = GenericDialect {};
    let statement = Parser::parse_sql(&dialect, &sql)
        .map_err(|e| invalid(context, format!("{function}: {e}")))?
        .pop();
    let Some(SqlStatement::Query(query)) = statement else {
        return Err(invalid(
            context,
            format!("{function} could not be expanded"),
        ));
    };
    let SetExpr::Select(select) = *query.body else {
        return Err(invalid(
            context,
            format!("{function} expansion is not a SELECT"),
        ));
    };
    select
        .from
        .into_iter()
        .next()
        .map(|from| from.relation)
        .ok_or_else(|| invalid(context, format!("{function} expansion has no FROM")))
}

/// `window_start` and `window_end` of the epoch-aligned window of `size_ms` that starts
/// `back_ms` before the bin of `slide_ms` holding `time`. `to_timestamp_millis` makes a BIGINT
/// of epoch milliseconds and any TIMESTAMP unit the same millisecond timestamp. The bounds
/// are computed on epoch milliseconds (timestamp-plus-interval arithmetic converts every
/// value through calendar types, several times slower per row), by one function
/// (`window_udf`) rather than SQL arithmetic.
fn window_bounds(time: &str, slide_ms: i64, size_ms: i64, back_ms: i64) -> (String, String) {
    let ms = format!("CAST(to_timestamp_millis({time}) AS BIGINT)");
    let bound = |offset_ms: i64| {
        format!(
            "to_timestamp_millis({WINDOW_BOUND}({ms}, CAST({slide_ms} AS BIGINT), \
             CAST({back_ms} AS BIGINT), CAST({offset_ms} AS BIGINT)))"
        )
    };
    (bound(0), bound(size_ms))
}

/// `TUMBLE(table, time_column, size)` as a derived table.
fn tumble(args: &[FunctionArg], alias: Option<&str>, context: &str) -> Result<TableFactor> {
    let exprs = arguments(args, "TUMBLE", context)?;
    let [table, time, size] = exprs.as_slice() else {
        return Err(invalid(
            context,
            format!(
                "TUMBLE takes (table, time column, size), e.g. TUMBLE(bids, ts, INTERVAL '10' SECOND); got {} arguments",
                exprs.len()
            ),
        ));
    };
    let size_ms = interval_ms(size, context)?;
    let alias = alias.map_or_else(|| default_alias(table), str::to_string);
    let (start, end) = window_bounds(time, size_ms, size_ms, 0);
    let inner = format!(
        "SELECT *, {start} AS window_start, {end} AS window_end FROM {table} AS {}",
        quote_ident(&alias)
    );
    derived(&inner, &alias, "TUMBLE", context)
}

/// `HOP(table, time_column, slide, size)` as a derived table: one copy of each row per
/// window containing it, the windows starting every `slide` and lasting `size`.
fn hop(args: &[FunctionArg], alias: Option<&str>, context: &str) -> Result<TableFactor> {
    let exprs = arguments(args, "HOP", context)?;
    let [table, time, slide, size] = exprs.as_slice() else {
        return Err(invalid(
            context,
            format!(
                "HOP takes (table, time column, slide, size), e.g. HOP(bids, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND); got {} arguments",
                exprs.len()
            ),
        ));
    };
    let slide_ms = interval_ms(slide, context)?;
    let size_ms = interval_ms(size, context)?;
    if size_ms % slide_ms != 0 {
        return Err(invalid(
            context,
            format!(
                "HOP window size {}s must be a multiple of slide {}s",
                size_ms as f64 / 1000.0,
                slide_ms as f64 / 1000.0
            ),
        ));
    }
    let windows = size_ms / slide_ms;
    if windows > HOP_WINDOWS_PER_ROW_MAX {
        return Err(SqlError::Unsupported {
            construct: format!(
                "HOP with {windows} windows per row (size / slide above {HOP_WINDOWS_PER_ROW_MAX})"
            ),
            context: context.to_string(),
        });
    }
    let alias = alias.map_or_else(|| default_alias(table), str::to_string);
    let copies: Vec<String> = (0..windows)
        .map(|i| {
            let (start, end) = window_bounds(time, slide_ms, size_ms, i * slide_ms);
            format!(
                "SELECT *, {start} AS window_start, {end} AS window_end FROM {table} AS {}",
                quote_ident(&alias)
            )
        })
        .collect();
    derived(&copies.join(" UNION ALL "), &alias, "HOP", context)
}
