//! Tests of resuming the FILE source at a position through the public entry points: for
//! every split point, the rows before plus the rows after equal a straight read, per file;
//! a changed set of files is detected.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::resume_checks::{assert_split_equals_straight, read_to_end, split_read, take_rows};
use crate::{
    create_sink, create_source, ChangeMode, ConnectorOptions, SourceConnector, SourceEvent,
    SourcePosition,
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
        Field::new("file", DataType::Int64, true),
        Field::new("row", DataType::Int64, true),
    ]))
}

/// The text of file `file` with `rows` rows, in `format`; a malformed record follows the
/// second row, so skipping must count good rows only.
fn text(format: &str, file: i64, rows: i64) -> String {
    let mut lines: Vec<String> = Vec::new();
    if format == "csv" {
        lines.push("file,row".to_owned());
    }
    for row in 0..rows {
        lines.push(match format {
            "csv" => format!("{file},{row}"),
            _ => format!("{{\"file\": {file}, \"row\": {row}}}"),
        });
        if row == 1 {
            lines.push(match format {
                "csv" => "bad,record".to_owned(),
                _ => "{not json".to_owned(),
            });
        }
    }
    lines.join("\n") + "\n"
}

fn source(pattern: &str, format: &str) -> Box<dyn SourceConnector> {
    create_source(
        "file",
        &options(&[("path", pattern), ("format", format)]),
        (format != "parquet").then(schema),
        Arc::default(),
    )
    .unwrap()
}

fn pattern(dir: &Path, extension: &str) -> String {
    format!("{}/*.{extension}", dir.display())
}

#[test]
fn csv_and_json_resume_after_any_number_of_rows() {
    for format in ["csv", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let lengths = [5, 12, 7, 0];
        for (file, rows) in lengths.iter().enumerate() {
            let path = dir.path().join(format!("f{file}.{format}"));
            std::fs::write(path, text(format, file as i64, *rows)).unwrap();
        }
        let source = source(&pattern(dir.path(), format), format);
        // Every split point, including before the first row and after the last; files end
        // (and the empty one opens and ends) along the way.
        for rows in 0..=lengths.iter().sum::<i64>() as usize + 1 {
            assert_split_equals_straight(source.as_ref(), 4, rows);
        }
    }
}

#[test]
fn parquet_resumes_by_seeking_past_the_rows_taken() {
    let dir = tempfile::tempdir().unwrap();
    for (file, rows) in [(0_i64, 9_i64), (1, 4)] {
        let path = dir.path().join(format!("f{file}.parquet"));
        let mut sink = create_sink(
            "file",
            &options(&[("path", path.to_str().unwrap())]),
            schema(),
            ChangeMode::AppendOnly,
        )
        .unwrap();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(vec![file; rows as usize])),
                Arc::new(Int64Array::from_iter_values(0..rows)),
            ],
        )
        .unwrap();
        sink.write(&batch, None).unwrap();
        sink.close().unwrap();
    }
    let source = source(&pattern(dir.path(), "parquet"), "parquet");
    for rows in 0..=14 {
        assert_split_equals_straight(source.as_ref(), 3, rows);
    }
}

#[test]
fn files_not_reached_yet_keep_their_path_order_numbers() {
    let dir = tempfile::tempdir().unwrap();
    // More files than are read at once: some are not opened when the position is taken.
    for file in 0..20 {
        let path = dir.path().join(format!("f{file:02}.csv"));
        std::fs::write(path, text("csv", file, 1 + file % 3)).unwrap();
    }
    let source = source(&pattern(dir.path(), "csv"), "csv");
    for rows in [0, 1, 15, 16, 17, 30, 39, 40] {
        assert_split_equals_straight(source.as_ref(), 1, rows);
    }
    let (_, after) = split_read(source.as_ref(), 1, 17);
    let opened: Vec<u32> = after
        .iter()
        .filter_map(|event| match event {
            SourceEvent::PartitionOpened(p) => Some(*p),
            _ => None,
        })
        .collect();
    // After one row of each of the first 16 files, file 0 (one row) ended and file 16
    // opened before the 17th row: the reopened reader resumes files 1 to 16, keeps file 0
    // ended, and opens files 17 to 19 with their path-order numbers.
    assert_eq!(opened, (1..20).collect::<Vec<u32>>());
}

/// The position after the first `rows` rows of `source`.
fn position_after(source: &dyn SourceConnector, rows: usize) -> SourcePosition {
    let mut reader = source.open(2).unwrap();
    take_rows(reader.as_mut(), rows).1
}

#[test]
fn a_changed_set_of_files_is_detected_or_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    std::fs::write(file("a.csv"), text("csv", 0, 4)).unwrap();
    std::fs::write(file("b.csv"), text("csv", 1, 4)).unwrap();
    let pattern = pattern(dir.path(), "csv");
    let source = source(&pattern, "csv");
    let position = position_after(source.as_ref(), 6);
    assert_eq!(position.partition(1).unwrap().rows, 3);

    // A file that appeared since is read, as a new partition.
    std::fs::write(file("0-new.csv"), text("csv", 2, 2)).unwrap();
    let events = read_to_end(source.open_at(2, &position).unwrap().as_mut());
    let partitions: Vec<u32> = events
        .iter()
        .filter_map(|event| match event {
            SourceEvent::Batch(batch) => Some(batch.partition),
            _ => None,
        })
        .collect();
    assert!(partitions.contains(&2), "{partitions:?}");
    let rows: usize = events
        .iter()
        .map(|event| match event {
            SourceEvent::Batch(batch) => batch.batch.num_rows(),
            _ => 0,
        })
        .sum();
    assert_eq!(rows, 1 + 1 + 2);

    // A file shorter than the rows taken from it.
    std::fs::write(file("b.csv"), text("csv", 1, 2)).unwrap();
    let error = source.open_at(2, &position).err().unwrap().to_string();
    assert!(
        error.starts_with(&format!("cannot resume FILE source '{pattern}'")),
        "{error}"
    );
    assert!(error.contains(file("b.csv").to_str().unwrap()), "{error}");
    assert!(error.contains("it has 2 rows, fewer than the 3"), "{error}");

    // A file that is gone.
    std::fs::remove_file(file("a.csv")).unwrap();
    let error = source.open_at(2, &position).err().unwrap().to_string();
    assert!(error.contains(file("a.csv").to_str().unwrap()), "{error}");
    assert!(error.contains("the file is gone"), "{error}");
}

#[test]
fn a_source_read_to_its_end_resumes_to_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.json"), text("json", 0, 3)).unwrap();
    let source = source(&pattern(dir.path(), "json"), "json");
    let (_, after) = split_read(source.as_ref(), 8, 100);
    assert!(after.is_empty(), "{after:?}");
}
