//! LaminarDB's SQL layer: the streaming statements (`CREATE SOURCE`, `CREATE STREAM`,
//! `CREATE MATERIALIZED VIEW`, `CREATE SINK`, `SHOW`, `DESCRIBE`, `EXPLAIN`, ...) parsed on
//! top of `sqlparser`, and continuous queries planned by DataFusion and translated into
//! `laminar-core` dataflow graphs. Nothing here runs a query.
#![deny(missing_docs)]

mod asof_rewrite;
mod asof_udf;
pub mod error;
mod interval;
mod join_bounds;
mod keyed_plan;
pub mod parser;
pub mod planner;
mod session_plan;
mod session_udf;
mod temporal_rewrite;
mod top_n;
mod translate;
pub mod types;
mod window_udf;
mod windows;

pub use asof_rewrite::contains_asof_join;
pub use error::{Result, SqlError};
pub use parser::{parse_statements, ConnectorSpec, Emit, ObjectKind, Statement};
pub use planner::{PlannedQuery, StreamPlanner};

/// DataFusion's SQL parser, re-exported so callers use the same version.
pub use datafusion::sql::sqlparser;
