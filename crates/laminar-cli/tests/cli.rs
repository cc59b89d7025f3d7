//! End-to-end tests of the `laminardb` binary: scripts written to a temporary directory are
//! run as a child process, which must exit within a deadline with the expected status and
//! output.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Generous: a dev build on a busy two-core machine.
const DEADLINE: Duration = Duration::from_secs(120);
/// How often the deadline loop checks whether the child exited.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn laminardb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_laminardb"))
}

fn script(dir: &Path, name: &str, sql: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, sql).expect("write the script to the temp dir");
    path
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        // A read error ends the capture; the assertions then show what arrived.
        let _ = from.read_to_string(&mut text);
        text
    })
}

/// Runs `command` to completion, killing it (and failing) after `deadline`.
fn finish(mut command: Command, stdin: Option<&str>, deadline: Duration) -> Finished {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start laminardb");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .expect("write the child's stdin");
    }
    wait(child, deadline)
}

fn wait(mut child: Child, deadline: Duration) -> Finished {
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            break Some(status);
        }
        if Instant::now() >= until {
            // Already exited or killed: either way it is gone.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let finished = Finished {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        status.is_some(),
        "laminardb did not exit within {deadline:?}: {finished:?}"
    );
    finished
}

/// The data rows of the text tables in `output`, as trimmed cells.
fn table_rows(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

fn count_row(rows: &[Vec<String>], expected: &[&str]) -> usize {
    rows.iter().filter(|row| *row == expected).count()
}

#[test]
fn run_prints_view_rows_and_select_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = script(
        dir.path(),
        "pipeline.sql",
        "-- a push source, a view over it, three rows and a snapshot read\n\
         CREATE SOURCE bids (auction BIGINT, price BIGINT, ts TIMESTAMP);\n\
         CREATE MATERIALIZED VIEW big_bids AS\n\
           SELECT auction, price * 2 AS doubled FROM bids WHERE price > 100;\n\
         INSERT INTO bids VALUES (1, 50, '2024-01-01 00:00:00'),\n\
                                 (2, 150, '2024-01-01 00:00:01'),\n\
                                 (3, 300, '2024-01-01 00:00:02');\n\
         SELECT auction, doubled FROM big_bids ORDER BY auction;\n",
    );
    let mut command = laminardb();
    command.arg("run").arg(&path).args(["--workers", "2"]);
    let out = finish(command, None, DEADLINE);

    assert_eq!(out.code, Some(0), "{out:?}");
    let rows = table_rows(&out.stdout);
    // Once live from the subscription, once from the SELECT.
    assert_eq!(count_row(&rows, &["2", "300"]), 2, "{out:?}");
    assert_eq!(count_row(&rows, &["3", "600"]), 2, "{out:?}");
    assert_eq!(count_row(&rows, &["1", "100"]), 0, "{out:?}");
    assert_eq!(count_row(&rows, &["auction", "doubled"]), 2, "{out:?}");
    assert!(
        out.stdout.lines().any(|l| l == "big_bids"),
        "live rows are headed by the view: {out:?}"
    );
    assert!(out.stderr.contains("finished after"), "{out:?}");
    assert!(
        out.stderr
            .contains("materialized view big_bids: finished, 2 rows"),
        "{out:?}"
    );
}

#[test]
fn run_quiet_prints_only_select_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = script(
        dir.path(),
        "quiet.sql",
        "CREATE SOURCE s (n BIGINT);\n\
         CREATE STREAM doubled AS SELECT n * 2 AS twice FROM s;\n\
         INSERT INTO s VALUES (21);\n\
         SELECT 7 AS seven;\n",
    );
    let mut command = laminardb();
    command.arg("run").arg(&path).arg("--quiet");
    let out = finish(command, None, DEADLINE);

    assert_eq!(out.code, Some(0), "{out:?}");
    let rows = table_rows(&out.stdout);
    assert_eq!(
        rows,
        vec![vec!["seven".to_string()], vec!["7".to_string()]],
        "{out:?}"
    );
    assert!(
        out.stderr.contains("stream doubled: finished, 1 rows"),
        "{out:?}"
    );
}

#[test]
fn run_reports_a_syntax_error_with_its_statement_and_line_before_running_anything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = script(
        dir.path(),
        "typo.sql",
        "CREATE SOURCE s (n BIGINT);\n\
         \n\
         -- the second statement is misspelt\n\
         CREATE STREEM t AS SELECT n FROM s;\n\
         SELECT 1 AS never_printed;\n",
    );
    let mut command = laminardb();
    command.arg("run").arg(&path);
    let out = finish(command, None, DEADLINE);

    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.starts_with("error: statement 2 (line 4): "),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("Line: 4"),
        "the parser's position is the file's: {out:?}"
    );
    assert!(!out.stdout.contains("never_printed"), "{out:?}");
}

#[test]
fn run_reports_a_failing_statement_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = script(
        dir.path(),
        "unknown.sql",
        "CREATE SOURCE s (n BIGINT);\nCREATE STREAM t AS SELECT n FROM nowhere;\n",
    );
    let mut command = laminardb();
    command.arg("run").arg(&path);
    let out = finish(command, None, DEADLINE);

    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.starts_with("error: statement 2 (line 2): "),
        "{out:?}"
    );
    assert!(out.stderr.contains("nowhere"), "{out:?}");
}

#[test]
fn run_exits_1_when_a_query_fails_while_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = script(
        dir.path(),
        "failing.sql",
        "CREATE SOURCE nums (n BIGINT, d BIGINT);\n\
         CREATE MATERIALIZED VIEW ratios AS SELECT n / d AS r FROM nums;\n\
         CREATE MATERIALIZED VIEW copies AS SELECT n FROM nums;\n\
         INSERT INTO nums VALUES (1, 0);\n",
    );
    let mut command = laminardb();
    command.arg("run").arg(&path);
    let out = finish(command, None, DEADLINE);

    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("materialized view ratios: failed"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("error: materialized view ratios failed: "),
        "{out:?}"
    );
    // A failed query stops alone: the other one still runs to its end.
    assert!(
        out.stderr
            .contains("materialized view copies: finished, 1 rows"),
        "{out:?}"
    );
    assert_eq!(
        table_rows(&out.stdout),
        vec![vec!["n".to_string()], vec!["1".to_string()]],
        "{out:?}"
    );
    assert!(
        out.stderr
            .trim_end()
            .ends_with("error: 1 of 2 queries failed"),
        "{out:?}"
    );
}

#[test]
fn run_with_a_data_dir_keeps_the_catalog() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let create = script(dir.path(), "create.sql", "CREATE SOURCE kept (n BIGINT);\n");
    let show = script(dir.path(), "show.sql", "SHOW SOURCES;\n");
    for (path, expected) in [(&create, None), (&show, Some("kept"))] {
        let mut command = laminardb();
        command.arg("run").arg(path).arg("--data-dir").arg(&data);
        let out = finish(command, None, DEADLINE);
        assert_eq!(out.code, Some(0), "{out:?}");
        if let Some(name) = expected {
            let rows = table_rows(&out.stdout);
            assert!(
                rows.iter()
                    .any(|row| row.first().map(String::as_str) == Some(name)),
                "{out:?}"
            );
        }
    }
}

#[test]
fn run_with_a_data_dir_resumes_and_refuses_a_changed_definition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let input = dir.path().join("in.csv");
    let mut csv = String::from("shop,amount\n");
    for i in 0..3000 {
        writeln!(csv, "{},{}", i % 7, i % 100).expect("write to a String");
    }
    std::fs::write(&input, csv).expect("write the input");
    let out_dir = dir.path().join("out");
    let sql = |total: &str| {
        format!(
            "CREATE SOURCE sales (shop BIGINT NOT NULL, amount BIGINT NOT NULL) \
             FROM FILE (path = '{}', format = 'csv');\n\
             CREATE MATERIALIZED VIEW totals AS SELECT shop, count(*) AS n, sum(amount) AS {total} \
             FROM sales GROUP BY shop;\n\
             CREATE SINK out INTO FILE (path = '{}/', format = 'csv') FROM totals;\n\
             SELECT count(*) AS shops, sum(n) AS rows_counted FROM totals;\n",
            input.display(),
            out_dir.display()
        )
    };
    let pipeline = script(dir.path(), "pipeline.sql", &sql("total"));
    for run in 0..2 {
        let mut command = laminardb();
        command
            .arg("run")
            .arg(&pipeline)
            .arg("--data-dir")
            .arg(&data)
            .arg("--quiet");
        let out = finish(command, None, DEADLINE);
        assert_eq!(out.code, Some(0), "run {run}: {out:?}");
        // The second run resumes: the file was read to its end, nothing is read twice.
        let rows = table_rows(&out.stdout);
        if run == 1 {
            assert_eq!(count_row(&rows, &["7", "3000"]), 1, "run {run}: {out:?}");
        }
    }
    let parts = std::fs::read_dir(&out_dir).expect("sink directory").count();
    assert_eq!(parts, 1, "one committed part: the second run added no rows");
    let changed = script(dir.path(), "changed.sql", &sql("amount_total"));
    let mut command = laminardb();
    command
        .arg("run")
        .arg(&changed)
        .arg("--data-dir")
        .arg(&data);
    let out = finish(command, None, DEADLINE);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("totals exists in the data directory with another definition"),
        "{out:?}"
    );
}

#[test]
fn run_of_a_missing_file_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = laminardb();
    command.arg("run").arg(dir.path().join("absent.sql"));
    let out = finish(command, None, DEADLINE);

    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.starts_with("error: cannot read "), "{out:?}");
}

#[test]
fn run_exits_when_a_bounded_datagen_source_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = script(
        dir.path(),
        "datagen.sql",
        "CREATE SOURCE bid FROM DATAGEN (kind = 'nexmark', table = 'bid', events = '500', seed = '1');\n\
         CREATE STREAM priced AS SELECT auction, price FROM bid WHERE price > 0;\n",
    );
    let mut command = laminardb();
    command.arg("run").arg(&path).args(["--workers", "2"]);
    let out = finish(command, None, DEADLINE);

    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("finished after"), "{out:?}");
    assert!(out.stderr.contains("stream priced: finished"), "{out:?}");
}

#[test]
fn run_for_stops_an_endless_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = script(
        dir.path(),
        "endless.sql",
        "CREATE SOURCE trades FROM DATAGEN (kind = 'trades', rate = '200');\n\
         CREATE STREAM all_trades AS SELECT * FROM trades;\n",
    );
    let mut command = laminardb();
    command
        .arg("run")
        .arg(&path)
        .args(["--for", "1500ms", "--quiet"]);
    let out = finish(command, None, DEADLINE);

    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("stopped (--for elapsed)"), "{out:?}");
    assert!(out.stderr.contains("stream all_trades: running"), "{out:?}");
}

#[cfg(unix)]
#[test]
fn run_stops_cleanly_on_ctrl_c() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = script(
        dir.path(),
        "endless.sql",
        "CREATE SOURCE trades FROM DATAGEN (kind = 'trades', rate = '200');\n\
         CREATE STREAM all_trades AS SELECT * FROM trades;\n",
    );
    let mut child = laminardb()
        .arg("run")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start laminardb");
    // The first printed row proves the pipeline runs and the Ctrl-C handler is installed.
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut first_line = String::new();
    stdout
        .read_line(&mut first_line)
        .expect("read the first row");
    assert_eq!(first_line.trim(), "all_trades");
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    child.stdout = Some(stdout.into_inner());
    let out = wait(child, DEADLINE);

    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("interrupted after"), "{out:?}");
}

#[test]
fn repl_runs_multi_line_statements_and_keeps_going_after_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = "CREATE SOURCE s (n BIGINT);\n\
                 CREATE MATERIALIZED VIEW v AS\n\
                   SELECT n FROM s WHERE n > 1;\n\
                 SELECT * FROM nowhere;\n\
                 INSERT INTO s VALUES (1), (2), (3);\n\
                 SELECT n FROM v\n\
                   ORDER BY n;\n\
                 \\q\n\
                 SELECT 'not run after quit';\n";
    let mut command = laminardb();
    command.arg("repl").env("HOME", dir.path());
    let out = finish(command, Some(input), DEADLINE);

    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("CREATE SOURCE s"), "{out:?}");
    assert!(out.stdout.contains("CREATE MATERIALIZED VIEW v"), "{out:?}");
    assert!(out.stdout.contains("INSERT 3"), "{out:?}");
    assert!(
        out.stderr.contains("error: ") && out.stderr.contains("nowhere"),
        "{out:?}"
    );
    let rows = table_rows(&out.stdout);
    assert_eq!(
        rows,
        vec![
            vec!["n".to_string()],
            vec!["2".to_string()],
            vec!["3".to_string()]
        ],
        "{out:?}"
    );
    assert!(!out.stdout.contains("not run after quit"), "{out:?}");
}

#[test]
fn bench_filter_reports_throughput() {
    let mut command = laminardb();
    command.args([
        "bench",
        "filter",
        "--events",
        "5000",
        "--workers",
        "2",
        "--batch-rows",
        "1000",
    ]);
    let out = finish(command, None, DEADLINE);

    assert_eq!(out.code, Some(0), "{out:?}");
    let rows = table_rows(&out.stdout);
    let value = |metric: &str| {
        rows.iter()
            .find(|row| row.first().map(String::as_str) == Some(metric))
            .and_then(|row| row.get(1).cloned())
            .unwrap_or_else(|| panic!("no {metric} in {out:?}"))
    };
    assert_eq!(value("events generated"), "5,000");
    assert_eq!(value("workers"), "2");
    assert!(
        value("events/s")
            .chars()
            .any(|c| c.is_ascii_digit() && c != '0'),
        "{out:?}"
    );
    assert!(!value("rows out").is_empty());
}
