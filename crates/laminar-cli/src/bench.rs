//! `laminardb bench`: throughput benchmarks through the public API. The input is generated
//! first, in a separate database, and held in memory, so the timed part measures the
//! engine (push, route, filter, project, deliver to a subscriber) and not the generator.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use laminar_db::{LaminarDB, Subscription};

use crate::error::CliError;
use crate::{table, thread_cpu, units};

/// The longest a benchmark phase may take before it is reported as stuck.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often a waiting phase checks for query errors.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The filter benchmark's query.
const FILTER_QUERY: &str =
    "SELECT auction, price * 100 AS price_cents, date_time FROM bid WHERE price > 1000000";
/// The window benchmark's query: bids per auction per 10-second tumbling window, emitted
/// when each window closes (Nexmark q5's counting step).
const WINDOW_QUERY: &str = "SELECT auction, count(*) AS bids, window_start, window_end \
     FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) \
     GROUP BY auction, window_start, window_end EMIT ON WINDOW CLOSE";
/// The hopping benchmark's query: bids per auction in 10-second windows every 2 seconds
/// (each bid counts in five windows), emitted when each window closes.
const HOP_QUERY: &str = "SELECT auction, count(*) AS bids, window_start, window_end \
     FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
     GROUP BY auction, window_start, window_end EMIT ON WINDOW CLOSE";
/// How often the state of the measured query is sampled.
const STATE_SAMPLE_INTERVAL: Duration = Duration::from_millis(20);
/// The push source the timed run feeds: the columns of DATAGEN's Nexmark `bid` table.
const BID_SOURCE: &str = "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, \
     channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR, \
     WATERMARK FOR date_time AS date_time - INTERVAL '100' MILLISECOND)";

/// What a benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stateless filter and projection.
    Filter,
    /// Tumbling-window count per key, emitted on window close.
    Window,
    /// Hopping-window count per key, emitted on window close.
    Hop,
}

impl Kind {
    fn query(self) -> &'static str {
        match self {
            Self::Filter => FILTER_QUERY,
            Self::Window => WINDOW_QUERY,
            Self::Hop => HOP_QUERY,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Filter => "filter + projection over Nexmark bids",
            Self::Window => "tumbling-window count per auction over Nexmark bids",
            Self::Hop => "hopping-window (10 s every 2 s) count per auction over Nexmark bids",
        }
    }
}

/// Options of `bench filter`, `bench window` and `bench hop`.
#[derive(Debug, Clone)]
pub struct FilterOptions {
    /// Which query to measure.
    pub kind: Kind,
    /// Nexmark events to generate (all three tables; about 92% are bids).
    pub events: u64,
    /// Worker threads of the measured database.
    pub workers: usize,
    /// Rows per pushed batch.
    pub batch_rows: usize,
}

/// Runs the filter benchmark and prints its report.
pub fn filter(options: &FilterOptions) -> Result<(), CliError> {
    eprintln!(
        "generating {} Nexmark events ...",
        units::count(options.events)
    );
    let bids = generate_bids(options.events, options.workers)?;
    let batches = slices(&bids, options.batch_rows.max(1));
    eprintln!(
        "pushing {} bids in {} batches through {} worker(s) ...",
        units::count(bids.num_rows() as u64),
        units::count(batches.len() as u64),
        options.workers
    );

    let db = LaminarDB::builder().workers(options.workers).in_memory()?;
    db.execute(BID_SOURCE)?;
    db.execute(&format!(
        "CREATE STREAM hot_bids AS {}",
        options.kind.query()
    ))?;
    // One subscriber that only counts, so delivery is measured without storing results.
    let counter = spawn_counter(db.subscribe("hot_bids")?)?;
    let source = db.source("bid")?;

    let busy_before = worker_busy(&db);
    let workers_cpu_before = thread_cpu::named(WORKER_THREAD);
    let pusher_cpu_before = thread_cpu::current();
    let started = Instant::now();
    let sampler = StateSampler::start(&db)?;
    for batch in batches {
        source.push(batch)?;
    }
    let pushing = started.elapsed();
    source.finish()?;
    wait_finished(&db, "the filter query")?;
    let pusher_cpu = thread_cpu::current()
        .zip(pusher_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let workers_cpu = thread_cpu::since(&workers_cpu_before, &thread_cpu::named(WORKER_THREAD));
    let (rows_out, counter_cpu) = counter.join().map_err(|_| {
        CliError::environment("counting the results", "the counting thread panicked")
    })?;
    let elapsed = started.elapsed();
    let busy: Vec<Duration> = worker_busy(&db)
        .into_iter()
        .zip(busy_before)
        .map(|(after, before)| after.saturating_sub(before))
        .collect();
    let state = sampler.stop()?;
    let late_rows = db.metrics().queries.iter().map(|q| q.late_rows).sum();

    report(
        options,
        &Outcome {
            rows_in: bids.num_rows() as u64,
            rows_out,
            late_rows,
            elapsed,
            pushing,
            busy,
            cpu: Cpu {
                pusher: pusher_cpu,
                workers: workers_cpu,
                counter: counter_cpu,
            },
            state,
        },
    )
}

/// Each worker's busy time so far.
fn worker_busy(db: &LaminarDB) -> Vec<Duration> {
    db.metrics().workers.iter().map(|w| w.busy).collect()
}

/// What a timed run measured.
struct Outcome {
    rows_in: u64,
    rows_out: u64,
    late_rows: u64,
    elapsed: Duration,
    /// How long the pushing thread took to hand every batch over.
    pushing: Duration,
    /// Each worker's busy time during the run.
    busy: Vec<Duration>,
    cpu: Cpu,
    state: StatePeak,
}

/// Thread name prefix of the workers.
const WORKER_THREAD: &str = "laminar-worker";

/// On-core time of the threads of a run (`None` where the system does not say).
struct Cpu {
    /// The thread pushing the batches, until the query finished.
    pusher: Option<Duration>,
    /// Each worker's.
    workers: Vec<Duration>,
    /// The thread counting result rows.
    counter: Option<Duration>,
}

impl Cpu {
    fn describe(&self) -> String {
        let show = |d: Option<Duration>| d.map_or_else(|| "?".to_string(), units::elapsed);
        let workers: Vec<String> = self.workers.iter().map(|d| units::elapsed(*d)).collect();
        format!(
            "pushing {}, workers {}, counting {}",
            show(self.pusher),
            if workers.is_empty() {
                "?".to_string()
            } else {
                workers.join(" + ")
            },
            show(self.counter)
        )
    }
}

/// The largest state the measured query held at a measurement of its bytes: its entries
/// (open groups, rows held) and bytes at that moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StatePeak {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// Samples the database's state size on a thread of its own while a benchmark runs.
pub(crate) struct StateSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: JoinHandle<StatePeak>,
}

impl StateSampler {
    pub(crate) fn start(db: &LaminarDB) -> Result<Self, CliError> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let db = db.clone();
        let thread = std::thread::Builder::new()
            .name("bench-state".into())
            .spawn(move || {
                let mut peak = StatePeak::default();
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    let metrics = db.metrics();
                    // Bytes and the entries they were measured over, from one measurement.
                    let entries = metrics.queries.iter().map(|q| q.state_bytes_entries).sum();
                    let bytes = metrics.queries.iter().map(|q| q.state_bytes).sum();
                    if entries > peak.entries {
                        peak = StatePeak { entries, bytes };
                    }
                    std::thread::sleep(STATE_SAMPLE_INTERVAL);
                }
                peak
            })
            .map_err(|e| CliError::environment("cannot start the state sampler", e))?;
        Ok(Self { stop, thread })
    }

    pub(crate) fn stop(self) -> Result<StatePeak, CliError> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| CliError::environment("sampling state", "the sampler thread panicked"))
    }
}

/// Runs DATAGEN into a materialized view in a throwaway database and reads the bids back
/// as one batch.
fn generate_bids(events: u64, workers: usize) -> Result<RecordBatch, CliError> {
    generate_table("bid", events, workers)
}

/// Runs DATAGEN's Nexmark `table` into a materialized view in a throwaway database and
/// reads it back as one batch, in event-time order.
pub(crate) fn generate_table(
    table: &str,
    events: u64,
    workers: usize,
) -> Result<RecordBatch, CliError> {
    let db = LaminarDB::builder().workers(workers).in_memory()?;
    db.execute(&format!(
        "CREATE SOURCE g FROM DATAGEN (kind = 'nexmark', table = '{table}', events = '{events}', seed = '1')"
    ))?;
    db.execute("CREATE MATERIALIZED VIEW all_rows AS SELECT * FROM g")?;
    wait_finished(&db, "generating the input")?;
    // Event-time order, as a live source would deliver them (the view holds the
    // generator's partitions interleaved).
    let batches = db.query("SELECT * FROM all_rows ORDER BY date_time")?;
    let Some(first) = batches.first() else {
        return Err(CliError::environment(
            "generating the input",
            format!("{events} events gave no {table} rows; use more --events"),
        ));
    };
    concat_batches(&first.schema(), &batches)
        .map_err(|e| CliError::environment("generating the input", e))
}

/// `batch` cut into consecutive batches of at most `rows` rows (zero-copy slices).
pub(crate) fn slices(batch: &RecordBatch, rows: usize) -> Vec<RecordBatch> {
    (0..batch.num_rows())
        .step_by(rows)
        .map(|offset| batch.slice(offset, rows.min(batch.num_rows() - offset)))
        .collect()
}

/// A thread counting the rows of `subscription` until it ends; it returns the count and
/// its own on-core time.
pub(crate) fn spawn_counter(
    mut subscription: Subscription,
) -> Result<JoinHandle<(u64, Option<Duration>)>, CliError> {
    std::thread::Builder::new()
        .name("bench-count".into())
        .spawn(move || {
            let mut rows = 0_u64;
            while let Some(batch) = subscription.next_blocking() {
                rows += batch.num_rows() as u64;
            }
            (rows, thread_cpu::current())
        })
        .map_err(|e| CliError::environment("cannot start the counting thread", e))
}

/// Waits until every query of `db` finished, failing on a query error or after
/// [`PHASE_TIMEOUT`].
pub(crate) fn wait_finished(db: &LaminarDB, phase: &'static str) -> Result<(), CliError> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        if db.wait_finished(POLL_INTERVAL) {
            return Ok(());
        }
        if let Some(message) = db.metrics().first_error() {
            return Err(CliError::environment(phase, message));
        }
        if Instant::now() >= deadline {
            return Err(CliError::environment(
                phase,
                format!("not finished after {}", units::elapsed(PHASE_TIMEOUT)),
            ));
        }
    }
}

fn report(options: &FilterOptions, outcome: &Outcome) -> Result<(), CliError> {
    let seconds = outcome.elapsed.as_secs_f64();
    let per_second = if seconds > 0.0 {
        outcome.rows_in as f64 / seconds
    } else {
        0.0
    };
    let build = if cfg!(debug_assertions) {
        "dev (debug assertions on: far slower than a release build)"
    } else {
        "release"
    };
    let state = outcome.state;
    let bytes_per_group = state
        .bytes
        .checked_div(state.entries)
        .map_or_else(|| "(no state)".to_string(), units::count);
    let entries = [
        ("benchmark", options.kind.title().to_string()),
        ("query", options.kind.query().to_string()),
        ("build", build.to_string()),
        ("workers", options.workers.to_string()),
        ("events generated", units::count(options.events)),
        ("events in (bids)", units::count(outcome.rows_in)),
        ("batch rows", units::count(options.batch_rows as u64)),
        ("elapsed", units::elapsed(outcome.elapsed)),
        ("of which pushing", units::elapsed(outcome.pushing)),
        (
            "busy per worker",
            outcome
                .busy
                .iter()
                .map(|b| units::elapsed(*b))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("on-core time", outcome.cpu.describe()),
        ("events/s", units::rate(per_second)),
        (
            "events/s per worker",
            units::rate(per_second / options.workers as f64),
        ),
        ("rows out", units::count(outcome.rows_out)),
        ("late rows dropped", units::count(outcome.late_rows)),
        ("peak open groups (sampled)", units::count(state.entries)),
        ("state bytes at that peak", units::count(state.bytes)),
        ("state bytes per open group", bytes_per_group),
    ]
    .map(|(key, value)| (key.to_string(), value));
    let text = table::key_values(("metric", "value"), &entries)
        .map_err(|e| CliError::environment("formatting the report", e))?;
    println!("{text}");
    if cfg!(debug_assertions) {
        println!("note: this is a dev build; measure with `cargo run --release -p laminar-cli -- bench ...`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn slices_cover_the_batch_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from((0..10).collect::<Vec<i64>>()))],
        )
        .expect("one Int64 column matches its schema");
        let sizes: Vec<usize> = slices(&batch, 4)
            .iter()
            .map(RecordBatch::num_rows)
            .collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert!(slices(&batch.slice(0, 0), 4).is_empty());
    }
}
