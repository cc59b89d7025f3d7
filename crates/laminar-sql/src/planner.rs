//! `StreamPlanner`: plans continuous queries with DataFusion against the catalog's schemas
//! (every source, stream and view is registered as a schema-only table), runs DataFusion's
//! optimizer, and translates the result into a `laminar-core` [`QueryGraph`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::TableReference;
use datafusion::execution::context::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Volatility};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    visit_relations, Expr as SqlExpr, Query, Statement as SqlStatement, TableFactor, Visit, Visitor,
};
use laminar_core::lookup::LookupService;
use laminar_core::{QueryGraph, ReferenceTable};

use crate::asof_rewrite::rewrite_asof_joins;
use crate::asof_udf::asof_function;
use crate::error::{Result, SqlError};
use crate::keyed_plan::KeyedSource;
use crate::parser::ddl_normalize;
use crate::parser::{Emit, WatermarkSpec};
use crate::session_udf::session_functions;
use crate::temporal_rewrite::rewrite_temporal_joins;
use crate::translate::{check_decorrelated, check_supported, translate, KnownInputs, TableInfo};
use crate::window_udf::window_bound_function;
use crate::windows::rewrite_window_functions;

/// A continuous query, planned.
#[derive(Debug)]
pub struct PlannedQuery {
    /// The dataflow graph to run.
    pub graph: QueryGraph,
    /// Schema of the query's rows.
    pub schema: SchemaRef,
    /// Names of the sources, streams and views it reads.
    pub inputs: Vec<String>,
}

/// Plans continuous queries against the registered schemas.
pub struct StreamPlanner {
    ctx: SessionContext,
    names: Mutex<BTreeSet<String>>,
    changelogs: Mutex<HashSet<String>>,
    /// Append-only inputs whose rows belong to event-time windows, with the column holding
    /// the window end.
    window_ends: Mutex<HashMap<String, usize>>,
    /// Append-only inputs with an event-time column, and its index.
    event_times: Mutex<HashMap<String, usize>>,
    /// Inputs whose rows come from a regular join.
    unordered: Mutex<HashSet<String>>,
    /// Sources with a `PER KEY` watermark.
    keyed: Mutex<HashMap<String, KeyedSource>>,
    /// Reference tables: their primary keys and version times.
    tables: Mutex<HashMap<String, TableInfo>>,
}

impl std::fmt::Debug for StreamPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPlanner").finish_non_exhaustive()
    }
}

impl Default for StreamPlanner {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamPlanner {
    /// A planner with no tables.
    pub fn new() -> Self {
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        for function in session_functions() {
            ctx.register_udf(function);
        }
        ctx.register_udf(asof_function());
        ctx.register_udf(window_bound_function());
        Self {
            ctx,
            names: Mutex::new(BTreeSet::new()),
            changelogs: Mutex::new(HashSet::new()),
            window_ends: Mutex::new(HashMap::new()),
            event_times: Mutex::new(HashMap::new()),
            unordered: Mutex::new(HashSet::new()),
            keyed: Mutex::new(HashMap::new()),
            tables: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `name` (a source, stream or view) readable by later queries.
    pub fn register(&self, name: &str, schema: SchemaRef) -> Result<()> {
        self.ctx
            .register_table(
                TableReference::bare(name),
                Arc::new(EmptyTable::new(schema)),
            )
            .map_err(|e| SqlError::plan(format!("registering {name}"), &e))?;
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string());
        Ok(())
    }

    /// True if `name` was marked a changelog.
    pub fn is_changelog(&self, name: &str) -> bool {
        self.changelogs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    /// Marks `name` (registered) as a changelog: its rows carry retractions.
    pub fn mark_changelog(&self, name: &str) {
        self.changelogs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string());
    }

    /// Marks `name` (registered, append-only) as rows of event-time windows whose end is
    /// column `window_end`: a top-N per window over it emits each window once.
    pub fn mark_windowed(&self, name: &str, window_end: usize) {
        self.window_ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), window_end);
    }

    /// Marks column `event_time` of `name` (registered, append-only) as one its watermark
    /// bounds, rows behind it being late (a source's `WATERMARK FOR` column): an interval
    /// join over it can expire its state by the watermark.
    pub fn mark_event_time(&self, name: &str, event_time: usize) {
        self.event_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), event_time);
    }

    /// Marks `name` (registered) as the rows of a regular join, whose event times the
    /// watermark does not bound: no window can close over them.
    pub fn mark_unordered(&self, name: &str) {
        self.unordered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string());
    }

    /// Gives source `source` (registered, with `schema`) the keyed watermark `spec` (its
    /// `PER KEY` list not empty): windowed aggregations over it that group by the keys fire
    /// per key. Returns the indices of the key columns. Fails, naming the source and column,
    /// for an unknown column or a watermark that is not the event time minus a constant.
    pub fn register_keyed_watermark(
        &self,
        source: &str,
        spec: &WatermarkSpec,
        schema: &Schema,
    ) -> Result<Vec<usize>> {
        let keyed = KeyedSource::new(source, spec, schema)?;
        let keys = keyed.keys.clone();
        self.keyed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(source.to_string(), keyed);
        Ok(keys)
    }

    /// The indices of the key columns of source `source`'s keyed watermark, if it has one.
    pub fn keyed_watermark_columns(&self, source: &str) -> Option<Vec<usize>> {
        self.keyed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(source)
            .map(|keyed| keyed.keys.clone())
    }

    /// Marks `name` (registered, a changelog) as a reference table keyed by the columns at
    /// `key`, its versions stamped with column `time` when it has one: a stream joined with
    /// it on that key is a lookup join, or with `FOR SYSTEM_TIME AS OF`, a temporal join.
    pub fn mark_table(&self, name: &str, rows: &ReferenceTable, time: Option<usize>) {
        let schema = rows.schema();
        let time_column = time.map(|t| schema.field(t).name().clone());
        let key = rows.key().to_vec();
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name.to_string(),
                TableInfo {
                    key,
                    time_column,
                    schema,
                    lookup: None,
                },
            );
    }

    /// Marks `name` (registered) as a lookup table: its rows are read only by key, from
    /// `service`, by lookup joins.
    pub fn mark_lookup_table(&self, name: &str, service: Arc<LookupService>) {
        let info = TableInfo {
            key: service.key().to_vec(),
            time_column: None,
            schema: Arc::clone(service.schema()),
            lookup: Some(service),
        };
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), info);
    }

    /// Forgets `name`.
    pub fn deregister(&self, name: &str) {
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.event_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.unordered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.keyed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.changelogs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.window_ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        // Deregistering a name that is not registered is not an error worth reporting.
        let _ = self.ctx.deregister_table(TableReference::bare(name));
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// Names currently registered.
    pub fn names(&self) -> Vec<String> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// Plans `query` as the continuous query of `context` (e.g. `materialized view hot`);
    /// with a `state_ttl`, its regular joins forget keys idle for that long (an error if it
    /// has none).
    pub fn plan_query(
        &self,
        query: &Query,
        context: &str,
        emit: Emit,
        state_ttl: Option<Duration>,
    ) -> Result<PlannedQuery> {
        let mut query = query.clone();
        let tables = self
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        rewrite_window_functions(&mut query, context)?;
        rewrite_temporal_joins(&mut query, context, &tables)?;
        let asof = rewrite_asof_joins(&mut query, context)?;
        let query = &query;
        reject_streaming_extensions(query, context)?;
        self.check_relations(query)?;
        let state = self.state();
        let statement =
            DfStatement::Statement(Box::new(SqlStatement::Query(Box::new(query.clone()))));
        let plan =
            block_on_own_thread(|| futures::executor::block_on(state.statement_to_plan(statement)))
                .map_err(|e| SqlError::plan(context, &e))?;
        check_supported(&plan, context)?;
        reject_frozen_functions(&plan, context)?;
        let optimized = if asof {
            without_filter_pushdown(&state).optimize(&plan)
        } else {
            state.optimize(&plan)
        }
        .map_err(|e| SqlError::plan(context, &e))?;
        // The optimizer may prove a filter always false and drop the scan; the unoptimized
        // plan still reads its inputs, so the query ends when they end.
        let chosen = if contains_scan(&optimized) {
            &optimized
        } else {
            &plan
        };
        check_decorrelated(chosen, context)?;
        let changelogs = self
            .changelogs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let window_ends = self
            .window_ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let event_times = self
            .event_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let unordered = self
            .unordered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let keyed = self
            .keyed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let inputs = KnownInputs {
            changelogs: &changelogs,
            window_ends: &window_ends,
            event_times: &event_times,
            unordered: &unordered,
            keyed: &keyed,
            tables: &tables,
        };
        let graph = translate(chosen, &state, context, &inputs, emit, state_ttl)?;
        let schema = graph.schema.clone();
        let inputs = graph.inputs();
        Ok(PlannedQuery {
            graph,
            schema,
            inputs,
        })
    }

    /// Plans a source's watermark expression over its own columns. The expression must be a
    /// `TIMESTAMP` or epoch-millisecond `BIGINT`.
    pub fn plan_watermark(&self, source: &str, expr: &SqlExpr) -> Result<Arc<dyn PhysicalExpr>> {
        let context = format!("WATERMARK of source {source}");
        let sql = format!("SELECT {expr} FROM {}", ddl_normalize::quote_ident(source));
        let state = self.state();
        let plan =
            block_on_own_thread(|| futures::executor::block_on(state.create_logical_plan(&sql)))
                .map_err(|e| SqlError::plan(&context, &e))?;
        let LogicalPlan::Projection(projection) = &plan else {
            return Err(SqlError::Invalid {
                context,
                message: format!("cannot use {expr} as a watermark"),
            });
        };
        // Only a per-row expression over the source's columns makes a watermark: an
        // aggregate or window function would be planned over another input.
        if !matches!(projection.input.as_ref(), LogicalPlan::TableScan(_)) {
            return Err(SqlError::Invalid {
                context,
                message: format!("{expr} is not a per-row expression over the source's columns"),
            });
        }
        let [watermark] = projection.expr.as_slice() else {
            return Err(SqlError::Invalid {
                context,
                message: format!("cannot use {expr} as a watermark"),
            });
        };
        let input_schema = projection.input.schema();
        let data_type = watermark
            .get_type(input_schema)
            .map_err(|e| SqlError::plan(&context, &e))?;
        if !matches!(data_type, DataType::Timestamp(..) | DataType::Int64) {
            return Err(SqlError::Invalid {
                context,
                message: format!(
                    "the watermark expression {expr} is {data_type}; it must be a TIMESTAMP or a BIGINT of epoch milliseconds"
                ),
            });
        }
        state
            .create_physical_expr(watermark.clone(), input_schema)
            .map_err(|e| SqlError::plan(&context, &e))
    }

    /// Every table a query names must be a registered source, stream or view (CTE names
    /// excepted).
    fn check_relations(&self, query: &Query) -> Result<()> {
        let known = self
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let ctes: BTreeSet<String> = query
            .with
            .iter()
            .flat_map(|with| with.cte_tables.iter())
            .map(|cte| ddl_normalize::normalize_ident(&cte.alias.name))
            .collect();
        let outcome = visit_relations(query, |relation| {
            let name = match relation.0.as_slice() {
                [part] => part.as_ident().map(ddl_normalize::normalize_ident),
                _ => None,
            };
            match name {
                Some(name) if known.contains(&name) || ctes.contains(&name) => {
                    ControlFlow::Continue(())
                }
                Some(name) => ControlFlow::Break(name),
                None => ControlFlow::Break(relation.to_string()),
            }
        });
        if let ControlFlow::Break(name) = outcome {
            let hint = if known.is_empty() {
                " (no sources, streams or views exist yet)".to_string()
            } else {
                format!(
                    " (known: {})",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(SqlError::UnknownObject { name, hint });
        }
        Ok(())
    }
}

/// The planner's optimizer without filter pushdown, for queries with ASOF joins: a `WHERE`
/// on the right side's columns applies to the joined rows, and pushed below the join it
/// would change which right row is the closest. (Cross-join elimination goes too: it lifts
/// an inner join's condition into a filter above it, for pushdown to put back.)
fn without_filter_pushdown(state: &SessionState) -> SessionState {
    let rules = state
        .optimizers()
        .iter()
        .filter(|rule| !matches!(rule.name(), "push_down_filter" | "eliminate_cross_join"))
        .cloned()
        .collect();
    SessionStateBuilder::new_from_existing(state.clone())
        .with_optimizer_rules(rules)
        .build()
}

/// Runs `work` (which blocks on a DataFusion planning future) on a scoped thread of its
/// own: callers may themselves be inside an async executor, where blocking on a nested
/// executor is refused. Planning happens once per statement, so the thread is cheap.
fn block_on_own_thread<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn contains_scan(plan: &LogicalPlan) -> bool {
    let mut found = false;
    // The closure never fails, so neither can the traversal.
    let _ = plan.apply(|node| {
        if matches!(node, LogicalPlan::TableScan(_)) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Window calls left after the window rewrites are in the wrong place, and some table clauses are parsed by
/// sqlparser but dropped by DataFusion's planner (a silent wrong answer); naming them here
/// beats "function not found" or a query that ignores them.
fn reject_streaming_extensions(query: &Query, context: &str) -> Result<()> {
    struct Check;
    impl Visitor for Check {
        type Break = String;

        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
            if let TableFactor::Table {
                name,
                args,
                sample,
                version,
                partitions,
                with_hints,
                ..
            } = factor
            {
                let function = name.to_string().to_lowercase();
                if args.is_some() && is_window_function(&function) {
                    return ControlFlow::Break(window_construct(&function));
                }
                if sample.is_some() {
                    return ControlFlow::Break("TABLESAMPLE".into());
                }
                if version.is_some() {
                    return ControlFlow::Break("FOR SYSTEM_TIME AS OF (temporal tables)".into());
                }
                if !partitions.is_empty() {
                    return ControlFlow::Break("PARTITION (...) on a table".into());
                }
                if !with_hints.is_empty() {
                    return ControlFlow::Break("table hints (WITH (...))".into());
                }
            }
            ControlFlow::Continue(())
        }

        fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<String> {
            if let SqlExpr::Function(function) = expr {
                let name = function.name.to_string().to_lowercase();
                if is_window_function(&name) {
                    return ControlFlow::Break(window_construct(&name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    fn is_window_function(name: &str) -> bool {
        // Window table functions and GROUP BY windows were rewritten before this check;
        // what is left is a window call somewhere else.
        matches!(name, "tumble" | "hop" | "session")
    }
    fn window_construct(name: &str) -> String {
        format!(
            "event-time window {} outside FROM and GROUP BY (write FROM {0}(table, ...) or GROUP BY ..., {0}(...))",
            name.to_uppercase()
        )
    }
    match query.visit(&mut Check) {
        ControlFlow::Break(construct) => Err(SqlError::Unsupported {
            construct,
            context: context.to_string(),
        }),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Functions such as `now()` are evaluated once at planning time by DataFusion; in a
/// continuous query that would freeze them at CREATE time, a silent wrong answer.
fn reject_frozen_functions(plan: &LogicalPlan, context: &str) -> Result<()> {
    let mut frozen: Option<String> = None;
    let _ = plan.apply(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    if f.func.signature().volatility == Volatility::Stable {
                        frozen = Some(format!("{}()", f.func.name()));
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    match frozen {
        Some(function) => Err(SqlError::Unsupported {
            construct: format!(
                "{function} in a continuous query (it would be fixed at CREATE time); use the event-time column"
            ),
            context: context.to_string(),
        }),
        None => Ok(()),
    }
}
