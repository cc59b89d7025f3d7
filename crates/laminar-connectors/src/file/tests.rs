//! Tests of the FILE source and sink through the public entry points.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{can_cast_types, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use super::source_reader::FILES_OPEN_MAX;
use crate::{
    create_sink, create_source, ChangeMode, ConnectorError, ConnectorOptions, SourceBatch,
    SourceConnector, SourceEvent, SourceMetrics,
};

const TS: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
    ConnectorOptions::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
}

fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, data_type)| Field::new(*name, data_type.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn bids_schema() -> SchemaRef {
    schema(&[
        ("auction", DataType::Int64),
        ("price", DataType::Int64),
        ("ts", TS),
    ])
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Reads a source to its end (or first error), collecting events.
fn read_events(
    source: &dyn SourceConnector,
    batch_rows_max: usize,
) -> (Vec<SourceEvent>, Option<ConnectorError>) {
    let mut reader = source.open(batch_rows_max).unwrap();
    let mut events = Vec::new();
    loop {
        match reader.next_event() {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, None),
            Err(e) => return (events, Some(e)),
        }
    }
}

/// Reads a source to its end (or first error), collecting batches.
fn read_all(
    source: &dyn SourceConnector,
    batch_rows_max: usize,
) -> (Vec<SourceBatch>, Option<ConnectorError>) {
    let (events, error) = read_events(source, batch_rows_max);
    let batches = events
        .into_iter()
        .filter_map(|event| match event {
            SourceEvent::Batch(batch) => Some(batch),
            _ => None,
        })
        .collect();
    (batches, error)
}

/// Events as short text: `open 0`, `0: 2 rows`, `end 0`.
fn describe(events: &[SourceEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| match event {
            SourceEvent::PartitionOpened(p) => format!("open {p}"),
            SourceEvent::Batch(b) => format!("{}: {} rows", b.partition, b.batch.num_rows()),
            SourceEvent::PartitionEnded(p) => format!("end {p}"),
        })
        .collect()
}

fn concat(batches: &[SourceBatch]) -> RecordBatch {
    let schema = batches[0].batch.schema();
    let plain: Vec<RecordBatch> = batches.iter().map(|b| b.batch.clone()).collect();
    concat_batches(&schema, &plain).unwrap()
}

fn int64s(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    let array = batch.column_by_name(column).unwrap();
    array
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .iter()
        .collect()
}

fn timestamps(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    let array = batch.column_by_name(column).unwrap();
    array
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .unwrap()
        .iter()
        .collect()
}

const T0: i64 = 1_704_067_200_000;

#[test]
fn csv_with_header_reads_typed_rows_and_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bids.csv");
    write(
        &path,
        "auction,price,ts\n1,10,2024-01-01 00:00:01\n2,,2024-01-01T00:00:02.5Z\n3,30,1704067203000\n",
    );
    let metrics = Arc::new(SourceMetrics::default());
    let source = create_source(
        "FILE",
        &options(&[("path", path_str(&path)), ("format", "csv")]),
        Some(bids_schema()),
        Arc::clone(&metrics),
    )
    .unwrap();
    assert!(source.is_bounded());
    assert_eq!(source.schema(), bids_schema());
    let (batches, error) = read_all(source.as_ref(), 100);
    assert!(error.is_none(), "{error:?}");
    let batch = concat(&batches);
    assert_eq!(int64s(&batch, "auction"), vec![Some(1), Some(2), Some(3)]);
    assert_eq!(int64s(&batch, "price"), vec![Some(10), None, Some(30)]);
    assert_eq!(
        timestamps(&batch, "ts"),
        vec![Some(T0 + 1_000), Some(T0 + 2_500), Some(T0 + 3_000)]
    );
    assert_eq!(metrics.rows_read(), 3);
    assert_eq!(metrics.records_malformed(), 0);
}

#[test]
fn csv_without_header_with_delimiter_and_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bids.txt");
    let mut text = String::new();
    for i in 0..10 {
        writeln!(text, "{i};{};{T0}", i * 10).unwrap();
    }
    write(&path, &text);
    let source = create_source(
        "file",
        &options(&[
            ("path", path_str(&path)),
            ("format", "csv"),
            ("header", "false"),
            ("delimiter", ";"),
        ]),
        Some(bids_schema()),
        Arc::default(),
    )
    .unwrap();
    let (batches, error) = read_all(source.as_ref(), 3);
    assert!(error.is_none(), "{error:?}");
    let sizes: Vec<usize> = batches.iter().map(|b| b.batch.num_rows()).collect();
    assert_eq!(sizes, vec![3, 3, 3, 1]);
    assert_eq!(
        int64s(&concat(&batches), "price"),
        (0..10).map(|i| Some(i * 10)).collect::<Vec<_>>()
    );
}

#[test]
fn files_are_read_side_by_side_each_a_partition_opened_and_ended() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("a.csv"),
        "auction,price,ts\n1,10,0\n2,20,0\n3,30,0\n",
    );
    write(&dir.path().join("b.csv"), "auction,price,ts\n4,40,0\n");
    write(&dir.path().join("c.csv"), "auction,price,ts\n");
    let pattern = dir.path().join("*.csv");
    // `batch_rows` caps the engine's batch size.
    let source = create_source(
        "file",
        &options(&[("path", path_str(&pattern)), ("batch_rows", "1")]),
        Some(bids_schema()),
        Arc::default(),
    )
    .unwrap();
    let (events, error) = read_events(source.as_ref(), 100);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        describe(&events),
        [
            "open 0",
            "open 1",
            "open 2",
            "0: 1 rows",
            "1: 1 rows",
            "end 2",
            "0: 1 rows",
            "end 1",
            "0: 1 rows",
            "end 0"
        ]
    );
    let err = create_source(
        "file",
        &options(&[("path", path_str(&pattern)), ("batch_rows", "0")]),
        Some(bids_schema()),
        Arc::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected at least 1"), "{err}");
}

#[test]
fn a_file_past_the_open_limit_opens_when_one_ends() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..=FILES_OPEN_MAX {
        let rows = if i == 0 { "1,1,0\n" } else { "1,1,0\n2,2,0\n" };
        write(
            &dir.path().join(format!("f{i:03}.csv")),
            &format!("auction,price,ts\n{rows}"),
        );
    }
    let pattern = dir.path().join("*.csv");
    let source = create_source(
        "file",
        &options(&[("path", path_str(&pattern)), ("batch_rows", "1")]),
        Some(bids_schema()),
        Arc::default(),
    )
    .unwrap();
    let (events, error) = read_events(source.as_ref(), 100);
    assert!(error.is_none(), "{error:?}");
    let described = describe(&events);
    let position = |text: &str| described.iter().position(|e| e == text).unwrap();
    // The last file opens right after the first (one row) ends, and only then.
    let last = FILES_OPEN_MAX;
    assert_eq!(position(&format!("open {last}")), position("end 0") + 1);
    assert_eq!(
        described.iter().filter(|e| e.starts_with("open")).count(),
        FILES_OPEN_MAX + 1
    );
    assert_eq!(
        described.iter().filter(|e| e.ends_with("rows")).count(),
        2 * FILES_OPEN_MAX + 1
    );
}

#[test]
fn glob_reads_matching_files_in_sorted_order_one_partition_each() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("b.csv"),
        "auction,price,ts\n3,30,0\n4,40,0\n",
    );
    write(
        &dir.path().join("a.csv"),
        "auction,price,ts\n1,10,0\n2,20,0\n",
    );
    write(&dir.path().join("c.txt"), "auction,price,ts\n9,90,0\n");
    let pattern = dir.path().join("*.csv");
    let source = create_source(
        "file",
        &options(&[("path", path_str(&pattern))]),
        Some(bids_schema()),
        Arc::default(),
    )
    .unwrap();
    let (batches, error) = read_all(source.as_ref(), 100);
    assert!(error.is_none(), "{error:?}");
    let partitions: Vec<u32> = batches.iter().map(|b| b.partition).collect();
    assert_eq!(partitions, vec![0, 1]);
    assert_eq!(
        int64s(&concat(&batches), "auction"),
        vec![Some(1), Some(2), Some(3), Some(4)]
    );
}

#[test]
fn csv_malformed_records_are_skipped_counted_and_the_first_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bids.csv");
    write(
        &path,
        "auction,price,ts\n\
         1,10,0\n\
         2,20,0\n\
         3,abc,0\n\
         4,40\n\
         5,50,0\n\
         6,60,not-a-time\n\
         7,70,0\n",
    );
    let metrics = Arc::new(SourceMetrics::default());
    let source = create_source(
        "file",
        &options(&[("path", path_str(&path))]),
        Some(bids_schema()),
        Arc::clone(&metrics),
    )
    .unwrap();
    // Small batches so that bad records fall in different chunks.
    let (batches, error) = read_all(source.as_ref(), 2);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        int64s(&concat(&batches), "auction"),
        vec![Some(1), Some(2), Some(5), Some(7)]
    );
    assert_eq!(metrics.records_malformed(), 3);
    assert_eq!(metrics.rows_read(), 4);
    assert_eq!(
        metrics.first_error().unwrap(),
        format!(
            "{} line 4, column price: cannot parse 'abc' as Int64",
            path.display()
        )
    );
}

#[test]
fn csv_on_error_fail_returns_the_rows_before_then_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bids.csv");
    write(&path, "auction,price,ts\n1,10,0\n2,20,0\n3,30\n4,40,0\n");
    let metrics = Arc::new(SourceMetrics::default());
    let source = create_source(
        "file",
        &options(&[("path", path_str(&path)), ("on_error", "fail")]),
        Some(bids_schema()),
        Arc::clone(&metrics),
    )
    .unwrap();
    let (batches, error) = read_all(source.as_ref(), 100);
    assert_eq!(int64s(&concat(&batches), "auction"), vec![Some(1), Some(2)]);
    match error {
        Some(ConnectorError::MalformedRecord {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!(file, path.display().to_string());
            assert_eq!(line, 4);
            assert_eq!(column, None);
            assert_eq!(message, "expected 3 fields, found 2");
        }
        other => panic!("expected a malformed record error, got {other:?}"),
    }
    assert_eq!(metrics.records_malformed(), 1);
}

#[test]
fn csv_header_with_wrong_field_count_fails_even_when_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bids.csv");
    write(&path, "auction,price\n1,10\n");
    let source = create_source(
        "file",
        &options(&[("path", path_str(&path))]),
        Some(bids_schema()),
        Arc::default(),
    )
    .unwrap();
    let (_, error) = read_all(source.as_ref(), 100);
    assert_eq!(
        error.unwrap().to_string(),
        format!(
            "{} line 1: header has 2 fields but the source declares 3 columns",
            path.display()
        )
    );
}

#[test]
fn json_reads_rows_and_skips_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bids.json");
    write(
        &path,
        concat!(
            "{\"auction\": 1, \"price\": 10, \"ts\": \"2024-01-01 00:00:01\"}\n",
            "\n",
            "{\"auction\": 2, \"price\": \"abc\", \"ts\": 1704067202000}\n",
            "{\"auction\": 3, \"price\": 30\n",
            "{\"auction\": 4, \"price\": 40, \"ts\": \"2024-01-01T00:00:04Z\", \"other\": true}\n",
            "{\"auction\": 5, \"price\": 50, \"ts\": \"soon\"}\n",
            "[1, 2, 3]\n",
            "{\"auction\": 6, \"ts\": 1704067206000}\n",
        ),
    );
    let metrics = Arc::new(SourceMetrics::default());
    let source = create_source(
        "file",
        &options(&[("path", path_str(&path)), ("format", "json")]),
        Some(bids_schema()),
        Arc::clone(&metrics),
    )
    .unwrap();
    let (batches, error) = read_all(source.as_ref(), 100);
    assert!(error.is_none(), "{error:?}");
    let batch = concat(&batches);
    assert_eq!(int64s(&batch, "auction"), vec![Some(1), Some(4), Some(6)]);
    assert_eq!(int64s(&batch, "price"), vec![Some(10), Some(40), None]);
    assert_eq!(
        timestamps(&batch, "ts"),
        vec![Some(T0 + 1_000), Some(T0 + 4_000), Some(T0 + 6_000)]
    );
    assert_eq!(metrics.records_malformed(), 4);
    assert_eq!(
        metrics.first_error().unwrap(),
        format!(
            "{} line 3, column price: cannot parse 'abc' as Int64",
            path.display()
        )
    );
}

#[test]
fn json_on_error_fail_names_line_and_kind_of_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bids.jsonl");
    write(
        &path,
        "{\"auction\": 1, \"price\": 10, \"ts\": 0}\n{\"auction\": 2, \"price\": 2\n{\"auction\": 3}\n",
    );
    let source = create_source(
        "file",
        &options(&[("path", path_str(&path)), ("on_error", "fail")]),
        Some(bids_schema()),
        Arc::default(),
    )
    .unwrap();
    let (batches, error) = read_all(source.as_ref(), 100);
    assert_eq!(int64s(&concat(&batches), "auction"), vec![Some(1)]);
    match error {
        Some(ConnectorError::MalformedRecord {
            line,
            column,
            message,
            ..
        }) => {
            assert_eq!(line, 2);
            assert_eq!(column, None);
            assert_eq!(
                message,
                "invalid JSON: EOF while parsing an object at character 25"
            );
        }
        other => panic!("expected a malformed record error, got {other:?}"),
    }
}

#[test]
fn create_time_validation_names_the_problem() {
    let declared = Some(bids_schema());
    let err = |connector: &str, pairs: &[(&str, &str)], declared: Option<SchemaRef>| {
        create_source(connector, &options(pairs), declared, Arc::default())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("file", &[("format", "csv")], declared.clone()),
        "connector FILE source requires option 'path'"
    );
    assert_eq!(
        err("file", &[("path", "x.csv"), ("colour", "red")], declared.clone()),
        "unknown option 'colour' for connector FILE source; known options: batch_rows, delimiter, format, header, idle_timeout, on_error, path"
    );
    assert!(err("file", &[("path", "x.csv")], None)
        .starts_with("connector FILE source with format 'csv' needs declared columns"));
    assert!(err("file", &[("path", "x.json")], None)
        .starts_with("connector FILE source with format 'json' needs declared columns"));
    assert_eq!(
        err("file", &[("path", "x.data")], declared.clone()),
        "connector FILE source requires option 'format'"
    );
    assert!(err(
        "file",
        &[("path", "x"), ("format", "avro")],
        declared.clone()
    )
    .contains("expected one of: csv, json, parquet"));
    assert!(err(
        "file",
        &[("path", "x.json"), ("header", "false")],
        declared.clone()
    )
    .contains("option 'header' applies only to format 'csv'"));
    assert!(err(
        "file",
        &[("path", "x.csv"), ("on_error", "ignore")],
        declared.clone()
    )
    .contains("expected one of: skip, fail"));
    assert!(
        err("file", &[("path", "x.csv"), ("delimiter", "ab")], declared)
            .contains("expected a single ASCII character")
    );
    let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
    assert_eq!(
        err("file", &[("path", "x.csv")], Some(schema(&[("ids", list)]))),
        "column ids has type List(Int64), which the csv format cannot read or write"
    );
}

#[test]
fn a_path_matching_no_file_is_an_error_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("missing-*.csv");
    let source = create_source(
        "file",
        &options(&[("path", path_str(&pattern))]),
        Some(bids_schema()),
        Arc::default(),
    )
    .unwrap();
    let err = source.open(10).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!("no file matches path '{}'", pattern.display())
    );
    // Parquet without declared columns takes its schema from the first file, at CREATE time.
    let parquet = dir.path().join("missing-*.parquet");
    let err = create_source(
        "file",
        &options(&[("path", path_str(&parquet))]),
        None,
        Arc::default(),
    )
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        format!("no file matches path '{}'", parquet.display())
    );
}

fn sample_batch() -> RecordBatch {
    let schema = schema(&[
        ("id", DataType::Int64),
        ("name", DataType::Utf8),
        ("score", DataType::Float64),
        ("ts", TS),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
        Arc::new(StringArray::from(vec![
            Some("ann, \"the\" first"),
            None,
            Some("cy"),
        ])),
        Arc::new(Float64Array::from(vec![Some(1.5), Some(-2.25), Some(1e10)])),
        Arc::new(TimestampMillisecondArray::from(vec![
            Some(T0),
            Some(T0 + 1_234),
            None,
        ])),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Writes two batches with the FILE sink, reads them back with the FILE source.
fn round_trip(format: &str, file_name: &str) -> RecordBatch {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out").join("nested").join(file_name);
    let batch = sample_batch();
    let sink_options = options(&[("path", path_str(&path)), ("format", format)]);
    let mut sink = create_sink(
        "FILE",
        &sink_options,
        batch.schema(),
        ChangeMode::AppendOnly,
    )
    .unwrap();
    sink.write(&batch, None).unwrap();
    sink.write(&batch.slice(0, 2), None).unwrap();
    sink.close().unwrap();
    let source = create_source(
        "file",
        &options(&[("path", path_str(&path)), ("format", format)]),
        Some(batch.schema()),
        Arc::default(),
    )
    .unwrap();
    let (batches, error) = read_all(source.as_ref(), 100);
    assert!(error.is_none(), "{format}: {error:?}");
    concat(&batches)
}

#[test]
fn sink_round_trips_through_every_format() {
    let batch = sample_batch();
    let expected = concat_batches(&batch.schema(), &[batch.clone(), batch.slice(0, 2)]).unwrap();
    for (format, file_name) in [
        ("csv", "out.csv"),
        ("json", "out.json"),
        ("parquet", "out.parquet"),
    ] {
        assert_eq!(round_trip(format, file_name), expected, "format {format}");
    }
}

#[test]
fn csv_sink_without_rows_writes_only_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.csv");
    let mut sink = create_sink(
        "file",
        &options(&[("path", path_str(&path))]),
        sample_batch().schema(),
        ChangeMode::AppendOnly,
    )
    .unwrap();
    assert!(!path.exists(), "creating a sink must not touch the file");
    sink.close().unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "id,name,score,ts\n"
    );
}

#[test]
fn sink_validation_and_errors_name_the_option_or_path() {
    let schema = sample_batch().schema();
    let err = create_sink(
        "kafka",
        &options(&[]),
        schema.clone(),
        ChangeMode::AppendOnly,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown sink connector 'kafka'; known sink connectors: file"
    );
    let err = create_sink(
        "file",
        &options(&[("path", "x.csv"), ("on_error", "skip")]),
        schema.clone(),
        ChangeMode::AppendOnly,
    )
    .unwrap_err();
    assert!(err
        .to_string()
        .starts_with("unknown option 'on_error' for connector FILE sink"));
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: the error names the path.
    let path = dir.path().join("taken.csv");
    std::fs::create_dir(&path).unwrap();
    let mut sink = create_sink(
        "file",
        &options(&[("path", path_str(&path))]),
        schema,
        ChangeMode::AppendOnly,
    )
    .unwrap();
    let err = sink.write(&sample_batch(), None).unwrap_err();
    assert!(err.to_string().starts_with(path_str(&path)), "{err}");
}

/// Writes `batch` to a parquet file at `path` with the sink.
fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut sink = create_sink(
        "file",
        &options(&[("path", path_str(path))]),
        batch.schema(),
        ChangeMode::AppendOnly,
    )
    .unwrap();
    sink.write(batch, None).unwrap();
    sink.close().unwrap();
}

#[test]
fn parquet_uses_the_file_schema_or_projects_and_casts_to_the_declared_one() {
    let dir = tempfile::tempdir().unwrap();
    let file_schema = schema(&[
        ("id", DataType::Int32),
        ("name", DataType::Utf8),
        ("ts", TS),
    ]);
    let batch = RecordBatch::try_new(
        file_schema.clone(),
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
            Arc::new(TimestampMillisecondArray::from(vec![T0, T0 + 1, T0 + 2])),
        ],
    )
    .unwrap();
    write_parquet(&dir.path().join("part-0.parquet"), &batch);
    write_parquet(&dir.path().join("part-1.parquet"), &batch.slice(1, 2));
    let pattern = dir.path().join("part-*.parquet");

    let inferred = create_source(
        "file",
        &options(&[("path", path_str(&pattern))]),
        None,
        Arc::default(),
    )
    .unwrap();
    assert_eq!(inferred.schema(), file_schema);
    let (batches, error) = read_all(inferred.as_ref(), 2);
    assert!(error.is_none(), "{error:?}");
    let sizes: Vec<(u32, usize)> = batches
        .iter()
        .map(|b| (b.partition, b.batch.num_rows()))
        .collect();
    // The files are read side by side, a batch of each in turn.
    assert_eq!(sizes, vec![(0, 2), (1, 2), (0, 1)]);

    let declared = schema(&[("TS", TS), ("id", DataType::Int64)]);
    let projected = create_source(
        "file",
        &options(&[("path", path_str(&pattern))]),
        Some(declared.clone()),
        Arc::default(),
    )
    .unwrap();
    let (batches, error) = read_all(projected.as_ref(), 100);
    assert!(error.is_none(), "{error:?}");
    let batch = concat(&batches);
    assert_eq!(batch.schema(), declared);
    assert_eq!(
        int64s(&batch, "id"),
        vec![Some(1), Some(2), Some(3), Some(2), Some(3)]
    );
    assert_eq!(timestamps(&batch, "TS")[0], Some(T0));
}

#[test]
fn parquet_column_type_mismatch_names_column_file_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.parquet");
    let batch = RecordBatch::try_new(
        schema(&[("id", DataType::Int64)]),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    write_parquet(&path, &batch);
    let nested = DataType::Struct(vec![Field::new("a", DataType::Int64, true)].into());
    assert!(!can_cast_types(&DataType::Int64, &nested));
    let open = |declared: SchemaRef| {
        let source = create_source(
            "file",
            &options(&[("path", path_str(&path))]),
            Some(declared),
            Arc::default(),
        )
        .unwrap();
        read_all(source.as_ref(), 10).1.unwrap()
    };
    match open(schema(&[("id", nested.clone())])) {
        ConnectorError::ColumnType {
            column,
            origin,
            declared,
            actual,
        } => {
            assert_eq!(column, "id");
            assert_eq!(origin, format!("parquet file {}", path.display()));
            assert_eq!(declared, nested.to_string());
            assert_eq!(actual, "Int64");
        }
        other => panic!("expected a column type error, got {other:?}"),
    }
    let missing = open(schema(&[("price", DataType::Int64)])).to_string();
    assert_eq!(
        missing,
        format!(
            "column price does not exist in parquet file {}; available columns: id",
            path.display()
        )
    );
    assert!(read_all_bytes_is_parquet(&path));
}

fn read_all_bytes_is_parquet(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1")
}

#[test]
fn a_corrupt_parquet_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.parquet");
    write(&path, "not parquet at all");
    let source = create_source(
        "file",
        &options(&[("path", path_str(&path))]),
        Some(schema(&[("id", DataType::Int64)])),
        Arc::default(),
    )
    .unwrap();
    let err = read_all(source.as_ref(), 10).1.unwrap();
    assert!(err.to_string().starts_with(path_str(&path)), "{err}");
}

#[test]
fn csv_and_json_sinks_write_readable_text() {
    let dir = tempfile::tempdir().unwrap();
    let batch = sample_batch();
    let mut text = Vec::new();
    for file_name in ["out.csv", "out.json"] {
        let path = dir.path().join(file_name);
        let mut sink = create_sink(
            "file",
            &options(&[("path", path_str(&path))]),
            batch.schema(),
            ChangeMode::AppendOnly,
        )
        .unwrap();
        sink.write(&batch, None).unwrap();
        sink.close().unwrap();
        text.push(std::fs::read_to_string(&path).unwrap());
    }
    assert_eq!(
        text[0],
        "id,name,score,ts\n\
         1,\"ann, \"\"the\"\" first\",1.5,2024-01-01T00:00:00\n\
         2,,-2.25,2024-01-01T00:00:01.234\n\
         ,cy,10000000000.0,\n"
    );
    assert_eq!(
        text[1],
        concat!(
            r#"{"id":1,"name":"ann, \"the\" first","score":1.5,"ts":"2024-01-01T00:00:00"}"#,
            "\n",
            r#"{"id":2,"score":-2.25,"ts":"2024-01-01T00:00:01.234"}"#,
            "\n",
            r#"{"name":"cy","score":1.0e10}"#,
            "\n",
        )
    );
}

#[test]
fn changelog_sinks_add_the_op_column_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let batch = sample_batch().project(&[0, 1]).unwrap();
    let weights = Int64Array::from(vec![1, -1, 2]);
    let mut text = Vec::new();
    for file_name in ["out.csv", "out.json", "out.parquet", "empty.csv"] {
        let path = dir.path().join(file_name);
        let mut sink = create_sink(
            "file",
            &options(&[("path", path_str(&path))]),
            batch.schema(),
            ChangeMode::Changelog,
        )
        .unwrap();
        if !file_name.starts_with("empty") {
            sink.write(&batch, Some(&weights)).unwrap();
            // A batch without weights is all inserts.
            sink.write(&batch.slice(0, 1), None).unwrap();
        }
        sink.close().unwrap();
        if file_name.ends_with("parquet") {
            let source = create_source(
                "file",
                &options(&[("path", path_str(&path))]),
                None,
                Arc::default(),
            )
            .unwrap();
            let (batches, error) = read_all(source.as_ref(), 100);
            assert!(error.is_none(), "{error:?}");
            let read = concat(&batches);
            assert_eq!(read.schema().field(2).name(), "op");
            let ops = read
                .column(2)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            assert_eq!(
                ops.iter().flatten().collect::<Vec<_>>(),
                ["+", "-", "+", "+", "+"]
            );
            assert_eq!(int64s(&read, "id"), [Some(1), Some(2), None, None, Some(1)]);
        } else {
            text.push(std::fs::read_to_string(&path).unwrap());
        }
    }
    assert_eq!(
        text[0],
        "id,name,op\n1,\"ann, \"\"the\"\" first\",+\n2,,-\n,cy,+\n,cy,+\n1,\"ann, \"\"the\"\" first\",+\n"
    );
    assert_eq!(
        text[1]
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().1)
            .collect::<Vec<_>>(),
        [
            r#""op":"+"}"#,
            r#""op":"-"}"#,
            r#""op":"+"}"#,
            r#""op":"+"}"#,
            r#""op":"+"}"#
        ]
    );
    assert_eq!(text[2], "id,name,op\n", "a changelog without rows");

    let clash = create_sink(
        "file",
        &options(&[("path", "x.csv")]),
        schema(&[("op", DataType::Int64)]),
        ChangeMode::Changelog,
    )
    .unwrap_err();
    assert!(clash.to_string().contains("rename it"), "{clash}");
}
