//! The sink half of the connector SDK: the [`SinkConnector`] trait the engine writes result
//! batches to, with its two-phase commit protocol for exactly-once output across
//! checkpoints, and [`create_sink`], which maps a connector name to its implementation.

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::changelog::ChangeMode;
use crate::error::{ConnectorError, Result};
use crate::file::FileSink;
use crate::options::ConnectorOptions;

/// Names accepted by [`create_sink`], for error messages.
const SINK_CONNECTORS: &str = "file";

/// A destination for the rows of a sink. Written from one thread.
///
/// # Two-phase commit
///
/// A database without a data directory only calls [`write`](Self::write) and
/// [`close`](Self::close): rows go out as they come. A database that checkpoints makes the
/// sink transactional by calling [`begin_epoch`](Self::begin_epoch) before its first row;
/// from then on every row belongs to an epoch, and per epoch the checkpoint coordinator
/// calls:
///
/// 1. `begin_epoch(e)`, then `write`s of the epoch's rows;
/// 2. `pre_commit(e)` at the epoch's barrier: the rows are durable but not visible, and the
///    returned handle goes into the checkpoint manifest;
/// 3. once the manifest is durable, `commit(e, handle)`: the rows become visible. The next
///    epoch may begin (and be written) before the previous one is committed.
///
/// `abort(e)` discards an epoch instead. When a database opens, `recover` is called once
/// before anything else with the last pre-committed epoch of the manifest it restores (none
/// for a new database): that epoch's output is completed and everything after it is
/// discarded, since the sources replay those rows.
///
/// The provided methods keep the non-transactional behaviour: a sink that does not override
/// them writes rows through as they come, so it cannot take back rows of an aborted epoch or
/// of rows replayed after a crash (at-least-once output).
pub trait SinkConnector: Send + std::fmt::Debug {
    /// Writes one batch of result rows (the schema the sink was created with) with their
    /// change weights: `None` when every row is an insert, as always for
    /// [`ChangeMode::AppendOnly`].
    fn write(&mut self, batch: &RecordBatch, weights: Option<&Int64Array>) -> Result<()>;

    /// Flushes and finalizes the output (parquet footer etc.). Called once at end of input or
    /// shutdown. A transactional sink commits nothing here (the coordinator's final
    /// checkpoint does) and discards the rows of an epoch that was not pre-committed.
    fn close(&mut self) -> Result<()>;

    /// Whether the sink can take part in checkpoints (the calls below), checked when a
    /// database with a data directory creates it, so an unsuitable sink is refused at
    /// `CREATE SINK` with the reason. Sinks that keep the default calls are at-least-once
    /// only, which this default says.
    fn check_exactly_once(&self) -> Result<()> {
        Err(ConnectorError::Unsupported {
            connector: "this sink".to_owned(),
            feature: "exactly-once output through checkpoints".to_owned(),
        })
    }

    /// From now on, `write`s belong to `epoch`; epochs increase. The previous epoch must have
    /// been pre-committed or aborted.
    fn begin_epoch(&mut self, epoch: u64) -> Result<()> {
        let _ = epoch;
        Ok(())
    }

    /// Makes the rows of `epoch` durable but not visible, and returns a small JSON handle for
    /// the checkpoint manifest, which [`commit`](Self::commit) and
    /// [`recover`](Self::recover) take back.
    fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value> {
        let _ = epoch;
        Ok(serde_json::Value::Null)
    }

    /// Makes the rows of `epoch` (and of earlier pre-committed epochs not yet committed)
    /// visible, given the handle `pre_commit(epoch)` returned. Idempotent: committing an
    /// epoch again, also after a crash and reopen, changes nothing.
    fn commit(&mut self, epoch: u64, handle: &serde_json::Value) -> Result<()> {
        let _ = (epoch, handle);
        Ok(())
    }

    /// Discards the rows of `epoch`, whether still being written or pre-committed. A handle
    /// returned by a later `pre_commit` may still name the epoch, and committing it then
    /// fails: abort only what will not be committed.
    fn abort(&mut self, epoch: u64) -> Result<()> {
        let _ = epoch;
        Ok(())
    }

    /// Called once when a database with a data directory opens, before any other call:
    /// `committed` is the last epoch the restored checkpoint pre-committed, with its handle.
    /// Commits it if the crash came before its commit, and discards all output of later
    /// epochs, whose rows the sources replay. `None` when there is no checkpoint (a new
    /// database, or none valid): all output is written again, so everything the sink
    /// committed before is discarded.
    fn recover(&mut self, committed: Option<(u64, &serde_json::Value)>) -> Result<()> {
        let _ = committed;
        Ok(())
    }
}

/// Creates the sink connector named `connector` (case-insensitive: `file`) for result rows
/// of `schema` arriving as `changes`, validating `options`. Touches no file: output is
/// created on the first write.
pub fn create_sink(
    connector: &str,
    options: &ConnectorOptions,
    schema: SchemaRef,
    changes: ChangeMode,
) -> Result<Box<dyn SinkConnector>> {
    match connector.trim().to_ascii_lowercase().as_str() {
        "file" => Ok(Box::new(FileSink::create(options, schema, changes)?)),
        _ => Err(ConnectorError::UnknownConnector {
            role: "sink",
            name: connector.to_owned(),
            known: SINK_CONNECTORS.to_owned(),
        }),
    }
}
