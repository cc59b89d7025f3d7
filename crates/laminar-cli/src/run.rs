//! `laminardb run FILE.sql`: executes a script statement by statement, prints the live rows
//! of every stream and view it creates and the result of every `SELECT`, then waits until
//! the pipeline finishes (bounded sources read to their end, every result delivered), Ctrl-C
//! is pressed or `--for` elapses, showing a progress line on stderr meanwhile.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use laminar_db::{ExecuteResult, LaminarDB, Metrics, ObjectKind};

use crate::console::Console;
use crate::error::CliError;
use crate::interrupt::Interrupt;
use crate::printer::Printer;
use crate::progress::{self, Outcome, ProgressMeter};
use crate::script::{self, ScriptStatement};
use crate::table;

/// How often the wait loop checks for completion, Ctrl-C and `--for`.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Progress refresh when stderr is a terminal (redrawn in place).
const PROGRESS_INTERVAL_TERMINAL: Duration = Duration::from_secs(1);
/// Progress refresh when stderr is a file or pipe (one line each time).
const PROGRESS_INTERVAL_LOG: Duration = Duration::from_secs(5);

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The SQL script.
    pub file: PathBuf,
    /// Worker threads (default: the database's default, one per core).
    pub workers: Option<usize>,
    /// Stop after this long, even if the pipeline has not finished.
    pub duration: Option<Duration>,
    /// Do not print the rows of streams and views.
    pub quiet: bool,
    /// Keep the catalog in this directory instead of in memory.
    pub data_dir: Option<PathBuf>,
}

/// Runs the script; `Ok` when the pipeline finished, was interrupted or ran for `--for`.
pub fn run(options: &RunOptions) -> Result<(), CliError> {
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let sql = std::fs::read_to_string(&options.file).map_err(|source| CliError::ReadScript {
        path: options.file.display().to_string(),
        source,
    })?;
    let statements = script::split(&sql);
    check_syntax(&statements)?;

    let interrupt = Interrupt::install()?;
    let db = open(options)?;
    let console = Arc::new(Console::new());
    let mut printers = Vec::new();
    let mut stopped = None;
    // Files and generators start reading once every statement ran, so each view, sink and
    // printed subscription of the pipeline sees every row.
    let hold = db.hold_sources();
    for (i, statement) in statements.iter().enumerate() {
        if let Some(outcome) = stop_requested(&interrupt, deadline) {
            stopped = Some(outcome);
            break;
        }
        let failed = |source| CliError::Statement {
            index: i + 1,
            line: statement.line,
            source,
        };
        match db.execute(&statement.positioned_text()).map_err(failed)? {
            ExecuteResult::Created {
                kind: ObjectKind::Stream | ObjectKind::MaterializedView,
                name,
            } if !options.quiet => {
                // Sources are held until the script ran, so no row precedes this subscription.
                let subscription = db.subscribe(&name).map_err(failed)?;
                printers.push(Printer::spawn(subscription, Arc::clone(&console))?);
            }
            result @ ExecuteResult::Rows { .. } => print_result(&result, i + 1, &console),
            _ => {}
        }
    }

    drop(hold);
    let mut failures = FailureLog::default();
    let outcome = if let Some(outcome) = stopped {
        outcome
    } else {
        // Nobody else will push: ending push sources lets pipelines over them complete.
        db.finish_push_sources()?;
        wait(&db, &console, &interrupt, deadline, started, &mut failures)
    };
    console.clear_progress();
    let metrics = db.metrics();
    for printer in printers {
        // A finished stream has ended, so its printer stops after printing its last rows;
        // the others would wait forever (they are left to end with the process).
        let ended = metrics
            .queries
            .iter()
            .any(|q| q.name == printer.name() && q.finished);
        if ended {
            printer.join();
        }
    }
    failures.report_new(&metrics, &console);
    for line in progress::summary(&metrics, outcome, started.elapsed()) {
        console.message(&line);
    }
    report_source_errors(&metrics, &console);
    if failures.count() > 0 {
        return Err(CliError::QueriesFailed {
            failed: failures.count(),
            total: metrics.queries.len(),
        });
    }
    Ok(())
}

/// Prints a `SELECT`, `SHOW`, `DESCRIBE` or `EXPLAIN` result as a table and its row count.
fn print_result(result: &ExecuteResult, index: usize, console: &Console) {
    let ExecuteResult::Rows { schema, batches } = result else {
        return;
    };
    match table::result(schema, batches) {
        Ok(text) => {
            console.print(&format!("{text}\n({})", result.message()));
        }
        Err(e) => console.message(&format!(
            "error: cannot format the result of statement {index}: {e}"
        )),
    }
}

/// Parses every statement before any runs, so a typo late in a script does not leave a
/// half-started pipeline behind.
fn check_syntax(statements: &[ScriptStatement]) -> Result<(), CliError> {
    for (i, statement) in statements.iter().enumerate() {
        LaminarDB::split_statements(&statement.positioned_text()).map_err(|source| {
            CliError::Statement {
                index: i + 1,
                line: statement.line,
                source,
            }
        })?;
    }
    Ok(())
}

fn open(options: &RunOptions) -> Result<LaminarDB, CliError> {
    open_database(options.workers, options.data_dir.as_deref())
}

/// Opens the database the command line asks for: in `data_dir` if given, else in memory.
pub fn open_database(
    workers: Option<usize>,
    data_dir: Option<&std::path::Path>,
) -> Result<LaminarDB, CliError> {
    let mut builder = LaminarDB::builder();
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    Ok(match data_dir {
        Some(dir) => builder.open(dir)?,
        None => builder.in_memory()?,
    })
}

fn stop_requested(interrupt: &Interrupt, deadline: Option<Instant>) -> Option<Outcome> {
    if interrupt.requested() {
        Some(Outcome::Interrupted)
    } else if deadline.is_some_and(|d| Instant::now() >= d) {
        Some(Outcome::TimeUp)
    } else {
        None
    }
}

/// Waits until every query finished or failed, for Ctrl-C or for the deadline, refreshing
/// the progress line and reporting failures as they happen. A failed query stops alone, so
/// the others still run to their end.
fn wait(
    db: &LaminarDB,
    console: &Console,
    interrupt: &Interrupt,
    deadline: Option<Instant>,
    started: Instant,
    failures: &mut FailureLog,
) -> Outcome {
    let refresh = if console.stderr_is_terminal() {
        PROGRESS_INTERVAL_TERMINAL
    } else {
        PROGRESS_INTERVAL_LOG
    };
    let mut meter = ProgressMeter::new(started);
    let mut next_refresh = Instant::now() + refresh;
    loop {
        let metrics = db.metrics();
        failures.report_new(&metrics, console);
        if metrics
            .queries
            .iter()
            .all(|q| q.finished || q.error.is_some())
        {
            return if failures.count() == 0 {
                Outcome::Finished
            } else {
                Outcome::Failed
            };
        }
        if let Some(outcome) = stop_requested(interrupt, deadline) {
            return outcome;
        }
        let now = Instant::now();
        if now >= next_refresh {
            console.progress(&meter.line(&metrics, now));
            next_refresh = now + refresh;
        }
        let tick = deadline.map_or(POLL_INTERVAL, |d| {
            POLL_INTERVAL.min(d.saturating_duration_since(now))
        });
        // Returns early when everything finishes; otherwise it is the loop's pause.
        db.wait_finished(tick);
    }
}

/// The queries whose failure has been printed.
#[derive(Debug, Default)]
struct FailureLog {
    reported: Vec<String>,
}

impl FailureLog {
    /// Prints `error: ...` for each query that failed since the last call.
    fn report_new(&mut self, metrics: &Metrics, console: &Console) {
        for query in &metrics.queries {
            let Some(message) = &query.error else {
                continue;
            };
            if !self.reported.contains(&query.name) {
                console.message(&format!(
                    "error: {} {} failed: {message}",
                    query.kind.noun(),
                    query.name
                ));
                self.reported.push(query.name.clone());
            }
        }
    }

    fn count(&self) -> usize {
        self.reported.len()
    }
}

/// Prints source errors as warnings: the pipeline went on (malformed records are skipped),
/// and a connector failure that broke a query was reported with that query.
fn report_source_errors(metrics: &Metrics, console: &Console) {
    let query_errors: Vec<&str> = metrics
        .queries
        .iter()
        .filter_map(|q| q.error.as_deref())
        .collect();
    for source in &metrics.sources {
        if let Some(message) = source.first_error.as_deref() {
            if !query_errors.contains(&message) {
                console.message(&format!("warning: source {}: {message}", source.name));
            }
        }
    }
}
