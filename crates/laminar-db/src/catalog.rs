//! The in-memory catalog: every source, stream, materialized view and sink, with its
//! canonical SQL, schema, inputs and the runtime pieces it owns. Objects are kept in creation
//! order, which is also the order the persisted catalog replays them in.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use laminar_connectors::{SourceConnector, SourceMetrics};
use laminar_core::runtime::{IngressHandle, StreamId, StreamOutlet};
use laminar_core::WatermarkGenerator;
use laminar_sql::ObjectKind;

use crate::sink_runner::SinkTask;
use crate::source_runner::SourceInstance;

/// What an object owns at runtime.
pub(crate) enum ObjectState {
    /// A source fed by `push` and `INSERT`: one shared stream.
    PushSource {
        stream: StreamId,
        outlet: Arc<StreamOutlet>,
        ingress: Arc<IngressHandle>,
    },
    /// A source read by a connector, once per reading query.
    ConnectorSource {
        connector: Arc<dyn SourceConnector>,
        connector_name: String,
        watermark: Option<WatermarkGenerator>,
        metrics: Arc<SourceMetrics>,
    },
    /// A stream, view or sink: a running continuous query.
    Derived {
        stream: StreamId,
        outlet: Arc<StreamOutlet>,
        instances: Vec<SourceInstance>,
        sink: Option<SinkTask>,
    },
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

    /// Objects reading from `name`, as `kind name` phrases.
    pub(crate) fn dependents(&self, name: &str) -> Vec<String> {
        self.objects
            .iter()
            .filter(|o| o.inputs.iter().any(|i| i == name))
            .map(|o| format!("{} {}", o.kind.noun(), o.name))
            .collect()
    }

    /// The canonical SQL of every object, in creation order.
    pub(crate) fn statements(&self) -> Vec<String> {
        self.objects.iter().map(|o| o.sql.clone()).collect()
    }

    /// Names of all objects, sorted, for hints.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.objects.iter().map(|o| o.name.clone()).collect();
        names.sort();
        names
    }
}
