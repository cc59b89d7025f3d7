//! Crash test: a child process runs a windowed aggregation over rows pushed through the API
//! and a regular aggregation over a file source, both into exactly-once file sinks, with
//! frequent checkpoints, and an application following a third aggregation's changes by an
//! epoch subscription (keeping each committed epoch's changes in a file of its own, and
//! resuming after the last one). The parent kills it with SIGKILL at seeded random moments
//! and restarts it, until one run finishes; then the committed sink output and the
//! application's changes must equal those of an uninterrupted run: no acknowledged row lost,
//! none duplicated.
//!
//! The child is this test binary run again with `LAMINAR_CRASH_DIR` set (see
//! `crash_child_entry`). `LAMINAR_CRASH_KILLS` sets the number of kill points (default 20;
//! the full run uses 200).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use laminar_db::{Durability, LaminarDB, SubscriptionEvent};

/// Batches the child pushes in all, per kill point (so kills spread over the input).
const PUSHES_PER_KILL: u64 = 50;
/// Rows per pushed batch.
const ROWS_PER_PUSH: u64 = 40;
/// Rows of the file source.
const FILE_ROWS: u64 = 100_000;
/// Kill points in the default run.
const KILLS_DEFAULT: usize = 20;
/// How long one child may run before the test gives up on it.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

fn script(dir: &Path) -> Vec<String> {
    let input = dir.join("input.csv");
    let windows = dir.join("out_windows/");
    let totals = dir.join("out_totals/");
    vec![
        "CREATE SOURCE events (k BIGINT NOT NULL, v BIGINT NOT NULL, ts TIMESTAMP(3) NOT NULL, \
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)"
            .to_string(),
        format!(
            "CREATE SOURCE sales (shop BIGINT NOT NULL, amount BIGINT NOT NULL) \
             FROM FILE (path = '{}', format = 'csv')",
            input.display()
        ),
        format!(
            "CREATE SINK windows INTO FILE (path = '{}', format = 'csv') AS \
             SELECT window_start, k, count(*) AS n, sum(v) AS total \
             FROM TUMBLE(events, ts, INTERVAL '1' SECOND) GROUP BY window_start, k",
            windows.display()
        ),
        format!(
            "CREATE SINK totals INTO FILE (path = '{}', format = 'csv') AS \
             SELECT shop, count(*) AS n, sum(amount) AS total FROM sales GROUP BY shop",
            totals.display()
        ),
        "CREATE MATERIALIZED VIEW per_key WITH (output_log = 'on') AS \
         SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k"
            .to_string(),
    ]
}

/// The application's directory: `<epoch>.csv` per committed epoch, `k,n,total,weight` rows.
fn app_dir(dir: &Path) -> PathBuf {
    dir.join("app")
}

/// Follows `per_key` after the last epoch the application kept, keeping each committed
/// epoch's changes in a file of its own (written whole, then renamed into place), until the
/// subscription ends.
fn follow(dir: &Path, db: &LaminarDB) -> std::thread::JoinHandle<()> {
    let app = app_dir(dir);
    std::fs::create_dir_all(&app).expect("the application's directory");
    let last = std::fs::read_dir(&app)
        .expect("list the application's directory")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".csv")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let mut sub = db
        .subscribe_from("per_key", last)
        .expect("resume the subscription");
    std::thread::spawn(move || {
        let mut changes = String::new();
        for event in sub.blocking_iter() {
            match event {
                SubscriptionEvent::Changes(batch) => {
                    let b = batch.batch();
                    let column = |i: usize| {
                        b.column(i)
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .expect("BIGINT column")
                            .clone()
                    };
                    let (k, n, total) = (column(0), column(1), column(2));
                    for row in 0..b.num_rows() {
                        let weight = batch.weights().map_or(1, |w| w.value(row));
                        writeln!(
                            changes,
                            "{},{},{},{weight}",
                            k.value(row),
                            n.value(row),
                            total.value(row)
                        )
                        .expect("write to a String");
                    }
                }
                SubscriptionEvent::Committed(epoch) => {
                    let temp = app.join(".epoch.tmp");
                    std::fs::write(&temp, &changes).expect("write the epoch's changes");
                    std::fs::rename(&temp, app.join(format!("{epoch:020}.csv")))
                        .expect("keep the epoch");
                    changes.clear();
                }
            }
        }
        assert!(sub.error().is_none(), "{:?}", sub.error());
    })
}

/// The application's committed changes, weights applied.
fn followed(dir: &Path) -> BTreeMap<String, i64> {
    let mut rows = BTreeMap::new();
    for entry in std::fs::read_dir(app_dir(dir)).expect("the application's directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "csv") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read an epoch's changes");
        for line in text.lines() {
            let (row, weight) = line.rsplit_once(',').expect("a weight");
            *rows.entry(row.to_string()).or_insert(0) += weight.parse::<i64>().expect("weight");
        }
    }
    rows.retain(|_, n| *n != 0);
    rows
}

fn write_input(dir: &Path) {
    let mut csv = String::from("shop,amount\n");
    for i in 0..FILE_ROWS {
        writeln!(csv, "{},{}", (i * 7919) % 37, i % 1000).expect("write to a String");
    }
    std::fs::write(dir.join("input.csv"), csv).expect("write the file source's input");
}

/// Pushed batch `i`: deterministic, event times rising with `i` and a little disorder.
fn push_batch(i: u64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]));
    let rows = 0..ROWS_PER_PUSH;
    let keys: Vec<i64> = rows.clone().map(|r| ((i * 13 + r) % 11) as i64).collect();
    let values: Vec<i64> = rows.clone().map(|r| (i * 1000 + r) as i64).collect();
    let times: Vec<i64> = rows
        .map(|r| (i * 50 + (r * 37) % 400) as i64 + 1_700_000_000_000)
        .collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(keys)),
            Arc::new(Int64Array::from(values)),
            Arc::new(TimestampMillisecondArray::from(times)),
        ],
    )
    .expect("batch")
}

/// Runs the pipeline in `dir` to its end, resuming wherever an earlier run stopped.
fn run_pipeline(dir: &Path, pushes: u64, checkpoint_every: Option<Duration>, pace: Duration) {
    let db = LaminarDB::builder()
        .workers(2)
        .pin_workers(false)
        .durability(Durability::Group)
        .checkpoint_interval(checkpoint_every)
        // Killed runs restart slower than checkpoints come: keep every epoch of the test.
        .output_log_extra_epochs(100_000)
        .open(dir.join("db"))
        .expect("database opens");
    for statement in script(dir) {
        db.execute(&statement).expect("statement");
    }
    let app = follow(dir, &db);
    let source = db.source("events").expect("source events");
    for i in source.logged_pushes()..pushes {
        source.push(push_batch(i)).expect("push");
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    db.finish_push_sources().expect("finish");
    assert!(
        db.wait_finished(CHILD_TIMEOUT),
        "pipeline finishes: {:?}",
        db.metrics()
    );
    // Dropping the database takes the final checkpoint, which commits the last output,
    // and ends the subscription.
    drop(db);
    app.join().expect("the application follows to the end");
}

/// The child process's entry point (ignored in ordinary runs).
#[test]
#[ignore = "entry point of the crash test's child process"]
fn crash_child_entry() {
    let Some(dir) = std::env::var_os("LAMINAR_CRASH_DIR") else {
        return;
    };
    let pushes = std::env::var("LAMINAR_CRASH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("the parent says how many batches to push");
    run_pipeline(
        Path::new(&dir),
        pushes,
        Some(Duration::from_millis(40)),
        Duration::from_millis(2),
    );
}

/// The committed output of a sink directory: every row's net count over the part files
/// (a changelog's `op` column of `+`/`-` weighs rows; without it every row counts once).
fn committed(dir: &Path) -> BTreeMap<String, i64> {
    let mut rows = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return rows;
    };
    let mut parts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    parts.sort();
    for part in parts {
        let text = std::fs::read_to_string(&part).expect("read a part file");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let op = header.iter().position(|h| *h == "op");
        for line in lines {
            let mut fields: Vec<&str> = line.split(',').collect();
            let weight = match op {
                Some(index) => {
                    let sign = fields.remove(index);
                    if sign.starts_with('-') {
                        -1
                    } else {
                        1
                    }
                }
                None => 1,
            };
            *rows.entry(fields.join(",")).or_insert(0) += weight;
        }
    }
    rows.retain(|_, n| *n != 0);
    rows
}

/// Kills and restarts the child in `dir` until it finished once after `kills` kills;
/// returns the kills that landed before the first complete run, and the runs.
fn kill_and_restart(dir: &Path, pushes: u64, kills: usize) -> (usize, usize) {
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = 0x5eed_u64;
    let mut killed = 0;
    let mut runs = 0;
    // Kills that landed before the pipeline had finished once (the rest exercise reopening
    // a finished pipeline).
    let mut killed_midway = 0;
    let mut finished_once = false;
    loop {
        runs += 1;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_entry", "--ignored", "--nocapture"])
            .env("LAMINAR_CRASH_DIR", dir)
            .env("LAMINAR_CRASH_PUSHES", pushes.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child");
        let started = Instant::now();
        let kill_after = (killed < kills).then(|| {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // Short lives, so the kills spread over the whole input (a whole run pushes for
            // seconds).
            Duration::from_millis(40 + (rng >> 33) % 160)
        });
        let status = loop {
            if let Some(status) = child.try_wait().expect("child status") {
                break Some(status);
            }
            if kill_after.is_some_and(|after| started.elapsed() >= after) {
                child.kill().expect("SIGKILL the child");
                child.wait().expect("reap the child");
                killed += 1;
                if !finished_once {
                    killed_midway += 1;
                }
                break None;
            }
            assert!(started.elapsed() < CHILD_TIMEOUT, "child run {runs} hangs");
            std::thread::sleep(Duration::from_millis(2));
        };
        if let Some(status) = status {
            assert!(status.success(), "child run {runs} failed: {status}");
            finished_once = true;
            if killed >= kills {
                return (killed_midway, runs);
            }
        }
    }
}

/// Compares a sink's committed output with the oracle's; on a difference, fails with
/// examples (keeping the data directory when `LAMINAR_CRASH_KEEP` is set).
fn compare_sink(oracle: &Path, dir: tempfile::TempDir, sink: &str) -> tempfile::TempDir {
    let expected = committed(&oracle.join(sink));
    let actual = committed(&dir.path().join(sink));
    assert!(!expected.is_empty(), "the oracle's {sink} has rows");
    let lost = expected
        .iter()
        .filter(|(row, n)| actual.get(*row) != Some(n))
        .count();
    let extra = actual
        .iter()
        .filter(|(row, n)| expected.get(*row) != Some(n))
        .count();
    if (lost, extra) == (0, 0) {
        return dir;
    }
    let sample: Vec<String> = expected
        .iter()
        .filter(|(row, n)| actual.get(*row) != Some(n))
        .take(40)
        .map(|(row, n)| format!("{row}: expected {n}, got {:?}", actual.get(row)))
        .chain(
            actual
                .iter()
                .filter(|(row, _)| !expected.contains_key(*row))
                .take(40)
                .map(|(row, n)| format!("{row}: unexpected, {n} times")),
        )
        .collect();
    if std::env::var_os("LAMINAR_CRASH_KEEP").is_some() {
        // For a post-mortem of the data directory and sink output.
        eprintln!("crash test: keeping {}", dir.path().display());
        std::mem::forget(dir);
    }
    panic!("{sink}: {lost} rows lost or miscounted, {extra} rows extra or miscounted; e.g. {sample:#?}");
}

#[test]
fn killed_at_random_points_the_output_equals_an_uninterrupted_run() {
    let kills: usize = std::env::var("LAMINAR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS_DEFAULT);
    let pushes = PUSHES_PER_KILL * kills.max(20) as u64;
    let oracle_dir = tempfile::tempdir().expect("temp dir");
    write_input(oracle_dir.path());
    run_pipeline(oracle_dir.path(), pushes, None, Duration::ZERO);

    let mut dir = tempfile::tempdir().expect("temp dir");
    write_input(dir.path());
    let (killed_midway, runs) = kill_and_restart(dir.path(), pushes, kills);
    eprintln!(
        "crash test: {kills} kills ({killed_midway} before the first complete run) over {runs} runs"
    );
    assert!(
        killed_midway * 2 >= kills,
        "most kills should land while rows flow: {killed_midway} of {kills}"
    );
    for sink in ["out_windows", "out_totals"] {
        dir = compare_sink(oracle_dir.path(), dir, sink);
    }
    let expected = followed(oracle_dir.path());
    let actual = followed(dir.path());
    assert!(!expected.is_empty(), "the oracle's application has rows");
    assert!(
        actual.values().all(|n| *n == 1),
        "every committed change once: {actual:?}"
    );
    assert_eq!(actual, expected, "the application's committed changes");
}
