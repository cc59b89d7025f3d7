//! Creating and dropping catalog objects: sources (push or connector), streams,
//! materialized views and sinks. Each `CREATE` validates everything (schema, watermark,
//! query, connector options) before it starts anything, so a failed statement leaves no
//! trace; a `DROP` is refused while another object reads from the one dropped. A source
//! with `LATE DATA TO` creates and drops its late-data stream with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{ColumnOption, Query};
use laminar_connectors::{
    create_sink, create_source, ChangeMode, ConnectorOptions, SinkConnector, SourceConnector,
    SourceMetrics,
};
use laminar_core::runtime::{LatePolicy, SourceFeed, StreamId};
use laminar_core::{ResultTable, RowTimes, WatermarkGenerator};
use laminar_sql::parser::{CreateSource, SinkInput};
use laminar_sql::types::arrow_type;
use laminar_sql::{parse_statements, ConnectorSpec, Emit, ObjectKind, SqlError, Statement};

use crate::catalog::{Catalog, DivertedStream, Object, ObjectState};
use crate::db::{hint, LaminarDB};
use crate::durability::output_log::OutputLog;
use crate::error::{DbError, Result};
use crate::result::ExecuteResult;
use crate::sink_runner::SinkTask;
use crate::source_runner::SourceInstance;

/// `CREATE SINK ... FROM name` is `AS SELECT * FROM name`.
pub(crate) fn sink_query(input: &SinkInput) -> Result<Box<Query>> {
    match input {
        SinkInput::Query(query) => Ok(query.clone()),
        SinkInput::From(name) => {
            let sql = format!("SELECT * FROM {}", laminar_sql::parser::quote_ident(name));
            match parse_statements(&sql)?.pop() {
                Some(Statement::Query(query)) => Ok(query),
                _ => Err(DbError::Internal(format!(
                    "`{sql}` did not parse as a query"
                ))),
            }
        }
    }
}

/// How long `DROP` waits for accepted rows to be processed and for a sink to close.
const DROP_SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A validated source connector: its name as written, the connector, and its counters.
type SourceConnectorParts = (String, Arc<dyn SourceConnector>, Arc<SourceMetrics>);

fn connector_options(spec: &ConnectorSpec) -> ConnectorOptions {
    ConnectorOptions::new(spec.options.iter().cloned())
}

/// Options of a source connector. A generator without an explicit `partitions` produces one
/// partition per worker, so its rows spread over every worker rather than one.
fn source_options(spec: &ConnectorSpec, workers: usize) -> ConnectorOptions {
    let mut options = spec.options.clone();
    if spec.name.eq_ignore_ascii_case("datagen") && !options.iter().any(|(k, _)| k == "partitions")
    {
        options.push(("partitions".to_string(), workers.to_string()));
    }
    ConnectorOptions::new(options)
}

impl LaminarDB {
    /// Stores the catalog as it will be once `sql` is created, before anything starts: a
    /// catalog that cannot be written fails the statement and leaves no trace.
    pub(crate) fn persist_with(&self, catalog: &Catalog, sql: &str) -> Result<()> {
        if let Some(store) = &self.inner.store {
            let mut statements = catalog.statements_except(&[]);
            statements.push(sql.to_string());
            store.save(&statements)?;
        }
        Ok(())
    }

    /// For a `CREATE` of `name` with canonical `sql`: `Some(skipped)` when the object was
    /// restored from the data directory with exactly this definition (a restarted script
    /// declares it again), an error naming the object when the definition changed.
    pub(crate) fn restored_same(
        catalog: &Catalog,
        name: &str,
        sql: &str,
    ) -> Result<Option<ExecuteResult>> {
        match catalog.get(name) {
            Some(existing) if existing.restored && existing.sql == sql => {
                Ok(Some(ExecuteResult::Skipped {
                    reason: format!("{name} is restored from the data directory; unchanged"),
                }))
            }
            Some(existing) if existing.restored => Err(DbError::NotAllowed {
                statement: format!("CREATE {} {name}", existing.kind.noun().to_uppercase()),
                message: format!(
                    "{name} exists in the data directory with another definition:\n  {}\n\
                     drop it first (its state is lost) or use the stored definition",
                    existing.sql
                ),
            }),
            _ => Ok(None),
        }
    }

    /// What a `CREATE` of `name` (canonical `sql`) does when the name is taken: a no-op for
    /// an object restored with the same definition or under `IF NOT EXISTS`, an error
    /// otherwise; `None` when the name is free.
    pub(crate) fn existing(
        catalog: &Catalog,
        name: &str,
        sql: &str,
        if_not_exists: bool,
    ) -> Result<Option<ExecuteResult>> {
        if let Some(skipped) = Self::restored_same(catalog, name, sql)? {
            return Ok(Some(skipped));
        }
        if if_not_exists && catalog.get(name).is_some() {
            return Ok(Some(ExecuteResult::Skipped {
                reason: format!("{name} already exists; skipped"),
            }));
        }
        Self::check_absent(catalog, name)?;
        Ok(None)
    }

    pub(crate) fn check_absent(catalog: &Catalog, name: &str) -> Result<()> {
        match catalog.get(name) {
            Some(existing) => Err(DbError::AlreadyExists {
                kind: existing.kind.noun(),
                name: name.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Registers a `PER KEY` watermark with the planner; the key columns' indices, if any.
    fn keyed_watermark(
        &self,
        create: &CreateSource,
        schema: &Schema,
    ) -> Result<Option<Vec<usize>>> {
        match &create.watermark {
            Some(spec) if !spec.per_key.is_empty() => Ok(Some(
                self.inner
                    .planner
                    .register_keyed_watermark(&create.name, spec, schema)?,
            )),
            _ => Ok(None),
        }
    }

    pub(crate) fn create_source(
        &self,
        create: &CreateSource,
        persist: bool,
    ) -> Result<ExecuteResult> {
        let mut catalog = self.catalog();
        let name = &create.name;
        let mut canonical = create.clone();
        canonical.if_not_exists = false;
        let sql = Statement::CreateSource(Box::new(canonical)).to_string();
        if let Some(skipped) = Self::existing(&catalog, name, &sql, create.if_not_exists)? {
            return Ok(skipped);
        }
        if let Some(late) = &create.late_data_to {
            Self::check_absent(&catalog, late)?;
        }
        let context = format!("CREATE SOURCE {name}");
        let output_log = self.declared_output_log(&create.options, &context)?;
        let declared = declared_schema(create, &context)?;
        let (schema, connector) = self.source_connector(create, declared, &context)?;
        let idle_timeout = source_idle_timeout(
            create,
            connector.as_ref().and_then(|(_, c, _)| c.idle_timeout()),
            &context,
        )?;

        // Once registered, the names are forgotten again if anything below fails.
        let planner = &self.inner.planner;
        let forget = || {
            planner.deregister(name);
            if let Some(late) = &create.late_data_to {
                planner.deregister(late);
            }
        };
        planner.register(name, schema.clone())?;
        if let Some(late) = &create.late_data_to {
            planner
                .register(late, schema.clone())
                .inspect_err(|_| forget())?;
        }
        let watermark = self
            .source_watermark(create, &schema, &context)
            .inspect_err(|_| forget())?;
        let key_columns = self
            .keyed_watermark(create, &schema)
            .inspect_err(|_| forget())?;
        if persist {
            self.persist_with(&catalog, &sql)
                .inspect_err(|_| forget())?;
        }
        let (state, diverted) = match connector {
            Some((connector_name, connector, metrics)) => (
                ObjectState::ConnectorSource {
                    connector,
                    connector_name,
                    watermark,
                    metrics,
                },
                None,
            ),
            None => self
                .start_push_source(
                    create,
                    &schema,
                    watermark.as_ref(),
                    idle_timeout,
                    key_columns.as_deref(),
                    !persist,
                )
                .inspect_err(|_| forget())?,
        };
        let output_log = if output_log {
            self.push_source_output_log(name, &state, diverted.as_ref(), !persist)
                .inspect_err(|_| forget())?
        } else {
            None
        };
        // Registering names that were just checked absent cannot clash.
        let _ = self
            .inner
            .snapshot
            .register_unqueryable(name, "source", schema.clone());
        catalog.insert(Object {
            name: name.clone(),
            kind: ObjectKind::Source,
            sql: sql.clone(),
            schema: schema.clone(),
            inputs: Vec::new(),
            watermark_column: create.watermark.as_ref().map(|w| w.column.clone()),
            state,
            restored: false,
            output_log,
        });
        if let Some(late) = &create.late_data_to {
            self.insert_late_data(&mut catalog, name, late, sql, schema, diverted);
        }
        Ok(ExecuteResult::Created {
            kind: ObjectKind::Source,
            name: name.clone(),
        })
    }

    /// Adds the `LATE DATA TO` stream `late` of source `source` (created by `sql`).
    fn insert_late_data(
        &self,
        catalog: &mut Catalog,
        source: &str,
        late: &str,
        sql: String,
        schema: SchemaRef,
        diverted: Option<DivertedStream>,
    ) {
        // Registering a name that was just checked absent cannot clash.
        let _ = self
            .inner
            .snapshot
            .register_unqueryable(late, "stream", schema.clone());
        catalog.insert(Object {
            name: late.to_string(),
            kind: ObjectKind::Stream,
            sql,
            schema,
            inputs: vec![source.to_string()],
            watermark_column: None,
            state: ObjectState::LateData {
                source: source.to_string(),
                diverted,
            },
            restored: false,
            output_log: None,
        });
    }

    /// Whether `options` declare `output_log = 'on'`, which `statement` may only do in a
    /// database with a data directory.
    fn declared_output_log(&self, options: &[(String, String)], statement: &str) -> Result<bool> {
        let output_log = with_switch(options, "output_log", statement)?;
        if output_log && self.inner.durable.is_none() {
            return Err(DbError::NotAllowed {
                statement: statement.to_string(),
                message: "output_log = 'on' needs a data directory: its epochs are the \
                          checkpoints of a database opened with LaminarDB::open"
                    .into(),
            });
        }
        Ok(output_log)
    }

    /// Starts the output log of push source `name` (`state`), attached to its stream; on
    /// failure the source's streams are removed again.
    fn push_source_output_log(
        &self,
        name: &str,
        state: &ObjectState,
        diverted: Option<&DivertedStream>,
        restoring: bool,
    ) -> Result<Option<OutputLog>> {
        let ObjectState::PushSource { stream, outlet, .. } = state else {
            return Ok(None);
        };
        let runtime = &self.inner.runtime;
        let log = self
            .start_output_log(name, outlet, restoring)
            .inspect_err(|_| {
                runtime.remove_stream(*stream);
                if let Some(d) = diverted {
                    runtime.remove_stream(d.stream);
                }
            })?;
        Ok(Some(log))
    }

    /// The options of a stream, view or sink: `output_log` only for the first two, and
    /// only under a data directory.
    fn derived_options(
        &self,
        kind: ObjectKind,
        name: &str,
        options: &[(String, String)],
        context: &str,
    ) -> Result<QueryOptions> {
        let parsed = query_options(options, context)?;
        if parsed.output_log {
            if kind == ObjectKind::Sink {
                return Err(DbError::Sql(SqlError::Invalid {
                    context: context.to_string(),
                    message: "output_log applies to streams, materialized views and sources; \
                              a sink's output is its connector's"
                        .into(),
                }));
            }
            self.declared_output_log(options, &format!("CREATE {} {name}", kind.sql_name()))?;
        }
        Ok(parsed)
    }

    /// The source's schema, and its connector when it has one (validated, not yet reading).
    fn source_connector(
        &self,
        create: &CreateSource,
        declared: Option<SchemaRef>,
        context: &str,
    ) -> Result<(SchemaRef, Option<SourceConnectorParts>)> {
        match &create.connector {
            Some(spec) => {
                let metrics = Arc::new(SourceMetrics::default());
                let connector: Arc<dyn SourceConnector> = Arc::from(create_source(
                    &spec.name.to_lowercase(),
                    &source_options(spec, self.inner.runtime.workers()),
                    declared,
                    Arc::clone(&metrics),
                )?);
                Ok((
                    connector.schema(),
                    Some((spec.name.clone(), connector, metrics)),
                ))
            }
            None => match declared {
                Some(schema) => Ok((schema, None)),
                None => Err(DbError::Sql(SqlError::Invalid {
                    context: context.to_string(),
                    message: "a source without a connector must declare its columns".into(),
                })),
            },
        }
    }

    /// The source's watermark generator, planned over its registered schema; marks its
    /// event-time column for the planner.
    pub(crate) fn source_watermark(
        &self,
        create: &CreateSource,
        schema: &SchemaRef,
        context: &str,
    ) -> Result<Option<WatermarkGenerator>> {
        let Some(spec) = &create.watermark else {
            return Ok(None);
        };
        let event_time = schema.index_of(&spec.column).map_err(|_| {
            DbError::Sql(SqlError::Invalid {
                context: context.to_string(),
                message: format!("WATERMARK FOR {}: no such column", spec.column),
            })
        })?;
        let expr = self
            .inner
            .planner
            .plan_watermark(&create.name, &spec.expr)?;
        // The watermark bounds this column (rows behind it are late): interval joins can
        // expire their state by it.
        self.inner.planner.mark_event_time(&create.name, event_time);
        Ok(Some(WatermarkGenerator::new(
            create.name.clone(),
            event_time,
            expr,
        )))
    }

    /// Opens the stream of a source fed by `push` and `INSERT`, and the stream its late
    /// rows are diverted into when it has `LATE DATA TO`. A source with keyed watermarks
    /// spreads its rows over the workers by its `key_columns`.
    fn start_push_source(
        &self,
        create: &CreateSource,
        schema: &SchemaRef,
        watermark: Option<&WatermarkGenerator>,
        idle_timeout: Option<Duration>,
        key_columns: Option<&[usize]>,
        restoring: bool,
    ) -> Result<(ObjectState, Option<DivertedStream>)> {
        let runtime = &self.inner.runtime;
        let diverted = match &create.late_data_to {
            None => None,
            Some(late) => {
                let (stream, outlet) = runtime.create_stream(late, schema.clone(), None);
                let ingress = runtime
                    .create_ingress(stream, SourceFeed::Push, None, None, LatePolicy::Keep, None)
                    .inspect_err(|_| runtime.remove_stream(stream))?;
                Some(DivertedStream {
                    stream,
                    outlet,
                    ingress,
                })
            }
        };
        let late = diverted.as_ref().map_or(LatePolicy::Keep, |d| {
            LatePolicy::Divert(Arc::clone(&d.ingress))
        });
        let (stream, outlet) = runtime.create_stream(&create.name, schema.clone(), None);
        let ingress = runtime
            .create_ingress(
                stream,
                SourceFeed::Push,
                watermark,
                idle_timeout,
                late,
                key_columns.map(|columns| (schema.as_ref(), columns)),
            )
            .inspect_err(|_| {
                runtime.remove_stream(stream);
                if let Some(d) = &diverted {
                    runtime.remove_stream(d.stream);
                }
            })?;
        let logged = self
            .open_source_log(&create.name, restoring)
            .and_then(|wal| {
                if restoring {
                    self.restore_source(&create.name, &ingress, None)?;
                }
                Ok(wal)
            });
        let wal = match logged {
            Ok(wal) => wal,
            Err(e) => {
                runtime.remove_stream(stream);
                if let Some(d) = &diverted {
                    runtime.remove_stream(d.stream);
                }
                return Err(e);
            }
        };
        let state = ObjectState::PushSource {
            stream,
            outlet,
            ingress,
            table: None,
            wal,
        };
        Ok((state, diverted))
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per CREATE kind; a struct would only rename them"
    )]
    pub(crate) fn create_derived(
        &self,
        kind: ObjectKind,
        name: &str,
        if_not_exists: bool,
        query: &Query,
        sink: Option<&ConnectorSpec>,
        options: &[(String, String)],
        emit: Emit,
        sql: String,
        persist: bool,
    ) -> Result<ExecuteResult> {
        let mut catalog = self.catalog();
        if let Some(skipped) = Self::existing(&catalog, name, &sql, if_not_exists)? {
            return Ok(skipped);
        }
        let context = format!("{} {name}", kind.noun());
        let options = self.derived_options(kind, name, options, &context)?;
        let planned = self
            .inner
            .planner
            .plan_query(query, &context, emit, options.state_ttl)?;
        let schema = planned.schema.clone();
        Self::check_changelog_use(&catalog, &self.inner.planner, &planned, &context)?;
        let sink_connector = sink
            .map(|spec| self.sink_connector(spec, &schema, planned.graph.changelog))
            .transpose()?;

        let runtime = &self.inner.runtime;
        // Rows accepted before this statement are not part of the new query's input.
        runtime.sync(DROP_SYNC_TIMEOUT)?;
        let table = if kind != ObjectKind::MaterializedView {
            None
        } else if planned.graph.changelog {
            let table = ResultTable::changelog(schema.clone(), runtime.workers())
                .map_err(|e| DbError::Sql(SqlError::plan(&context, &e.into())))?;
            Some(Arc::new(table))
        } else {
            Some(Arc::new(ResultTable::new(
                schema.clone(),
                runtime.workers(),
            )))
        };
        let view_restore = match &table {
            Some(table) => self.spawn_view_restore(name, table, !persist)?,
            None => None,
        };
        let (stream, outlet) = runtime.create_stream(name, schema.clone(), table.clone());
        // Attached before the query starts (or logs are replayed), so it sees every change.
        let output_log = options
            .output_log
            .then(|| self.start_output_log(name, &outlet, !persist))
            .transpose()
            .inspect_err(|_| runtime.remove_stream(stream))?;
        let sink_task = match sink_connector {
            Some(connector) => {
                let resume = self.sink_resume(name, !persist);
                let (task, sender) =
                    SinkTask::start(name, connector, runtime.progress(), resume, None)
                        .map_err(|e| DbError::Internal(format!("cannot start sink thread: {e}")))?;
                outlet.attach_sink(sender);
                Some(task)
            }
            None => None,
        };

        let sql_to_store = persist.then_some(sql.as_str());
        let mut instances = self.start_query(&catalog, &planned, name, stream, sql_to_store)?;
        if let Some(restore) = view_restore {
            restore.join()?;
        }
        if !self.sources_held() {
            for instance in &mut instances {
                instance.start();
            }
        }

        self.register_readable(kind, name, &schema, table.as_ref())?;
        if planned.graph.changelog {
            self.inner.planner.mark_changelog(name);
        }
        if let Some(window_end) = planned.graph.window_end {
            self.inner.planner.mark_windowed(name, window_end);
        }
        match planned.graph.row_times {
            RowTimes::EventTime(column) => self.inner.planner.mark_event_time(name, column),
            RowTimes::Unordered => self.inner.planner.mark_unordered(name),
            RowTimes::Unknown => {}
        }
        // The lookup tables it asks are dependencies too: they cannot be dropped under it.
        let mut inputs = planned.inputs;
        inputs.extend(planned.graph.lookup_tables.iter().cloned());
        catalog.insert(Object {
            name: name.to_string(),
            kind,
            sql,
            schema,
            inputs,
            watermark_column: None,
            state: ObjectState::Derived {
                stream,
                outlet,
                instances,
                sink: sink_task,
            },
            restored: false,
            output_log,
        });
        Ok(ExecuteResult::Created {
            kind,
            name: name.to_string(),
        })
    }

    /// The connector of a sink of `schema` (a changelog or append-only), validated.
    fn sink_connector(
        &self,
        spec: &ConnectorSpec,
        schema: &SchemaRef,
        changelog: bool,
    ) -> Result<Box<dyn SinkConnector>> {
        let changes = if changelog {
            ChangeMode::Changelog
        } else {
            ChangeMode::AppendOnly
        };
        let sink = create_sink(
            &spec.name.to_lowercase(),
            &connector_options(spec),
            schema.clone(),
            changes,
        )?;
        // Under a data directory every sink's output is exactly-once.
        if self.inner.durable.is_some() {
            sink.check_exactly_once()?;
        }
        Ok(sink)
    }

    /// Binds the query's inputs and starts it on the workers, then stores the catalog with
    /// `sql` (when given). On failure nothing of the statement stays running.
    fn start_query(
        &self,
        catalog: &Catalog,
        planned: &laminar_sql::PlannedQuery,
        name: &str,
        stream: StreamId,
        sql: Option<&str>,
    ) -> Result<Vec<SourceInstance>> {
        let runtime = &self.inner.runtime;
        let mut pending = Vec::new();
        let started = self
            .bind_inputs(catalog, &planned.inputs, name, &mut pending)
            .and_then(|bindings| {
                let restore = if sql.is_none() {
                    self.restored_query(name)?
                } else {
                    None
                };
                match restore {
                    Some(restore) => Ok(runtime.add_restored_query(
                        name,
                        &planned.graph,
                        &bindings,
                        stream,
                        &restore,
                    )?),
                    None => Ok(runtime.add_query(name, &planned.graph, &bindings, stream)?),
                }
            });
        if let Err(error) = started {
            // Nothing of the statement stays: its readers' streams and its own stream go
            // (and with it the sink's input).
            for instance in &pending {
                runtime.remove_stream(instance.stream);
            }
            runtime.remove_stream(stream);
            return Err(error);
        }
        // The catalog is stored once the query runs, so a statement that failed is not
        // restored on reopen; if storing fails, the running query is taken down again.
        if let Some(sql) = sql {
            if let Err(error) = self.persist_with(catalog, sql) {
                runtime.remove_query(name);
                for instance in &pending {
                    runtime.remove_stream(instance.stream);
                }
                runtime.remove_stream(stream);
                return Err(error);
            }
        }
        Ok(pending)
    }

    /// Changelogs (retracting outputs) can feed aggregates and joins only from materialized
    /// views.
    fn check_changelog_use(
        catalog: &Catalog,
        sql_planner: &laminar_sql::StreamPlanner,
        planned: &laminar_sql::PlannedQuery,
        context: &str,
    ) -> Result<()> {
        if !planned.graph.aggregates_changelog && !planned.graph.joins_changelog {
            return Ok(());
        }
        // Only a materialized view can give a new aggregate, top-N or join the rows its
        // later retractions refer to; a stream's earlier rows are gone.
        let Some(stream) = planned.inputs.iter().find(|input| {
            catalog
                .get(input)
                .is_some_and(|o| o.kind == ObjectKind::Stream && sql_planner.is_changelog(input))
        }) else {
            return Ok(());
        };
        let what = if planned.graph.aggregates_changelog {
            format!("aggregating the changelog of stream {stream}, or ranking it")
        } else {
            format!("joining the changelog of stream {stream}")
        };
        Err(DbError::Sql(SqlError::Unsupported {
            construct: format!(
                "{what} (a stream keeps no rows for later retractions to refer to); make \
                 {stream} a MATERIALIZED VIEW"
            ),
            context: context.to_string(),
        }))
    }

    /// Maps each input of a query to the stream feeding it. A connector source (or its
    /// `LATE DATA TO` stream) gets a fresh reader (its own stream and rings), added to
    /// `pending`, that starts reading once the query is running.
    fn bind_inputs(
        &self,
        catalog: &Catalog,
        inputs: &[String],
        query: &str,
        pending: &mut Vec<SourceInstance>,
    ) -> Result<HashMap<String, StreamId>> {
        let mut bindings = HashMap::new();
        for input in inputs {
            let object = catalog.get(input).ok_or_else(|| DbError::NotFound {
                kind: "source, stream or view",
                name: input.clone(),
                hint: hint(&catalog.names()),
            })?;
            match &object.state {
                ObjectState::PushSource { stream, .. }
                | ObjectState::Derived { stream, .. }
                | ObjectState::LateData {
                    diverted: Some(DivertedStream { stream, .. }),
                    ..
                } => {
                    bindings.insert(input.clone(), *stream);
                }
                ObjectState::ConnectorSource { .. } => {
                    // A reader of a source whose late rows have a stream of their own drops them.
                    let late = if catalog.late_data_of(input).is_some() {
                        LatePolicy::Drop
                    } else {
                        LatePolicy::Keep
                    };
                    let instance = self.source_reader(object, input, query, late)?;
                    bindings.insert(input.clone(), instance.stream);
                    pending.push(instance);
                }
                ObjectState::LookupTable { .. } => {
                    return Err(DbError::Internal(format!(
                        "{query}: lookup table {input} planned as an input"
                    )));
                }
                ObjectState::LateData {
                    source,
                    diverted: None,
                } => {
                    let origin = catalog.get(source).ok_or_else(|| {
                        DbError::Internal(format!("{input}: its source {source} is missing"))
                    })?;
                    let instance = self.source_reader(origin, input, query, LatePolicy::Only)?;
                    bindings.insert(input.clone(), instance.stream);
                    pending.push(instance);
                }
            }
        }
        Ok(bindings)
    }

    /// A reader of connector source `source` for `query`, feeding the stream named `input`
    /// (the source or its `LATE DATA TO` stream) with the rows `late` lets through.
    fn source_reader(
        &self,
        source: &Object,
        input: &str,
        query: &str,
        late: LatePolicy,
    ) -> Result<SourceInstance> {
        let ObjectState::ConnectorSource {
            connector,
            watermark,
            ..
        } = &source.state
        else {
            return Err(DbError::Internal(format!(
                "{} is not a connector source",
                source.name
            )));
        };
        let runtime = &self.inner.runtime;
        let late_only = matches!(late, LatePolicy::Only);
        let (stream, outlet) =
            runtime.create_stream(&format!("{input}@{query}"), source.schema.clone(), None);
        let key_columns = self.inner.planner.keyed_watermark_columns(&source.name);
        let ingress = runtime
            .create_ingress(
                stream,
                SourceFeed::Reader,
                watermark.as_ref(),
                connector.idle_timeout(),
                late,
                key_columns
                    .as_deref()
                    .map(|columns| (source.schema.as_ref(), columns)),
            )
            .inspect_err(|_| runtime.remove_stream(stream))?;
        let mut instance = SourceInstance::prepare(
            &source.name,
            late_only,
            Arc::clone(connector),
            stream,
            outlet,
            Arc::clone(&ingress),
        )
        .with_gate(self.inner.durable.as_ref().map(|d| Arc::clone(&d.gate)));
        // While the database opens, a reader the checkpoint knows resumes where it was.
        let restored = self
            .restored_reader(&format!("{input}@{query}"), true)
            .and_then(|restored| {
                if let Some((_, Some(watermark))) = &restored {
                    ingress.restore_watermark_state(watermark)?;
                }
                Ok(restored)
            })
            .inspect_err(|_| runtime.remove_stream(stream))?;
        if let Some((position, _)) = restored {
            instance = instance.resume_at(position);
        }
        Ok(instance)
    }

    /// Makes a new stream or view readable by later queries, and every derived object known
    /// to snapshot queries (so reading a stream or sink explains why it has no rows).
    fn register_readable(
        &self,
        kind: ObjectKind,
        name: &str,
        schema: &SchemaRef,
        table: Option<&Arc<ResultTable>>,
    ) -> Result<()> {
        // Names were checked absent, so the snapshot registrations cannot clash.
        match kind {
            ObjectKind::MaterializedView => {
                self.inner.planner.register(name, schema.clone())?;
                if let Some(table) = table {
                    let _ = self.inner.snapshot.register_view(name, Arc::clone(table));
                }
            }
            ObjectKind::Stream => {
                self.inner.planner.register(name, schema.clone())?;
                let _ = self
                    .inner
                    .snapshot
                    .register_unqueryable(name, "stream", schema.clone());
            }
            ObjectKind::Sink => {
                let _ = self
                    .inner
                    .snapshot
                    .register_unqueryable(name, "sink", schema.clone());
            }
            ObjectKind::Source | ObjectKind::Table => {}
        }
        Ok(())
    }

    pub(crate) fn drop_object(
        &self,
        kind: ObjectKind,
        name: &str,
        if_exists: bool,
    ) -> Result<ExecuteResult> {
        let mut catalog = self.catalog();
        let Some(object) = catalog.get(name) else {
            if if_exists {
                return Ok(ExecuteResult::Skipped {
                    reason: format!("{} {name} does not exist; skipped", kind.noun()),
                });
            }
            return Err(DbError::NotFound {
                kind: kind.noun(),
                name: name.to_string(),
                hint: hint(&catalog.names()),
            });
        };
        if object.kind != kind {
            return Err(DbError::WrongKind {
                name: name.to_string(),
                actual: object.kind.noun(),
                expected: kind.noun(),
            });
        }
        if let ObjectState::LateData { source, .. } = &object.state {
            return Err(DbError::NotAllowed {
                statement: format!("DROP {} {name}", kind.sql_name()),
                message: format!(
                    "{name} is the LATE DATA TO stream of source {source}; it is dropped with \
                     the source"
                ),
            });
        }
        // A source takes its LATE DATA TO stream with it.
        let mut dropped = vec![name.to_string()];
        let mut described = name.to_string();
        if let Some(late) = catalog.late_data_of(name) {
            dropped.push(late.name.clone());
            described = format!("{name} (with its LATE DATA TO stream {})", late.name);
        }
        let dependents = catalog.dependents(&dropped);
        if !dependents.is_empty() {
            return Err(DbError::HasDependents {
                kind: kind.noun(),
                name: described,
                dependents: dependents.join(", "),
            });
        }
        let runtime = &self.inner.runtime;
        // Everything that can fail happens before anything changes: rows already accepted
        // reach the query, and the catalog without the object is stored.
        if matches!(object.state, ObjectState::Derived { .. }) {
            runtime.sync(DROP_SYNC_TIMEOUT)?;
        }
        if let Some(store) = &self.inner.store {
            store.save(&catalog.statements_except(&dropped))?;
        }
        let mut removed = Vec::with_capacity(dropped.len());
        for gone in &dropped {
            let object = catalog
                .remove(gone)
                .ok_or_else(|| DbError::Internal(format!("{gone} vanished during DROP")))?;
            removed.push(object);
        }
        let mut closing = Vec::new();
        for object in &mut removed {
            closing.extend(self.stop_object(object));
            closing.extend(object.output_log.take().map(OutputLog::into_task));
            self.inner.planner.deregister(&object.name);
            self.inner.snapshot.deregister(&object.name);
        }
        drop(catalog);
        // Once the workers and this object let go of the stream, the sink (or output log)
        // sees its input end; its output is complete when DROP returns. The catalog is not
        // locked meanwhile.
        drop(removed);
        for mut task in closing {
            task.join(&runtime.progress(), DROP_SYNC_TIMEOUT);
        }
        Ok(ExecuteResult::Dropped {
            kind,
            name: name.to_string(),
        })
    }
}

impl LaminarDB {
    /// Takes a dropped object off the runtime; returns its sink, which closes once the
    /// object is gone.
    fn stop_object(&self, object: &mut Object) -> Option<SinkTask> {
        let runtime = &self.inner.runtime;
        match &mut object.state {
            ObjectState::PushSource {
                stream, ingress, ..
            } => {
                ingress.abandon();
                runtime.remove_stream(*stream);
                None
            }
            ObjectState::LateData { diverted, .. } => {
                if let Some(diverted) = diverted {
                    diverted.ingress.abandon();
                    runtime.remove_stream(diverted.stream);
                }
                None
            }
            ObjectState::ConnectorSource { .. } | ObjectState::LookupTable { .. } => None,
            ObjectState::Derived {
                stream,
                instances,
                sink,
                ..
            } => {
                runtime.remove_query(&object.name);
                for instance in instances.iter_mut() {
                    instance.stop();
                    runtime.remove_stream(instance.stream);
                }
                runtime.remove_stream(*stream);
                sink.take()
            }
        }
    }
}

/// The options a source fed by `push`/`INSERT` takes in `WITH (...)`.
const PUSH_SOURCE_OPTIONS: [&str; 2] = ["idle_timeout", "output_log"];

/// The source's `idle_timeout`: its connector's option, or a push source's `WITH` option.
/// Refused without a `WATERMARK`.
fn source_idle_timeout(
    create: &CreateSource,
    connector_timeout: Option<Duration>,
    context: &str,
) -> Result<Option<Duration>> {
    let idle_timeout = match &create.connector {
        Some(_) => connector_timeout,
        None => push_source_idle_timeout(create, context)?,
    };
    if idle_timeout.is_some() && create.watermark.is_none() {
        return Err(DbError::Sql(SqlError::Invalid {
            context: context.to_string(),
            message: "idle_timeout needs a WATERMARK: an idle source is one that no longer \
                      holds the watermark back"
                .into(),
        }));
    }
    Ok(idle_timeout)
}

/// The `idle_timeout` of a source without a connector, from its `WITH` options.
fn push_source_idle_timeout(create: &CreateSource, context: &str) -> Result<Option<Duration>> {
    check_option_keys(&create.options, &PUSH_SOURCE_OPTIONS, context)?;
    with_duration(&create.options, "idle_timeout", context)
}

/// The options a continuous query (stream, view or sink) takes in `WITH (...)`.
const QUERY_OPTIONS: [&str; 2] = ["state_ttl", "output_log"];

/// A continuous query's `WITH` options.
pub(crate) struct QueryOptions {
    /// How long unused keyed state is kept.
    pub(crate) state_ttl: Option<Duration>,
    /// Whether its committed changes are kept for subscriptions resuming from an epoch.
    pub(crate) output_log: bool,
}

/// A continuous query's `WITH` options, checked.
pub(crate) fn query_options(options: &[(String, String)], context: &str) -> Result<QueryOptions> {
    check_option_keys(options, &QUERY_OPTIONS, context)?;
    Ok(QueryOptions {
        state_ttl: with_duration(options, "state_ttl", context)?,
        output_log: with_switch(options, "output_log", context)?,
    })
}

/// The switch option `key` among `WITH` options: `'on'` or `'off'` (the default).
fn with_switch(options: &[(String, String)], key: &str, context: &str) -> Result<bool> {
    let Some((_, value)) = options.iter().rev().find(|(k, _)| k == key) else {
        return Ok(false);
    };
    match value.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(DbError::Sql(SqlError::Invalid {
            context: context.to_string(),
            message: format!("invalid value '{value}' for option '{key}': expected 'on' or 'off'"),
        })),
    }
}

/// Refuses a `WITH` option not among `known`, listing those.
fn check_option_keys(options: &[(String, String)], known: &[&str], context: &str) -> Result<()> {
    match options
        .iter()
        .find(|(key, _)| !known.contains(&key.as_str()))
    {
        Some((key, _)) => Err(DbError::Sql(SqlError::Invalid {
            context: context.to_string(),
            message: format!(
                "unknown option '{key}' in WITH; known options: {}",
                known.join(", ")
            ),
        })),
        None => Ok(()),
    }
}

/// The duration option `key` among `WITH` options (`'500ms'`, `'5s'`, `'1m'`, `'1h'`).
fn with_duration(
    options: &[(String, String)],
    key: &str,
    context: &str,
) -> Result<Option<Duration>> {
    let invalid = |message: String| {
        DbError::Sql(SqlError::Invalid {
            context: context.to_string(),
            message,
        })
    };
    ConnectorOptions::new(options.iter().cloned())
        .duration(context, key)
        .map_err(|error| match error {
            laminar_connectors::ConnectorError::InvalidOption {
                option,
                value,
                reason,
                ..
            } => invalid(format!(
                "invalid value '{value}' for option '{option}': {reason}"
            )),
            other => DbError::Connector(other),
        })
}

/// The schema declared in `CREATE SOURCE`, or `None` when no columns are listed.
pub(crate) fn declared_schema(create: &CreateSource, context: &str) -> Result<Option<SchemaRef>> {
    if create.columns.is_empty() {
        return Ok(None);
    }
    let mut fields: Vec<Field> = Vec::with_capacity(create.columns.len());
    for column in &create.columns {
        let name = if column.name.quote_style.is_some() {
            column.name.value.clone()
        } else {
            column.name.value.to_lowercase()
        };
        if fields.iter().any(|f| *f.name() == name) {
            return Err(DbError::Sql(SqlError::Invalid {
                context: context.to_string(),
                message: format!("column {name} is declared twice"),
            }));
        }
        let data_type = arrow_type(&column.data_type, &format!("{context}, column {name}"))?;
        let mut nullable = true;
        for option in &column.options {
            match &option.option {
                ColumnOption::NotNull => nullable = false,
                ColumnOption::Null => nullable = true,
                other => {
                    return Err(DbError::Sql(SqlError::Unsupported {
                        construct: format!("column option {other}"),
                        context: format!("{context}, column {name}"),
                    }))
                }
            }
        }
        fields.push(Field::new(name, data_type, nullable));
    }
    Ok(Some(Arc::new(Schema::new(fields))))
}
