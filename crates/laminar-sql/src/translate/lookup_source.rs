//! Joins with lookup tables (`CREATE TABLE ... FROM LOOKUP`), whose rows live in an external
//! source asked by primary key. A stream joined with one on its whole primary key becomes a
//! lookup join with the table's source: the stream is routed by the key (so each worker's
//! cache holds its share of the keys), the other equalities and conditions of `ON` check
//! each pair, and filters on the table that the optimizer pushed below the join check each
//! row the source returns (a row failing them is no row, which is what they mean for both
//! `JOIN` and `LEFT JOIN`).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchemaRef, JoinType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{and, Expr, Join, LogicalPlan, Operator as BinaryOperator};
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_expr::PhysicalExpr;
use laminar_core::operator::{LookupSourceJoinOperator, LookupSourceJoinSpec};

use super::join::join_name;
use super::lookup::{equated_column, TableInfo};
use super::{Builder, Produced};
use crate::error::Result;

/// The right input of a join, when it reads a lookup table.
struct LookupSide {
    name: String,
    /// Per column of the input: the table column it holds (`None`: computed).
    columns: Vec<Option<usize>>,
    /// Filters on the table below the join: each predicate, the schema it reads and the
    /// table column behind each column of that schema.
    filters: Vec<(Expr, DFSchemaRef, Vec<Option<usize>>)>,
}

/// `plan` as a lookup table read through aliases, projections and filters.
fn lookup_side(
    plan: &LogicalPlan,
    tables: &std::collections::HashMap<String, TableInfo>,
) -> Option<LookupSide> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table().to_string();
            tables.get(&name)?.lookup.as_ref()?;
            let columns = match &scan.projection {
                Some(projection) => projection.iter().map(|&c| Some(c)).collect(),
                None => (0..scan.source.schema().fields().len()).map(Some).collect(),
            };
            Some(LookupSide {
                name,
                columns,
                filters: Vec::new(),
            })
        }
        LogicalPlan::SubqueryAlias(alias) => lookup_side(&alias.input, tables),
        LogicalPlan::Projection(projection) => {
            let mut side = lookup_side(&projection.input, tables)?;
            side.columns = projection
                .expr
                .iter()
                .map(|expr| {
                    equated_column(&projection.input, &side.columns, &expr.clone().unalias())
                })
                .collect();
            Some(side)
        }
        LogicalPlan::Filter(filter) => {
            let mut side = lookup_side(&filter.input, tables)?;
            side.filters.push((
                filter.predicate.clone(),
                Arc::clone(filter.input.schema()),
                side.columns.clone(),
            ));
            Some(side)
        }
        _ => None,
    }
}

impl Builder<'_> {
    /// Refuses to scan `name` when it is a lookup table: its rows are only asked by key.
    pub(super) fn refuse_lookup_scan(&self, name: &str) -> Result<()> {
        if self
            .inputs
            .tables
            .get(name)
            .is_some_and(|info| info.lookup.is_some())
        {
            return Err(self.unsupported(&format!(
                "reading lookup table {name} other than by key in a lookup join (its source \
                 answers for given keys and cannot be scanned): FROM stream s [LEFT] JOIN \
                 {name} t ON s.k = t.key"
            )));
        }
        Ok(())
    }

    /// `join` as a lookup join with a lookup table's source, if its right input reads one.
    pub(super) fn add_lookup_source_join(
        &mut self,
        join: &Join,
        parent: Option<(usize, usize)>,
    ) -> Result<Option<Produced>> {
        let Some(side) = lookup_side(&join.right, self.inputs.tables) else {
            return Ok(None);
        };
        let name = side.name.clone();
        let info = &self.inputs.tables[&name];
        let Some(service) = info.lookup.clone() else {
            return Ok(None);
        };
        if !matches!(join.join_type, JoinType::Inner | JoinType::Left) {
            return Err(self.unsupported(&format!(
                "{} with lookup table {name}; a lookup join keeps the stream's rows: JOIN or \
                 LEFT JOIN",
                join_name(join.join_type)
            )));
        }
        let table_columns = side
            .columns
            .iter()
            .map(|column| {
                column.ok_or_else(|| {
                    self.unsupported(&format!(
                        "a computed column of lookup table {name} below the join; compute it \
                         in the SELECT list above the join"
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let keys = self.join_keys(join)?;
        // Each key column is equated with a stream expression; other equalities are checked
        // on each pair like the rest of the condition.
        let mut stream_keys = vec![None; info.key.len()];
        let mut residual: Vec<Expr> = join.filter.iter().cloned().collect();
        for (pair, (left, right)) in join.on.iter().enumerate() {
            let position = equated_column(&join.right, &side.columns, right)
                .and_then(|column| info.key.iter().position(|&k| k == column));
            match position {
                Some(position) if stream_keys[position].is_none() => {
                    stream_keys[position] =
                        Some((Arc::clone(&keys.left[pair]), keys.fields[pair].clone()));
                }
                _ => residual.push(left.clone().eq(right.clone())),
            }
        }
        let Some(stream_keys) = stream_keys.into_iter().collect::<Option<Vec<_>>>() else {
            let key: Vec<&str> = info
                .key
                .iter()
                .map(|&k| info.schema.field(k).name().as_str())
                .collect();
            return Err(self.unsupported(&format!(
                "a lookup join with lookup table {name} on other columns than its whole \
                 primary key ({}): its source is asked by primary key, so the ON condition \
                 must equate every key column with the stream",
                key.join(", ")
            )));
        };
        let (stream_keys, fields): (Vec<_>, Vec<_>) = stream_keys.into_iter().unzip();
        let filter = self.pair_filter(join, residual.into_iter().reduce(and))?;
        let table_filter = self.table_filter(&name, &side.filters, info)?;
        let operator = LookupSourceJoinOperator::new(LookupSourceJoinSpec {
            join_type: join.join_type,
            stream_keys: stream_keys.clone(),
            table_columns,
            table_filter,
            filter,
            stream: Arc::clone(join.left.schema().inner()),
            schema: Arc::clone(join.schema.inner()),
            service,
        })
        .map_err(|e| self.plan_error(&e))?;
        let node = self.push(Box::new(operator), parent, 1, None);
        let left = self.add_keyed(&join.left, stream_keys, fields, (node, 0))?;
        if left.changelog {
            return Err(self.unsupported(&format!(
                "a lookup join of a changelog with lookup table {name} (a retraction would \
                 need the answer its row joined, which the source may have changed since); \
                 join an append-only stream"
            )));
        }
        if !self.lookup_tables.contains(&name) {
            self.lookup_tables.push(name);
        }
        // Stream columns come first, unchanged, and each row is emitted once answered.
        Ok(Some(Produced {
            changelog: false,
            ..left
        }))
    }

    /// The filters on lookup table `name` below the join, as one predicate over the
    /// table's rows.
    fn table_filter(
        &self,
        name: &str,
        filters: &[(Expr, DFSchemaRef, Vec<Option<usize>>)],
        info: &TableInfo,
    ) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        let mut combined: Option<Arc<dyn PhysicalExpr>> = None;
        for (predicate, schema, columns) in filters {
            let physical = self
                .state
                .create_physical_expr(predicate.clone(), schema)
                .map_err(|e| self.plan_error(&e))?;
            // Columns of the filter's input become the table columns behind them.
            let remapped = physical
                .transform(|expr| {
                    let Some(column) = expr.downcast_ref::<Column>() else {
                        return Ok(Transformed::no(expr));
                    };
                    let Some(table_column) = columns.get(column.index()).copied().flatten() else {
                        return Err(DataFusionError::Plan(format!(
                            "a filter on a computed column of lookup table {name}"
                        )));
                    };
                    let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(
                        info.schema.field(table_column).name(),
                        table_column,
                    ));
                    Ok(Transformed::yes(column))
                })
                .map(|t| t.data)
                .map_err(|_| {
                    self.unsupported(&format!(
                        "a filter on a computed column of lookup table {name} below the join; \
                         filter in a WHERE above it"
                    ))
                })?;
            combined = Some(match combined {
                None => remapped,
                Some(previous) => {
                    Arc::new(BinaryExpr::new(previous, BinaryOperator::And, remapped))
                }
            });
        }
        Ok(combined)
    }
}
