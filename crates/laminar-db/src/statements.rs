//! The statements that read the catalog or feed a source rather than create anything:
//! `INSERT`, `SHOW`, `DESCRIBE` and `EXPLAIN`. Their answers are ordinary record batches.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use laminar_sql::types::sql_type_name;
use laminar_sql::{ObjectKind, SqlError, Statement};

use crate::catalog::{Object, ObjectState};
use crate::db::{hint, lookup_table_rows, LaminarDB};
use crate::error::{DbError, Result};
use crate::insert::{parse_insert, to_source_batch};
use crate::result::ExecuteResult;

/// A batch of text columns.
fn text_batch(columns: &[&str], rows: &[Vec<String>]) -> Result<ExecuteResult> {
    let schema: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = (0..columns.len())
        .map(|i| {
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r[i].as_str()),
            )) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| DbError::Internal(format!("building a result batch: {e}")))?;
    Ok(ExecuteResult::Rows {
        schema,
        batches: vec![batch],
    })
}

impl LaminarDB {
    pub(crate) fn insert(&self, statement: &SqlStatement) -> Result<ExecuteResult> {
        let SqlStatement::Insert(insert) = statement else {
            return Err(DbError::Internal("INSERT statement expected".into()));
        };
        let target = parse_insert(insert)?;
        let (kind, schema) = {
            let catalog = self.catalog();
            match catalog.get(&target.table) {
                None => {
                    return Err(DbError::NotFound {
                        kind: "source",
                        name: target.table.clone(),
                        hint: hint(&catalog.names()),
                    })
                }
                Some(Object {
                    state: ObjectState::LookupTable { source, .. },
                    ..
                }) => {
                    return Err(DbError::NotAllowed {
                        statement: format!("INSERT INTO {}", target.table),
                        message: lookup_table_rows(&target.table, source),
                    })
                }
                Some(object)
                    if object.kind != ObjectKind::Source && object.kind != ObjectKind::Table =>
                {
                    return Err(DbError::NotAllowed {
                        statement: format!("INSERT INTO {}", target.table),
                        message: format!(
                            "{} is a {}; INSERT feeds sources and tables",
                            target.table,
                            object.kind.noun()
                        ),
                    })
                }
                Some(object) => (object.kind, object.schema.clone()),
            }
        };
        // Checked before the rows are computed: a connector source refuses pushes.
        let handle = match kind {
            ObjectKind::Table => None,
            _ => Some(self.source(&target.table)?),
        };
        let (computed_schema, batches) = self.run_query(&target.source, false)?;
        let batch = to_source_batch(
            &target.table,
            &schema,
            &target.columns,
            &computed_schema,
            &batches,
        )?;
        let rows = batch.num_rows() as u64;
        if rows > 0 {
            match handle {
                Some(handle) => handle.push(batch)?,
                None => self.upsert_table(&target.table, &batch, true)?,
            }
        }
        Ok(ExecuteResult::Inserted { rows })
    }

    pub(crate) fn show(&self, kind: ObjectKind) -> Result<ExecuteResult> {
        let catalog = self.catalog();
        let mut rows: Vec<Vec<String>> = catalog
            .objects()
            .iter()
            .filter(|o| o.kind == kind)
            .map(|o| {
                let detail = match &o.state {
                    ObjectState::PushSource {
                        table: Some(table), ..
                    } => {
                        let key: Vec<&str> = table
                            .key()
                            .iter()
                            .map(|&k| o.schema.field(k).name().as_str())
                            .collect();
                        key.join(", ")
                    }
                    ObjectState::PushSource { .. } => "push".to_string(),
                    ObjectState::ConnectorSource { connector_name, .. } => connector_name.clone(),
                    ObjectState::LookupTable { service, source } => {
                        let key: Vec<&str> = service
                            .key()
                            .iter()
                            .map(|&k| o.schema.field(k).name().as_str())
                            .collect();
                        format!("{} (lookup source '{source}')", key.join(", "))
                    }
                    ObjectState::Derived { .. } | ObjectState::LateData { .. } => {
                        o.inputs.join(", ")
                    }
                };
                vec![o.name.clone(), detail, o.sql.clone()]
            })
            .collect();
        rows.sort();
        let detail = match kind {
            ObjectKind::Source => "connector",
            ObjectKind::Table => "primary_key",
            _ => "inputs",
        };
        text_batch(&["name", detail, "definition"], &rows)
    }

    /// Every source's and query's watermark (marked `(idle)` while it holds nothing back),
    /// with the rows each source saw late on arrival, the late rows each query dropped and
    /// the state it holds, once the rows pushed before the statement are processed.
    pub(crate) fn show_watermarks(&self) -> Result<ExecuteResult> {
        // Like a snapshot read, the answer covers every row pushed before the statement.
        self.sync()?;
        let metrics = self.metrics();
        let shown = |ms: Option<i64>, idle: bool| {
            let watermark = ms
                .and_then(datafusion::arrow::temporal_conversions::timestamp_ms_to_datetime)
                .map_or_else(
                    || "none".to_string(),
                    |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                );
            if idle {
                format!("{watermark} (idle)")
            } else {
                watermark
            }
        };
        let mut rows: Vec<Vec<String>> = metrics
            .sources
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    "source".into(),
                    shown(s.watermark_ms, s.idle),
                    s.late_rows.to_string(),
                    String::new(),
                ]
            })
            .collect();
        rows.extend(metrics.queries.iter().map(|q| {
            vec![
                q.name.clone(),
                q.kind.noun().to_string(),
                shown(q.watermark_ms, q.idle),
                q.late_rows.to_string(),
                q.state_entries.to_string(),
            ]
        }));
        text_batch(
            &["name", "kind", "watermark", "late_rows", "state_entries"],
            &rows,
        )
    }

    /// One row per worker: its core, queued messages, rows processed and time busy.
    pub(crate) fn show_workers(&self) -> Result<ExecuteResult> {
        let rows: Vec<Vec<String>> = self
            .metrics()
            .workers
            .iter()
            .map(|w| {
                let busy_share = if w.uptime.is_zero() {
                    0.0
                } else {
                    100.0 * w.busy.as_secs_f64() / w.uptime.as_secs_f64()
                };
                vec![
                    w.worker.to_string(),
                    w.core.map_or_else(|| "none".to_string(), |c| c.to_string()),
                    w.queued_messages.to_string(),
                    w.rows_processed.to_string(),
                    w.busy.as_millis().to_string(),
                    format!("{busy_share:.1}"),
                    w.overruns.to_string(),
                ]
            })
            .collect();
        text_batch(
            &[
                "worker",
                "core",
                "queued",
                "rows_processed",
                "busy_ms",
                "busy_percent",
                "overruns",
            ],
            &rows,
        )
    }

    pub(crate) fn describe(&self, name: &str) -> Result<ExecuteResult> {
        let catalog = self.catalog();
        let object = catalog.get(name).ok_or_else(|| DbError::NotFound {
            kind: "object",
            name: name.to_string(),
            hint: hint(&catalog.names()),
        })?;
        let key: &[usize] = match &object.state {
            ObjectState::PushSource {
                table: Some(table), ..
            } => table.key(),
            _ => &[],
        };
        let rows: Vec<Vec<String>> = object
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, f)| {
                let mut roles = Vec::new();
                if key.contains(&index) {
                    roles.push("PRIMARY KEY");
                }
                if object.watermark_column.as_deref() == Some(f.name().as_str()) {
                    roles.push("WATERMARK");
                }
                vec![
                    f.name().clone(),
                    sql_type_name(f.data_type()),
                    if f.is_nullable() { "YES" } else { "NO" }.to_string(),
                    roles.join(", "),
                ]
            })
            .collect();
        text_batch(&["column_name", "data_type", "nullable", "role"], &rows)
    }

    pub(crate) fn explain(&self, inner: &Statement) -> Result<ExecuteResult> {
        let (name, query, options, emit) = match inner {
            Statement::CreateStream {
                name,
                query,
                options,
                emit,
                ..
            }
            | Statement::CreateMaterializedView {
                name,
                query,
                options,
                emit,
                ..
            } => (name.clone(), query.clone(), options, *emit),
            Statement::CreateSink(sink) => (
                sink.name.clone(),
                crate::ddl::sink_query(&sink.input)?,
                &sink.options,
                laminar_sql::Emit::Default,
            ),
            Statement::Query(query) => {
                let (schema, batches) = self.run_query(query, true)?;
                return Ok(ExecuteResult::Rows { schema, batches });
            }
            other => {
                return Err(DbError::Sql(SqlError::Unsupported {
                    construct: format!("EXPLAIN of {}", other.label()),
                    context: "EXPLAIN".into(),
                }))
            }
        };
        let context = format!("EXPLAIN {}", inner.label());
        let options = crate::ddl::query_options(options, &context)?;
        let planned = self
            .inner
            .planner
            .plan_query(&query, &context, emit, options.state_ttl)?;
        let text = planned.graph.explain(&name, self.workers());
        let rows: Vec<Vec<String>> = text.lines().map(|l| vec![l.to_string()]).collect();
        text_batch(&["dataflow"], &rows)
    }
}
