//! The in-memory catalog: every source, table, stream, materialized view and sink, with its
//! canonical SQL, schema, inputs and the runtime pieces it owns. Objects are kept in creation
//! order, which is also the order the persisted catalog replays them in. A source's
//! `LATE DATA TO` stream is an object of its own, created and dropped with the source.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use laminar_connectors::{SourceConnector, SourceMetrics};
use laminar_core::lookup::LookupService;
use laminar_core::runtime::{IngressHandle, StreamId, StreamOutlet};
use laminar_core::{ReferenceTable, WatermarkGenerator};
use laminar_sql::ObjectKind;

use crate::durability::output_log::OutputLog;
use crate::durability::SourceLog;
use crate::sink_runner::SinkTask;
use crate::source_runner::SourceInstance;

/// What an object owns at runtime.
pub(crate) enum ObjectState {
    /// A source fed by `push` and `INSERT`, or a table fed by `INSERT`: one shared stream
    /// (a table's carries its changelog).
    PushSource {
        stream: StreamId,
        outlet: Arc<StreamOutlet>,
        ingress: Arc<IngressHandle>,
        /// A table's current rows, which its `INSERT`s upsert.
        table: Option<Arc<ReferenceTable>>,
        /// The write-ahead log of its pushes and `INSERT`s (with a data directory).
        wal: Option<Arc<SourceLog>>,
    },
    /// A source read by a connector, once per reading query.
    ConnectorSource {
        connector: Arc<dyn SourceConnector>,
        connector_name: String,
        watermark: Option<WatermarkGenerator>,
        metrics: Arc<SourceMetrics>,
    },
    /// The `LATE DATA TO` stream of `source`: the rows late on arrival there.
    LateData {
        source: String,
        /// For a push source, the stream its ingress diverts late rows into; `None` for a
        /// connector source, whose late rows each reading query's own reader keeps.
        diverted: Option<DivertedStream>,
    },
    /// A lookup table: rows asked by key from a registered lookup source.
    LookupTable {
        service: Arc<LookupService>,
        /// The name the source is registered under.
        source: String,
    },
    /// A stream, view or sink: a running continuous query.
    Derived {
        stream: StreamId,
        outlet: Arc<StreamOutlet>,
        instances: Vec<SourceInstance>,
        sink: Option<SinkTask>,
    },
}

/// The stream a push source's late rows are diverted into, fed through its own ingress.
pub(crate) struct DivertedStream {
    pub(crate) stream: StreamId,
    pub(crate) outlet: Arc<StreamOutlet>,
    pub(crate) ingress: Arc<IngressHandle>,
}

/// One catalog object.
pub(crate) struct Object {
    pub(crate) name: String,
    pub(crate) kind: ObjectKind,
    pub(crate) sql: String,
    pub(crate) schema: SchemaRef,
    pub(crate) inputs: Vec<String>,
    pub(crate) watermark_column: Option<String>,
    pub(crate) state: ObjectState,
    /// Restored from the data directory when the database opened: creating it again with
    /// the same definition is a no-op.
    pub(crate) restored: bool,
    /// The log of its committed changes, for a stream, view or push source declared
    /// `WITH (output_log = 'on')`.
    pub(crate) output_log: Option<OutputLog>,
}

impl Object {
    /// What takes part in checkpoints' epochs on the object's behalf: its output log, or
    /// (for a sink) its transactional writer. An object has at most one of them.
    pub(crate) fn epoch_task(&self) -> Option<&SinkTask> {
        if let Some(log) = &self.output_log {
            return Some(log.task());
        }
        match &self.state {
            ObjectState::Derived {
                sink: Some(task), ..
            } if task.is_transactional() => Some(task),
            _ => None,
        }
    }

    /// The stream the object's rows leave the workers by, if it has one.
    pub(crate) fn outlet(&self) -> Option<&Arc<StreamOutlet>> {
        match &self.state {
            ObjectState::PushSource { outlet, .. } | ObjectState::Derived { outlet, .. } => {
                Some(outlet)
            }
            ObjectState::LateData {
                diverted: Some(diverted),
                ..
            } => Some(&diverted.outlet),
            ObjectState::LateData { .. }
            | ObjectState::ConnectorSource { .. }
            | ObjectState::LookupTable { .. } => None,
        }
    }
}

/// All objects, in creation order.
#[derive(Default)]
pub(crate) struct Catalog {
    objects: Vec<Object>,
}

impl Catalog {
    pub(crate) fn get(&self, name: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.name == name)
    }

    pub(crate) fn insert(&mut self, object: Object) {
        self.objects.push(object);
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<Object> {
        let index = self.objects.iter().position(|o| o.name == name)?;
        Some(self.objects.remove(index))
    }

    pub(crate) fn objects(&self) -> &[Object] {
        &self.objects
    }

    pub(crate) fn objects_mut(&mut self) -> &mut [Object] {
        &mut self.objects
    }

    /// Removes every object (at shutdown).
    pub(crate) fn take_all(&mut self) -> Vec<Object> {
        std::mem::take(&mut self.objects)
    }

    /// Objects other than `dropped` reading from any of them, as `kind name` phrases.
    pub(crate) fn dependents(&self, dropped: &[String]) -> Vec<String> {
        self.objects
            .iter()
            .filter(|o| !dropped.contains(&o.name))
            .filter(|o| o.inputs.iter().any(|i| dropped.contains(i)))
            .map(|o| format!("{} {}", o.kind.noun(), o.name))
            .collect()
    }

    /// The `LATE DATA TO` stream of source `source`, if it has one.
    pub(crate) fn late_data_of(&self, source: &str) -> Option<&Object> {
        self.objects
            .iter()
            .find(|o| matches!(&o.state, ObjectState::LateData { source: s, .. } if s == source))
    }

    /// The canonical SQL of every object but `dropped`, in creation order. A `LATE DATA TO`
    /// stream has none of its own: its source's statement creates it.
    pub(crate) fn statements_except(&self, dropped: &[String]) -> Vec<String> {
        self.objects
            .iter()
            .filter(|o| !dropped.contains(&o.name))
            .filter(|o| !matches!(o.state, ObjectState::LateData { .. }))
            .map(|o| o.sql.clone())
            .collect()
    }

    /// Names of all objects, sorted, for hints.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.objects.iter().map(|o| o.name.clone()).collect();
        names.sort();
        names
    }
}
