//! `LaminarDB`: the embedded database handle. It owns the runtime (workers), the planner,
//! the catalog and the snapshot-query engine, and routes each statement to them.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};
use laminar_core::runtime::{StreamOutlet, SUBSCRIBER_CHANNEL_CAPACITY_BATCHES};
use laminar_core::{Runtime, RuntimeConfig};
use laminar_sql::{parse_statements, Emit, ObjectKind, Statement, StreamPlanner};

use crate::catalog::{Catalog, DivertedStream, ObjectState};
use crate::catalog_store::CatalogStore;
use crate::durability::{Durable, DEFAULT_CHECKPOINT_INTERVAL, OUTPUT_LOG_EXTRA_EPOCHS_DEFAULT};
use crate::error::{DbError, Result};
use crate::lookup_table::LookupSources;
use crate::metrics::Metrics;
use crate::result::ExecuteResult;
use crate::snapshot::SnapshotContext;
use crate::source_handle::SourceHandle;
use crate::subscription::Subscription;
use laminar_storage::wal::Durability;

/// How long a snapshot read waits for the workers to catch up with rows pushed before it.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// How long dropping a database waits for each sink to flush and close its output.
const SINK_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures a database before opening it.
#[derive(Debug, Clone)]
pub struct LaminarDbBuilder {
    runtime: RuntimeConfig,
    durability: Durability,
    checkpoint_interval: Option<Duration>,
    output_log_extra_epochs: u64,
    pub(crate) lookup_sources: LookupSources,
}

impl Default for LaminarDbBuilder {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            durability: Durability::default(),
            checkpoint_interval: Some(DEFAULT_CHECKPOINT_INTERVAL),
            output_log_extra_epochs: OUTPUT_LOG_EXTRA_EPOCHS_DEFAULT,
            lookup_sources: LookupSources::default(),
        }
    }
}

impl LaminarDbBuilder {
    /// Number of worker threads (default: available cores). `1` is the single reactor.
    pub fn workers(mut self, workers: usize) -> Self {
        self.runtime.workers = workers.max(1);
        self
    }

    /// Pin workers to cores (default on; turn off where the host restricts cores).
    pub fn pin_workers(mut self, pin: bool) -> Self {
        self.runtime.pin_workers = pin;
        self
    }

    /// How long an idle worker keeps polling for input before it parks (default: a short
    /// fixed spin). Longer spares a thread wake-up per row when rows arrive more often than
    /// this (with a callback subscription, p50 latency at 100,000 rows/s fell from 14 µs
    /// to 2.6 µs in `BENCHMARKS.md`), at the cost of a busy core for that long after the
    /// last row; on a machine with no spare core it slows the threads it competes with.
    pub fn idle_spin(mut self, spin: Duration) -> Self {
        self.runtime.idle_spin = Some(spin);
        self
    }

    /// When a push or `INSERT` returns, under a data directory: `Sync` (the rows are on
    /// disk, fsynced), `Group` (the default: written, so a process crash loses nothing;
    /// fsynced within a few milliseconds, which is what a power loss can lose) or `None`
    /// (no log: a crash loses the rows pushed since the last checkpoint).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Time between automatic checkpoints (default 10 s); `None` for checkpoints only on
    /// demand (`CHECKPOINT`, [`LaminarDB::checkpoint`]) and at a clean shutdown.
    pub fn checkpoint_interval(mut self, interval: Option<Duration>) -> Self {
        self.checkpoint_interval = interval.filter(|i| !i.is_zero());
        self
    }

    /// How many committed epochs an output log (`WITH (output_log = 'on')`) keeps beyond
    /// the two of the checkpoints kept (default 8): a subscription can resume after any of
    /// the newest `2 + extra` epochs ([`LaminarDB::subscribe_from`]).
    pub fn output_log_extra_epochs(mut self, extra_epochs: u64) -> Self {
        self.output_log_extra_epochs = extra_epochs;
        self
    }

    /// A database that keeps nothing on disk.
    pub fn in_memory(self) -> Result<LaminarDB> {
        LaminarDB::start(&self, None)
    }

    /// A database whose catalog, logs and checkpoints live in `dir` (created if missing):
    /// reopening it restores every object and resumes every query from the newest valid
    /// checkpoint, replaying the rows pushed after it.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<LaminarDB> {
        LaminarDB::start(&self, Some(dir.as_ref()))
    }
}

pub(crate) struct Inner {
    /// Live `SourceHold`s (and `execute` calls); connector sources wait while above zero.
    source_holds: AtomicUsize,
    pub(crate) runtime: Runtime,
    pub(crate) planner: StreamPlanner,
    pub(crate) snapshot: SnapshotContext,
    pub(crate) catalog: Mutex<Catalog>,
    pub(crate) store: Option<CatalogStore>,
    /// Logs and checkpoints, for a database with a data directory.
    pub(crate) durable: Option<Durable>,
    /// Stops the automatic checkpoint thread.
    pub(crate) checkpoints_stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    /// The automatic checkpoint thread, joined when the last handle goes.
    pub(crate) checkpoint_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Live `LaminarDB` handles (not the checkpoint thread's temporary hold).
    handles: AtomicUsize,
    query_runtime: Option<tokio::runtime::Runtime>,
    /// Sources lookup tables may name.
    pub(crate) lookup_sources: Mutex<LookupSources>,
}

impl Inner {
    /// Stops the automatic checkpoint thread and waits for it (unless called on it).
    fn stop_checkpoints(&self) {
        {
            let (stopped, wake) = &*self.checkpoints_stop;
            *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
            wake.notify_all();
        }
        let thread = self
            .checkpoint_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                // A checkpoint thread that panicked has nothing left to do.
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_checkpoints();
        if self.durable.is_some() && !self.runtime.is_shut_down() {
            // A clean shutdown ends with a checkpoint, which also commits the sinks' last
            // rows; if it fails, the next open recovers from the previous one.
            if let Err(e) = self.checkpoint() {
                eprintln!("laminardb: final checkpoint failed: {e}");
            }
        }
        let catalog = self
            .catalog
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for object in catalog.objects_mut() {
            match &mut object.state {
                ObjectState::PushSource { ingress, .. } => ingress.abandon(),
                ObjectState::Derived { instances, .. } => {
                    for instance in instances {
                        instance.stop();
                    }
                }
                // A push source's late-data stream goes with the source's ingress.
                ObjectState::ConnectorSource { .. }
                | ObjectState::LateData { .. }
                | ObjectState::LookupTable { .. } => {}
            }
        }
        self.runtime.shutdown();
        // With the workers gone, dropping the objects drops the last senders to the sinks,
        // which then close their outputs; waiting for them keeps written files complete.
        let mut sinks = Vec::new();
        for object in catalog.take_all() {
            if let Some(log) = object.output_log {
                sinks.push(log.into_task());
            }
            if let ObjectState::Derived {
                sink: Some(sink), ..
            } = object.state
            {
                sinks.push(sink);
            }
        }
        let progress = self.runtime.progress();
        for mut sink in sinks {
            sink.join(&progress, SINK_CLOSE_TIMEOUT);
        }
        if let Some(runtime) = self.query_runtime.take() {
            // Dropping a tokio runtime inside another would panic; this never blocks.
            runtime.shutdown_background();
        }
    }
}

/// An embedded streaming database.
///
/// Cloning is cheap and every clone is the same database. Dropping the last clone shuts
/// the database down (with a data directory, after a final checkpoint) before it returns.
pub struct LaminarDB {
    pub(crate) inner: Arc<Inner>,
}

impl Clone for LaminarDB {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::AcqRel);
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Drop for LaminarDB {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: the automatic checkpoint thread, which holds the database
            // only while it checkpoints, is stopped and waited for, so the shutdown (and its
            // final checkpoint) runs here, before this drop returns, not on that thread.
            self.inner.stop_checkpoints();
        }
    }
}

impl std::fmt::Debug for LaminarDB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaminarDB")
            .field("workers", &self.inner.runtime.workers())
            .finish_non_exhaustive()
    }
}

impl LaminarDB {
    /// Configures a database (workers, pinning) before opening it.
    pub fn builder() -> LaminarDbBuilder {
        LaminarDbBuilder::default()
    }

    /// A database that keeps nothing on disk, with default settings.
    pub fn in_memory() -> Result<Self> {
        Self::builder().in_memory()
    }

    /// Opens (or creates) the database in `dir` with default settings; sources, streams,
    /// views and sinks created earlier are restored.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::builder().open(dir)
    }

    fn start(options: &LaminarDbBuilder, dir: Option<&Path>) -> Result<Self> {
        let config = &options.runtime;
        let runtime = Runtime::start(config)?;
        let query_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("laminar-query")
            .enable_all()
            .build()
            .map_err(|e| DbError::Internal(format!("cannot start the query runtime: {e}")))?;
        let (store, statements, durable) = match dir {
            Some(dir) => {
                let (store, statements) = CatalogStore::open(dir)?;
                let durable = Durable::open(
                    dir,
                    options.durability,
                    options.checkpoint_interval,
                    runtime.workers(),
                    options.output_log_extra_epochs,
                )?;
                (Some(store), statements, Some(durable))
            }
            None => (None, Vec::new(), None),
        };
        let db = Self {
            inner: Arc::new(Inner {
                source_holds: AtomicUsize::new(0),
                runtime,
                planner: StreamPlanner::new(),
                snapshot: SnapshotContext::new(),
                catalog: Mutex::new(Catalog::default()),
                store,
                durable,
                checkpoints_stop: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
                checkpoint_thread: Mutex::new(None),
                handles: AtomicUsize::new(1),
                query_runtime: Some(query_runtime),
                lookup_sources: Mutex::new(options.lookup_sources.clone()),
            }),
        };
        // Restored sources start reading (and logs are replayed) once every statement ran.
        let hold = db.hold_sources();
        for sql in statements {
            let restored = parse_statements(&sql)
                .map_err(DbError::from)
                .and_then(|parsed| {
                    for statement in parsed {
                        db.execute_statement(statement, false)?;
                    }
                    Ok(())
                });
            if let Err(e) = restored {
                let path = dir
                    .map(|d| d.join("catalog.json").display().to_string())
                    .unwrap_or_default();
                return Err(DbError::Catalog {
                    path,
                    message: format!("cannot restore `{sql}`: {e}"),
                });
            }
        }
        if db.inner.durable.is_some() {
            db.replay_logs()?;
            db.mark_restored();
            db.start_checkpoints();
        }
        drop(hold);
        Ok(db)
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.inner.runtime.workers()
    }

    /// Splits a script into its statements, each as canonical SQL (for shells and runners
    /// that report per statement).
    pub fn split_statements(sql: &str) -> Result<Vec<String>> {
        Ok(parse_statements(sql)?
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    /// Holds connector sources: those created while a hold lives (by `CREATE STREAM`,
    /// `MATERIALIZED VIEW` or `SINK` over a file or generator) start reading when the last hold
    /// ends. Declaring a whole pipeline under one hold means every query of it, and every
    /// subscription taken meanwhile, sees every row, whatever the order of the statements.
    /// `execute` holds for the duration of its statements; `FLUSH` starts held sources.
    pub fn hold_sources(&self) -> SourceHold {
        self.inner.source_holds.fetch_add(1, Ordering::AcqRel);
        SourceHold { db: self.clone() }
    }

    pub(crate) fn sources_held(&self) -> bool {
        self.inner.source_holds.load(Ordering::Acquire) > 0
    }

    /// Starts every prepared connector source instance that is not reading yet.
    pub(crate) fn start_held_sources(&self, force: bool) {
        let mut catalog = self.catalog();
        // Checked under the catalog lock, so a hold taken meanwhile keeps its sources.
        if !force && self.sources_held() {
            return;
        }
        for object in catalog.objects_mut() {
            if let ObjectState::Derived { instances, .. } = &mut object.state {
                for instance in instances.iter_mut().filter(|i| !i.is_started()) {
                    instance.start();
                }
            }
        }
    }

    /// Executes one or more `;`-separated statements; returns the last one's result.
    /// Connector sources created by the statements start reading once all of them ran.
    pub fn execute(&self, sql: &str) -> Result<ExecuteResult> {
        let _hold = self.hold_sources();
        let statements = parse_statements(sql)?;
        let mut last = None;
        for statement in statements {
            last = Some(self.execute_statement(statement, true)?);
        }
        last.ok_or_else(|| DbError::NotAllowed {
            statement: sql.trim().to_string(),
            message: "no statement to execute".into(),
        })
    }

    pub(crate) fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.inner
            .catalog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn execute_statement(&self, statement: Statement, persist: bool) -> Result<ExecuteResult> {
        match statement {
            Statement::CreateSource(create) => self.create_source(&create, persist),
            Statement::CreateTable(create) => self.create_table(&create, persist),
            Statement::CreateStream {
                name,
                if_not_exists,
                options,
                query,
                emit,
            } => {
                let sql = Statement::CreateStream {
                    name: name.clone(),
                    if_not_exists: false,
                    options: options.clone(),
                    query: query.clone(),
                    emit,
                }
                .to_string();
                self.create_derived(
                    ObjectKind::Stream,
                    &name,
                    if_not_exists,
                    &query,
                    None,
                    &options,
                    emit,
                    sql,
                    persist,
                )
            }
            Statement::CreateMaterializedView {
                name,
                if_not_exists,
                options,
                query,
                emit,
            } => {
                let sql = Statement::CreateMaterializedView {
                    name: name.clone(),
                    if_not_exists: false,
                    options: options.clone(),
                    query: query.clone(),
                    emit,
                }
                .to_string();
                self.create_derived(
                    ObjectKind::MaterializedView,
                    &name,
                    if_not_exists,
                    &query,
                    None,
                    &options,
                    emit,
                    sql,
                    persist,
                )
            }
            Statement::CreateSink(sink) => {
                let mut canonical = sink.clone();
                canonical.if_not_exists = false;
                let sql = Statement::CreateSink(canonical).to_string();
                let query = crate::ddl::sink_query(&sink.input)?;
                self.create_derived(
                    ObjectKind::Sink,
                    &sink.name,
                    sink.if_not_exists,
                    &query,
                    Some(&sink.connector),
                    &sink.options,
                    Emit::Default,
                    sql,
                    persist,
                )
            }
            Statement::Drop {
                kind,
                name,
                if_exists,
            } => self.drop_object(kind, &name, if_exists),
            Statement::Insert(statement) => self.insert(&statement),
            Statement::Show(kind) => self.show(kind),
            Statement::Describe(name) => self.describe(&name),
            Statement::Explain(inner) => self.explain(&inner),
            Statement::Query(query) => {
                let (schema, batches) = self.run_query(&query, false)?;
                Ok(ExecuteResult::Rows { schema, batches })
            }
            Statement::ShowWatermarks => self.show_watermarks(),
            Statement::ShowWorkers => self.show_workers(),
            Statement::Checkpoint => Ok(self.checkpoint()?.into()),
            Statement::Flush => {
                self.flush()?;
                Ok(ExecuteResult::Skipped {
                    reason: "FLUSH".into(),
                })
            }
        }
    }

    /// Runs a snapshot `SELECT` over materialized views and returns its rows. Rows pushed
    /// before the call are visible (read-your-writes).
    pub fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let query = single_query(sql)?;
        Ok(self.run_query(&query, false)?.1)
    }

    pub(crate) fn run_query(
        &self,
        query: &Query,
        explain: bool,
    ) -> Result<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
        if laminar_sql::contains_asof_join(query) {
            return Err(DbError::Sql(laminar_sql::SqlError::Unsupported {
                construct: "ASOF JOIN in a snapshot SELECT; ASOF joins run as continuous \
                            queries (CREATE MATERIALIZED VIEW ... AS SELECT ... ASOF JOIN ...)"
                    .into(),
                context: "SELECT".into(),
            }));
        }
        self.inner.runtime.sync(SYNC_TIMEOUT)?;
        let ctx = self.inner.snapshot.context().clone();
        let statement = if explain {
            format!("EXPLAIN {query}")
        } else {
            query.to_string()
        };
        let query = query.clone();
        let run = async move {
            let state = ctx.state();
            let plan = if explain {
                state.create_logical_plan(&statement).await?
            } else {
                state
                    .statement_to_plan(DfStatement::Statement(Box::new(SqlStatement::Query(
                        Box::new(query),
                    ))))
                    .await?
            };
            let frame = ctx.execute_logical_plan(plan).await?;
            let schema = Arc::clone(frame.schema().inner());
            let batches = frame.collect().await?;
            Ok::<_, datafusion::error::DataFusionError>((schema, batches))
        };
        let runtime = self
            .inner
            .query_runtime
            .as_ref()
            .ok_or_else(|| DbError::Internal("query runtime already shut down".into()))?;
        let (sender, receiver) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            // The receiver only disappears if the caller is gone; nothing to report then.
            let _ = sender.send(run.await);
        });
        let outcome = receiver
            .recv()
            .map_err(|_| DbError::Internal("snapshot query task vanished".into()))?;
        outcome.map_err(|e| DbError::Query {
            message: laminar_sql::SqlError::plan("SELECT", &e)
                .to_string()
                .trim_start_matches("SELECT: ")
                .to_string(),
        })
    }

    /// A handle to push rows into source `name` (a source without a connector).
    pub fn source(&self, name: &str) -> Result<SourceHandle> {
        let catalog = self.catalog();
        let object = catalog.get(name).ok_or_else(|| DbError::NotFound {
            kind: "source",
            name: name.to_string(),
            hint: hint(&catalog.names()),
        })?;
        match &object.state {
            ObjectState::PushSource {
                table: Some(_), ..
            } => Err(DbError::NotAllowed {
                statement: format!("push into {name}"),
                message: format!(
                    "{name} is a table; INSERT INTO {name} upserts its rows by primary key"
                ),
            }),
            ObjectState::PushSource { ingress, wal, .. } => Ok(SourceHandle::new(
                object.name.clone(),
                object.schema.clone(),
                Arc::clone(ingress),
                self.inner
                    .durable
                    .as_ref()
                    .map(|d| (Arc::clone(&d.gate), wal.clone())),
            )),
            ObjectState::ConnectorSource { connector_name, .. } => Err(DbError::NotAllowed {
                statement: format!("push into {name}"),
                message: format!("source {name} reads from {connector_name}; push and INSERT feed sources without a connector"),
            }),
            ObjectState::LateData { source, .. } => Err(DbError::NotAllowed {
                statement: format!("push into {name}"),
                message: format!("{name} receives the late rows of source {source}; push into {source}"),
            }),
            ObjectState::Derived { .. } => Err(DbError::WrongKind {
                name: name.to_string(),
                actual: object.kind.noun(),
                expected: "source",
            }),
            ObjectState::LookupTable { source, .. } => Err(DbError::NotAllowed {
                statement: format!("push into {name}"),
                message: lookup_table_rows(name, source),
            }),
        }
    }

    /// Subscribes to the changes of a stream, materialized view or push source, from now on.
    pub fn subscribe(&self, name: &str) -> Result<Subscription> {
        let outlet = self.subscribable_outlet(name)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(SUBSCRIBER_CHANNEL_CAPACITY_BATCHES);
        // A stream that already ended gives a subscription that ends at once.
        outlet.subscribe(sender);
        Ok(Subscription::new(name.to_string(), receiver))
    }

    /// The outlet of `name`, if it can be subscribed to.
    pub(crate) fn subscribable_outlet(&self, name: &str) -> Result<Arc<StreamOutlet>> {
        let catalog = self.catalog();
        let object = catalog.get(name).ok_or_else(|| DbError::NotFound {
            kind: "stream or view",
            name: name.to_string(),
            hint: hint(&catalog.names()),
        })?;
        let outlet = match &object.state {
            ObjectState::PushSource { outlet, .. }
            | ObjectState::LateData {
                diverted: Some(DivertedStream { outlet, .. }),
                ..
            } => Arc::clone(outlet),
            ObjectState::LateData { source, .. } => {
                return Err(DbError::NotAllowed {
                    statement: format!("subscribe to {name}"),
                    message: format!(
                        "{name} holds the late rows of connector source {source}, which every \
                         query reads again; subscribe to a stream or materialized view over it"
                    ),
                })
            }
            ObjectState::Derived { outlet, .. } if object.kind != ObjectKind::Sink => {
                Arc::clone(outlet)
            }
            _ => {
                return Err(DbError::NotAllowed {
                    statement: format!("subscribe to {name}"),
                    message: format!(
                        "{name} is a {}; subscribe to a stream, a materialized view or a source without a connector",
                        object.kind.noun()
                    ),
                })
            }
        };
        Ok(outlet)
    }

    /// Waits until every row pushed so far has been processed by the workers.
    pub fn sync(&self) -> Result<()> {
        self.inner.runtime.sync(SYNC_TIMEOUT)?;
        Ok(())
    }

    /// Waits until every row pushed so far is processed, every bounded connector source
    /// (file, generator with `events`) is read to its end, and sinks whose input ended have
    /// closed: afterwards views hold the complete result of the input available so far.
    pub fn flush(&self) -> Result<()> {
        self.start_held_sources(true);
        self.inner.runtime.sync(SYNC_TIMEOUT)?;
        let settled = self.inner.runtime.wait_until(SYNC_TIMEOUT, || {
            let catalog = self.catalog();
            let bounded = |source: &str| {
                catalog.get(source).is_some_and(|o| match &o.state {
                    ObjectState::ConnectorSource { connector, .. } => connector.is_bounded(),
                    _ => false,
                })
            };
            catalog.objects().iter().all(|o| match &o.state {
                ObjectState::Derived {
                    outlet,
                    instances,
                    sink,
                    ..
                } => {
                    let inputs_read = instances
                        .iter()
                        .filter(|i| bounded(&i.source))
                        .all(|i| i.outlet.is_ended() || i.error().is_some());
                    let sink_done = !outlet.is_ended()
                        || sink
                            .as_ref()
                            .is_none_or(crate::sink_runner::SinkTask::is_closed);
                    inputs_read && sink_done
                }
                _ => true,
            })
        });
        if !settled {
            return Err(DbError::Core(laminar_core::CoreError::Timeout {
                what: "bounded sources to be read to their end (FLUSH)".into(),
                waited_ms: SYNC_TIMEOUT.as_millis() as u64,
            }));
        }
        self.inner.runtime.sync(SYNC_TIMEOUT)?;
        Ok(())
    }

    /// Ends every source without a connector and every table (no more pushes or inserts
    /// will come), so pipelines reading only finished inputs complete.
    pub fn finish_push_sources(&self) -> Result<()> {
        // Finishing waits while queues are full; the catalog must not be locked meanwhile.
        let ingresses: Vec<_> = self
            .catalog()
            .objects()
            .iter()
            .filter_map(|o| match &o.state {
                ObjectState::PushSource { ingress, .. } => Some(Arc::clone(ingress)),
                _ => None,
            })
            .collect();
        // The end of input is input too: a checkpoint's cut never splits it.
        let gate = self.inner.durable.as_ref().map(|d| Arc::clone(&d.gate));
        let _entered = gate.as_ref().map(|g| g.enter());
        for ingress in ingresses {
            ingress.finish()?;
        }
        Ok(())
    }

    /// Waits up to `timeout` until every stream, view and sink has finished (all inputs
    /// ended, results delivered, sinks closed); returns whether they have.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        self.inner
            .runtime
            .wait_until(timeout, || self.metrics().all_finished())
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        crate::metrics::collect(&self.catalog(), self.inner.runtime.worker_stats())
    }
}

/// Keeps connector sources from starting until dropped (see [`LaminarDB::hold_sources`]).
#[must_use = "sources start again as soon as the hold is dropped"]
pub struct SourceHold {
    db: LaminarDB,
}

impl std::fmt::Debug for SourceHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceHold").finish_non_exhaustive()
    }
}

impl Drop for SourceHold {
    fn drop(&mut self) {
        if self.db.inner.source_holds.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.db.start_held_sources(false);
        }
    }
}

/// Parses `sql` as exactly one `SELECT`.
fn single_query(sql: &str) -> Result<Box<Query>> {
    let mut statements = parse_statements(sql)?;
    match (statements.pop(), statements.is_empty()) {
        (Some(Statement::Query(query)), true) => Ok(query),
        (Some(other), true) => Err(DbError::NotAllowed {
            statement: other.label(),
            message: "query() runs one SELECT; use execute() for other statements".into(),
        }),
        _ => Err(DbError::NotAllowed {
            statement: sql.trim().to_string(),
            message: "query() runs exactly one SELECT".into(),
        }),
    }
}

/// ` (known: a, b)` or empty.
pub(crate) fn hint(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (known: {})", names.join(", "))
    }
}

/// Why a lookup table takes no rows.
pub(crate) fn lookup_table_rows(name: &str, source: &str) -> String {
    format!(
        "{name} is a lookup table: its rows live in lookup source '{source}', which LaminarDB \
         asks by key in lookup joins and never writes"
    )
}
