//! `laminardb bench checkpoint`: checkpoint cost and recovery time for a large aggregate
//! state. A view counts and sums per key over `keys` distinct keys; the benchmark times a
//! full checkpoint of that state, then a checkpoint after `changed` of the keys received a
//! row (a delta), then reopening the database from the two (recovery: restore the full
//! snapshot, apply the delta), and checks the recovered view still has every key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::Schema;
use laminar_db::{CheckpointInfo, LaminarDB};

use crate::error::CliError;
use crate::{table, units};

/// Rows per pushed batch.
const BATCH_ROWS: usize = 8192;

/// Options of `bench checkpoint`.
#[derive(Debug, Clone)]
pub struct CheckpointBenchOptions {
    /// Distinct keys of aggregate state.
    pub keys: u64,
    /// Fraction of the keys touched between the two checkpoints (0.01 for 1%).
    pub changed: f64,
    /// Worker threads.
    pub workers: usize,
    /// Where the database is written (a fresh directory under it, removed afterwards).
    pub dir: PathBuf,
}

/// What one run measured.
struct Measured {
    full: CheckpointInfo,
    delta: CheckpointInfo,
    recovery: Duration,
    recovered_keys: u64,
}

/// Runs the benchmark and prints its report.
pub fn checkpoint(options: &CheckpointBenchOptions) -> Result<(), CliError> {
    let dir = options
        .dir
        .join(format!("laminardb-bench-checkpoint-{}", std::process::id()));
    let measured = run(options, &dir);
    // Best effort: a leftover directory under the temporary directory harms nothing.
    let _ = std::fs::remove_dir_all(&dir);
    let measured = measured?;
    if measured.recovered_keys != options.keys {
        return Err(CliError::environment(
            "checking the recovered view",
            format!(
                "it holds {} keys, {} were written",
                measured.recovered_keys, options.keys
            ),
        ));
    }
    report(options, &measured)
}

fn open(options: &CheckpointBenchOptions, dir: &Path) -> Result<LaminarDB, CliError> {
    Ok(LaminarDB::builder()
        .workers(options.workers)
        .checkpoint_interval(None)
        .open(dir)?)
}

fn run(options: &CheckpointBenchOptions, dir: &Path) -> Result<Measured, CliError> {
    let db = open(options, dir)?;
    db.execute("CREATE SOURCE s (k BIGINT NOT NULL, v BIGINT NOT NULL)")?;
    db.execute(
        "CREATE MATERIALIZED VIEW totals AS SELECT k, count(*) AS n, sum(v) AS total FROM s GROUP BY k",
    )?;
    let source = db.source("s")?;
    let schema = source.schema();
    let mut key = 0;
    while key < options.keys {
        let end = (key + BATCH_ROWS as u64).min(options.keys);
        source.push(batch(&schema, key..end)?)?;
        key = end;
    }
    db.sync()?;
    let full = db.checkpoint()?;
    // Every 1/changed-th key receives one more row.
    let step = (1.0 / options.changed.clamp(1e-6, 1.0)).round().max(1.0) as u64;
    let touched: Vec<u64> = (0..options.keys).step_by(step as usize).collect();
    for chunk in touched.chunks(BATCH_ROWS) {
        source.push(batch_of(&schema, chunk)?)?;
    }
    db.sync()?;
    let delta = db.checkpoint()?;
    // The clean shutdown adds a third, empty, checkpoint; recovery reads the chain.
    drop(db);
    let started = Instant::now();
    let db = open(options, dir)?;
    let recovery = started.elapsed();
    let rows = db.query("SELECT count(*) FROM totals")?;
    let recovered_keys = rows
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>())
        .map_or(0, |c| c.value(0) as u64);
    Ok(Measured {
        full,
        delta,
        recovery,
        recovered_keys,
    })
}

fn batch(schema: &Arc<Schema>, keys: std::ops::Range<u64>) -> Result<RecordBatch, CliError> {
    let keys: Vec<u64> = keys.collect();
    batch_of(schema, &keys)
}

fn batch_of(schema: &Arc<Schema>, keys: &[u64]) -> Result<RecordBatch, CliError> {
    let k: Int64Array = keys.iter().map(|k| *k as i64).collect();
    let v: Int64Array = keys.iter().map(|k| (*k % 1000) as i64).collect();
    RecordBatch::try_new(Arc::clone(schema), vec![Arc::new(k), Arc::new(v)])
        .map_err(|e| CliError::environment("building the input", e))
}

fn report(options: &CheckpointBenchOptions, m: &Measured) -> Result<(), CliError> {
    let build = if cfg!(debug_assertions) {
        "dev (debug assertions on: slower than a release build)"
    } else {
        "release"
    };
    let ratio = m.delta.state_bytes as f64 / m.full.state_bytes.max(1) as f64 * 100.0;
    let entries = [
        (
            "benchmark",
            "checkpoint and recovery of a GROUP BY state".to_string(),
        ),
        ("build", build.to_string()),
        ("workers", options.workers.to_string()),
        ("keys", units::count(options.keys)),
        ("keys changed", format!("{:.2}%", options.changed * 100.0)),
        ("full checkpoint", units::elapsed(m.full.duration)),
        ("full checkpoint bytes", units::count(m.full.state_bytes)),
        ("full checkpoint pause", units::elapsed(m.full.pause)),
        ("full checkpoint barrier", units::elapsed(m.full.barrier)),
        ("full checkpoint stall", units::elapsed(m.full.worker_stall)),
        ("delta checkpoint", units::elapsed(m.delta.duration)),
        ("delta checkpoint bytes", units::count(m.delta.state_bytes)),
        ("delta checkpoint pause", units::elapsed(m.delta.pause)),
        ("delta checkpoint barrier", units::elapsed(m.delta.barrier)),
        (
            "delta checkpoint stall",
            units::elapsed(m.delta.worker_stall),
        ),
        ("delta / full bytes", format!("{ratio:.2}%")),
        ("recovery (open)", units::elapsed(m.recovery)),
        ("keys after recovery", units::count(m.recovered_keys)),
    ]
    .map(|(key, value)| (key.to_string(), value));
    let text = table::key_values(("metric", "value"), &entries)
        .map_err(|e| CliError::environment("formatting the report", e))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_recovers_every_key_and_the_delta_is_smaller() {
        let dir = tempfile::tempdir().unwrap();
        let options = CheckpointBenchOptions {
            keys: 20_000,
            changed: 0.01,
            workers: 1,
            dir: dir.path().to_path_buf(),
        };
        let inner = tempfile::tempdir_in(dir.path()).unwrap();
        let measured = run(&options, inner.path()).unwrap();
        assert_eq!(measured.recovered_keys, 20_000);
        assert!(
            measured.delta.state_bytes * 20 < measured.full.state_bytes,
            "delta {} bytes, full {} bytes",
            measured.delta.state_bytes,
            measured.full.state_bytes
        );
    }
}
