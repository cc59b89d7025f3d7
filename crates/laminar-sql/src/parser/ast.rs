//! The statements LaminarDB adds to SQL, printable back as canonical SQL text.

use std::fmt;

use datafusion::sql::sqlparser::ast::{ColumnDef, Expr, Query, Statement as SqlStatement};

use super::ddl_normalize::quote_ident;

/// Kinds of catalog objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `CREATE SOURCE`: input rows, pushed or read by a connector.
    Source,
    /// `CREATE STREAM ... AS`: a derived, unstored stream.
    Stream,
    /// `CREATE MATERIALIZED VIEW ... AS`: a derived stream whose result is stored and queryable.
    MaterializedView,
    /// `CREATE SINK`: a query's output written to a connector.
    Sink,
    /// `CREATE TABLE`: a reference table, one current row per primary key.
    Table,
}

impl ObjectKind {
    /// The SQL spelling, e.g. `MATERIALIZED VIEW`.
    pub fn sql_name(self) -> &'static str {
        match self {
            Self::Source => "SOURCE",
            Self::Stream => "STREAM",
            Self::MaterializedView => "MATERIALIZED VIEW",
            Self::Sink => "SINK",
            Self::Table => "TABLE",
        }
    }

    /// Lower-case noun for messages, e.g. `materialized view`.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Stream => "stream",
            Self::MaterializedView => "materialized view",
            Self::Sink => "sink",
            Self::Table => "table",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// When a continuous query emits results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// No `EMIT` clause: an aggregation emits every change as it happens (as `OnUpdate`); an
    /// ASOF join emits each row once its answer is final.
    #[default]
    Default,
    /// `EMIT ON UPDATE` / `EMIT CHANGES`: every change as it happens (a changelog for
    /// aggregations; an ASOF join emits each row at once and corrects it by retraction).
    OnUpdate,
    /// `EMIT ON WINDOW CLOSE` (also `EMIT AFTER WATERMARK`, `EMIT FINAL`): one row per
    /// window once the watermark passes its end; with `ALLOW LATENESS`, rows up to that much
    /// behind still correct the fired result (a retraction and the new row).
    OnWindowClose {
        /// `ALLOW LATENESS INTERVAL ...`, in milliseconds (0 without the clause).
        allowed_lateness_ms: i64,
    },
    /// `EMIT EVERY INTERVAL ...`: the changelog's net changes, once per interval of
    /// processing time.
    Every {
        /// The interval, in milliseconds.
        interval_ms: i64,
    },
}

/// `name (key = 'value', ...)` after `FROM` or `INTO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorSpec {
    /// Connector name, upper case (e.g. `FILE`, `DATAGEN`).
    pub name: String,
    /// Options in the order written; keys lower case.
    pub options: Vec<(String, String)>,
}

impl fmt::Display for ConnectorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.name)?;
        write_options(f, &self.options)?;
        f.write_str(")")
    }
}

/// `key = 'value', ...` with quotes in values doubled.
fn write_options(f: &mut fmt::Formatter<'_>, options: &[(String, String)]) -> fmt::Result {
    for (i, (key, value)) in options.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{key} = '{}'", value.replace('\'', "''"))?;
    }
    Ok(())
}

/// `WATERMARK FOR column AS expr [PER KEY (key, ...)]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkSpec {
    /// The event-time column.
    pub column: String,
    /// The watermark expression, e.g. `ts - INTERVAL '2' SECOND`.
    pub expr: Expr,
    /// `PER KEY (...)` (normalized): the columns whose every value has a watermark of its
    /// own; empty for one watermark over the whole source.
    pub per_key: Vec<String>,
}

/// `CREATE SOURCE`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSource {
    /// Source name (normalized).
    pub name: String,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// Declared columns (may be empty when a connector supplies the schema).
    pub columns: Vec<ColumnDef>,
    /// The watermark declaration, if any.
    pub watermark: Option<WatermarkSpec>,
    /// `FROM connector (...)`, or `None` for a source fed by `push`/`INSERT`.
    pub connector: Option<ConnectorSpec>,
    /// `WITH (key = 'value', ...)`: options of a source fed by `push`/`INSERT` (a connector
    /// source takes them among its connector's options). Keys lower case, in the order
    /// written.
    pub options: Vec<(String, String)>,
    /// `LATE DATA TO name` (normalized): the stream that receives the rows late on arrival
    /// instead of the source.
    pub late_data_to: Option<String>,
    /// `PRIMARY KEY (a, b)` (normalized names): a table's key; empty for a source.
    pub primary_key: Vec<String>,
}

/// What a sink writes.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkInput {
    /// `AS SELECT ...`
    Query(Box<Query>),
    /// `FROM name`
    From(String),
}

/// `CREATE SINK`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSink {
    /// Sink name (normalized).
    pub name: String,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// `INTO connector (...)`.
    pub connector: ConnectorSpec,
    /// `WITH (key = 'value', ...)` after the connector: the query's options (`state_ttl`).
    pub options: Vec<(String, String)>,
    /// The rows written.
    pub input: SinkInput,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE SOURCE`.
    CreateSource(Box<CreateSource>),
    /// `CREATE TABLE`: a reference table, declared like a push source plus a primary key.
    CreateTable(Box<CreateSource>),
    /// `CREATE STREAM name AS query`.
    CreateStream {
        /// Stream name (normalized).
        name: String,
        /// `IF NOT EXISTS` was given.
        if_not_exists: bool,
        /// `WITH (key = 'value', ...)` before `AS`: the query's options (`state_ttl`). Keys
        /// lower case, in the order written.
        options: Vec<(String, String)>,
        /// The continuous query.
        query: Box<Query>,
        /// The `EMIT` clause.
        emit: Emit,
    },
    /// `CREATE MATERIALIZED VIEW name AS query`.
    CreateMaterializedView {
        /// View name (normalized).
        name: String,
        /// `IF NOT EXISTS` was given.
        if_not_exists: bool,
        /// `WITH (key = 'value', ...)` before `AS`: the query's options (`state_ttl`). Keys
        /// lower case, in the order written.
        options: Vec<(String, String)>,
        /// The continuous query.
        query: Box<Query>,
        /// The `EMIT` clause.
        emit: Emit,
    },
    /// `CREATE SINK`.
    CreateSink(CreateSink),
    /// `INSERT INTO source ...`, as sqlparser parsed it.
    Insert(Box<SqlStatement>),
    /// `DROP kind [IF EXISTS] name`.
    Drop {
        /// The kind named in the statement.
        kind: ObjectKind,
        /// Object name (normalized).
        name: String,
        /// `IF EXISTS` was given.
        if_exists: bool,
    },
    /// `SHOW SOURCES | STREAMS | MATERIALIZED VIEWS | SINKS`.
    Show(ObjectKind),
    /// `DESCRIBE name`.
    Describe(String),
    /// `EXPLAIN statement`.
    Explain(Box<Statement>),
    /// A snapshot `SELECT` over materialized views.
    Query(Box<Query>),
    /// `FLUSH`: wait until pushed rows are processed and bounded sources are fully read.
    Flush,
    /// `CHECKPOINT`: make every query's state, source position and sink output durable now.
    Checkpoint,
    /// `SHOW WATERMARKS`: the watermark of every source, stream and view.
    ShowWatermarks,
    /// `SHOW WORKERS`: every worker's core, queue depth, rows processed and busy time.
    ShowWorkers,
}

impl Statement {
    /// Short description for error messages, e.g. `CREATE MATERIALIZED VIEW hot`.
    pub fn label(&self) -> String {
        match self {
            Self::CreateSource(s) => format!("CREATE SOURCE {}", s.name),
            Self::CreateTable(t) => format!("CREATE TABLE {}", t.name),
            Self::CreateStream { name, .. } => format!("CREATE STREAM {name}"),
            Self::CreateMaterializedView { name, .. } => format!("CREATE MATERIALIZED VIEW {name}"),
            Self::CreateSink(s) => format!("CREATE SINK {}", s.name),
            Self::Insert(_) => "INSERT".into(),
            Self::Drop { kind, name, .. } => format!("DROP {kind} {name}"),
            Self::Show(kind) => format!("SHOW {kind}S"),
            Self::Describe(name) => format!("DESCRIBE {name}"),
            Self::Explain(inner) => format!("EXPLAIN {}", inner.label()),
            Self::Query(_) => "SELECT".into(),
            Self::Flush => "FLUSH".into(),
            Self::Checkpoint => "CHECKPOINT".into(),
            Self::ShowWatermarks => "SHOW WATERMARKS".into(),
            Self::ShowWorkers => "SHOW WORKERS".into(),
        }
    }
}

fn emit_clause(emit: Emit) -> String {
    match emit {
        Emit::Default => String::new(),
        Emit::OnUpdate => " EMIT CHANGES".to_string(),
        Emit::OnWindowClose {
            allowed_lateness_ms: 0,
        } => " EMIT ON WINDOW CLOSE".to_string(),
        Emit::OnWindowClose {
            allowed_lateness_ms,
        } => format!(
            " EMIT ON WINDOW CLOSE ALLOW LATENESS INTERVAL '{allowed_lateness_ms} milliseconds'"
        ),
        Emit::Every { interval_ms } => {
            format!(" EMIT EVERY INTERVAL '{interval_ms} milliseconds'")
        }
    }
}

/// ` WITH (key = 'value', ...)`, or nothing without options.
fn with_options(f: &mut fmt::Formatter<'_>, options: &[(String, String)]) -> fmt::Result {
    if options.is_empty() {
        return Ok(());
    }
    f.write_str(" WITH (")?;
    write_options(f, options)?;
    f.write_str(")")
}

fn if_not_exists(f: &mut fmt::Formatter<'_>, yes: bool) -> fmt::Result {
    if yes {
        f.write_str("IF NOT EXISTS ")?;
    }
    Ok(())
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateSource(source) | Self::CreateTable(source) => {
                let kind = if matches!(self, Self::CreateTable(_)) {
                    "TABLE"
                } else {
                    "SOURCE"
                };
                write!(f, "CREATE {kind} ")?;
                if_not_exists(f, source.if_not_exists)?;
                f.write_str(&quote_ident(&source.name))?;
                if !source.columns.is_empty() || source.watermark.is_some() {
                    f.write_str(" (")?;
                    let mut items: Vec<String> =
                        source.columns.iter().map(ToString::to_string).collect();
                    if !source.primary_key.is_empty() {
                        let key: Vec<String> =
                            source.primary_key.iter().map(|k| quote_ident(k)).collect();
                        items.push(format!("PRIMARY KEY ({})", key.join(", ")));
                    }
                    if let Some(w) = &source.watermark {
                        let per_key = if w.per_key.is_empty() {
                            String::new()
                        } else {
                            let keys: Vec<String> =
                                w.per_key.iter().map(|k| quote_ident(k)).collect();
                            format!(" PER KEY ({})", keys.join(", "))
                        };
                        items.push(format!(
                            "WATERMARK FOR {} AS {}{per_key}",
                            quote_ident(&w.column),
                            w.expr
                        ));
                    }
                    f.write_str(&items.join(", "))?;
                    f.write_str(")")?;
                }
                if let Some(connector) = &source.connector {
                    write!(f, " FROM {connector}")?;
                }
                with_options(f, &source.options)?;
                if let Some(late) = &source.late_data_to {
                    write!(f, " LATE DATA TO {}", quote_ident(late))?;
                }
                Ok(())
            }
            Self::CreateStream {
                name,
                if_not_exists: ine,
                options,
                query,
                emit,
            }
            | Self::CreateMaterializedView {
                name,
                if_not_exists: ine,
                options,
                query,
                emit,
            } => {
                let kind = if matches!(self, Self::CreateStream { .. }) {
                    "STREAM"
                } else {
                    "MATERIALIZED VIEW"
                };
                write!(f, "CREATE {kind} ")?;
                if_not_exists(f, *ine)?;
                f.write_str(&quote_ident(name))?;
                with_options(f, options)?;
                write!(f, " AS {query}{}", emit_clause(*emit))
            }
            Self::CreateSink(sink) => {
                f.write_str("CREATE SINK ")?;
                if_not_exists(f, sink.if_not_exists)?;
                write!(f, "{} INTO {}", quote_ident(&sink.name), sink.connector)?;
                with_options(f, &sink.options)?;
                match &sink.input {
                    SinkInput::Query(q) => write!(f, " AS {q}"),
                    SinkInput::From(name) => write!(f, " FROM {}", quote_ident(name)),
                }
            }
            Self::Insert(statement) => write!(f, "{statement}"),
            Self::Drop {
                kind,
                name,
                if_exists,
            } => {
                write!(f, "DROP {kind} ")?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                f.write_str(&quote_ident(name))
            }
            Self::Show(kind) => write!(f, "SHOW {kind}S"),
            Self::Describe(name) => write!(f, "DESCRIBE {}", quote_ident(name)),
            Self::Explain(inner) => write!(f, "EXPLAIN {inner}"),
            Self::Query(query) => write!(f, "{query}"),
            // Keyword statements print as their label.
            Self::Flush | Self::Checkpoint | Self::ShowWatermarks | Self::ShowWorkers => {
                f.write_str(&self.label())
            }
        }
    }
}
