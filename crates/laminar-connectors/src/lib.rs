//! Connectors of `LaminarDB`: the connector SDK (the [`SourceConnector`] and [`SinkConnector`]
//! traits the engine drives, with sources resumable at a [`SourcePosition`] and sinks that
//! commit per checkpoint epoch) and the built-in connectors — FILE (CSV, newline-delimited
//! JSON, Parquet; source and sink) and DATAGEN (Nexmark and trades generators). The engine
//! reaches every connector through [`create_source`] and [`create_sink`]; a sink over a
//! changelog writes its rows with an `op` column ([`ChangeMode`]).

#![deny(missing_docs)]

mod changelog;
mod datagen;
mod error;
mod file;
mod options;
mod position;
#[cfg(test)]
mod resume_checks;
mod sink;
mod source;
mod timestamp;

pub use changelog::ChangeMode;
pub use error::{ConnectorError, Result};
pub use options::ConnectorOptions;
pub use position::{PartitionPosition, SourcePosition};
pub use sink::{create_sink, SinkConnector};
pub use source::{
    create_source, SourceBatch, SourceConnector, SourceEvent, SourceMetrics, SourceReader,
};
