//! `laminardb bench latency`: push-to-subscriber latency of a stateless stream. Rows are
//! pushed one per batch at a fixed rate, each carrying the time it was pushed; a subscriber
//! records, for every row, how long after its push it arrived. The report gives the
//! percentiles over every row after a warm-up.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use laminar_db::{CallbackSubscription, LaminarDB, Subscription};

use crate::error::CliError;
use crate::{table, units};

/// The measured stream: a filter and a projection over the pushed rows.
const LATENCY_QUERY: &str = "SELECT seq, pushed_ns, seq * 2 AS doubled FROM pings WHERE seq >= 0";
/// Rows at the start not counted (caches, first allocations, thread start-up).
const WARM_UP_ROWS: usize = 1_000;

/// Options of `bench latency`.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// Rows pushed per second.
    pub rate: u64,
    /// How long to push.
    pub duration: Duration,
    /// Worker threads of the measured database.
    pub workers: usize,
    /// Receive through a callback subscription instead of a subscriber thread.
    pub callback: bool,
    /// The workers' idle spin, if not the default.
    pub idle_spin: Option<Duration>,
}

/// How the rows come back: a thread reading a subscription, or a callback on the worker.
enum Receiving {
    Thread(JoinHandle<Vec<u64>>),
    Callback(CallbackSubscription, Arc<Mutex<Vec<u64>>>),
}

impl Receiving {
    fn start(
        db: &LaminarDB,
        callback: bool,
        started: Instant,
        rows_total: usize,
    ) -> Result<Self, CliError> {
        if !callback {
            let thread = spawn_receiver(db.subscribe("echoed")?, started, rows_total)?;
            return Ok(Self::Thread(thread));
        }
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(rows_total)));
        let recorded = Arc::clone(&latencies);
        let subscription = db.subscribe_callback("echoed", move |change| {
            let arrived_ns = started.elapsed().as_nanos();
            let mut recorded = recorded.lock().unwrap_or_else(PoisonError::into_inner);
            record(change.batch(), arrived_ns, &mut recorded);
        })?;
        Ok(Self::Callback(subscription, latencies))
    }

    /// Every row's latency, once all `rows_total` arrived (the source has ended).
    fn finish(self, rows_total: usize) -> Result<Vec<u64>, CliError> {
        match self {
            Self::Thread(thread) => thread
                .join()
                .map_err(|_| CliError::environment("receiving", "the subscriber thread panicked")),
            Self::Callback(subscription, latencies) => {
                let deadline = Instant::now() + RECEIVE_TIMEOUT;
                while latencies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len()
                    < rows_total
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(subscription);
                let mut latencies = latencies.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(std::mem::take(&mut *latencies))
            }
        }
    }
}

/// How long the callback receiver waits for the last rows after the pushes.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Appends the latency of every row of `batch` (its `pushed_ns` column) arriving at
/// `arrived_ns`.
fn record(batch: &RecordBatch, arrived_ns: u128, latencies: &mut Vec<u64>) {
    let Some(pushed) = batch.column(1).as_any().downcast_ref::<Int64Array>() else {
        return;
    };
    for row in 0..pushed.len() {
        let pushed_ns = u128::try_from(pushed.value(row)).unwrap_or(0);
        let latency = arrived_ns.saturating_sub(pushed_ns);
        latencies.push(u64::try_from(latency).unwrap_or(u64::MAX));
    }
}

/// Runs the latency benchmark and prints its report.
pub fn latency(options: &LatencyOptions) -> Result<(), CliError> {
    let rows_total = usize::try_from(
        options
            .rate
            .saturating_mul(options.duration.as_millis() as u64)
            / 1_000,
    )
    .unwrap_or(usize::MAX);
    if rows_total <= WARM_UP_ROWS {
        return Err(CliError::environment(
            "bench latency",
            format!(
                "{rows_total} rows is too few: more than {WARM_UP_ROWS} are needed (raise --rate or --for)"
            ),
        ));
    }
    let mut builder = LaminarDB::builder().workers(options.workers);
    if let Some(spin) = options.idle_spin {
        builder = builder.idle_spin(spin);
    }
    let db = builder.in_memory()?;
    db.execute("CREATE SOURCE pings (seq BIGINT NOT NULL, pushed_ns BIGINT NOT NULL)")?;
    db.execute(&format!("CREATE STREAM echoed AS {LATENCY_QUERY}"))?;
    let started = Instant::now();
    let receiver = Receiving::start(&db, options.callback, started, rows_total)?;
    let source = db.source("pings")?;
    let schema = source.schema();
    fine_timer_slack();
    let interval = Duration::from_secs_f64(1.0 / options.rate.max(1) as f64);
    for seq in 0..rows_total {
        // Paced by sleeping, as an application pushing at a rate would: spinning or
        // yielding would take a core from the worker and the subscriber.
        let due = interval.mul_f64(seq as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        source.push(ping(&schema, seq, started)?)?;
    }
    source.finish()?;
    let mut latencies = receiver.finish(rows_total)?;
    let pushed_for = started.elapsed();
    if latencies.len() != rows_total {
        return Err(CliError::environment(
            "bench latency",
            format!("{} of {rows_total} rows arrived", latencies.len()),
        ));
    }
    let mut measured = latencies.split_off(WARM_UP_ROWS);
    measured.sort_unstable();
    report(options, &measured, pushed_for)
}

/// One row: its sequence number and the nanoseconds since `started` at its push.
fn ping(schema: &SchemaRef, seq: usize, started: Instant) -> Result<RecordBatch, CliError> {
    let pushed_ns = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            Arc::new(Int64Array::from(vec![seq])),
            Arc::new(Int64Array::from(vec![pushed_ns])),
        ],
    )
    .map_err(|e| CliError::environment("building a row", e))
}

/// Receives every row on its own thread; returns each row's latency in nanoseconds, in
/// arrival order.
fn spawn_receiver(
    mut subscription: Subscription,
    started: Instant,
    rows_total: usize,
) -> Result<JoinHandle<Vec<u64>>, CliError> {
    std::thread::Builder::new()
        .name("bench-receive".into())
        .spawn(move || {
            let mut latencies = Vec::with_capacity(rows_total);
            while let Some(change) = subscription.next_blocking() {
                let arrived_ns = started.elapsed().as_nanos();
                record(change.batch(), arrived_ns, &mut latencies);
            }
            latencies
        })
        .map_err(|e| CliError::environment("cannot start the subscriber thread", e))
}

/// The value at quantile `q` (0..=1) of sorted `values`.
fn quantile(values: &[u64], q: f64) -> u64 {
    let Some(last) = values.len().checked_sub(1) else {
        return 0;
    };
    let index = ((last as f64) * q).round() as usize;
    values[index.min(last)]
}

fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1_000.0)
}

fn report(
    options: &LatencyOptions,
    sorted_ns: &[u64],
    pushed_for: Duration,
) -> Result<(), CliError> {
    let build = if cfg!(debug_assertions) {
        "dev (debug assertions on: far slower than a release build)"
    } else {
        "release"
    };
    let entries = [
        (
            "benchmark",
            "push-to-subscriber latency, one row per push".to_string(),
        ),
        ("query", LATENCY_QUERY.to_string()),
        ("build", build.to_string()),
        ("workers", options.workers.to_string()),
        (
            "worker idle spin",
            options
                .idle_spin
                .map_or_else(|| "default".to_string(), |spin| format!("{spin:?}")),
        ),
        (
            "received by",
            if options.callback {
                "callback on the worker"
            } else {
                "subscriber thread"
            }
            .to_string(),
        ),
        ("target rate", format!("{}/s", units::count(options.rate))),
        ("rows measured", units::count(sorted_ns.len() as u64)),
        ("pushed for", units::elapsed(pushed_for)),
        ("p50", micros(quantile(sorted_ns, 0.50))),
        ("p99", micros(quantile(sorted_ns, 0.99))),
        ("p99.9", micros(quantile(sorted_ns, 0.999))),
        ("max", micros(sorted_ns.last().copied().unwrap_or(0))),
    ]
    .map(|(key, value)| (key.to_string(), value));
    let text = table::key_values(("metric", "value"), &entries)
        .map_err(|e| CliError::environment("formatting the report", e))?;
    println!("{text}");
    Ok(())
}

/// Lets this thread's sleeps end within a microsecond of their due time (Linux wakes a
/// sleeper up to 50 µs late by default, more than the interval between pushes).
#[allow(unsafe_code)]
fn fine_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches only this thread's
    // timer slack; a refusal leaves the default, which only makes pacing coarser.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000_u64);
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_of_sorted_values() {
        let values: Vec<u64> = (1..=1_000).collect();
        assert_eq!(quantile(&values, 0.5), 501);
        assert_eq!(quantile(&values, 0.99), 990);
        assert_eq!(quantile(&values, 0.999), 999);
        assert_eq!(quantile(&values, 1.0), 1_000);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
