//! Reference tables (`CREATE TABLE ... PRIMARY KEY`): declared like a push source, fed by
//! `INSERT`, which upserts by primary key. The table's current rows answer snapshot reads;
//! its stream carries the changelog of every write (the replaced row retracted, the new one
//! inserted), which lookup joins, temporal joins and views reading the table consume after
//! starting from the table's rows at their creation (see `Runtime::add_query`). An
//! `INSERT` returns once every running query has seen its changes, so a stream row pushed
//! after it joins the new rows.

use std::sync::Arc;
use std::time::Duration;

use laminar_core::runtime::{LatePolicy, SourceFeed};
use laminar_core::{ReferenceTable, UpsertError};
use laminar_sql::parser::CreateSource;
use laminar_sql::{ObjectKind, SqlError, Statement};

use crate::catalog::{Object, ObjectState};
use crate::db::LaminarDB;
use crate::ddl::declared_schema;
use crate::error::{DbError, Result};
use crate::result::ExecuteResult;
use crate::table_load::read_table_file;

/// How long an `INSERT` into a table waits for the running queries to see its changes.
const TABLE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

impl LaminarDB {
    pub(crate) fn create_table(
        &self,
        create: &CreateSource,
        persist: bool,
    ) -> Result<ExecuteResult> {
        let mut catalog = self.catalog();
        let name = &create.name;
        let mut canonical = create.clone();
        canonical.if_not_exists = false;
        let sql = Statement::CreateTable(Box::new(canonical)).to_string();
        if let Some(skipped) = Self::existing(&catalog, name, &sql, create.if_not_exists)? {
            return Ok(skipped);
        }
        if let Some(spec) = create.connector.as_ref().filter(|c| c.name == "LOOKUP") {
            return self.create_lookup_table(catalog, create, spec, sql, persist);
        }
        let context = format!("CREATE TABLE {name}");
        let (schema, key) = declared_table(create, &context)?;
        // The file is read before anything is created (not when restoring: the rows come
        // back from the checkpoint and log).
        let loaded = match &create.connector {
            Some(spec) if persist => read_table_file(name, spec, &schema, &key)?,
            _ => Vec::new(),
        };
        let table = Arc::new(
            ReferenceTable::new(name, schema.clone(), key)
                .map_err(|e| DbError::Sql(SqlError::plan(&context, &e)))?,
        );

        let planner = &self.inner.planner;
        planner.register(name, schema.clone())?;
        let watermark = self
            .source_watermark(create, &schema, &context)
            .and_then(|watermark| {
                if persist {
                    self.persist_with(&catalog, &sql)?;
                }
                Ok(watermark)
            })
            .inspect_err(|_| planner.deregister(name))?;
        // A query reading the table directly consumes its changelog; a join on its key is
        // a lookup (or, with FOR SYSTEM_TIME AS OF, temporal) join.
        planner.mark_changelog(name);
        let time = create
            .watermark
            .as_ref()
            .and_then(|w| schema.index_of(&w.column).ok());
        planner.mark_table(name, &table, time);

        let runtime = &self.inner.runtime;
        let (stream, outlet) =
            runtime.create_table_stream(name, schema.clone(), Arc::clone(&table));
        let ingress = runtime
            .create_ingress(
                stream,
                SourceFeed::Push,
                watermark.as_ref(),
                None,
                LatePolicy::Keep,
                None,
            )
            .inspect_err(|_| {
                runtime.remove_stream(stream);
                planner.deregister(name);
            })?;
        let logged = self.open_source_log(name, !persist).and_then(|wal| {
            if !persist {
                self.restore_source(name, &ingress, Some(&table))?;
            }
            Ok(wal)
        });
        let wal = match logged {
            Ok(wal) => wal,
            Err(e) => {
                runtime.remove_stream(stream);
                planner.deregister(name);
                return Err(e);
            }
        };
        // The name was just checked absent, so the registration cannot clash.
        let _ = self.inner.snapshot.register_table(name, Arc::clone(&table));
        catalog.insert(Object {
            name: name.clone(),
            kind: ObjectKind::Table,
            sql,
            schema,
            inputs: Vec::new(),
            watermark_column: create.watermark.as_ref().map(|w| w.column.clone()),
            state: ObjectState::PushSource {
                stream,
                outlet,
                ingress,
                table: Some(table),
                wal,
            },
            restored: false,
            output_log: None,
        });
        drop(catalog);
        for batch in &loaded {
            self.upsert_table(name, batch, true)?;
        }
        Ok(ExecuteResult::Created {
            kind: ObjectKind::Table,
            name: name.clone(),
        })
    }

    /// Upserts `batch` into table `name` and waits until every running query has seen the
    /// changes.
    /// With `log`, the rows are first appended to the table's write-ahead log (replayed
    /// rows come from it and are not logged again).
    pub(crate) fn upsert_table(
        &self,
        name: &str,
        batch: &datafusion::arrow::record_batch::RecordBatch,
        log: bool,
    ) -> Result<()> {
        let (table, ingress, wal) = {
            let catalog = self.catalog();
            match catalog.get(name).map(|o| &o.state) {
                Some(ObjectState::PushSource {
                    table: Some(table),
                    ingress,
                    wal,
                    ..
                }) => (Arc::clone(table), Arc::clone(ingress), wal.clone()),
                _ => return Err(DbError::Internal(format!("{name} is not a table"))),
            }
        };
        let gate = self.inner.durable.as_ref().map(|d| Arc::clone(&d.gate));
        let entered = gate.as_ref().map(|g| g.enter());
        if let Some(wal) = wal.filter(|_| log) {
            wal.append(crate::durability::RecordKind::Upsert, batch)?;
        }
        table
            .upsert(batch, |changes| ingress.push_changes(changes))
            .map_err(|error| match error {
                UpsertError::NullKey { table, column } => DbError::BadBatch {
                    source_name: table,
                    message: format!("PRIMARY KEY column {column} is NULL"),
                },
                UpsertError::Publish(error) => DbError::Core(error),
                UpsertError::Engine(error) => DbError::Internal(error.to_string()),
            })?;
        drop(entered);
        self.inner.runtime.sync(TABLE_SYNC_TIMEOUT)?;
        Ok(())
    }
}

/// A table's declared schema and the indices of its primary key columns.
pub(crate) fn declared_table(
    create: &CreateSource,
    context: &str,
) -> Result<(datafusion::arrow::datatypes::SchemaRef, Vec<usize>)> {
    let invalid = |message: String| {
        DbError::Sql(SqlError::Invalid {
            context: context.to_string(),
            message,
        })
    };
    let schema = declared_schema(create, context)?
        .ok_or_else(|| invalid("a table must declare its columns".into()))?;
    let key = create
        .primary_key
        .iter()
        .map(|column| {
            schema
                .index_of(column)
                .map_err(|_| invalid(format!("PRIMARY KEY column {column} is not declared")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, key))
}
