//! Joins with reference tables. A stream joined with a table on the table's primary key is
//! a lookup join: each stream row probes the table's rows current on its arrival, and the
//! output is append-only. The same join with `FOR SYSTEM_TIME AS OF stream.ts` was rewritten
//! into an ASOF join before planning (see `temporal_rewrite`) and joins the table version
//! valid at the row's event time. Both need the table read unchanged on the right and its
//! whole primary key equated.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use laminar_core::lookup::LookupService;

use datafusion::common::JoinType;
use datafusion::logical_expr::{Expr, Join, LogicalPlan};

use super::{Builder, Produced};
use crate::error::Result;

/// What the planner knows of a reference table or a lookup table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Column indices of the primary key.
    pub key: Vec<usize>,
    /// The time column its versions are stamped with (its `WATERMARK FOR` column).
    pub time_column: Option<String>,
    /// The table's columns.
    pub schema: SchemaRef,
    /// For a lookup table (`FROM LOOKUP`): its source, asked by key; its rows are nowhere.
    pub lookup: Option<Arc<LookupService>>,
}

/// For `plan` reading a table unchanged (a scan, aliases, projections of plain columns;
/// a filtered table joins as a changelog): the table's name and, per output column, the table column it holds.
pub(super) fn table_columns(
    plan: &LogicalPlan,
    tables: &HashMap<String, TableInfo>,
) -> Option<(String, Vec<Option<usize>>)> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table().to_string();
            if !tables.contains_key(&name) {
                return None;
            }
            let columns = match &scan.projection {
                Some(projection) => projection.iter().map(|&c| Some(c)).collect(),
                None => (0..scan.source.schema().fields().len()).map(Some).collect(),
            };
            Some((name, columns))
        }
        LogicalPlan::SubqueryAlias(alias) => table_columns(&alias.input, tables),
        LogicalPlan::Projection(projection) => {
            let (name, inner) = table_columns(&projection.input, tables)?;
            let columns = projection
                .expr
                .iter()
                .map(|expr| match expr.clone().unalias() {
                    Expr::Column(column) => projection
                        .input
                        .schema()
                        .index_of_column(&column)
                        .ok()
                        .and_then(|i| inner.get(i).copied().flatten()),
                    _ => None,
                })
                .collect();
            Some((name, columns))
        }
        _ => None,
    }
}

/// The table columns `keys` (expressions over `plan`'s rows) equate, where plain columns.
fn equated_columns(plan: &LogicalPlan, columns: &[Option<usize>], keys: &[&Expr]) -> Vec<usize> {
    keys.iter()
        .filter_map(|key| equated_column(plan, columns, key))
        .collect()
}

/// The table column `key` (an expression over `plan`'s rows, whose column `i` holds table
/// column `columns[i]`) equates, when it is a plain column (or a cast of one).
pub(super) fn equated_column(
    plan: &LogicalPlan,
    columns: &[Option<usize>],
    key: &Expr,
) -> Option<usize> {
    let column = match key {
        Expr::Column(column) => column,
        Expr::Cast(cast) => match cast.expr.as_ref() {
            Expr::Column(column) => column,
            _ => return None,
        },
        _ => return None,
    };
    plan.schema()
        .index_of_column(column)
        .ok()
        .and_then(|i| columns.get(i).copied().flatten())
}

impl Builder<'_> {
    /// If `right` reads a table, checks that `keys` (over `right`'s rows) equate its whole
    /// primary key; returns whether it is a table. `what` names the join for errors.
    pub(super) fn check_table_key(
        &self,
        right: &LogicalPlan,
        keys: &[&Expr],
        what: &str,
    ) -> Result<bool> {
        let Some((name, columns)) = table_columns(right, self.inputs.tables) else {
            return Ok(false);
        };
        let info = &self.inputs.tables[&name];
        let equated = equated_columns(right, &columns, keys);
        if info.key.iter().all(|k| equated.contains(k)) {
            return Ok(true);
        }
        let table_schema = &info.schema;
        let names = |indices: &[usize]| -> String {
            indices
                .iter()
                .map(|&k| table_schema.field(k).name().clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(self.unsupported(&format!(
            "{what} with table {name} on [{}], which is not its primary key ({}): the table \
             is probed by its primary key, so the ON condition must equate every key column",
            names(&equated),
            names(&info.key)
        )))
    }

    /// Refuses a join reading a table that is neither a lookup join (stream first, table
    /// second) nor a join of two changelogs, saying what to write.
    pub(super) fn check_table_sides(&self, join: &Join, left: Produced) -> Result<bool> {
        let tables = self.inputs.tables;
        let left_table = table_columns(&join.left, tables).is_some();
        let right_table = table_columns(&join.right, tables).is_some();
        if left_table && !right_table && !self.produces_changelog(&join.right) {
            return Err(self.unsupported(
                "a join with a table on the left of a stream; a lookup join reads the stream \
                 first: FROM stream s [LEFT] JOIN table t ON s.k = t.key",
            ));
        }
        if !right_table || left.changelog {
            return Ok(false);
        }
        if !matches!(join.join_type, JoinType::Inner | JoinType::Left) {
            return Err(self.unsupported(&format!(
                "a {} join of a stream with a table; a lookup join keeps the stream's rows: \
                 JOIN or LEFT JOIN",
                join.join_type
            )));
        }
        let keys: Vec<&Expr> = join.on.iter().map(|(_, r)| r).collect();
        self.check_table_key(&join.right, &keys, "a lookup join")
    }

    /// Whether `plan` reads a changelog directly (a table or a view that retracts).
    fn produces_changelog(&self, plan: &LogicalPlan) -> bool {
        match plan {
            LogicalPlan::TableScan(scan) => {
                self.inputs.changelogs.contains(scan.table_name.table())
            }
            LogicalPlan::SubqueryAlias(alias) => self.produces_changelog(&alias.input),
            LogicalPlan::Filter(filter) => self.produces_changelog(&filter.input),
            LogicalPlan::Projection(projection) => self.produces_changelog(&projection.input),
            LogicalPlan::Aggregate(_) => true,
            _ => false,
        }
    }
}
