//! `laminardb bench wal`: write-ahead log append throughput. Appender threads write records
//! of a fixed size into a fresh log under a durability mode and an I/O backend; the clock
//! stops once every record is durable (the final sync of a `group` log is included).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use laminar_db::storage::io::{backend, IoBackendKind};
use laminar_db::storage::wal::{Durability, WalOptions, WalWriter};

use crate::error::CliError;
use crate::{table, units};

/// Options of `bench wal`.
#[derive(Debug, Clone)]
pub struct WalBenchOptions {
    /// `sync` or `group`.
    pub durability: Durability,
    /// The I/O backend to measure.
    pub backend: IoBackendKind,
    /// Records appended in all.
    pub records: u64,
    /// Bytes of each record's payload.
    pub record_bytes: usize,
    /// Threads appending at once.
    pub threads: usize,
    /// Where the log is written (a fresh directory under it, removed afterwards).
    pub dir: PathBuf,
}

/// What a run measured.
struct Outcome {
    elapsed: Duration,
    segments: usize,
    log_dir: PathBuf,
}

/// Runs the benchmark and prints its report.
pub fn wal(options: &WalBenchOptions) -> Result<(), CliError> {
    let log_dir = options
        .dir
        .join(format!("laminardb-bench-wal-{}", std::process::id()));
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir)
            .map_err(|e| CliError::environment("clearing the benchmark's log directory", e))?;
    }
    let outcome = run(options, &log_dir);
    // The log is scratch: removed whether or not the run succeeded.
    let removed = std::fs::remove_dir_all(&log_dir);
    let outcome = outcome?;
    removed.map_err(|e| CliError::environment("removing the benchmark's log directory", e))?;
    report(options, &outcome)
}

fn run(options: &WalBenchOptions, log_dir: &Path) -> Result<Outcome, CliError> {
    let wal_options = WalOptions {
        backend: backend(options.backend)?,
        ..WalOptions::default()
    };
    let (wal, _) = WalWriter::open(log_dir, options.durability, wal_options)?;
    let wal = Arc::new(wal);
    let threads = options.threads.max(1) as u64;
    let payload: Arc<[u8]> = (0..options.record_bytes).map(|i| i as u8).collect();
    let started = Instant::now();
    let appenders: Vec<_> = (0..threads)
        .map(|t| {
            // Thread t appends records t, t + threads, t + 2 * threads, ...
            let count = options.records / threads + u64::from(t < options.records % threads);
            let (wal, payload) = (Arc::clone(&wal), Arc::clone(&payload));
            std::thread::Builder::new()
                .name(format!("bench-wal-{t}"))
                .spawn(move || (0..count).try_for_each(|_| wal.append(&payload).map(drop)))
                .map_err(|e| CliError::environment("cannot start an appender thread", e))
        })
        .collect::<Result<_, _>>()?;
    for appender in appenders {
        appender
            .join()
            .map_err(|_| CliError::environment("appending", "an appender thread panicked"))??;
    }
    let wal = Arc::into_inner(wal).ok_or_else(|| {
        CliError::environment("appending", "an appender still holds the log (a bug)")
    })?;
    wal.close()?;
    let elapsed = started.elapsed();
    let segments = std::fs::read_dir(log_dir)
        .map_err(|e| CliError::environment("counting segments", e))?
        .count();
    Ok(Outcome {
        elapsed,
        segments,
        log_dir: log_dir.to_path_buf(),
    })
}

fn report(options: &WalBenchOptions, outcome: &Outcome) -> Result<(), CliError> {
    let seconds = outcome.elapsed.as_secs_f64();
    let per_second = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
    let records_per_second = per_second(options.records as f64);
    let megabytes_per_second =
        per_second(options.records as f64 * options.record_bytes as f64) / 1e6;
    let build = if cfg!(debug_assertions) {
        "dev (debug assertions on: slower than a release build)"
    } else {
        "release"
    };
    let entries = [
        (
            "benchmark",
            "write-ahead log appends until durable".to_string(),
        ),
        ("build", build.to_string()),
        ("durability", options.durability.to_string()),
        ("I/O backend", options.backend.to_string()),
        ("log directory", outcome.log_dir.display().to_string()),
        ("appender threads", options.threads.to_string()),
        ("records", units::count(options.records)),
        ("record bytes", units::count(options.record_bytes as u64)),
        ("segments", units::count(outcome.segments as u64)),
        ("elapsed", units::elapsed(outcome.elapsed)),
        ("records/s", units::rate(records_per_second)),
        ("MB/s (payload)", format!("{megabytes_per_second:.1}")),
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
    fn a_small_run_writes_every_record_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalBenchOptions {
            durability: Durability::Group,
            backend: IoBackendKind::Std,
            records: 1_001,
            record_bytes: 100,
            threads: 4,
            dir: dir.path().to_path_buf(),
        };
        let log_dir = dir.path().join("log");
        let outcome = run(&options, &log_dir).unwrap();
        assert_eq!(outcome.segments, 1);
        let read = laminar_db::storage::wal::read_wal(&log_dir, 0).unwrap();
        assert_eq!(read.records.len(), 1_001);
        assert!(read.records.iter().all(|r| r.payload.len() == 100));
        wal(&options).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only `log` is left"
        );
    }
}
