//! Subscriptions that resume from an epoch (`subscribe_from` on objects declared
//! `WITH (output_log = 'on')`): an application keeps the changes up to the last
//! `Committed(e)` it processed; after its own crash, the database's (at several points of a
//! checkpoint) or both, it subscribes again after `e`, and the committed changes it ends up
//! with, weights applied, equal the result of an uninterrupted in-memory run, with no
//! change batch missing or repeated on the way. A "crash" abandons a database without its
//! clean shutdown, as in `recovery.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use laminar_db::{
    ChangeBatch, DbError, Durability, EpochSubscription, LaminarDB, SubscriptionEvent,
};

/// How long a condition may take to hold before the test fails.
const WAIT: Duration = Duration::from_secs(30);

fn builder() -> laminar_db::LaminarDbBuilder {
    LaminarDB::builder()
        .workers(2)
        .pin_workers(false)
        .checkpoint_interval(None)
        .durability(Durability::Group)
}

fn open(dir: &Path) -> LaminarDB {
    builder().open(dir).expect("database opens")
}

/// Leaves `db` running without a clean shutdown, as a crash would.
fn crash(db: LaminarDB) {
    std::mem::forget(db);
}

fn batch(keys: &[i64], values: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(keys.to_vec())),
            Arc::new(Int64Array::from(values.to_vec())),
        ],
    )
    .expect("batch")
}

/// The batches pushed, deterministic; every row's `v` is distinct.
fn pushes(count: usize) -> Vec<RecordBatch> {
    (0..count)
        .map(|i| {
            let keys: Vec<i64> = (0..30).map(|r| ((i * 3 + r) % 17) as i64).collect();
            let values: Vec<i64> = (0..30).map(|r| (i * 100 + r) as i64).collect();
            batch(&keys, &values)
        })
        .collect()
}

const VIEW: &str = "SELECT k, count(*) AS c, sum(v) AS s FROM s GROUP BY k";

fn create(db: &LaminarDB) {
    db.execute("CREATE SOURCE s (k BIGINT NOT NULL, v BIGINT NOT NULL) WITH (output_log = 'on')")
        .expect("source");
    db.execute(&format!(
        "CREATE MATERIALIZED VIEW agg WITH (output_log = 'on') AS {VIEW}"
    ))
    .expect("view");
}

/// A row of any of the tests' objects: all columns are BIGINT.
type Row = Vec<i64>;

/// The rows of `batches`, each counted once.
fn rows_of(batches: &[RecordBatch]) -> BTreeMap<Row, i64> {
    let mut rows = BTreeMap::new();
    for b in batches {
        for i in 0..b.num_rows() {
            *rows.entry(row(b, i)).or_insert(0) += 1;
        }
    }
    rows
}

fn row(b: &RecordBatch, i: usize) -> Row {
    b.columns()
        .iter()
        .map(|c| {
            c.as_any()
                .downcast_ref::<Int64Array>()
                .expect("BIGINT column")
                .value(i)
        })
        .collect()
}

/// What the view holds after an uninterrupted in-memory run over `batches`.
fn oracle(batches: &[RecordBatch]) -> BTreeMap<Row, i64> {
    let db = LaminarDB::builder()
        .workers(2)
        .pin_workers(false)
        .in_memory()
        .expect("in-memory database");
    db.execute("CREATE SOURCE s (k BIGINT NOT NULL, v BIGINT NOT NULL)")
        .expect("source");
    db.execute(&format!("CREATE MATERIALIZED VIEW agg AS {VIEW}"))
        .expect("view");
    let source = db.source("s").expect("source s");
    for b in batches {
        source.push(b.clone()).expect("push");
    }
    rows_of(&db.query("SELECT k, c, s FROM agg").expect("query agg"))
}

/// What an application made of a subscription: the changes up to the last committed epoch
/// (kept durably by the application, together with that epoch) and the tentative ones
/// after it.
#[derive(Default)]
struct App {
    committed: Vec<ChangeBatch>,
    tentative: Vec<ChangeBatch>,
    last: u64,
    /// Whether the committed changes of the object hold one row per key (a view's), checked
    /// at every `Committed`.
    keyed: bool,
}

impl App {
    fn keyed() -> Self {
        Self {
            keyed: true,
            ..Self::default()
        }
    }

    fn apply(&mut self, event: SubscriptionEvent) {
        match event {
            SubscriptionEvent::Changes(changes) => self.tentative.push(changes),
            SubscriptionEvent::Committed(epoch) => {
                assert_eq!(epoch, self.last + 1, "epochs are committed one by one");
                self.committed.append(&mut self.tentative);
                self.last = epoch;
                self.check();
            }
        }
    }

    /// The application crashed: what it made of tentative changes is gone.
    fn crash(&mut self) {
        self.tentative.clear();
    }

    /// The committed changes with their weights applied.
    fn rows(&self) -> BTreeMap<Row, i64> {
        let mut rows = BTreeMap::new();
        for changes in &self.committed {
            let b = changes.batch();
            for i in 0..b.num_rows() {
                let weight = changes.weights().map_or(1, |w| w.value(i));
                *rows.entry(row(b, i)).or_insert(0) += weight;
            }
        }
        rows.retain(|_, weight| *weight != 0);
        rows
    }

    /// A repeated or missing batch shows as a row counted twice or negatively, or (for a
    /// view) as two rows of one key.
    fn check(&self) {
        let rows = self.rows();
        assert!(
            rows.values().all(|weight| *weight == 1),
            "every committed row once, at epoch {}: {rows:?}",
            self.last
        );
        if self.keyed {
            let keys: std::collections::BTreeSet<i64> = rows.keys().map(|r| r[0]).collect();
            assert_eq!(
                keys.len(),
                rows.len(),
                "one row per key at epoch {}",
                self.last
            );
        }
    }

    /// Reads events until `Committed(epoch)`.
    fn read_until(&mut self, sub: &mut EpochSubscription, epoch: u64) {
        let deadline = Instant::now() + WAIT;
        while self.last < epoch {
            if let Some(event) = sub.try_next() {
                self.apply(event);
            } else {
                assert!(sub.error().is_none(), "{:?}", sub.error());
                assert!(Instant::now() < deadline, "no Committed({epoch}) in time");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Reads the events ready now (tentative changes, usually).
    fn read_ready(&mut self, sub: &mut EpochSubscription) {
        while let Some(event) = sub.try_next() {
            self.apply(event);
        }
    }
}

/// Where the database or the application stops in `resume_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// The database, right after checkpoint 2.
    DatabaseAfterCheckpoint,
    /// The database, with rows pushed after checkpoint 2 and read tentatively.
    DatabaseBeforeCheckpoint,
    /// The database, during checkpoint 3: its manifest is written, the output logs'
    /// epoch 3 is pre-committed but not committed.
    DatabaseBeforeOutputCommit,
    /// The database, during checkpoint 3: the output logs' epoch 3 is pre-committed, the
    /// manifest is not written.
    DatabaseBeforeManifest,
    /// Only the application, which had processed up to epoch 1 of the 2 committed.
    Application,
    /// The application, behind at epoch 1, and then the database, before checkpoint 3.
    Both,
}

fn manifest(dir: &Path, epoch: u64) -> std::path::PathBuf {
    dir.join("checkpoints")
        .join(format!("manifest-{epoch:020}"))
}

/// Turns the committed epoch `epoch` of every output log back into a pre-committed temp
/// file: the state a crash between a checkpoint's manifest and its commits leaves.
fn uncommit(dir: &Path, epoch: u64) {
    for object in ["s", "agg"] {
        let log = dir.join("outputs").join(object);
        std::fs::rename(
            log.join(format!("epoch-{epoch:020}.arrow")),
            log.join(format!(".epoch-{epoch}.arrow.tmp")),
        )
        .expect("the committed epoch exists");
    }
}

/// The scenario of the module doc, crashing at `at`; returns the application's rows.
fn resume_after(at: Crash) -> (BTreeMap<Row, i64>, BTreeMap<Row, i64>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(40);
    let db = open(dir.path());
    create(&db);
    let mut app = App::keyed();
    let mut sub = db.subscribe_from("agg", 0).expect("subscribe");
    let source = db.source("s").expect("source s");
    for b in &all[..10] {
        source.push(b.clone()).expect("push");
    }
    let first = db.checkpoint().expect("checkpoint").epoch;
    for b in &all[10..20] {
        source.push(b.clone()).expect("push");
    }
    let lagging = matches!(at, Crash::Application | Crash::Both);
    app.read_until(&mut sub, first);
    let second = db.checkpoint().expect("checkpoint").epoch;
    if !lagging {
        app.read_until(&mut sub, second);
    }
    if at != Crash::DatabaseAfterCheckpoint {
        for b in &all[20..25] {
            source.push(b.clone()).expect("push");
        }
        if !lagging {
            app.read_ready(&mut sub);
        }
    }
    drop(sub);
    app.crash();
    let db = match at {
        Crash::Application => db,
        Crash::DatabaseBeforeOutputCommit | Crash::DatabaseBeforeManifest => {
            let third = db.checkpoint().expect("checkpoint").epoch;
            crash(db);
            uncommit(dir.path(), third);
            if at == Crash::DatabaseBeforeManifest {
                std::fs::remove_file(manifest(dir.path(), third)).expect("manifest");
            }
            reopen(dir.path())
        }
        _ => {
            crash(db);
            reopen(dir.path())
        }
    };
    let mut sub = db.subscribe_from("agg", app.last).expect("resume");
    let source = db.source("s").expect("source s");
    let resumed_at = usize::try_from(source.logged_pushes()).expect("count");
    assert_eq!(
        resumed_at,
        if at == Crash::DatabaseAfterCheckpoint {
            20
        } else {
            25
        }
    );
    for b in &all[resumed_at..] {
        source.push(b.clone()).expect("push");
    }
    let last = db.checkpoint().expect("checkpoint").epoch;
    app.read_until(&mut sub, last);
    (app.rows(), oracle(&all))
}

fn reopen(dir: &Path) -> LaminarDB {
    let db = open(dir);
    // A restarted script declares its objects again: a no-op.
    create(&db);
    db
}

#[test]
fn resuming_after_a_database_crash_right_after_a_checkpoint() {
    let (rows, expected) = resume_after(Crash::DatabaseAfterCheckpoint);
    assert_eq!(rows, expected);
}

#[test]
fn resuming_after_a_database_crash_between_checkpoints() {
    let (rows, expected) = resume_after(Crash::DatabaseBeforeCheckpoint);
    assert_eq!(rows, expected);
}

#[test]
fn resuming_after_a_database_crash_between_manifest_and_output_commit() {
    let (rows, expected) = resume_after(Crash::DatabaseBeforeOutputCommit);
    assert_eq!(rows, expected);
}

#[test]
fn resuming_after_a_database_crash_before_the_manifest() {
    let (rows, expected) = resume_after(Crash::DatabaseBeforeManifest);
    assert_eq!(rows, expected);
}

#[test]
fn resuming_after_an_application_crash() {
    let (rows, expected) = resume_after(Crash::Application);
    assert_eq!(rows, expected);
}

#[test]
fn resuming_after_an_application_crash_and_then_a_database_crash() {
    let (rows, expected) = resume_after(Crash::Both);
    assert_eq!(rows, expected);
}

/// Every change batch `sub` yields until `Committed(epoch)`, markers included, as text.
fn events_until(sub: &mut EpochSubscription, epoch: u64) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut events = Vec::new();
    loop {
        match sub.try_next() {
            Some(SubscriptionEvent::Committed(e)) => {
                events.push(format!("committed {e}"));
                if e == epoch {
                    return events;
                }
            }
            Some(SubscriptionEvent::Changes(changes)) => events.push(format!(
                "{:?} {:?}",
                rows_of(std::slice::from_ref(changes.batch())),
                changes.weights()
            )),
            None => {
                assert!(sub.error().is_none(), "{:?}", sub.error());
                assert!(Instant::now() < deadline, "no Committed({epoch}) in time");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[test]
fn subscriptions_started_anywhere_see_the_same_batches_of_each_epoch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(30);
    let db = open(dir.path());
    create(&db);
    let mut from_start = db.subscribe_from("agg", 0).expect("subscribe");
    let source = db.source("s").expect("source s");
    for b in &all[..10] {
        source.push(b.clone()).expect("push");
    }
    let first = db.checkpoint().expect("checkpoint").epoch;
    for b in &all[10..15] {
        source.push(b.clone()).expect("push");
    }
    // In the middle of epoch 2: its rows so far are in the open epoch's file.
    db.sync().expect("sync");
    let mut mid_epoch = db.subscribe_from("agg", first).expect("subscribe");
    for b in &all[15..25] {
        source.push(b.clone()).expect("push");
    }
    let second = db.checkpoint().expect("checkpoint").epoch;
    for b in &all[25..] {
        source.push(b.clone()).expect("push");
    }
    let third = db.checkpoint().expect("checkpoint").epoch;
    let late = db.subscribe_from("agg", first).expect("subscribe");

    let everything = events_until(&mut from_start, third);
    let first_marker = everything
        .iter()
        .position(|e| *e == format!("committed {first}"))
        .expect("epoch 1 is committed");
    let after_first = &everything[first_marker + 1..];
    assert_eq!(events_until(&mut mid_epoch, third), after_first);
    let mut late = late;
    assert_eq!(events_until(&mut late, third), after_first);
    assert!(after_first.contains(&format!("committed {second}")));
    assert_eq!(mid_epoch.last_committed(), third);
}

#[test]
fn a_push_source_with_an_output_log_resumes_its_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(20);
    let db = open(dir.path());
    create(&db);
    let mut app = App::default();
    let mut sub = db.subscribe_from("s", 0).expect("subscribe to the source");
    let source = db.source("s").expect("source s");
    for b in &all[..8] {
        source.push(b.clone()).expect("push");
    }
    let first = db.checkpoint().expect("checkpoint").epoch;
    app.read_until(&mut sub, first);
    for b in &all[8..12] {
        source.push(b.clone()).expect("push");
    }
    app.read_ready(&mut sub);
    drop(sub);
    app.crash();
    crash(db);

    let db = reopen(dir.path());
    let mut sub = db.subscribe_from("s", app.last).expect("resume");
    let source = db.source("s").expect("source s");
    for b in &all[12..] {
        source.push(b.clone()).expect("push");
    }
    let last = db.checkpoint().expect("checkpoint").epoch;
    app.read_until(&mut sub, last);
    assert_eq!(app.rows(), rows_of(&all));
}

#[test]
fn async_next_and_the_stream_wait_for_changes() {
    fn sendable<T: Send>(_: &T) {}

    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(10);
    let db = open(dir.path());
    create(&db);
    let mut sub = db.subscribe_from("agg", 0).expect("subscribe");
    let mut stream = db.subscribe_from("agg", 0).expect("subscribe");
    // An application may read in another thread.
    sendable(&sub);
    let writer = db.clone();
    let batches = all.clone();
    let pushing = std::thread::spawn(move || {
        let source = writer.source("s").expect("source s");
        for b in &batches {
            source.push(b.clone()).expect("push");
        }
        writer.checkpoint().expect("checkpoint").epoch
    });
    let mut app = App::keyed();
    let mut streamed = App::keyed();
    futures::executor::block_on(async {
        while app.last < 1 {
            app.apply(sub.next().await.expect("an event"));
        }
        while streamed.last < 1 {
            let event = futures::StreamExt::next(&mut stream).await;
            streamed.apply(event.expect("an event"));
        }
    });
    assert_eq!(pushing.join().expect("pusher"), 1);
    assert_eq!(app.rows(), oracle(&all));
    assert_eq!(streamed.rows(), oracle(&all));
}

#[test]
fn a_subscription_ends_after_the_last_committed_changes_of_a_finished_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(5);
    let db = open(dir.path());
    create(&db);
    let mut sub = db.subscribe_from("agg", 0).expect("subscribe");
    let source = db.source("s").expect("source s");
    for b in &all {
        source.push(b.clone()).expect("push");
    }
    db.finish_push_sources().expect("finish");
    assert!(db.wait_finished(WAIT), "the view finishes");
    let epoch = db.checkpoint().expect("checkpoint").epoch;
    let mut app = App::keyed();
    for event in sub.blocking_iter() {
        app.apply(event);
    }
    assert!(sub.error().is_none(), "{:?}", sub.error());
    assert_eq!(app.last, epoch);
    assert_eq!(app.rows(), oracle(&all));
}

#[test]
fn subscribe_from_needs_a_data_directory_and_an_output_log() {
    let db = LaminarDB::builder()
        .workers(1)
        .pin_workers(false)
        .in_memory()
        .expect("in-memory database");
    db.execute("CREATE SOURCE s (k BIGINT NOT NULL, v BIGINT NOT NULL)")
        .expect("source");
    let error = db
        .execute(&format!(
            "CREATE MATERIALIZED VIEW agg WITH (output_log = 'on') AS {VIEW}"
        ))
        .expect_err("no data directory");
    let message = error.to_string();
    assert!(
        message.contains("CREATE MATERIALIZED VIEW agg"),
        "{message}"
    );
    assert!(message.contains("data directory"), "{message}");
    db.execute(&format!("CREATE MATERIALIZED VIEW agg AS {VIEW}"))
        .expect("view");
    let error = db.subscribe_from("agg", 0).expect_err("no data directory");
    assert!(error.to_string().contains("data directory"), "{error}");

    let dir = tempfile::tempdir().expect("temp dir");
    let db = open(dir.path());
    db.execute("CREATE SOURCE s (k BIGINT NOT NULL, v BIGINT NOT NULL)")
        .expect("source");
    db.execute(&format!("CREATE MATERIALIZED VIEW plain AS {VIEW}"))
        .expect("view");
    let error = db.subscribe_from("plain", 0).expect_err("no output log");
    let message = error.to_string();
    assert!(message.contains("plain"), "{message}");
    assert!(message.contains("output_log = 'on'"), "{message}");
    let error = db.subscribe_from("nope", 0).expect_err("unknown object");
    let message = error.to_string();
    assert!(message.contains("'nope' does not exist"), "{message}");

    let error = db
        .execute(&format!(
            "CREATE MATERIALIZED VIEW bad WITH (output_log = 'yes') AS {VIEW}"
        ))
        .expect_err("not a switch value");
    assert!(
        error.to_string().contains("expected 'on' or 'off'"),
        "{error}"
    );
    let out = dir.path().join("out/");
    let error = db
        .execute(&format!(
            "CREATE SINK out INTO FILE (path = '{}', format = 'csv') WITH (output_log = 'on') \
             FROM plain",
            out.display()
        ))
        .expect_err("a sink has no output log");
    assert!(error.to_string().contains("output_log"), "{error}");
}

#[test]
fn epochs_older_than_the_log_keeps_or_not_yet_committed_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No extra epochs: the log keeps those of the two checkpoints kept.
    let db = builder()
        .output_log_extra_epochs(0)
        .open(dir.path())
        .expect("database opens");
    create(&db);
    let source = db.source("s").expect("source s");
    for (i, b) in pushes(6).into_iter().enumerate() {
        source.push(b).expect("push");
        assert_eq!(db.checkpoint().expect("checkpoint").epoch, i as u64 + 1);
    }
    let mut kept: Vec<String> = std::fs::read_dir(dir.path().join("outputs").join("agg"))
        .expect("the view's output log")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "epoch-00000000000000000005.arrow",
            "epoch-00000000000000000006.arrow"
        ]
    );

    let error = db.subscribe_from("agg", 3).expect_err("epoch 4 is gone");
    assert!(
        matches!(
            error,
            DbError::EpochNotRetained {
                ref object,
                epoch: 3,
                oldest: 4
            } if object == "agg"
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("agg") && message.contains("oldest epoch to resume after is 4"),
        "{message}"
    );
    let error = db
        .subscribe_from("agg", 7)
        .expect_err("epoch 7 is not committed");
    assert!(
        matches!(
            error,
            DbError::EpochNotCommitted {
                epoch: 7,
                newest: 6,
                ..
            }
        ),
        "{error:?}"
    );

    let mut sub = db.subscribe_from("agg", 4).expect("the oldest epoch kept");
    let events = events_until(&mut sub, 6);
    let markers: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("committed"))
        .collect();
    assert_eq!(markers, ["committed 5", "committed 6"]);
    // Each of the two epochs changed the view.
    let five = events
        .iter()
        .position(|e| e == "committed 5")
        .expect("epoch 5");
    assert!(five > 0 && events.len() > five + 2, "{events:?}");
}

/// Runs `sub` to its end; returns its error.
fn error_at_end(mut sub: EpochSubscription) -> String {
    for _ in sub.blocking_iter() {}
    sub.error()
        .expect("the subscription ends with an error")
        .to_string()
}

#[test]
fn a_damaged_or_cut_short_epoch_file_ends_subscriptions_with_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(10);
    let db = open(dir.path());
    create(&db);
    let source = db.source("s").expect("source s");
    for b in &all[..5] {
        source.push(b.clone()).expect("push");
    }
    db.checkpoint().expect("checkpoint");
    for b in &all[5..] {
        source.push(b.clone()).expect("push");
    }
    db.checkpoint().expect("checkpoint");
    let log = dir.path().join("outputs").join("agg");
    let first = log.join("epoch-00000000000000000001.arrow");
    let second = log.join("epoch-00000000000000000002.arrow");

    let mut bytes = std::fs::read(&first).expect("epoch 1");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&first, bytes).expect("damage epoch 1");
    let error = error_at_end(db.subscribe_from("agg", 0).expect("subscribe"));
    assert!(
        error.contains("epoch-00000000000000000001.arrow"),
        "{error}"
    );

    let bytes = std::fs::read(&second).expect("epoch 2");
    // Inside the end record, then exactly before it (a record boundary).
    for cut in [bytes.len() - 5, bytes.len() - 17] {
        std::fs::write(&second, &bytes[..cut]).expect("cut epoch 2 short");
        let error = error_at_end(db.subscribe_from("agg", 1).expect("subscribe"));
        assert!(
            error.contains("epoch-00000000000000000002.arrow"),
            "{error}"
        );
    }
}

#[test]
fn dropping_the_object_ends_its_subscriptions_after_what_was_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(6);
    let db = open(dir.path());
    create(&db);
    let mut sub = db.subscribe_from("agg", 0).expect("subscribe");
    let source = db.source("s").expect("source s");
    for b in &all[..3] {
        source.push(b.clone()).expect("push");
    }
    let epoch = db.checkpoint().expect("checkpoint").epoch;
    for b in &all[3..] {
        source.push(b.clone()).expect("push");
    }
    db.sync().expect("sync");
    db.execute("DROP MATERIALIZED VIEW agg").expect("drop");
    let mut app = App::keyed();
    for event in sub.blocking_iter() {
        app.apply(event);
    }
    assert!(sub.error().is_none(), "{:?}", sub.error());
    assert_eq!(app.last, epoch);
    assert_eq!(app.rows(), oracle(&all[..3]));
    let error = db.subscribe_from("agg", 0).expect_err("dropped");
    assert!(error.to_string().contains("does not exist"), "{error}");
}
