//! Differential tests of ASOF joins. DataFusion has no ASOF join, so the reference is a
//! straightforward one written here (each left row scans every right row), checked first on
//! hand-computed cases. Seeded left and right rows arrive out of order (never late at their
//! source) at 1 and 4 workers; before the end, an exact view holds only final rows; after
//! the final watermark every view equals the reference, an `EMIT CHANGES` changelog folds to
//! it, and no ASOF state is left. Under a steady stream the state stays bounded.

#[allow(
    dead_code,
    reason = "each test file uses its own part of the shared helpers"
)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use laminar_db::LaminarDB;

use common::{folded, rows};

const WAIT: Duration = Duration::from_secs(60);
const DELAY_MS: i64 = 150;
const BASE_MS: i64 = 1_704_067_200_000;

/// A row of either side: key, value (`id` on the left, `price` on the right), time.
#[derive(Debug, Clone, Copy)]
struct Row {
    k: Option<i64>,
    v: Option<i64>,
    ts: i64,
}

impl Row {
    /// The order the join breaks equal-time ties by: the right row's columns, in order,
    /// NULL first; the last one wins.
    fn tie_order(&self) -> (Option<i64>, Option<i64>, i64) {
        (self.k, self.v, self.ts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Backward,
    Forward,
    Nearest,
}

/// One ASOF join to check.
#[derive(Debug, Clone, Copy)]
struct Join {
    direction: Direction,
    /// `>=`/`<=` rather than `>`/`<`.
    inclusive: bool,
    tolerance_ms: Option<i64>,
    outer: bool,
    keyed: bool,
}

/// The reference: for every left row, the right row it matches (if any), in input order;
/// unmatched rows only for an outer join.
fn reference(lefts: &[Row], rights: &[Row], join: Join) -> Vec<(Row, Option<Row>)> {
    let mut out = Vec::new();
    for left in lefts {
        let candidates = rights
            .iter()
            .filter(|r| !join.keyed || (left.k.is_some() && r.k.is_some() && r.k == left.k));
        let before = |r: &&Row| {
            if join.inclusive {
                r.ts <= left.ts
            } else {
                r.ts < left.ts
            }
        };
        let after = |r: &&Row| {
            if join.inclusive {
                r.ts >= left.ts
            } else {
                r.ts > left.ts
            }
        };
        let best = match join.direction {
            Direction::Backward => candidates
                .filter(before)
                .max_by_key(|r| (r.ts, r.tie_order())),
            // The earliest time; among equal times the row that sorts last.
            Direction::Forward => candidates
                .filter(after)
                .max_by_key(|r| (std::cmp::Reverse(r.ts), r.tie_order())),
            // The smallest distance, then the earlier time, then the row that sorts last.
            Direction::Nearest => candidates.max_by_key(|r| {
                (
                    std::cmp::Reverse((left.ts - r.ts).abs()),
                    std::cmp::Reverse(r.ts),
                    r.tie_order(),
                )
            }),
        };
        let best = best
            .filter(|r| {
                join.tolerance_ms
                    .is_none_or(|t| (left.ts - r.ts).abs() <= t)
            })
            .copied();
        if best.is_some() || join.outer {
            out.push((*left, best));
        }
    }
    out
}

/// `(left id, matched price)` of the reference over a small hand-made input: right rows
/// `(key, price, ts)` (1, 10, 100), (1, 20, 200), (1, 21, 200), (2, 30, 150); left rows
/// `(key, id, ts)` (1, 1, 150), (1, 2, 200), (1, 3, 50), (2, 4, 150), (NULL, 5, 150).
fn hand_answer(join: Join) -> Vec<(i64, Option<i64>)> {
    let at = |k: Option<i64>, v: i64, ts: i64| Row { k, v: Some(v), ts };
    let rights = [
        at(Some(1), 10, 100),
        at(Some(1), 20, 200),
        at(Some(1), 21, 200),
        at(Some(2), 30, 150),
    ];
    let lefts = [
        at(Some(1), 1, 150),
        at(Some(1), 2, 200),
        at(Some(1), 3, 50),
        at(Some(2), 4, 150),
        at(None, 5, 150),
    ];
    reference(&lefts, &rights, join)
        .into_iter()
        .map(|(l, r)| (l.v.unwrap_or_default(), r.and_then(|r| r.v)))
        .collect()
}

#[test]
fn the_reference_matches_hand_computed_answers() {
    let answer = hand_answer;
    let join = |direction, inclusive| Join {
        direction,
        inclusive,
        tolerance_ms: None,
        outer: true,
        keyed: true,
    };
    // Latest at or before: the tie at 200 goes to the row that sorts last (21).
    assert_eq!(
        answer(join(Direction::Backward, true)),
        [
            (1, Some(10)),
            (2, Some(21)),
            (3, None),
            (4, Some(30)),
            (5, None)
        ]
    );
    assert_eq!(
        answer(join(Direction::Backward, false)),
        [
            (1, Some(10)),
            (2, Some(10)),
            (3, None),
            (4, None),
            (5, None)
        ]
    );
    assert_eq!(
        answer(join(Direction::Forward, true)),
        [
            (1, Some(21)),
            (2, Some(21)),
            (3, Some(10)),
            (4, Some(30)),
            (5, None)
        ]
    );
    assert_eq!(
        answer(join(Direction::Forward, false)),
        [
            (1, Some(21)),
            (2, None),
            (3, Some(10)),
            (4, None),
            (5, None)
        ]
    );
    // 150 is 50 from both 100 and 200: the earlier wins.
    assert_eq!(
        answer(join(Direction::Nearest, true)),
        [
            (1, Some(10)),
            (2, Some(21)),
            (3, Some(10)),
            (4, Some(30)),
            (5, None)
        ]
    );
    let within_40 = Join {
        tolerance_ms: Some(40),
        outer: false,
        ..join(Direction::Nearest, true)
    };
    assert_eq!(answer(within_40), [(2, Some(21)), (4, Some(30))]);
    let keyless = Join {
        keyed: false,
        ..join(Direction::Backward, true)
    };
    // Without keys, left 5 (NULL key) matches too: key 2's row at 150 sorts after key 1's.
    assert_eq!(
        answer(keyless),
        [
            (1, Some(30)),
            (2, Some(21)),
            (3, None),
            (4, Some(30)),
            (5, Some(30))
        ]
    );
}

/// Seeded pushes `(left side?, rows)`: both sides advance on one clock, out of order by less
/// than the watermark delay, so nothing is late; few keys, so equal times meet often.
fn pushes(seed: u64, batches: usize) -> Vec<(bool, Vec<Row>)> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(7);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1_000_000) as i64
    };
    let mut clock = 0;
    let mut id = 0;
    let mut out = Vec::new();
    for _ in 0..batches {
        let left = next() % 2 == 0;
        let size = 1 + next() % 60;
        let rows = (0..size)
            .map(|_| {
                let r = next();
                clock += r % 7;
                id += 1;
                let k = (r % 23 != 0).then_some(r % 5);
                let v = if left {
                    Some(id)
                } else {
                    (r % 11 != 0).then_some(r % 97)
                };
                Row {
                    k,
                    v,
                    ts: clock - (r / 7) % DELAY_MS,
                }
            })
            .collect();
        out.push((left, rows));
    }
    out
}

fn side_schema(value: &str) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new(value, DataType::Int64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

fn batch(schema: &Arc<Schema>, rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            Arc::new(rows.iter().map(|r| r.k).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.v).collect::<Int64Array>()),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| BASE_MS + r.ts),
            )),
        ],
    )
    .expect("batch")
}

/// The reference's rows as the views print them: `k|id|ts|rk|price|rts`.
fn expected(lefts: &[Row], rights: &[Row], join: Join) -> Vec<String> {
    let matched = reference(lefts, rights, join);
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("id", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("rk", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new(
            "rts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(matched.iter().map(|(l, _)| l.k).collect::<Int64Array>()),
            Arc::new(matched.iter().map(|(l, _)| l.v).collect::<Int64Array>()),
            Arc::new(
                matched
                    .iter()
                    .map(|(l, _)| Some(BASE_MS + l.ts))
                    .collect::<TimestampMillisecondArray>(),
            ),
            Arc::new(
                matched
                    .iter()
                    .map(|(_, r)| r.and_then(|r| r.k))
                    .collect::<Int64Array>(),
            ),
            Arc::new(
                matched
                    .iter()
                    .map(|(_, r)| r.and_then(|r| r.v))
                    .collect::<Int64Array>(),
            ),
            Arc::new(
                matched
                    .iter()
                    .map(|(_, r)| r.map(|r| BASE_MS + r.ts))
                    .collect::<TimestampMillisecondArray>(),
            ),
        ],
    )
    .expect("batch");
    rows(&[batch])
}

/// Views over `lefts l` and `rights r`, as `(name, query, the join it is, emits changes)`.
fn views() -> Vec<(&'static str, String, Join, bool)> {
    let select = "SELECT l.k, l.id, l.ts, r.k AS rk, r.price, r.ts AS rts FROM lefts l";
    let join = |direction, inclusive, outer| Join {
        direction,
        inclusive,
        tolerance_ms: None,
        outer,
        keyed: true,
    };
    vec![
        (
            "backward",
            format!("{select} ASOF JOIN rights r ON l.k = r.k AND l.ts >= r.ts"),
            join(Direction::Backward, true, false),
            false,
        ),
        (
            "backward_strict_left",
            format!("{select} ASOF LEFT JOIN rights r ON r.k = l.k AND l.ts > r.ts"),
            join(Direction::Backward, false, true),
            false,
        ),
        (
            "backward_flipped_within",
            format!(
                "{select} ASOF JOIN rights r ON l.k = r.k AND r.ts <= l.ts \
                 TOLERANCE INTERVAL '40' MILLISECOND"
            ),
            Join {
                tolerance_ms: Some(40),
                ..join(Direction::Backward, true, false)
            },
            false,
        ),
        (
            "forward_within",
            format!(
                "{select} ASOF JOIN rights r ON l.k = r.k AND l.ts <= r.ts \
                 TOLERANCE INTERVAL '30' MILLISECOND"
            ),
            Join {
                tolerance_ms: Some(30),
                ..join(Direction::Forward, true, false)
            },
            false,
        ),
        (
            "forward_strict_left",
            format!("{select} ASOF LEFT OUTER JOIN rights r ON l.k = r.k AND l.ts < r.ts"),
            join(Direction::Forward, false, true),
            false,
        ),
        (
            "nearest",
            format!("{select} ASOF JOIN rights r ON l.k = r.k AND NEAREST(l.ts, r.ts)"),
            join(Direction::Nearest, true, false),
            false,
        ),
        (
            "nearest_within_snowflake",
            format!(
                "{select} ASOF JOIN rights r MATCH_CONDITION (NEAREST(l.ts, r.ts)) ON l.k = r.k \
                 TOLERANCE INTERVAL '20' MILLISECOND"
            ),
            Join {
                tolerance_ms: Some(20),
                ..join(Direction::Nearest, true, true)
            },
            false,
        ),
        (
            "keyless",
            format!("{select} ASOF JOIN rights r ON l.ts >= r.ts"),
            Join {
                keyed: false,
                ..join(Direction::Backward, true, false)
            },
            false,
        ),
        (
            "backward_changes",
            format!("{select} ASOF LEFT JOIN rights r ON l.k = r.k AND l.ts >= r.ts EMIT CHANGES"),
            join(Direction::Backward, true, true),
            true,
        ),
        (
            "nearest_changes",
            format!(
                "{select} ASOF JOIN rights r ON l.k = r.k AND NEAREST(l.ts, r.ts) \
                 TOLERANCE INTERVAL '25' MILLISECOND EMIT CHANGES"
            ),
            Join {
                tolerance_ms: Some(25),
                ..join(Direction::Nearest, true, false)
            },
            true,
        ),
    ]
}

fn database(workers: usize) -> LaminarDB {
    let db = LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database");
    for (name, value) in [("lefts", "id"), ("rights", "price")] {
        db.execute(&format!(
            "CREATE SOURCE {name} (k BIGINT, {value} BIGINT, ts TIMESTAMP NOT NULL, \
             WATERMARK FOR ts AS ts - INTERVAL '{DELAY_MS}' MILLISECOND)"
        ))
        .expect("source");
    }
    db
}

/// Rows of `part` not in `whole` (as multisets).
fn not_within(part: &[String], whole: &[String]) -> Vec<String> {
    let mut rest = whole.to_vec();
    let mut extra = Vec::new();
    for row in part {
        match rest.iter().position(|r| r == row) {
            Some(index) => {
                rest.swap_remove(index);
            }
            None => extra.push(row.clone()),
        }
    }
    extra
}

#[test]
fn asof_joins_match_the_reference_at_one_and_four_workers() {
    for seed in [3, 1_009] {
        let input = pushes(seed, 70);
        let (lefts, rights): (Vec<_>, Vec<_>) = input.iter().partition(|(left, _)| *left);
        let lefts: Vec<Row> = lefts.into_iter().flat_map(|(_, r)| r.clone()).collect();
        let rights: Vec<Row> = rights.into_iter().flat_map(|(_, r)| r.clone()).collect();
        assert!(
            lefts.len() > 500 && rights.len() > 500,
            "seed {seed}: too few rows"
        );
        for workers in [1, 4] {
            let db = database(workers);
            let mut changes = Vec::new();
            for (name, query, _, emits_changes) in views() {
                db.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
                    .expect("view");
                if emits_changes {
                    changes.push((name, db.subscribe(name).expect("subscribe")));
                }
            }
            let left_source = db.source("lefts").expect("lefts");
            let right_source = db.source("rights").expect("rights");
            let (left_schema, right_schema) = (side_schema("id"), side_schema("price"));
            for (left, rows) in &input {
                if *left {
                    left_source.push(batch(&left_schema, rows)).expect("push");
                } else {
                    right_source.push(batch(&right_schema, rows)).expect("push");
                }
            }
            // Before the end only settled rows are out, and they are final.
            for (name, _, join, emits_changes) in views() {
                if emits_changes {
                    continue;
                }
                let early = rows(&db.query(&format!("SELECT * FROM {name}")).expect("query"));
                let all = expected(&lefts, &rights, join);
                let wrong = not_within(&early, &all);
                assert!(
                    wrong.is_empty(),
                    "seed {seed}, {workers} workers, {name}: {wrong:?}"
                );
                assert!(
                    early.len() < all.len(),
                    "{name}: the latest rows still wait"
                );
            }
            left_source.finish().expect("finish");
            right_source.finish().expect("finish");
            assert!(db.wait_finished(WAIT), "seed {seed}: the views finish");
            for (name, _, join, _) in views() {
                let all = expected(&lefts, &rights, join);
                assert!(all.len() > 100, "{name}: too few matches to be a test");
                let view = rows(&db.query(&format!("SELECT * FROM {name}")).expect("query"));
                assert_eq!(view, all, "seed {seed}, {workers} workers, view {name}");
            }
            for (name, mut subscription) in changes {
                let join = views()
                    .into_iter()
                    .find(|v| v.0 == name)
                    .map(|v| v.2)
                    .expect("view");
                assert_eq!(
                    folded(&mut subscription),
                    expected(&lefts, &rights, join),
                    "seed {seed}, {workers} workers, folded changelog of {name}"
                );
            }
            for stats in db.metrics().queries {
                assert_eq!(
                    stats.state_entries, 0,
                    "{}: state after the end",
                    stats.name
                );
                assert_eq!(stats.late_rows, 0, "{}: nothing is late", stats.name);
            }
        }
    }
}

#[test]
fn a_join_without_keys_runs_on_one_worker() {
    let db = database(4);
    let explained = db
        .execute(
            "EXPLAIN CREATE MATERIALIZED VIEW x AS \
             SELECT l.id, r.price FROM lefts l ASOF JOIN rights r ON l.ts >= r.ts",
        )
        .expect("explain");
    let plan = rows(explained.batches().expect("rows")).join("\n");
    assert_eq!(
        plan.matches("Exchange single (every row to worker 0)")
            .count(),
        2,
        "{plan}"
    );
    let explained = db
        .execute(
            "EXPLAIN CREATE MATERIALIZED VIEW x AS \
             SELECT l.id, r.price FROM lefts l ASOF JOIN rights r ON l.k = r.k AND l.ts >= r.ts",
        )
        .expect("explain");
    let plan = rows(explained.batches().expect("rows")).join("\n");
    assert_eq!(plan.matches("Exchange hash(k@0)").count(), 2, "{plan}");
}

#[test]
fn asof_state_stays_bounded_under_a_steady_stream() {
    for workers in [1, 4] {
        let db = database(workers);
        db.execute(
            "CREATE MATERIALIZED VIEW priced AS SELECT l.id, r.price FROM lefts l \
             ASOF LEFT JOIN rights r ON l.k = r.k AND l.ts >= r.ts",
        )
        .expect("view");
        db.execute(
            "CREATE MATERIALIZED VIEW next_price AS SELECT l.id, r.price FROM lefts l \
             ASOF JOIN rights r ON l.k = r.k AND l.ts <= r.ts",
        )
        .expect("view");
        let left_source = db.source("lefts").expect("lefts");
        let right_source = db.source("rights").expect("rights");
        let (left_schema, right_schema) = (side_schema("id"), side_schema("price"));
        // 5 keys, a row every 2 ms on each side, batches of 50 rows (100 ms).
        let rounds = 400;
        let mut state_max = 0;
        for round in 0..rounds {
            let rows = |offset: i64| -> Vec<Row> {
                (0..50)
                    .map(|i| {
                        let n = round * 50 + i;
                        Row {
                            k: Some(n % 5),
                            v: Some(n),
                            // Out of order by up to 60 ms, within the delay.
                            ts: n * 2 - (n * 37 + offset) % 60,
                        }
                    })
                    .collect()
            };
            left_source
                .push(batch(&left_schema, &rows(0)))
                .expect("push");
            right_source
                .push(batch(&right_schema, &rows(11)))
                .expect("push");
            db.sync().expect("processed");
            let state: u64 = db.metrics().queries.iter().map(|q| q.state_entries).sum();
            state_max = state_max.max(state);
        }
        // Each view keeps, on both sides, the rows the join's watermark (150 ms behind the
        // slower side) has not passed (about 75 per side at a row every 2 ms, plus the
        // out-of-order slack), and one right row per key: under 4 batches of 50 rows per
        // view, against 40,000 rows pushed.
        assert!(state_max > 0, "rows wait for the watermark");
        assert!(state_max <= 2 * 4 * 50, "bounded ASOF state: {state_max}");
        left_source.finish().expect("finish");
        right_source.finish().expect("finish");
        assert!(db.wait_finished(WAIT));
        let metrics = db.metrics();
        for stats in &metrics.queries {
            assert_eq!(
                stats.state_entries, 0,
                "{}: state after the end",
                stats.name
            );
            assert_eq!(stats.state_bytes, 0, "{}: bytes after the end", stats.name);
        }
        let matched = rows(&db.query("SELECT count(*) FROM priced").expect("count"));
        assert_eq!(matched, [(rounds * 50).to_string()]);
    }
}

#[test]
fn asof_views_are_restored_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = || {
        LaminarDB::builder()
            .workers(2)
            .pin_workers(false)
            .open(dir.path())
            .expect("open")
    };
    {
        let db = open();
        for (name, value) in [("lefts", "id"), ("rights", "price")] {
            db.execute(&format!(
                "CREATE SOURCE {name} (k BIGINT, {value} BIGINT, ts TIMESTAMP NOT NULL, \
                 WATERMARK FOR ts AS ts - INTERVAL '{DELAY_MS}' MILLISECOND)"
            ))
            .expect("source");
        }
        for view in [
            "CREATE MATERIALIZED VIEW duck AS SELECT l.id, l.ts, r.price FROM lefts l \
             ASOF JOIN rights r ON l.k = r.k AND l.ts >= r.ts TOLERANCE INTERVAL '5' SECOND",
            "CREATE MATERIALIZED VIEW flake AS SELECT l.id, r.price FROM lefts l \
             ASOF JOIN rights r MATCH_CONDITION (l.ts >= r.ts) ON l.k = r.k EMIT CHANGES",
            // Over a view: its event time is the left side's, passed on.
            "CREATE MATERIALIZED VIEW again AS SELECT d.id, r.price AS latest FROM duck d \
             ASOF JOIN rights r ON d.ts >= r.ts",
        ] {
            db.execute(view).expect("view");
        }
    }
    let db = open();
    for insert in [
        "INSERT INTO rights VALUES (1, 10, '2024-01-01 00:00:01'), (2, 20, '2024-01-01 00:00:01.500')",
        "INSERT INTO lefts VALUES (1, 1, '2024-01-01 00:00:02'), (3, 2, '2024-01-01 00:00:02')",
        "INSERT INTO lefts VALUES (1, 3, '2024-01-01 00:00:05')",
        "INSERT INTO rights VALUES (1, 11, '2024-01-01 00:00:05')",
    ] {
        db.execute(insert).expect("insert after reopen");
    }
    let view = |name: &str| rows(&db.query(&format!("SELECT * FROM {name}")).expect("query"));
    assert_eq!(view("duck"), ["1|2024-01-01T00:00:02|10"]);
    assert_eq!(view("flake"), ["1|10", "2|NULL", "3|11"]);
    assert_eq!(view("again"), ["1|20"]);
}
