//! Tests of the FILE sink's two-phase commit through the public entry points: epochs become
//! part files in commit order, crashes between pre-commit and commit are completed by
//! recovery, later output is discarded, and misuse is refused.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::{
    create_sink, create_source, ChangeMode, ConnectorError, ConnectorOptions, SinkConnector,
    SourceEvent,
};

fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
    ConnectorOptions::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]))
}

/// Rows `first..first + len`, named `r{id}`.
fn rows(first: i64, len: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + len).collect();
    let names: Vec<String> = ids.iter().map(|id| format!("r{id}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap()
}

/// A directory sink at `dir/out/` in `format`.
fn sink(dir: &Path, format: &str) -> Box<dyn SinkConnector> {
    let path = format!("{}/out/", dir.display());
    create_sink(
        "file",
        &options(&[("path", &path), ("format", format)]),
        schema(),
        ChangeMode::AppendOnly,
    )
    .unwrap()
}

/// Names of the files in `dir/out`, sorted; none when it does not exist.
fn listing(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("out")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn part(epoch: u64, extension: &str) -> String {
    format!("part-{epoch:020}.{extension}")
}

/// The `id`s of the committed parts of `dir/out`, read back in part order with the FILE
/// source (one partition per part, in path order).
fn committed_ids(dir: &Path, format: &str) -> Vec<i64> {
    let pattern = format!("{}/out/part-*.{format}", dir.display());
    let declared = (format != "parquet").then(schema);
    let Ok(source) = create_source(
        "file",
        &options(&[("path", &pattern), ("format", format)]),
        declared,
        Arc::default(),
    ) else {
        return Vec::new();
    };
    let Ok(mut reader) = source.open(1_000) else {
        return Vec::new();
    };
    let mut by_partition: Vec<(u32, RecordBatch)> = Vec::new();
    while let Some(event) = reader.next_event().unwrap() {
        if let SourceEvent::Batch(batch) = event {
            by_partition.push((batch.partition, batch.batch));
        }
    }
    by_partition.sort_by_key(|(partition, _)| *partition);
    let batches: Vec<RecordBatch> = by_partition.into_iter().map(|(_, b)| b).collect();
    if batches.is_empty() {
        return Vec::new();
    }
    let all = concat_batches(&batches[0].schema(), &batches).unwrap();
    all.column_by_name("id")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec()
}

/// Runs one whole epoch: begin, write `batches`, pre-commit, commit.
fn commit_epoch(sink: &mut dyn SinkConnector, epoch: u64, batches: &[RecordBatch]) {
    sink.begin_epoch(epoch).unwrap();
    for batch in batches {
        sink.write(batch, None).unwrap();
    }
    let handle = sink.pre_commit(epoch).unwrap();
    sink.commit(epoch, &handle).unwrap();
}

fn ids(range: std::ops::Range<i64>) -> Vec<i64> {
    range.collect()
}

#[test]
fn committed_epochs_become_parts_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink(dir.path(), "csv");
    commit_epoch(sink.as_mut(), 1, &[rows(0, 3), rows(3, 2)]);
    // An epoch without rows writes no part.
    commit_epoch(sink.as_mut(), 2, &[]);
    commit_epoch(sink.as_mut(), 3, &[rows(5, 4)]);
    commit_epoch(sink.as_mut(), 10, &[rows(9, 1)]);
    sink.close().unwrap();
    assert_eq!(
        listing(dir.path()),
        [part(1, "csv"), part(3, "csv"), part(10, "csv")]
    );
    assert_eq!(committed_ids(dir.path(), "csv"), ids(0..10));
    // Each part is a complete CSV file with its own header.
    let text = std::fs::read_to_string(dir.path().join("out").join(part(10, "csv"))).unwrap();
    assert_eq!(text, "id,name\n9,r9\n");
}

#[test]
fn rows_are_invisible_until_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink(dir.path(), "csv");
    sink.begin_epoch(1).unwrap();
    sink.write(&rows(0, 2), None).unwrap();
    let handle = sink.pre_commit(1).unwrap();
    assert_eq!(listing(dir.path()), [".part-1.csv.tmp"]);
    assert!(committed_ids(dir.path(), "csv").is_empty());
    // The next epoch is written before the previous one is committed.
    sink.begin_epoch(2).unwrap();
    sink.write(&rows(2, 2), None).unwrap();
    sink.commit(1, &handle).unwrap();
    assert_eq!(committed_ids(dir.path(), "csv"), ids(0..2));
    assert_eq!(
        listing(dir.path()),
        [".part-2.csv.tmp".to_owned(), part(1, "csv")]
    );
}

#[test]
fn recovery_completes_a_pre_committed_epoch_and_deletes_later_temps() {
    let dir = tempfile::tempdir().unwrap();
    let handle = {
        let mut sink = sink(dir.path(), "csv");
        commit_epoch(sink.as_mut(), 1, &[rows(0, 2)]);
        sink.begin_epoch(2).unwrap();
        sink.write(&rows(2, 3), None).unwrap();
        let handle = sink.pre_commit(2).unwrap();
        // Epoch 3 is pre-committed too, but its checkpoint never became durable.
        sink.begin_epoch(3).unwrap();
        sink.write(&rows(5, 1), None).unwrap();
        sink.pre_commit(3).unwrap();
        sink.begin_epoch(4).unwrap();
        sink.write(&rows(6, 1), None).unwrap();
        handle
        // The sink is dropped without commit or close: a crash.
    };
    assert_eq!(
        listing(dir.path()),
        [
            ".part-2.csv.tmp".to_owned(),
            ".part-3.csv.tmp".to_owned(),
            ".part-4.csv.tmp".to_owned(),
            part(1, "csv")
        ]
    );
    let mut sink = sink(dir.path(), "csv");
    sink.recover(Some((2, &handle))).unwrap();
    assert_eq!(listing(dir.path()), [part(1, "csv"), part(2, "csv")]);
    assert_eq!(committed_ids(dir.path(), "csv"), ids(0..5));
    // Replay writes the later rows again, in the epochs that follow.
    commit_epoch(sink.as_mut(), 3, &[rows(5, 2)]);
    assert_eq!(committed_ids(dir.path(), "csv"), ids(0..7));
}

#[test]
fn a_later_handle_commits_earlier_epochs_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let handle = {
        let mut sink = sink(dir.path(), "json");
        sink.begin_epoch(1).unwrap();
        sink.write(&rows(0, 2), None).unwrap();
        sink.pre_commit(1).unwrap();
        sink.begin_epoch(2).unwrap();
        sink.write(&rows(2, 2), None).unwrap();
        sink.pre_commit(2).unwrap()
    };
    let mut sink = sink(dir.path(), "json");
    sink.recover(Some((2, &handle))).unwrap();
    assert_eq!(listing(dir.path()), [part(1, "json"), part(2, "json")]);
    assert_eq!(committed_ids(dir.path(), "json"), ids(0..4));
}

#[test]
fn committing_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink(dir.path(), "csv");
    sink.begin_epoch(1).unwrap();
    sink.write(&rows(0, 3), None).unwrap();
    let handle = sink.pre_commit(1).unwrap();
    sink.commit(1, &handle).unwrap();
    sink.commit(1, &handle).unwrap();
    commit_epoch(sink.as_mut(), 2, &[rows(3, 1)]);
    sink.commit(1, &handle).unwrap();
    sink.close().unwrap();
    assert_eq!(committed_ids(dir.path(), "csv"), ids(0..4));
    // Recovery from a checkpoint whose commit had already run: nothing to redo.
    let mut reopened = self::sink(dir.path(), "csv");
    let handle_2 = serde_json::json!({"parts": []});
    reopened.recover(Some((2, &handle_2))).unwrap();
    reopened.commit(1, &handle).unwrap();
    assert_eq!(listing(dir.path()), [part(1, "csv"), part(2, "csv")]);
    assert_eq!(committed_ids(dir.path(), "csv"), ids(0..4));
}

#[test]
fn recovery_rolls_back_parts_after_the_restored_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let handles: Vec<serde_json::Value> = {
        let mut sink = sink(dir.path(), "csv");
        (1..=3)
            .map(|epoch| {
                sink.begin_epoch(epoch).unwrap();
                sink.write(&rows(epoch as i64 * 10, 2), None).unwrap();
                let handle = sink.pre_commit(epoch).unwrap();
                sink.commit(epoch, &handle).unwrap();
                handle
            })
            .collect()
    };
    // The checkpoint of epoch 3 turned out corrupt: the database restores epoch 2.
    let mut sink = sink(dir.path(), "csv");
    sink.recover(Some((2, &handles[1]))).unwrap();
    assert_eq!(committed_ids(dir.path(), "csv"), [10, 11, 20, 21]);
    // Without any checkpoint, every part is written again.
    let mut sink = self::sink(dir.path(), "csv");
    sink.recover(None).unwrap();
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn abort_discards_an_open_or_pre_committed_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink(dir.path(), "csv");
    sink.begin_epoch(1).unwrap();
    sink.write(&rows(0, 2), None).unwrap();
    sink.abort(1).unwrap();
    assert!(listing(dir.path()).is_empty());
    sink.begin_epoch(2).unwrap();
    sink.write(&rows(2, 2), None).unwrap();
    sink.pre_commit(2).unwrap();
    sink.abort(2).unwrap();
    sink.abort(2).unwrap();
    assert!(listing(dir.path()).is_empty());
    commit_epoch(sink.as_mut(), 3, &[rows(4, 1)]);
    assert_eq!(committed_ids(dir.path(), "csv"), [4]);
}

#[test]
fn close_discards_the_open_epoch_and_keeps_pre_committed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink(dir.path(), "csv");
    sink.begin_epoch(1).unwrap();
    sink.write(&rows(0, 2), None).unwrap();
    let handle = sink.pre_commit(1).unwrap();
    sink.begin_epoch(2).unwrap();
    sink.write(&rows(2, 2), None).unwrap();
    sink.close().unwrap();
    assert_eq!(listing(dir.path()), [".part-1.csv.tmp"]);
    // The coordinator's commit may still arrive after close.
    sink.commit(1, &handle).unwrap();
    assert_eq!(committed_ids(dir.path(), "csv"), ids(0..2));
}

#[test]
fn parquet_and_json_parts_are_complete_files_with_the_op_column() {
    for format in ["parquet", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let path = format!("{}/out/", dir.path().display());
        let mut sink = create_sink(
            "file",
            &options(&[("path", &path), ("format", format)]),
            schema(),
            ChangeMode::Changelog,
        )
        .unwrap();
        let weights = Int64Array::from(vec![1, -1]);
        for epoch in [1, 2] {
            sink.begin_epoch(epoch).unwrap();
            sink.write(&rows(epoch as i64 * 10, 2), Some(&weights))
                .unwrap();
            let handle = sink.pre_commit(epoch).unwrap();
            sink.commit(epoch, &handle).unwrap();
        }
        assert_eq!(
            listing(dir.path()),
            [part(1, format), part(2, format)],
            "{format}"
        );
        for epoch in [1, 2] {
            let file = dir.path().join("out").join(part(epoch, format));
            let source = create_source(
                "file",
                &options(&[("path", file.to_str().unwrap()), ("format", format)]),
                (format == "json").then(|| {
                    Arc::new(Schema::new(vec![
                        Field::new("id", DataType::Int64, true),
                        Field::new("op", DataType::Utf8, true),
                    ]))
                }),
                Arc::default(),
            )
            .unwrap();
            let mut reader = source.open(100).unwrap();
            let mut ops = Vec::new();
            while let Some(event) = reader.next_event().unwrap() {
                if let SourceEvent::Batch(batch) = event {
                    let op = batch.batch.column_by_name("op").unwrap();
                    let op = op.as_any().downcast_ref::<StringArray>().unwrap();
                    ops.extend((0..op.len()).map(|i| op.value(i).to_owned()));
                }
            }
            assert_eq!(ops, ["+", "-"], "{format} epoch {epoch}");
        }
    }
}

#[test]
fn a_directory_sink_without_epochs_commits_one_part_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Output of an earlier run, and a file the sink does not own.
    std::fs::write(out.join(part(5, "csv")), "id,name\n99,old\n").unwrap();
    std::fs::write(out.join(".part-6.csv.tmp"), "id,name\n").unwrap();
    std::fs::write(out.join("notes.txt"), "keep").unwrap();
    let mut sink = sink(dir.path(), "csv");
    sink.write(&rows(0, 2), None).unwrap();
    sink.write(&rows(2, 1), None).unwrap();
    assert!(committed_ids(dir.path(), "csv").contains(&99));
    sink.close().unwrap();
    assert_eq!(
        listing(dir.path()),
        ["notes.txt".to_owned(), part(0, "csv")]
    );
    assert_eq!(committed_ids(dir.path(), "csv"), ids(0..3));
}

#[test]
fn a_single_file_sink_asks_for_a_directory_when_transactional() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    let mut sink = create_sink(
        "file",
        &options(&[("path", path.to_str().unwrap())]),
        schema(),
        ChangeMode::AppendOnly,
    )
    .unwrap();
    for error in [
        sink.begin_epoch(1).unwrap_err(),
        sink.recover(None).unwrap_err(),
    ] {
        let message = error.to_string();
        assert!(
            message.starts_with("connector FILE sink does not support exactly-once output"),
            "{message}"
        );
        assert!(message.contains(path.to_str().unwrap()), "{message}");
        assert!(
            message.contains("directory path ending in '/'"),
            "{message}"
        );
    }
    // Without epochs it works as before.
    sink.write(&rows(0, 1), None).unwrap();
    sink.close().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "id,name\n0,r0\n");
}

#[test]
fn lost_output_fails_the_commit_and_poisons_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink(dir.path(), "csv");
    sink.begin_epoch(1).unwrap();
    sink.write(&rows(0, 2), None).unwrap();
    let handle = sink.pre_commit(1).unwrap();
    std::fs::remove_file(dir.path().join("out").join(".part-1.csv.tmp")).unwrap();
    let error = sink.commit(1, &handle).unwrap_err();
    assert!(matches!(
        error,
        ConnectorError::CommitFailed { epoch: 1, .. }
    ));
    let message = error.to_string();
    assert!(message.contains("cannot commit epoch 1"), "{message}");
    assert!(
        message.contains("neither its pre-committed temp file"),
        "{message}"
    );
    let refused = sink.begin_epoch(2).unwrap_err();
    assert!(
        matches!(refused, ConnectorError::SinkPoisoned { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("reopen the database"),
        "{refused}"
    );
}

#[test]
fn a_changed_part_fails_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let handle = {
        let mut sink = sink(dir.path(), "csv");
        sink.begin_epoch(1).unwrap();
        sink.write(&rows(0, 2), None).unwrap();
        let handle = sink.pre_commit(1).unwrap();
        sink.commit(1, &handle).unwrap();
        handle
    };
    std::fs::write(dir.path().join("out").join(part(1, "csv")), "id,name\n").unwrap();
    let mut sink = sink(dir.path(), "csv");
    let error = sink.recover(Some((1, &handle))).unwrap_err();
    assert!(
        error.to_string().contains("part file has 8 bytes"),
        "{error}"
    );
    let bad = serde_json::json!({"parts": "everything"});
    let error = self::sink(dir.path(), "csv")
        .recover(Some((1, &bad)))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("its handle is not one of a FILE sink"),
        "{error}"
    );
}

#[test]
fn calls_out_of_protocol_order_are_refused_as_bugs() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink(dir.path(), "csv");
    sink.begin_epoch(5).unwrap();
    let bug = |error: ConnectorError| {
        assert!(matches!(error, ConnectorError::Internal { .. }), "{error}");
        error.to_string()
    };
    assert!(bug(sink.begin_epoch(6).unwrap_err()).contains("neither pre-committed nor aborted"));
    assert!(bug(sink.pre_commit(4).unwrap_err()).contains("not the open epoch"));
    sink.pre_commit(5).unwrap();
    assert!(bug(sink.write(&rows(0, 1), None).unwrap_err()).contains("outside an epoch"));
    assert!(bug(sink.begin_epoch(5).unwrap_err()).contains("after epoch 5"));
    assert!(bug(sink.recover(None).unwrap_err()).contains("recovery after output began"));
    // A bug does not poison: the protocol goes on.
    commit_epoch(sink.as_mut(), 6, &[rows(0, 1)]);
    let mut direct = self::sink(dir.path(), "csv");
    direct.write(&rows(0, 1), None).unwrap();
    assert!(bug(direct.begin_epoch(1).unwrap_err()).contains("outside any epoch"));
}
