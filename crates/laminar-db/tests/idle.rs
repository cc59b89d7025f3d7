//! Idle sources through the public API. A source whose partitions produce no row for its
//! `idle_timeout` no longer holds back the operators that merge it with other inputs (the
//! UNION, the exchange in front of an aggregate), so windows over the other inputs keep
//! closing; without the timeout they wait for it. When it resumes, its rows follow the
//! usual late rules. A worker that holds no partition of a source never holds it back.

use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use laminar_db::{ExecuteResult, LaminarDB, SourceStats};

/// Longest wait for something that happens on processing time.
const WAIT: Duration = Duration::from_secs(30);

fn db(workers: usize) -> LaminarDB {
    LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database starts")
}

/// Every row of `batches`, its cells separated by spaces.
fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            lines.push(cells.join(" "));
        }
    }
    lines
}

fn query(db: &LaminarDB, sql: &str) -> Vec<String> {
    lines(&db.query(sql).expect("query runs"))
}

/// `SHOW WATERMARKS` as `name watermark late_rows` lines.
fn watermarks(db: &LaminarDB) -> Vec<String> {
    let ExecuteResult::Rows { batches, .. } = db.execute("SHOW WATERMARKS").expect("shows") else {
        panic!("SHOW WATERMARKS returns rows");
    };
    let mut shown = Vec::new();
    for batch in &batches {
        let column = |name: &str| {
            let values = batch.column_by_name(name).expect("column");
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(values.as_ref(), &options).expect("formatter");
            (0..batch.num_rows())
                .map(|row| formatter.value(row).to_string())
                .collect::<Vec<_>>()
        };
        let (names, marks, late) = (column("name"), column("watermark"), column("late_rows"));
        for row in 0..batch.num_rows() {
            shown.push(format!("{} {} {}", names[row], marks[row], late[row]));
        }
    }
    shown
}

fn source_stats(db: &LaminarDB, name: &str) -> SourceStats {
    db.metrics()
        .sources
        .into_iter()
        .find(|s| s.name == name)
        .expect("source exists")
}

/// Waits until `done` holds, checking often; fails the test after `WAIT`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(1);
    while !done() {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

const PER_WINDOW: &str = "CREATE MATERIALIZED VIEW per_window AS
    SELECT count(*) AS n, window_start
    FROM TUMBLE((SELECT * FROM a UNION ALL SELECT * FROM b), ts, INTERVAL '10' SECOND)
    GROUP BY window_start, window_end
    EMIT ON WINDOW CLOSE";

const PER_WINDOW_ROWS: &str = "SELECT * FROM per_window ORDER BY window_start";

/// Sources `a` and `b` (`b` with the given `WITH` clause) and the view over their union.
fn union_of(workers: usize, b_options: &str) -> LaminarDB {
    let db = db(workers);
    db.execute("CREATE SOURCE a (k BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts)")
        .expect("a");
    db.execute(&format!(
        "CREATE SOURCE b (k BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts) {b_options}"
    ))
    .expect("b");
    db.execute(PER_WINDOW).expect("view");
    db
}

#[test]
fn without_idle_timeout_a_silent_input_holds_the_union_back() {
    for workers in [1, 4] {
        let db = union_of(workers, "");
        db.execute("INSERT INTO b VALUES (1, '2024-01-01 00:00:01')")
            .expect("b");
        db.execute("INSERT INTO a VALUES (1, '2024-01-01 00:00:02'), (2, '2024-01-01 00:00:25')")
            .expect("a");
        // Nothing runs on processing time here: once the rows are processed, [0, 10) stays
        // open because b's watermark (00:00:01) holds the union back.
        db.sync().expect("sync");
        assert!(query(&db, PER_WINDOW_ROWS).is_empty(), "{workers} workers");
        assert_eq!(
            watermarks(&db),
            [
                "a 2024-01-01 00:00:25.000 0",
                "b 2024-01-01 00:00:01.000 0",
                "per_window 2024-01-01 00:00:01.000 0"
            ],
            "{workers} workers"
        );
        assert!(!source_stats(&db, "b").idle);
    }
}

#[test]
fn windows_keep_closing_while_the_other_union_input_is_idle() {
    for workers in [1, 4] {
        let db = union_of(workers, "WITH (idle_timeout = '200ms')");
        db.execute("INSERT INTO b VALUES (1, '2024-01-01 00:00:01')")
            .expect("b");
        db.execute("INSERT INTO a VALUES (1, '2024-01-01 00:00:02'), (2, '2024-01-01 00:00:25')")
            .expect("a");
        // b has been silent for its timeout: the union follows a alone, to 00:00:25.
        wait_for("[0, 10) to close", || {
            !query(&db, PER_WINDOW_ROWS).is_empty()
        });
        assert_eq!(
            query(&db, PER_WINDOW_ROWS),
            ["2 2024-01-01T00:00:00"],
            "{workers} workers"
        );
        assert!(source_stats(&db, "b").idle);
        assert_eq!(
            watermarks(&db),
            [
                "a 2024-01-01 00:00:25.000 0",
                "b 2024-01-01 00:00:01.000 (idle) 0",
                "per_window 2024-01-01 00:00:25.000 0"
            ],
            "{workers} workers"
        );

        // b resumes. 00:00:05 is on time for b (its own watermark is 00:00:01) but its
        // window closed meanwhile: the view drops and counts it.
        db.execute("INSERT INTO b VALUES (3, '2024-01-01 00:00:05')")
            .expect("b resumes");
        db.sync().expect("sync");
        let view = db
            .metrics()
            .queries
            .into_iter()
            .find(|q| q.name == "per_window")
            .expect("view");
        assert_eq!(view.late_rows, 1, "{workers} workers");
        assert_eq!(source_stats(&db, "b").late_rows, 0);
        // Whether b is idle again or holds the union at 00:00:31, [20, 30) closes.
        db.execute("INSERT INTO b VALUES (4, '2024-01-01 00:00:31')")
            .expect("b");
        db.execute("INSERT INTO a VALUES (5, '2024-01-01 00:00:40')")
            .expect("a");
        db.sync().expect("sync");
        let closed = query(&db, PER_WINDOW_ROWS);
        assert_eq!(
            closed[..2],
            ["2 2024-01-01T00:00:00", "1 2024-01-01T00:00:20"],
            "{workers} workers"
        );
        db.finish_push_sources().expect("finish");
        assert!(db.wait_finished(WAIT));
        assert_eq!(
            query(&db, PER_WINDOW_ROWS),
            [
                "2 2024-01-01T00:00:00",
                "1 2024-01-01T00:00:20",
                "1 2024-01-01T00:00:30",
                "1 2024-01-01T00:00:40"
            ],
            "{workers} workers"
        );
    }
}

#[test]
fn a_source_nobody_pushes_to_goes_idle_after_its_timeout() {
    let db = union_of(2, "WITH (idle_timeout = '100ms')");
    db.execute("INSERT INTO a VALUES (1, '2024-01-01 00:00:02'), (2, '2024-01-01 00:00:11')")
        .expect("a");
    wait_for("[0, 10) to close", || {
        !query(&db, PER_WINDOW_ROWS).is_empty()
    });
    assert_eq!(query(&db, PER_WINDOW_ROWS), ["1 2024-01-01T00:00:00"]);
    assert_eq!(
        watermarks(&db),
        [
            "a 2024-01-01 00:00:11.000 0",
            "b none (idle) 0",
            "per_window 2024-01-01 00:00:11.000 0"
        ]
    );
}

#[test]
fn a_connector_source_waiting_for_rows_goes_idle() {
    let db = db(2);
    db.execute(
        "CREATE SOURCE a (symbol VARCHAR, price DOUBLE, volume BIGINT, ts TIMESTAMP,
                          WATERMARK FOR ts AS ts)",
    )
    .expect("a");
    // One trade every 10 s of wall-clock time: the reader waits for it, silent.
    db.execute(
        "CREATE SOURCE g (symbol VARCHAR, price DOUBLE, volume BIGINT, ts TIMESTAMP,
                          WATERMARK FOR ts AS ts)
         FROM DATAGEN (kind = 'trades', rate = '0.1', partitions = '1', idle_timeout = '100ms')",
    )
    .expect("g");
    db.execute(
        "CREATE MATERIALIZED VIEW per_window AS
         SELECT count(*) AS n, window_start
         FROM TUMBLE((SELECT symbol, ts FROM a UNION ALL SELECT symbol, ts FROM g), ts,
                     INTERVAL '10' SECOND)
         GROUP BY window_start, window_end
         EMIT ON WINDOW CLOSE",
    )
    .expect("view");
    db.execute(
        "INSERT INTO a VALUES ('X', 1.0, 1, '2024-01-01 00:01:30'), ('X', 1.0, 1, '2024-01-01 00:02:00')",
    )
    .expect("a");
    wait_for("[01:30, 01:40) to close", || {
        query(&db, PER_WINDOW_ROWS)
            .iter()
            .any(|row| row.ends_with("00:01:30"))
    });
    wait_for("the generator's reader to be idle", || {
        source_stats(&db, "g").idle
    });
}

#[test]
fn a_worker_without_a_partition_does_not_hold_back_the_exchange() {
    // One generator partition, four workers: three of them read nothing of the source, yet
    // the windows of the keyed aggregate behind the exchange close while it runs (it never
    // ends), as every worker hears the source's watermark.
    let db = db(4);
    db.execute(
        "CREATE SOURCE t (symbol VARCHAR, price DOUBLE, volume BIGINT, ts TIMESTAMP,
                          WATERMARK FOR ts AS ts - INTERVAL '100' MILLISECOND)
         FROM DATAGEN (kind = 'trades', partitions = '1', rate = '2000', event_rate = '1000')",
    )
    .expect("source");
    db.execute(
        "CREATE MATERIALIZED VIEW per_second AS
         SELECT symbol, count(*) AS n, window_start
         FROM TUMBLE(t, ts, INTERVAL '1' SECOND)
         GROUP BY symbol, window_start, window_end
         EMIT ON WINDOW CLOSE",
    )
    .expect("view");
    wait_for("a window to close", || {
        !query(&db, "SELECT * FROM per_second").is_empty()
    });
    assert!(!source_stats(&db, "t").idle);
}

#[test]
fn idle_timeout_is_checked_when_the_source_is_created() {
    let db = db(1);
    let error = |sql: &str| db.execute(sql).expect_err(sql).to_string();
    assert!(
        error("CREATE SOURCE s (ts TIMESTAMP) WITH (idle_timeout = '5s')")
            .contains("idle_timeout needs a WATERMARK"),
    );
    assert!(error(
        "CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (idle_timeout = 'soon')"
    )
    .contains("invalid value 'soon' for option 'idle_timeout': expected a positive whole number"));
    assert!(error(
        "CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (idel_timeout = '5s')"
    )
    .contains("unknown option 'idel_timeout' in WITH; known options: idle_timeout"));
    assert!(error(
        "CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts) FROM DATAGEN (kind = 'trades') WITH (idle_timeout = '5s')"
    )
    .contains("FROM DATAGEN (..., key = 'value')"));
    // Accepted spellings, shown back as written.
    db.execute("CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (idle_timeout = '5s')")
        .expect("push source");
    db.execute(
        "CREATE SOURCE g (symbol VARCHAR, price DOUBLE, volume BIGINT, ts TIMESTAMP,
                          WATERMARK FOR ts AS ts)
         FROM DATAGEN (kind = 'trades', idle_timeout = '2m')",
    )
    .expect("connector source");
    let ExecuteResult::Rows { batches, .. } = db.execute("SHOW SOURCES").expect("shows") else {
        panic!("SHOW SOURCES returns rows");
    };
    let shown = lines(&batches);
    assert!(
        shown.iter().any(|line| line.ends_with(
            "CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (idle_timeout = '5s')"
        )),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|line| line.contains("FROM DATAGEN (kind = 'trades', idle_timeout = '2m')")),
        "{shown:?}"
    );
}
