//! `SESSION` windows before planning: `FROM SESSION(t, ts, gap)` becomes a derived table
//! giving every row its own window `[ts, ts + gap)` through the session marker functions;
//! the translation turns a `GROUP BY window_start, window_end` over them into the session
//! aggregate, which merges the windows of one partition that overlap or touch.
//!
//! Sessions form per partition, and the partition is the `GROUP BY` keys other than the
//! window bounds. Flink's `SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap)` names its
//! partition; it reaches here as `SESSION(t, partition_by(k), ts, gap)` and must match the
//! query's `GROUP BY` keys, since grouping by other keys would split or join sessions in a
//! way this engine does not compute.

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Select, TableFactor,
};

use super::{arguments, default_alias, derived, invalid, normalized};
use crate::error::Result;
use crate::interval::interval_ms;
use crate::parser::quote_ident;
use crate::session_udf::{SESSION_END, SESSION_START};

/// The pseudo-argument the Flink spelling's `PARTITION BY` is rewritten into.
pub(crate) const PARTITION_BY: &str = "partition_by";

/// `SESSION(table, time_column, gap)` as a derived table with per-row windows.
pub(super) fn session(
    args: &[FunctionArg],
    alias: Option<&str>,
    context: &str,
) -> Result<TableFactor> {
    if args.iter().any(|arg| partition_keys(arg).is_some()) {
        return Err(invalid(
            context,
            "SESSION(TABLE t PARTITION BY k, ...) must be aggregated in the same SELECT, \
             with GROUP BY k, window_start, window_end"
                .into(),
        ));
    }
    let exprs = arguments(args, "SESSION", context)?;
    let [table, time, gap] = exprs.as_slice() else {
        return Err(invalid(
            context,
            format!(
                "SESSION takes (table, time column, gap), e.g. SESSION(bids, ts, INTERVAL '5' MINUTE); got {} arguments",
                exprs.len()
            ),
        ));
    };
    let gap_ms = interval_ms(gap, context)?;
    let alias = alias.map_or_else(|| default_alias(table), str::to_string);
    let time = format!("to_timestamp_millis({time})");
    let inner = format!(
        "SELECT *, {SESSION_START}({time}, {gap_ms}) AS window_start, \
         {SESSION_END}({time}, {gap_ms}) AS window_end FROM {table} AS {}",
        quote_ident(&alias)
    );
    derived(&inner, &alias, "SESSION", context)
}

/// The keys of a `partition_by(...)` pseudo-argument.
fn partition_keys(arg: &FunctionArg) -> Option<Vec<Expr>> {
    let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Function(function))) = arg else {
        return None;
    };
    if !function.name.to_string().eq_ignore_ascii_case(PARTITION_BY) {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return Some(Vec::new());
    };
    let mut keys = Vec::new();
    for arg in &list.args {
        match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Tuple(items))) => {
                keys.extend(items.iter().cloned());
            }
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Nested(item))) => {
                keys.push(item.as_ref().clone());
            }
            FunctionArg::Unnamed(FunctionArgExpr::Expr(item)) => keys.push(item.clone()),
            _ => {}
        }
    }
    Some(keys)
}

/// A key as DataFusion resolves it, without its table qualifier.
fn key_name(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(ident) => normalized(ident),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalized).unwrap_or_default(),
        other => other.to_string().to_lowercase(),
    }
}

/// Checks the `PARTITION BY` of every Flink-spelled `SESSION` in `select`'s FROM against its
/// `GROUP BY`, and drops the pseudo-argument once checked.
pub(super) fn check_partitions(select: &mut Select, context: &str) -> Result<()> {
    let group_keys: Option<Vec<String>> = match &select.group_by {
        // Without GROUP BY the session is not aggregated here; `session` refuses it.
        GroupByExpr::Expressions(keys, _) if keys.is_empty() => None,
        GroupByExpr::Expressions(keys, _) => Some(
            keys.iter()
                .map(key_name)
                .filter(|key| key != "window_start" && key != "window_end")
                .collect(),
        ),
        GroupByExpr::All(_) => None,
    };
    for from in &mut select.from {
        let relations = std::iter::once(&mut from.relation)
            .chain(from.joins.iter_mut().map(|join| &mut join.relation));
        for relation in relations {
            let TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = relation
            else {
                continue;
            };
            if !name.to_string().eq_ignore_ascii_case("session") {
                continue;
            }
            let Some(position) = args.args.iter().position(|a| partition_keys(a).is_some()) else {
                continue;
            };
            let keys = partition_keys(&args.args[position]).unwrap_or_default();
            let mut partition: Vec<String> = keys.iter().map(key_name).collect();
            partition.sort();
            let Some(mut grouped) = group_keys.clone() else {
                continue;
            };
            grouped.sort();
            if partition != grouped {
                return Err(invalid(context, mismatch(&partition, &grouped)));
            }
            args.args.remove(position);
        }
    }
    Ok(())
}

fn mismatch(partition: &[String], grouped: &[String]) -> String {
    let list = |keys: &[String]| {
        if keys.is_empty() {
            "no keys".to_string()
        } else {
            keys.join(", ")
        }
    };
    format!(
        "SESSION forms sessions per its PARTITION BY keys ({}), so the GROUP BY keys other \
         than window_start and window_end must be the same; they are {}",
        list(partition),
        list(grouped)
    )
}

/// `SESSION_START(..)`/`SESSION_END(..)` in a select list read the window columns.
pub(super) fn bound_column(name: &str) -> Option<&'static str> {
    match name {
        "session_start" => Some("window_start"),
        "session_end" => Some("window_end"),
        _ => None,
    }
}
