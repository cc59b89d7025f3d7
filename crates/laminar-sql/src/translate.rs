//! Translation of an optimized DataFusion `LogicalPlan` into a `laminar-core` query graph.
//! Only plan nodes with a streaming implementation are accepted; every other node is an
//! `Unsupported` error naming the SQL construct it came from.

mod asof;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::row::SortField;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::{Aggregate, Distinct, Expr, ExprSchemable, Filter, Projection};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::PhysicalSortExpr;
use laminar_core::graph::{QueryGraph, QueryNode, RowTimes};
use laminar_core::operator::{
    AggregateCall, AggregateOperator, ExchangeOperator, FilterOperator, KeyRouter, KeyedWatermark,
    Operator, PeriodicEmitOperator, ProjectOperator, ScanOperator, SessionAggregateOperator,
    SessionWindow, TopNOperator, UnionOperator, WindowAggregateOperator,
};

use crate::error::{Result, SqlError};
use crate::keyed_plan::{keyed_aggregate, KeyedAggregate, KeyedSource};
use crate::parser::Emit;
use crate::session_plan::{marker_calls, session_keys, SessionMatch};

mod join;
mod lookup;
mod lookup_source;

pub use lookup::TableInfo;

/// What every aggregate operator is built from.
struct AggregateParts {
    keys: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    key_fields: Vec<SortField>,
    calls: Vec<AggregateCall>,
    schema: datafusion::arrow::datatypes::SchemaRef,
}

/// The aggregate operator chosen for a plan's `Aggregate`.
enum PlannedAggregate {
    /// Groups by key (windows being ordinary keys).
    Groups(AggregateOperator),
    /// Merges rows into session windows per partition.
    Session(SessionAggregateOperator),
    /// Vectorized groups per window, emitted when the window closes.
    Window(WindowAggregateOperator),
}
use crate::top_n::{unsupported_window, TopN};

/// The inputs a query may read, as the catalog knows them.
pub(crate) struct KnownInputs<'a> {
    /// Inputs whose rows carry retractions (views that aggregate).
    pub(crate) changelogs: &'a HashSet<String>,
    /// Append-only inputs whose rows belong to event-time windows: the column holding each
    /// row's window end.
    pub(crate) window_ends: &'a HashMap<String, usize>,
    /// Append-only inputs with an event-time column their watermark bounds, rows behind it
    /// being late (a source's `WATERMARK FOR` column).
    pub(crate) event_times: &'a HashMap<String, usize>,
    /// Inputs whose rows come from a regular join, with event times the watermark does not
    /// bound.
    pub(crate) unordered: &'a HashSet<String>,
    /// Sources with a `PER KEY` watermark.
    pub(crate) keyed: &'a HashMap<String, KeyedSource>,
    /// Reference tables, by name.
    pub(crate) tables: &'a HashMap<String, TableInfo>,
}

/// Builds the query graph for `plan`, which reads `inputs`.
pub(crate) fn translate(
    plan: &LogicalPlan,
    state: &SessionState,
    context: &str,
    inputs: &KnownInputs<'_>,
    emit: Emit,
    state_ttl: Option<Duration>,
) -> Result<QueryGraph> {
    let mut builder = Builder {
        state,
        context,
        inputs,
        emit,
        state_ttl,
        regular_joins: 0,
        windowed: false,
        aggregates_changelog: false,
        joins_changelog: false,
        session_markers_planned: 0,
        asof_markers_planned: 0,
        lookup_tables: Vec::new(),
        nodes: Vec::new(),
    };
    let produced = match emit {
        Emit::Every { interval_ms } => builder.add_periodic(plan, interval_ms)?,
        _ => builder.add(plan, None)?,
    };
    let changelog = produced.changelog;
    if marker_calls(plan) != builder.session_markers_planned {
        return Err(SqlError::Unsupported {
            construct: "a SESSION window used other than as the window_start and window_end \
                        keys of a GROUP BY (sessions exist only in an aggregation)"
                .into(),
            context: context.to_string(),
        });
    }
    if asof::marker_calls(plan) != builder.asof_markers_planned {
        return Err(SqlError::Unsupported {
            construct: "an ASOF join condition outside the ON clause of an ASOF JOIN".into(),
            context: context.to_string(),
        });
    }
    if state_ttl.is_some() && builder.regular_joins == 0 {
        return Err(SqlError::Invalid {
            context: context.to_string(),
            message: "option state_ttl applies only to a regular join (one whose inputs' rows \
                      are all kept), and this query has none"
                .into(),
        });
    }
    if matches!(emit, Emit::OnWindowClose { .. }) && !builder.windowed {
        return Err(SqlError::Invalid {
            context: context.to_string(),
            message: "EMIT ON WINDOW CLOSE applies to a windowed aggregation \
                      (GROUP BY window_start, window_end FROM TUMBLE(...))"
                .into(),
        });
    }
    Ok(QueryGraph {
        nodes: builder.nodes,
        schema: Arc::clone(plan.schema().inner()),
        changelog,
        aggregates_changelog: builder.aggregates_changelog,
        window_end: produced.window_end.filter(|_| !changelog),
        row_times: match (produced.unordered, produced.event_time) {
            (true, _) => RowTimes::Unordered,
            (false, Some(column)) if !changelog => RowTimes::EventTime(column),
            _ => RowTimes::Unknown,
        },
        joins_changelog: builder.joins_changelog,
        lookup_tables: builder.lookup_tables,
    })
}

/// Rejects the constructs without a streaming implementation, on the plan as the user wrote
/// it: the optimizer rewrites some of them (`DISTINCT` into an aggregate, `IN (SELECT ..)`
/// into a join), and the error should name what the user wrote.
pub(crate) fn check_supported(plan: &LogicalPlan, context: &str) -> Result<()> {
    let unsupported = |construct: &str| SqlError::Unsupported {
        construct: construct.to_string(),
        context: context.to_string(),
    };
    let mut found: Option<SqlError> = None;
    // Window nodes a top-N filter above them accounts for; the traversal reaches a filter
    // before the nodes below it.
    let mut ranked: Vec<*const LogicalPlan> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let Some(construct) = scalar_subquery(node) {
            found = Some(unsupported(&construct));
            return Ok(TreeNodeRecursion::Stop);
        }
        let problem = match node {
            LogicalPlan::Filter(filter) => TopN::find(filter).and_then(|top_n| {
                ranked.push(std::ptr::from_ref(top_n.window_plan));
                top_n.unsupported().map(|c| unsupported(&c))
            }),
            LogicalPlan::Window(_) if ranked.contains(&std::ptr::from_ref(node)) => None,
            // `DISTINCT` (and `UNION` without `ALL`) become a grouping without aggregates in
            // the optimized plan, which runs as an aggregation; `DISTINCT ON` does not. `IN`
            // and `EXISTS` subqueries become joins (a scalar subquery was refused above).
            LogicalPlan::Distinct(Distinct::On(_)) => Some(unsupported("DISTINCT ON")),
            LogicalPlan::Distinct(Distinct::All(_)) | LogicalPlan::Subquery(_) => None,
            other => unsupported_node(other).map(|c| unsupported(&c)),
        };
        if let Some(problem) = problem {
            found = Some(problem);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found.map_or(Ok(()), Err)
}

/// A scalar subquery in the expressions of `plan`: a subquery used as a value.
fn scalar_subquery(plan: &LogicalPlan) -> Option<String> {
    let mut found = false;
    // The closure never fails, so neither can the traversal.
    let _ = plan.apply_expressions(|expr| {
        found |= expr
            .exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_))))
            .unwrap_or(false);
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found.then(|| "scalar subquery (a subquery used as a value)".to_string())
}

/// Refuses the subqueries DataFusion's optimizer left in `plan`: an `IN` or `EXISTS`
/// subquery becomes a join only when it correlates with its outer query by equalities.
pub(crate) fn check_decorrelated(plan: &LogicalPlan, context: &str) -> Result<()> {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        found |= matches!(node, LogicalPlan::Subquery(_));
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if found {
        return Err(SqlError::Unsupported {
            construct: "an IN or EXISTS subquery that could not be turned into a join (write it \
                        as a join, or correlate it with its outer query by equalities such as \
                        sub.k = outer.k)"
                .into(),
            context: context.to_string(),
        });
    }
    Ok(())
}

/// The SQL construct behind a plan node that has no streaming implementation.
fn unsupported_node(plan: &LogicalPlan) -> Option<String> {
    let construct = match plan {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::TableScan(_)
        | LogicalPlan::Union(_)
        | LogicalPlan::Aggregate(_)
        | LogicalPlan::Join(_)
        | LogicalPlan::SubqueryAlias(_) => return None,
        LogicalPlan::Distinct(_) => "DISTINCT",
        LogicalPlan::Sort(_) => "ORDER BY",
        LogicalPlan::Limit(_) => "LIMIT/OFFSET",
        LogicalPlan::Window(window) => return Some(unsupported_window(window)),
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
            "a continuous query without a FROM source"
        }
        LogicalPlan::Unnest(_) => "UNNEST",
        LogicalPlan::RecursiveQuery(_) => "recursive WITH",
        LogicalPlan::Subquery(_) => "subquery",
        other => return Some(other.display().to_string()),
    };
    Some(construct.to_string())
}

/// The keys an aggregate's rows are routed by: those that own state. A session routes by
/// its partition, not its bounds; windows closing per key route by the watermark's keys, so
/// one worker sees every row of a key and tracks its watermark.
fn route_keys(
    keys: &[Arc<dyn datafusion::physical_expr::PhysicalExpr>],
    key_fields: &[SortField],
    session: Option<SessionWindow>,
    keyed: Option<&KeyedAggregate>,
) -> (
    Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    Vec<SortField>,
) {
    let routed: Vec<usize> = match (session, keyed) {
        (Some(SessionWindow { start_key, end_key }), _) => (0..keys.len())
            .filter(|i| *i != start_key && *i != end_key)
            .collect(),
        (None, Some(KeyedAggregate::Windows(keyed))) => keyed.key_positions.clone(),
        (None, _) => (0..keys.len()).collect(),
    };
    (
        routed.iter().map(|&i| Arc::clone(&keys[i])).collect(),
        routed.iter().map(|&i| key_fields[i].clone()).collect(),
    )
}

struct Builder<'a> {
    state: &'a SessionState,
    context: &'a str,
    inputs: &'a KnownInputs<'a>,
    emit: Emit,
    /// `WITH (state_ttl = ..)`: regular joins forget keys idle for this long.
    state_ttl: Option<Duration>,
    /// Regular joins planned so far (those `state_ttl` bounds).
    regular_joins: usize,
    /// An operator of this query (aggregate or top-N) emits on window close.
    windowed: bool,
    /// A stateful operator of this query (aggregate or top-N) reads a changelog.
    aggregates_changelog: bool,
    /// A regular join of this query reads a changelog.
    joins_changelog: bool,
    /// Session marker calls consumed by session aggregates.
    session_markers_planned: usize,
    /// ASOF marker calls consumed by ASOF joins.
    asof_markers_planned: usize,
    /// The lookup tables its lookup joins ask.
    lookup_tables: Vec<String>,
    nodes: Vec<QueryNode>,
}

/// What a translated part of a plan produces.
#[derive(Debug, Clone, Copy)]
struct Produced {
    /// Its rows carry retractions.
    changelog: bool,
    /// The column holding each row's event-time window end, when its rows belong to
    /// windows: computed by `TUMBLE`/`HOP`, a key of an aggregate emitting on window close,
    /// or read from a view or stream that has one.
    window_end: Option<usize>,
    /// A column the watermark bounds, rows behind it being late: a source's `WATERMARK
    /// FOR` column, passed through, or an interval join's time column.
    event_time: Option<usize>,
    /// The rows come from a regular join: the watermark does not bound their event times.
    unordered: bool,
}

impl Produced {
    fn append_only() -> Self {
        Self {
            changelog: false,
            window_end: None,
            event_time: None,
            unordered: false,
        }
    }

    /// The same rows after `projection`: the window end survives a plain column reference;
    /// a column computed under the name `window_end` (as `TUMBLE`/`HOP` do) is one.
    fn projected(self, projection: &Projection) -> Self {
        let input_schema = projection.input.schema();
        let unaliased = |expr: &'_ Expr| -> (Expr, Option<String>) {
            match expr {
                Expr::Alias(alias) => (alias.expr.as_ref().clone(), Some(alias.name.clone())),
                other => (other.clone(), None),
            }
        };
        let reads = |value: &Expr, column: Option<usize>| match value {
            Expr::Column(c) => column.is_some() && input_schema.index_of_column(c).ok() == column,
            _ => false,
        };
        let window_end = projection.expr.iter().position(|expr| {
            let (value, name) = unaliased(expr);
            match value {
                Expr::Column(_) => reads(&value, self.window_end),
                _ => name.as_deref() == Some("window_end"),
            }
        });
        let event_time = projection
            .expr
            .iter()
            .position(|expr| reads(&unaliased(expr).0, self.event_time));
        Self {
            window_end,
            event_time,
            ..self
        }
    }
}

impl Builder<'_> {
    fn push(
        &mut self,
        operator: Box<dyn Operator>,
        parent: Option<(usize, usize)>,
        ports: usize,
        input: Option<String>,
    ) -> usize {
        self.nodes.push(QueryNode {
            operator,
            parent,
            ports,
            input,
            router: None,
        });
        self.nodes.len() - 1
    }

    /// Aggregation: an exchange routing input rows by group key, then the aggregate.
    fn add_aggregate(
        &mut self,
        aggregate: &Aggregate,
        parent: Option<(usize, usize)>,
    ) -> Result<Produced> {
        if aggregate
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Err(self.unsupported("GROUPING SETS, ROLLUP or CUBE"));
        }
        let input_schema = aggregate.input.schema();
        let keys = aggregate
            .group_expr
            .iter()
            .map(|e| self.state.create_physical_expr(e.clone(), input_schema))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| self.plan_error(&e))?;
        let key_fields = aggregate
            .group_expr
            .iter()
            .map(|e| e.get_type(input_schema).map(SortField::new))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| self.plan_error(&e))?;
        let calls = self.aggregate_calls(aggregate)?;
        let (window_close, allowed_lateness_ms) = match self.emit {
            Emit::OnWindowClose {
                allowed_lateness_ms,
            } => (true, allowed_lateness_ms),
            Emit::Default | Emit::OnUpdate | Emit::Every { .. } => (false, 0),
        };
        let session = match session_keys(aggregate) {
            SessionMatch::None => None,
            SessionMatch::Session(session) => Some(session),
            SessionMatch::Incomplete(missing) => {
                return Err(SqlError::Invalid {
                    context: self.context.to_string(),
                    message: format!(
                        "a SESSION window groups by both window_start and window_end; {missing} is missing from GROUP BY"
                    ),
                })
            }
        };
        let window_end_key = match (window_close, session) {
            (false, _) => None,
            (true, Some(session)) => Some(session.end_key),
            (true, None) => Some(self.window_end_key(aggregate)?),
        };
        let keyed = if window_close {
            keyed_aggregate(aggregate, session, self.inputs.keyed)
                .map_err(|e| self.plan_error(&e))?
        } else {
            None
        };
        let schema = Arc::clone(aggregate.schema.inner());
        let (route_keys, route_fields) = route_keys(&keys, &key_fields, session, keyed.as_ref());
        let mut operator = self.plan_aggregate_operator(
            aggregate,
            AggregateParts {
                keys,
                key_fields,
                calls,
                schema,
            },
            session,
            window_close.then_some(allowed_lateness_ms),
            keyed.as_ref(),
        )?;
        let (aggregate_node, below_exchange) =
            self.push_aggregate_nodes(parent, &mut operator, route_keys, route_fields)?;
        // Windows closing per key also read each row's event time.
        let input_plan = match &keyed {
            Some(KeyedAggregate::Windows(keyed)) => &keyed.input,
            _ => aggregate.input.as_ref(),
        };
        let input = self.add(input_plan, Some((below_exchange, 0)))?;
        self.check_closable(window_close, input)?;
        if input.changelog {
            operator = self.over_changelog(operator, input_schema.as_arrow(), window_close)?;
        }
        self.nodes[aggregate_node].operator = match operator {
            PlannedAggregate::Groups(operator) => Box::new(operator),
            PlannedAggregate::Window(operator) => Box::new(operator),
            PlannedAggregate::Session(operator) => Box::new(operator),
        };
        // A window that fires once emits final rows only; one that late rows may still
        // correct retracts what it emitted. The group keys lead the output columns.
        Ok(Produced {
            changelog: !window_close || allowed_lateness_ms > 0,
            window_end: window_end_key,
            ..Produced::append_only()
        })
    }

    /// The nodes of an aggregation: the aggregate's (its operator goes in once its input is
    /// known: a changelog input needs retractable accumulators), the exchange routing by
    /// `route_keys` below it and, for windows, the partial aggregate below the exchange
    /// (on more than one worker they aggregate in two phases, states crossing workers
    /// instead of input rows; `EMIT ON WINDOW CLOSE` refuses a changelog input, so that
    /// operator stays as planned). Returns the aggregate's node and the node the input
    /// feeds.
    fn push_aggregate_nodes(
        &mut self,
        parent: Option<(usize, usize)>,
        operator: &mut PlannedAggregate,
        route_keys: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
        route_fields: Vec<SortField>,
    ) -> Result<(usize, usize)> {
        let aggregate_node =
            self.push(Box::new(ExchangeOperator::new(Vec::new())), parent, 1, None);
        let (partial, route_keys) = match operator {
            PlannedAggregate::Window(window) => {
                let split = window.two_phase().map_err(|e| self.plan_error(&e))?;
                *window = split.last;
                (Some(split.partial), split.route_keys)
            }
            PlannedAggregate::Groups(_) | PlannedAggregate::Session(_) => (None, route_keys),
        };
        let router =
            KeyRouter::new(route_keys.clone(), route_fields).map_err(|e| self.plan_error(&e))?;
        let exchange = self.push(
            Box::new(ExchangeOperator::new(route_keys)),
            Some((aggregate_node, 0)),
            1,
            None,
        );
        self.nodes[exchange].router = Some(Arc::new(router));
        let below_exchange = match partial {
            Some(partial) => self.push(Box::new(partial), Some((exchange, 0)), 1, None),
            None => exchange,
        };
        Ok((aggregate_node, below_exchange))
    }

    /// The aggregate operator for `aggregate`: sessions, vectorized windows closing with
    /// no lateness, or per-group accumulators (which windows closing per key need).
    /// `lateness` is `Some` for `EMIT ON WINDOW CLOSE`.
    fn plan_aggregate_operator(
        &mut self,
        aggregate: &Aggregate,
        parts: AggregateParts,
        session: Option<SessionWindow>,
        lateness: Option<i64>,
        keyed: Option<&KeyedAggregate>,
    ) -> Result<PlannedAggregate> {
        let AggregateParts {
            keys,
            key_fields,
            calls,
            schema,
        } = parts;
        let window_close = lateness.is_some();
        let allowed_lateness_ms = lateness.unwrap_or(0);
        Ok(if let Some(session) = session {
            self.session_markers_planned += 2;
            let mut operator =
                SessionAggregateOperator::new(keys, session, calls, &key_fields, schema)
                    .map_err(|e| self.plan_error(&e))?;
            if window_close {
                operator = operator.emit_on_window_close(allowed_lateness_ms);
                self.windowed = true;
            }
            if let Some(KeyedAggregate::Sessions { delay_ms }) = keyed {
                operator = operator.keyed_watermarks(*delay_ms);
            }
            PlannedAggregate::Session(operator)
        } else if window_close
            && allowed_lateness_ms == 0
            && keyed.is_none()
            && WindowAggregateOperator::supports(&calls)
        {
            let window_end = self.window_end_key(aggregate)?;
            let fields = self.key_fields(aggregate)?;
            let mut operator =
                WindowAggregateOperator::new(keys, calls, &fields, window_end, schema)
                    .map_err(|e| self.plan_error(&e))?;
            if let Some(start) = aggregate
                .group_expr
                .iter()
                .position(|e| matches!(e, Expr::Column(column) if column.name == "window_start"))
            {
                operator = operator.with_window_start_key(start);
            }
            self.windowed = true;
            PlannedAggregate::Window(operator)
        } else {
            let mut operator = AggregateOperator::new(keys, calls, key_fields, schema)
                .map_err(|e| self.plan_error(&e))?;
            if window_close {
                let window_end = self.window_end_key(aggregate)?;
                operator = operator.emit_on_window_close(window_end, allowed_lateness_ms);
                self.windowed = true;
            }
            if let Some(KeyedAggregate::Windows(keyed)) = keyed {
                let field = keyed.input.schema().field(keyed.event_time);
                let spec = KeyedWatermark {
                    event_time: Arc::new(PhysicalColumn::new(field.name(), keyed.event_time)),
                    key_positions: keyed.key_positions.clone(),
                    delay_ms: keyed.delay_ms,
                };
                operator = operator
                    .keyed_watermarks(spec)
                    .map_err(|e| self.plan_error(&e))?;
            }
            PlannedAggregate::Groups(operator)
        })
    }

    /// The aggregate calls of `aggregate`, lowered to physical expressions.
    fn aggregate_calls(&self, aggregate: &Aggregate) -> Result<Vec<AggregateCall>> {
        let input_schema = aggregate.input.schema();
        let mut calls = Vec::with_capacity(aggregate.aggr_expr.len());
        for expr in &aggregate.aggr_expr {
            let planning = PhysicalPlanningContext::default();
            let lowered = LoweredAggregateBuilder::new(
                expr,
                input_schema,
                input_schema.as_arrow(),
                self.state.execution_props(),
                &planning,
            )
            .build()
            .map_err(|e| self.plan_error(&e))?;
            let (function, filter) = (lowered.aggregate, lowered.filter);
            calls.push(AggregateCall { function, filter });
        }
        Ok(calls)
    }

    /// The group keys as fields (name, type), for a columnar group table.
    fn key_fields(&self, aggregate: &Aggregate) -> Result<Vec<Field>> {
        let input_schema = aggregate.input.schema();
        aggregate
            .group_expr
            .iter()
            .map(|e| {
                let data_type = e.get_type(input_schema)?;
                Ok(Field::new(e.schema_name().to_string(), data_type, true))
            })
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| self.plan_error(&e))
    }

    /// The index of `window_end` among the keys, which `EMIT ON WINDOW CLOSE` needs.
    fn window_end_key(&self, aggregate: &Aggregate) -> Result<usize> {
        aggregate
            .group_expr
            .iter()
            .position(|e| matches!(e, Expr::Column(column) if column.name == "window_end"))
            .ok_or_else(|| SqlError::Invalid {
                context: self.context.to_string(),
                message: "EMIT ON WINDOW CLOSE needs window_end among the GROUP BY keys \
                          (FROM TUMBLE(...) ... GROUP BY window_start, window_end)"
                    .into(),
            })
    }

    /// Refuses windows that close over rows whose event times the watermark does not bound.
    fn check_closable(&self, window_close: bool, input: Produced) -> Result<()> {
        if window_close && input.unordered {
            return Err(self.unsupported(
                "EMIT ON WINDOW CLOSE over the rows of a regular join: a regular join emits rows \
                 of any event time as its inputs change, so windows would close before their \
                 rows arrive; window the join's inputs and join on window_start and window_end \
                 (a window join), or bound one input's event time by the other's (an interval \
                 join)",
            ));
        }
        Ok(())
    }

    /// Prepares an aggregate for an input that carries retractions, or says why it cannot.
    fn over_changelog(
        &mut self,
        operator: PlannedAggregate,
        input_schema: &datafusion::arrow::datatypes::Schema,
        window_close: bool,
    ) -> Result<PlannedAggregate> {
        if window_close {
            return Err(self.unsupported(
                "EMIT ON WINDOW CLOSE over a changelog (a view or stream that itself aggregates)",
            ));
        }
        let PlannedAggregate::Groups(operator) = operator else {
            return Err(self.unsupported(
                "a SESSION window over a changelog (a view or stream that itself aggregates)",
            ));
        };
        self.aggregates_changelog = true;
        let operator = operator.retracting(input_schema).map_err(|e| match e {
            datafusion::error::DataFusionError::NotImplemented(what) => self.unsupported(&what),
            other => self.plan_error(&other),
        })?;
        Ok(PlannedAggregate::Groups(operator))
    }

    /// `EMIT EVERY`: the query under an operator that releases its changes once per
    /// interval. Only a changelog has changes to hold back and consolidate.
    fn add_periodic(&mut self, plan: &LogicalPlan, interval_ms: i64) -> Result<Produced> {
        let interval = std::time::Duration::from_millis(interval_ms.unsigned_abs());
        let schema = Arc::clone(plan.schema().inner());
        let operator =
            PeriodicEmitOperator::new(interval, schema).map_err(|e| self.plan_error(&e))?;
        let root = self.push(Box::new(operator), None, 1, None);
        let produced = self.add(plan, Some((root, 0)))?;
        if !produced.changelog {
            return Err(SqlError::Invalid {
                context: self.context.to_string(),
                message: "EMIT EVERY applies to a query whose result changes (an aggregation \
                          without EMIT ON WINDOW CLOSE); this query only appends rows"
                    .into(),
            });
        }
        Ok(Produced {
            changelog: true,
            window_end: None,
            event_time: None,
            unordered: produced.unordered,
        })
    }

    fn plan_error(&self, error: &datafusion::error::DataFusionError) -> SqlError {
        SqlError::plan(self.context, error)
    }

    /// Adds `plan` below `parent`; returns what its rows are.
    fn add(&mut self, plan: &LogicalPlan, parent: Option<(usize, usize)>) -> Result<Produced> {
        match plan {
            LogicalPlan::Aggregate(aggregate) => self.add_aggregate(aggregate, parent),
            LogicalPlan::Projection(projection) => {
                let node = self.push_projection(projection, parent)?;
                let top_n = match projection.input.as_ref() {
                    LogicalPlan::Filter(filter) => TopN::find(filter).map(|t| (filter, t)),
                    _ => None,
                };
                let below = match top_n {
                    Some((filter, top_n)) => {
                        let rank_read = top_n.reads_rank(&projection.expr);
                        self.add_top_n(filter, &top_n, rank_read, Some((node, 0)))?
                    }
                    None => self.add(&projection.input, Some((node, 0)))?,
                };
                Ok(below.projected(projection))
            }
            LogicalPlan::Filter(filter) => {
                if let Some(top_n) = TopN::find(filter) {
                    // Nothing above is known not to read the row number.
                    return self.add_top_n(filter, &top_n, true, parent);
                }
                let node = self.push_filter(&filter.predicate, filter, parent)?;
                self.add(&filter.input, Some((node, 0)))
            }
            LogicalPlan::TableScan(scan) => {
                if !scan.filters.is_empty() {
                    return Err(SqlError::plan(
                        self.context,
                        &datafusion::error::DataFusionError::Internal(
                            "a filter was pushed into a stream scan (a bug in LaminarDB)".into(),
                        ),
                    ));
                }
                if scan.fetch.is_some() {
                    return Err(self.unsupported("LIMIT"));
                }
                let name = scan.table_name.table().to_string();
                self.refuse_lookup_scan(&name)?;
                let schema = Arc::clone(scan.projected_schema.inner());
                let operator = ScanOperator::new(name.clone(), scan.projection.clone(), schema);
                let changelog = self.inputs.changelogs.contains(&name);
                let projected = |column: Option<&usize>| {
                    column.and_then(|&column| match &scan.projection {
                        Some(projection) => projection.iter().position(|&c| c == column),
                        None => Some(column),
                    })
                };
                let window_end = projected(self.inputs.window_ends.get(&name));
                let event_time = projected(self.inputs.event_times.get(&name));
                let unordered = self.inputs.unordered.contains(&name);
                self.push(Box::new(operator), parent, 1, Some(name));
                Ok(Produced {
                    changelog,
                    window_end,
                    event_time,
                    unordered,
                })
            }
            LogicalPlan::Union(union) => {
                let schema = Arc::clone(union.schema.inner());
                let ports = union.inputs.len();
                let node = self.push(
                    Box::new(UnionOperator::new(ports, schema)),
                    parent,
                    ports,
                    None,
                );
                let mut produced: Option<Produced> = None;
                for (port, input) in union.inputs.iter().enumerate() {
                    let part = self.add(input, Some((node, port)))?;
                    // The rows belong to windows if every input's do, in the same column.
                    produced = Some(match produced {
                        None => part,
                        Some(so_far) => Produced {
                            changelog: so_far.changelog || part.changelog,
                            window_end: so_far.window_end.filter(|&c| part.window_end == Some(c)),
                            event_time: so_far.event_time.filter(|&c| part.event_time == Some(c)),
                            unordered: so_far.unordered || part.unordered,
                        },
                    });
                }
                Ok(produced.unwrap_or_else(Produced::append_only))
            }
            LogicalPlan::SubqueryAlias(alias) => self.add(&alias.input, parent),
            LogicalPlan::Join(join) if asof::asof_marker(join).is_some() => {
                self.add_asof_join(join, parent)
            }
            LogicalPlan::Join(join) => self.add_join(join, parent),
            other => Err(self.unsupported(
                &unsupported_node(other).unwrap_or_else(|| other.display().to_string()),
            )),
        }
    }

    fn push_projection(
        &mut self,
        projection: &Projection,
        parent: Option<(usize, usize)>,
    ) -> Result<usize> {
        let input_schema = projection.input.schema();
        let exprs = projection
            .expr
            .iter()
            .map(|e| self.state.create_physical_expr(e.clone(), input_schema))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| self.plan_error(&e))?;
        let schema = Arc::clone(projection.schema.inner());
        Ok(self.push(
            Box::new(ProjectOperator::new(exprs, schema)),
            parent,
            1,
            None,
        ))
    }

    /// A filter evaluating `predicate` over the rows `filter` reads.
    fn push_filter(
        &mut self,
        predicate: &Expr,
        filter: &Filter,
        parent: Option<(usize, usize)>,
    ) -> Result<usize> {
        let predicate = self
            .state
            .create_physical_expr(predicate.clone(), filter.input.schema())
            .map_err(|e| self.plan_error(&e))?;
        Ok(self.push(Box::new(FilterOperator::new(predicate)), parent, 1, None))
    }

    /// Top-N per group: what is left of the filter, the projections between it and the
    /// window node, then the ranking below an exchange routing rows by partition key.
    /// `rank_read`: something above the filter reads the row number.
    fn add_top_n(
        &mut self,
        filter: &Filter,
        top_n: &TopN<'_>,
        rank_read: bool,
        parent: Option<(usize, usize)>,
    ) -> Result<Produced> {
        if let Some(construct) = top_n.unsupported() {
            return Err(self.unsupported(&construct));
        }
        let mut parent = parent;
        if let Some(residual) = top_n.residual() {
            parent = Some((self.push_filter(&residual, filter, parent)?, 0));
        }
        for link in &top_n.chain {
            if let LogicalPlan::Projection(projection) = link {
                parent = Some((self.push_projection(projection, parent)?, 0));
            }
        }
        let rank_read = rank_read || top_n.residual_reads_rank();
        let mut produced = self.add_ranking(top_n, rank_read, parent)?;
        for link in top_n.chain.iter().rev() {
            if let LogicalPlan::Projection(projection) = link {
                produced = produced.projected(projection);
            }
        }
        Ok(produced)
    }

    /// The ranking itself: a `TopNOperator` fed by an exchange on the partition keys (all
    /// rows to one worker without `PARTITION BY`).
    fn add_ranking(
        &mut self,
        top_n: &TopN<'_>,
        rank_read: bool,
        parent: Option<(usize, usize)>,
    ) -> Result<Produced> {
        let window = top_n.window;
        let input_schema = window.input.schema();
        let params = &top_n.function.params;
        let physical = |e: &Expr| self.state.create_physical_expr(e.clone(), input_schema);
        let keys = params
            .partition_by
            .iter()
            .map(physical)
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| self.plan_error(&e))?;
        let key_fields = params
            .partition_by
            .iter()
            .map(|e| e.get_type(input_schema).map(SortField::new))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| self.plan_error(&e))?;
        let order = params
            .order_by
            .iter()
            .map(|sort| {
                let options = SortOptions {
                    descending: !sort.asc,
                    nulls_first: sort.nulls_first,
                };
                physical(&sort.expr).map(|expr| PhysicalSortExpr { expr, options })
            })
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| self.plan_error(&e))?;
        let limit = usize::try_from(top_n.limit).unwrap_or(usize::MAX);
        let schema = Arc::clone(window.schema.inner());
        let mut operator = TopNOperator::new(keys.clone(), order, limit, schema)
            .map_err(|e| self.plan_error(&e))?;
        // The operator goes in once its input is known: a changelog input keeps every row.
        let ranking = self.push(Box::new(ExchangeOperator::new(Vec::new())), parent, 1, None);
        let router = KeyRouter::new(keys.clone(), key_fields).map_err(|e| self.plan_error(&e))?;
        let exchange = self.push(
            Box::new(ExchangeOperator::new(keys)),
            Some((ranking, 0)),
            1,
            None,
        );
        self.nodes[exchange].router = Some(Arc::new(router));
        let input = self.add(&window.input, Some((exchange, 0)))?;
        let window_key = self.window_key(top_n, input)?;
        if let Some(key) = window_key {
            operator = operator.emit_on_window_close(key);
            self.windowed = true;
        } else {
            if input.changelog {
                operator = operator.retracting();
                self.aggregates_changelog = true;
            }
            if !rank_read {
                operator = operator.without_rank_updates();
            }
        }
        self.nodes[ranking].operator = Box::new(operator);
        // Numbered rows keep the input's columns in place, the window end among them.
        Ok(Produced {
            changelog: window_key.is_none(),
            window_end: window_key.and(input.window_end),
            event_time: None,
            unordered: input.unordered,
        })
    }

    /// The partition key holding the window end, when the ranked rows belong to windows: the
    /// partitions are then complete once the watermark passes their end.
    fn window_key(&self, top_n: &TopN<'_>, input: Produced) -> Result<Option<usize>> {
        let (false, Some(window_end)) = (input.changelog, input.window_end) else {
            return Ok(None);
        };
        let input_schema = top_n.window.input.schema();
        let key = top_n.function.params.partition_by.iter().position(|e| {
            matches!(e, Expr::Column(c) if input_schema.index_of_column(c).ok() == Some(window_end))
        });
        let is_time = matches!(
            input_schema.field(window_end).data_type(),
            DataType::Timestamp(..) | DataType::Int64
        );
        let Some(key) = key.filter(|_| is_time) else {
            return Ok(None);
        };
        if matches!(self.emit, Emit::OnWindowClose { allowed_lateness_ms } if allowed_lateness_ms > 0)
        {
            return Err(self.unsupported(
                "ALLOW LATENESS on a top-N per window (its windows are emitted once, when the watermark passes them)",
            ));
        }
        Ok(Some(key))
    }

    fn unsupported(&self, construct: &str) -> SqlError {
        SqlError::Unsupported {
            construct: construct.to_string(),
            context: self.context.to_string(),
        }
    }
}
