//! Snapshot queries: ordinary `SELECT`s over materialized views and tables, run by
//! DataFusion on their current rows. Sources and streams are registered too, but only so that reading
//! one gives an error saying why (they keep no rows) instead of "table not found".

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use laminar_core::{ReferenceTable, ResultTable};

/// A materialized view as a DataFusion table: each scan reads a snapshot of its rows.
#[derive(Debug)]
pub(crate) struct ViewTable {
    table: Arc<ResultTable>,
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let rows = self.table.snapshot()?;
        let exec =
            MemorySourceConfig::try_new_exec(&[rows], self.table.schema(), projection.cloned())?;
        Ok(exec)
    }
}

/// A reference table as a DataFusion table: each scan reads a snapshot of its rows.
#[derive(Debug)]
pub(crate) struct TableRows {
    table: Arc<ReferenceTable>,
}

#[async_trait]
impl TableProvider for TableRows {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let rows = self.table.snapshot()?;
        MemorySourceConfig::try_new_exec(&[vec![rows]], self.table.schema(), projection.cloned())
            .map(|exec| exec as Arc<dyn ExecutionPlan>)
    }
}

/// A source or stream: it has a schema but keeps no rows to query.
#[derive(Debug)]
pub(crate) struct Unqueryable {
    name: String,
    kind: &'static str,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for Unqueryable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::Plan(format!(
            "{} is a {} and keeps no rows; SELECT reads materialized views (CREATE MATERIALIZED VIEW ... AS SELECT * FROM {}), or subscribe to it",
            self.name, self.kind, self.name
        )))
    }
}

/// The DataFusion context snapshot queries run in.
pub(crate) struct SnapshotContext {
    ctx: SessionContext,
}

impl SnapshotContext {
    pub(crate) fn new() -> Self {
        let config = SessionConfig::new().with_target_partitions(2);
        Self {
            ctx: SessionContext::new_with_config(config),
        }
    }

    pub(crate) fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub(crate) fn register_view(&self, name: &str, table: Arc<ResultTable>) -> DfResult<()> {
        self.ctx
            .register_table(TableReference::bare(name), Arc::new(ViewTable { table }))
            .map(|_| ())
    }

    pub(crate) fn register_table(&self, name: &str, table: Arc<ReferenceTable>) -> DfResult<()> {
        self.ctx
            .register_table(TableReference::bare(name), Arc::new(TableRows { table }))
            .map(|_| ())
    }

    pub(crate) fn register_unqueryable(
        &self,
        name: &str,
        kind: &'static str,
        schema: SchemaRef,
    ) -> DfResult<()> {
        self.ctx
            .register_table(
                TableReference::bare(name),
                Arc::new(Unqueryable {
                    name: name.to_string(),
                    kind,
                    schema,
                }),
            )
            .map(|_| ())
    }

    pub(crate) fn deregister(&self, name: &str) {
        // Forgetting an unknown name is harmless.
        let _ = self.ctx.deregister_table(TableReference::bare(name));
    }
}
