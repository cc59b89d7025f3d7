//! LaminarDB's engine core: change batches, watermarks, operators and the thread-per-core
//! runtime that executes continuous queries.
//!
//! Nothing here parses SQL or touches files: `laminar-sql` translates queries into a
//! [`QueryGraph`] of operators, and `laminar-db` wires sources, views and sinks to the
//! [`Runtime`].
#![deny(missing_docs)]

pub mod change_batch;
pub mod error;
pub mod graph;
pub mod lookup;
pub mod operator;
mod partition_watermarks;
pub mod reference_table;
pub mod result_table;
pub mod runtime;
pub mod state;
mod state_codec;
pub mod watermark;

pub use change_batch::ChangeBatch;
pub use error::{CoreError, Result};
pub use graph::{QueryGraph, QueryNode, RowTimes};
pub use operator::{Message, Operator};
pub use reference_table::{HeldTable, ReferenceTable, UpsertError};
pub use result_table::ResultTable;
pub use runtime::{Runtime, RuntimeConfig};
pub use watermark::WatermarkGenerator;
