//! `laminardb`: the command-line face of LaminarDB. It parses arguments and hands each
//! subcommand (`run`, `repl`, `bench`) to its module; all database work goes through the
//! public `laminar-db` API. Failures print `error: <message>` on stderr and exit non-zero.

mod bench;
mod bench_checkpoint;
mod bench_wal;
mod console;
mod error;
mod interrupt;
mod latency;
mod nexmark;
mod printer;
mod progress;
mod repl;
mod run;
mod script;
mod table;
mod thread_cpu;
mod units;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use laminar_db::storage::io::IoBackendKind;
use laminar_db::storage::wal::Durability;

use crate::error::CliError;

/// The binary allocates with mimalloc: per-group state (a million groups is a million
/// accumulators and keys) spent ~30% of a worker's time in glibc's `malloc`/`free`. An
/// application embedding the library picks its own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rows per pushed batch in `bench` unless `--batch-rows` says otherwise.
const BENCH_BATCH_ROWS_DEFAULT: usize = 8_192;

/// LaminarDB: an embedded streaming SQL database.
#[derive(Debug, Parser)]
#[command(name = "laminardb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a SQL script: print the live rows of its streams and views until its sources
    /// end, Ctrl-C is pressed or --for elapses.
    Run(RunArgs),
    /// An interactive SQL shell.
    Repl(DatabaseArgs),
    /// Measure throughput.
    Bench {
        #[command(subcommand)]
        benchmark: Benchmark,
    },
}

/// Where the database lives and how many workers it runs.
#[derive(Debug, Args)]
struct DatabaseArgs {
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", value_parser = parse_at_least_one)]
    workers: Option<usize>,
    /// Keep the catalog in DIR (restored on the next start) instead of in memory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The SQL script to run.
    file: PathBuf,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Stop after this long even if the sources have not ended (e.g. 500ms, 30s, 2m, 1h).
    #[arg(long = "for", value_name = "DURATION", value_parser = units::parse_duration)]
    duration: Option<Duration>,
    /// Do not print the rows of streams and views (SELECT results still print).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Benchmark {
    /// Filter and project pre-generated Nexmark bids pushed into a source.
    Filter(BenchArgs),
    /// Count pre-generated Nexmark bids per auction in 10-second tumbling windows.
    Window(BenchArgs),
    /// Count pre-generated Nexmark bids per auction in 10-second windows sliding by 2 s.
    Hop(BenchArgs),
    /// Push-to-subscriber latency of a stateless stream at a fixed rate.
    Latency(LatencyArgs),
    /// A Nexmark query over pre-generated events, compared with DataFusion in batch.
    Nexmark(NexmarkArgs),
    /// Write-ahead log appends until durable, by durability mode and I/O backend.
    Wal(WalArgs),
    /// Checkpoint time and size of a large GROUP BY state, full and after a small change,
    /// and the time to recover it.
    Checkpoint(CheckpointArgs),
}

/// The knobs of the checkpoint benchmark.
#[derive(Debug, Args)]
struct CheckpointArgs {
    /// Distinct keys of aggregate state.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    keys: u64,
    /// Percentage of keys changed between the full and the delta checkpoint.
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0)]
    changed: f64,
    /// Worker threads.
    #[arg(long, value_name = "W", default_value_t = 1, value_parser = parse_at_least_one)]
    workers: usize,
    /// Write the database under DIR (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The knobs of the write-ahead log benchmark.
#[derive(Debug, Args)]
struct WalArgs {
    /// When an append returns: sync (after its fdatasync, shared by concurrent appenders) or
    /// group (once written; a background flusher syncs every 5 ms).
    #[arg(long, value_name = "MODE", default_value = "group", value_parser = parse_log_durability)]
    durability: Durability,
    /// The I/O backend: std or uring (default: the one picked for this machine).
    #[arg(long, value_name = "NAME", value_parser = parse_backend)]
    backend: Option<IoBackendKind>,
    /// Records to append.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    records: u64,
    /// Payload bytes per record.
    #[arg(long, value_name = "B", default_value_t = 256)]
    record_bytes: usize,
    /// Threads appending at once.
    #[arg(long, value_name = "T", default_value_t = 1, value_parser = parse_at_least_one)]
    threads: usize,
    /// Write the log under DIR (default: the system's temporary directory); the disk under
    /// it is what is measured.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// A durability mode that writes a log: `sync` or `group`.
fn parse_log_durability(text: &str) -> Result<Durability, String> {
    match text.parse::<Durability>().map_err(|e| e.to_string())? {
        Durability::None => Err("durability none writes no log: use sync or group".into()),
        mode => Ok(mode),
    }
}

/// An I/O backend name: `std` or `uring`.
fn parse_backend(text: &str) -> Result<IoBackendKind, String> {
    text.parse::<IoBackendKind>().map_err(|e| e.to_string())
}

/// The knobs of the Nexmark benchmark.
#[derive(Debug, Args)]
struct NexmarkArgs {
    /// The query: q0, q1, q2, q3, q4, q5, q7, q8, interval (an interval join) or asof (an ASOF
    /// join).
    #[arg(long, value_name = "QN")]
    query: String,
    #[command(flatten)]
    bench: BenchArgs,
}

/// The knobs of the latency benchmark.
#[derive(Debug, Args)]
struct LatencyArgs {
    /// Rows pushed per second, one per push.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    rate: u64,
    /// How long to push (e.g. 5s).
    #[arg(long = "for", value_name = "DURATION", default_value = "5s", value_parser = units::parse_duration)]
    duration: Duration,
    /// Worker threads.
    #[arg(long, value_name = "W", default_value_t = 1, value_parser = parse_at_least_one)]
    workers: usize,
    /// Receive through a callback subscription (run on the worker) instead of a
    /// subscriber thread.
    #[arg(long)]
    callback: bool,
    /// How long an idle worker polls before parking (e.g. 50us; default: a short spin).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    idle_spin: Option<Duration>,
}

/// The knobs every benchmark takes.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Nexmark events to generate (about 92% are bids).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    events: u64,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "W", value_parser = parse_at_least_one)]
    workers: Option<usize>,
    /// Rows per pushed batch.
    #[arg(long, value_name = "R", default_value_t = BENCH_BATCH_ROWS_DEFAULT, value_parser = parse_at_least_one)]
    batch_rows: usize,
}

impl BenchArgs {
    fn options(&self, kind: bench::Kind) -> bench::FilterOptions {
        bench::FilterOptions {
            kind,
            events: self.events,
            workers: self.workers.unwrap_or_else(default_workers),
            batch_rows: self.batch_rows,
        }
    }
}

/// A count that must be at least one.
fn parse_at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "expected a whole number of at least 1, got '{text}'"
        )),
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run::run(&run::RunOptions {
            file: args.file,
            workers: args.database.workers,
            duration: args.duration,
            quiet: args.quiet,
            data_dir: args.database.data_dir,
        }),
        Command::Repl(args) => repl::repl(&repl::ReplOptions {
            workers: args.workers,
            data_dir: args.data_dir,
        }),
        Command::Bench {
            benchmark: Benchmark::Filter(args),
        } => bench::filter(&args.options(bench::Kind::Filter)),
        Command::Bench {
            benchmark: Benchmark::Window(args),
        } => bench::filter(&args.options(bench::Kind::Window)),
        Command::Bench {
            benchmark: Benchmark::Hop(args),
        } => bench::filter(&args.options(bench::Kind::Hop)),
        Command::Bench {
            benchmark: Benchmark::Nexmark(args),
        } => nexmark::nexmark(&nexmark::NexmarkOptions {
            query: args.query,
            events: args.bench.events,
            workers: args.bench.workers.unwrap_or_else(default_workers),
            batch_rows: args.bench.batch_rows,
        }),
        Command::Bench {
            benchmark: Benchmark::Wal(args),
        } => bench_wal::wal(&bench_wal::WalBenchOptions {
            durability: args.durability,
            backend: args.backend.unwrap_or_else(laminar_db::storage::io::detect),
            records: args.records,
            record_bytes: args.record_bytes,
            threads: args.threads,
            dir: args.dir.unwrap_or_else(std::env::temp_dir),
        }),
        Command::Bench {
            benchmark: Benchmark::Checkpoint(args),
        } => bench_checkpoint::checkpoint(&bench_checkpoint::CheckpointBenchOptions {
            keys: args.keys,
            changed: args.changed / 100.0,
            workers: args.workers,
            dir: args.dir.unwrap_or_else(std::env::temp_dir),
        }),
        Command::Bench {
            benchmark: Benchmark::Latency(args),
        } => latency::latency(&latency::LatencyOptions {
            rate: args.rate,
            duration: args.duration,
            workers: args.workers,
            callback: args.callback,
            idle_spin: args.idle_spin,
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

fn report(error: &CliError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(error.exit_code())
}
