//! Lookup tables (`CREATE TABLE ... PRIMARY KEY (...) FROM LOOKUP (source = 'name', ...)`):
//! tables whose rows live in an external source the application registers under a name
//! ([`LaminarDbBuilder::lookup_source`], [`LaminarDB::register_lookup_source`]) and which a
//! lookup join asks by primary key, through a cache on each worker. LaminarDB never copies
//! their rows: `SELECT` and `INSERT` refuse them, and a reopened database needs the source
//! registered again (under the same name) before it opens.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard, PoisonError};

use laminar_connectors::ConnectorOptions;
use laminar_core::lookup::{LookupCounters, LookupOptions, LookupService, LookupSource};
use laminar_sql::parser::{ConnectorSpec, CreateSource};
use laminar_sql::{ObjectKind, SqlError};

use crate::catalog::{Catalog, Object, ObjectState};
use crate::db::{LaminarDB, LaminarDbBuilder};
use crate::error::{DbError, Result};
use crate::result::ExecuteResult;
use crate::table::declared_table;

/// The options `FROM LOOKUP (...)` takes.
const LOOKUP_OPTIONS: &[&str] = &[
    "source",
    "cache_rows",
    "cache_ttl",
    "cache_missing",
    "retries",
    "timeout",
    "threads",
];

/// Lookup sources registered by name.
#[derive(Clone, Default)]
pub(crate) struct LookupSources(HashMap<String, Arc<dyn LookupSource>>);

impl std::fmt::Debug for LookupSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl LookupSources {
    /// Registers `source` as `name`; refuses a name taken.
    pub(crate) fn add(&mut self, name: &str, source: Arc<dyn LookupSource>) -> Result<()> {
        if self.0.contains_key(name) {
            return Err(DbError::NotAllowed {
                statement: format!("register lookup source {name}"),
                message: format!("a lookup source named {name} is already registered"),
            });
        }
        self.0.insert(name.to_string(), source);
        Ok(())
    }
}

/// A lookup table's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupTableMetrics {
    /// The table's name.
    pub name: String,
    /// The registered source it asks.
    pub source: String,
    /// Cache hits and misses, calls of the source and their outcome.
    pub counters: LookupCounters,
}

impl LaminarDbBuilder {
    /// Registers `source` under `name`, for lookup tables declared `FROM LOOKUP (source =
    /// 'name')`. A database reopened from a data directory restores its lookup tables, so
    /// their sources must be registered on the builder that opens it.
    ///
    /// # Panics
    /// Never; a name registered twice keeps the later source.
    #[must_use]
    pub fn lookup_source(mut self, name: &str, source: Arc<dyn LookupSource>) -> Self {
        self.lookup_sources.0.insert(name.to_string(), source);
        self
    }
}

impl LaminarDB {
    /// Registers `source` under `name`, for lookup tables created from now on with
    /// `FROM LOOKUP (source = 'name')`.
    ///
    /// # Errors
    /// When a source is already registered under `name`.
    pub fn register_lookup_source(&self, name: &str, source: Arc<dyn LookupSource>) -> Result<()> {
        self.inner
            .lookup_sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(name, source)
    }

    /// `CREATE TABLE ... FROM LOOKUP (...)`, whose canonical text is `sql`, once `catalog`
    /// (held) was checked not to have it.
    pub(crate) fn create_lookup_table(
        &self,
        mut catalog: MutexGuard<'_, Catalog>,
        create: &CreateSource,
        spec: &ConnectorSpec,
        sql: String,
        persist: bool,
    ) -> Result<ExecuteResult> {
        let name = &create.name;
        let context = format!("CREATE TABLE {name}");
        let invalid = |message: String| {
            DbError::Sql(SqlError::Invalid {
                context: context.clone(),
                message,
            })
        };
        let (schema, key) = declared_table(create, &context)?;
        let (source_name, options) = lookup_options(spec).map_err(invalid)?;
        let source = self
            .inner
            .lookup_sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .get(&source_name)
            .cloned()
            .ok_or_else(|| {
                invalid(format!(
                    "no lookup source named '{source_name}' is registered; register it with \
                     LaminarDbBuilder::lookup_source (or LaminarDB::register_lookup_source) \
                     before creating the table"
                ))
            })?;
        let service = LookupService::start(name, schema.clone(), key, source, options)
            .map_err(|e| DbError::Internal(format!("{context}: cannot start its threads: {e}")))?;
        let service = Arc::new(service);
        let planner = &self.inner.planner;
        planner.register(name, schema.clone())?;
        if persist {
            if let Err(error) = self.persist_with(&catalog, &sql) {
                planner.deregister(name);
                return Err(error);
            }
        }
        planner.mark_lookup_table(name, Arc::clone(&service));
        // The name was just checked absent, so the registration cannot clash.
        let _ = self.inner.snapshot.register_unqueryable(
            name,
            "lookup table, whose rows its source answers by key",
            schema.clone(),
        );
        catalog.insert(Object {
            name: name.clone(),
            kind: ObjectKind::Table,
            sql,
            schema,
            inputs: Vec::new(),
            watermark_column: None,
            state: ObjectState::LookupTable {
                service,
                source: source_name,
            },
            restored: false,
            output_log: None,
        });
        Ok(ExecuteResult::Created {
            kind: ObjectKind::Table,
            name: name.clone(),
        })
    }
}

/// The source's name and the cache and call options of `FROM LOOKUP (...)`.
fn lookup_options(spec: &ConnectorSpec) -> std::result::Result<(String, LookupOptions), String> {
    let options = ConnectorOptions::new(spec.options.iter().cloned());
    let text = |e: laminar_connectors::ConnectorError| e.to_string();
    options
        .check_known("lookup", LOOKUP_OPTIONS)
        .map_err(text)?;
    let source = options
        .required("lookup", "source")
        .map_err(text)?
        .to_string();
    let defaults = LookupOptions::default();
    let cache_ttl = match options.get("cache_ttl").map(str::trim) {
        Some(none) if none.eq_ignore_ascii_case("none") => None,
        _ => options
            .duration("lookup", "cache_ttl")
            .map_err(text)?
            .or(defaults.cache_ttl),
    };
    let threads = options
        .parse::<usize>("lookup", "threads")
        .map_err(text)?
        .unwrap_or(defaults.threads);
    if threads == 0 {
        return Err("option 'threads' must be at least 1".into());
    }
    let lookup = LookupOptions {
        cache_rows: options
            .parse("lookup", "cache_rows")
            .map_err(text)?
            .unwrap_or(defaults.cache_rows),
        cache_ttl,
        cache_missing: options
            .bool("lookup", "cache_missing")
            .map_err(text)?
            .unwrap_or(defaults.cache_missing),
        retries: options
            .parse("lookup", "retries")
            .map_err(text)?
            .unwrap_or(defaults.retries),
        timeout: options
            .duration("lookup", "timeout")
            .map_err(text)?
            .unwrap_or(defaults.timeout),
        threads,
    };
    Ok((source, lookup))
}
