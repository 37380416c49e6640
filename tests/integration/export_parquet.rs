//! The Parquet export, read back with the parquet crate and checked column by column against
//! what was logged, and its file metadata against the documented layout.
#![cfg(feature = "parquet")]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding};
use parquet::file::reader::{FileReader, SerializedFileReader};
use runlog::wal::RunStatus;
use runlog::{Durability, Error, RunOptions, Store, StoreOptions};

/// (run_id, key) -> [(step, timestamp, value bits)].
type Series = BTreeMap<(String, String), Vec<(i64, i64, u64)>>;

fn read(path: &Path) -> RecordBatch {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow_select_concat(&batches)
}

/// Concatenates batches without pulling in arrow-select: tests only need small files, which the
/// reader returns as one batch.
fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
    assert_eq!(batches.len(), 1, "expected one batch per small file");
    batches[0].clone()
}

fn schema_of(batch: &RecordBatch) -> Vec<(String, DataType, bool)> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
        .collect()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = batch
        .column_by_name(column)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    (0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i).to_string()))
        .collect()
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    let array = batch
        .column_by_name(column)
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    (0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i)))
        .collect()
}

fn float_bits(batch: &RecordBatch, column: &str) -> Vec<u64> {
    let array = batch
        .column_by_name(column)
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    array.values().iter().map(|v| v.to_bits()).collect()
}

use DataType::{Float64, Int64, Utf8};

fn s(name: &str, data_type: DataType, nullable: bool) -> (String, DataType, bool) {
    (name.to_string(), data_type, nullable)
}

#[test]
fn export_matches_what_was_logged_column_by_column() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 64 * 1024,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path().join("store"), options).unwrap();
    let mnist = store.get_or_create_experiment("mnist").unwrap();
    let cifar = store.get_or_create_experiment("cifar").unwrap();
    let parent = store
        .start_run(
            mnist.id,
            RunOptions {
                name: Some("parent".into()),
                ..RunOptions::default()
            },
        )
        .unwrap();
    let child = store
        .start_run(
            mnist.id,
            RunOptions {
                name: Some("child".into()),
                parent: Some(parent.id()),
                ..RunOptions::default()
            },
        )
        .unwrap();
    let other = store
        .start_run(
            cifar.id,
            RunOptions {
                name: Some("other".into()),
                ..RunOptions::default()
            },
        )
        .unwrap();
    // Logged out of step order, with repeats, NaN and infinities; points interleave runs.
    let mut logged: Series = BTreeMap::new();
    let mut log = |run: &runlog::Run, key: &str, step: i64, ts: i64, value: f64| {
        run.log_metric_at(key, value, step, ts).unwrap();
        logged
            .entry((run.id().to_string(), key.to_string()))
            .or_default()
            .push((step, ts, value.to_bits()));
    };
    for step in (0..50).rev() {
        log(&parent, "loss", step, 1000 + step, 1.0 / (step + 1) as f64);
        log(&child, "loss", step, 2000 + step, step as f64);
        log(
            &child,
            "acc",
            step % 10,
            3000 + step,
            if step % 7 == 0 { f64::NAN } else { 0.5 },
        );
    }
    log(&other, "loss", 3, 9, f64::INFINITY);
    log(&other, "loss", 3, 8, f64::NEG_INFINITY);
    other
        .log_batch("lr", &[0, 1, 2], Some(&[5, 6, 7]), &[0.1, 0.05, 0.01])
        .unwrap();
    for (step, value) in [(0i64, 0.1f64), (1, 0.05), (2, 0.01)] {
        logged
            .entry((other.id().to_string(), "lr".into()))
            .or_default()
            .push((step, 5 + step, value.to_bits()));
    }
    parent.log_param("lr", "0.01").unwrap();
    child.set_tag("model", "resnet").unwrap();
    let (parent_id, child_id, other_id) = (parent.id(), child.id(), other.id());
    parent.finish().unwrap();
    child.end(RunStatus::Failed).unwrap();
    drop(other); // KILLED
    store.delete_run(other_id).unwrap();

    let out = dir.path().join("export");
    let report = store.export(&out).unwrap();
    let total: usize = logged.values().map(Vec::len).sum();
    assert_eq!(report.points, total as u64);
    assert_eq!(
        (report.experiments, report.runs, report.orphan_points),
        (2, 3, 0)
    );
    let occupied = store.export(&out);
    assert!(
        matches!(occupied, Err(Error::InvalidInput(_))),
        "{occupied:?}"
    );

    let experiments = read(&out.join("experiments.parquet"));
    assert_eq!(
        schema_of(&experiments),
        vec![
            s("experiment_id", Utf8, false),
            s("name", Utf8, false),
            s("lifecycle_stage", Utf8, false),
            s("creation_time", Int64, false)
        ]
    );
    let mut names = strings(&experiments, "name");
    names.sort();
    assert_eq!(names, vec![Some("cifar".into()), Some("mnist".into())]);

    let partition = |table: &str, id: runlog::ExperimentId| {
        out.join(table)
            .join(format!("experiment_id={id}"))
            .join("part-0.parquet")
    };
    let runs = read(&partition("runs", mnist.id));
    assert_eq!(
        schema_of(&runs),
        vec![
            s("run_id", Utf8, false),
            s("name", Utf8, false),
            s("status", Utf8, false),
            s("start_time", Int64, false),
            s("end_time", Int64, true),
            s("parent_run_id", Utf8, true),
            s("lifecycle_stage", Utf8, false),
            s("user", Utf8, true),
        ]
    );
    let run_rows: BTreeMap<Option<String>, (Option<String>, Option<String>)> =
        strings(&runs, "run_id")
            .into_iter()
            .zip(
                strings(&runs, "status")
                    .into_iter()
                    .zip(strings(&runs, "parent_run_id")),
            )
            .collect();
    assert_eq!(
        run_rows[&Some(parent_id.to_string())],
        (Some("FINISHED".into()), None)
    );
    assert_eq!(
        run_rows[&Some(child_id.to_string())],
        (Some("FAILED".into()), Some(parent_id.to_string()))
    );
    assert!(ints(&runs, "end_time").iter().all(Option::is_some));
    let cifar_runs = read(&partition("runs", cifar.id));
    assert_eq!(strings(&cifar_runs, "status"), vec![Some("KILLED".into())]);
    assert_eq!(
        strings(&cifar_runs, "lifecycle_stage"),
        vec![Some("deleted".into())]
    );

    let params = read(&partition("params", mnist.id));
    assert_eq!(
        schema_of(&params),
        vec![
            s("run_id", Utf8, false),
            s("key", Utf8, false),
            s("value", Utf8, false)
        ]
    );
    assert_eq!(strings(&params, "value"), vec![Some("0.01".into())]);
    let tags = read(&partition("tags", mnist.id));
    assert!(strings(&tags, "key").contains(&Some("model".into())));
    assert!(strings(&tags, "key").contains(&Some("mlflow.runName".into())));

    // Every point, sorted by (run_id, key, step), each series' logging order kept within a step.
    let mut exported: Series = BTreeMap::new();
    let mut previous: Option<(String, String, i64)> = None;
    for experiment in [mnist.id, cifar.id] {
        let metrics = read(&partition("metrics", experiment));
        assert_eq!(
            schema_of(&metrics),
            vec![
                s("run_id", Utf8, false),
                s("key", Utf8, false),
                s("step", Int64, false),
                s("timestamp", Int64, false),
                s("value", Float64, false)
            ]
        );
        let rows = strings(&metrics, "run_id")
            .into_iter()
            .zip(strings(&metrics, "key"))
            .zip(
                ints(&metrics, "step")
                    .into_iter()
                    .zip(ints(&metrics, "timestamp"))
                    .zip(float_bits(&metrics, "value")),
            );
        previous = None;
        for ((run, key), ((step, ts), bits)) in rows {
            let (run, key, step, ts) = (run.unwrap(), key.unwrap(), step.unwrap(), ts.unwrap());
            let here = (run.clone(), key.clone(), step);
            if let Some(before) = &previous {
                assert!(*before <= here, "not sorted: {before:?} then {here:?}");
            }
            previous = Some(here);
            exported
                .entry((run, key))
                .or_default()
                .push((step, ts, bits));
        }
    }
    let _ = previous;
    for (series, points) in &mut logged {
        // Stable sort by step: what the export must hold.
        points.sort_by_key(|p| p.0);
        assert_eq!(exported.get(series), Some(&*points), "series {series:?}");
    }
    assert_eq!(exported.len(), logged.len());

    let summaries = read(&partition("metric_summaries", mnist.id));
    assert_eq!(
        schema_of(&summaries)
            .iter()
            .map(|f| f.0.as_str())
            .collect::<Vec<_>>(),
        [
            "run_id",
            "key",
            "count",
            "first_step",
            "last_step",
            "last_value",
            "last_timestamp",
            "min_value",
            "min_step",
            "max_value",
            "max_step"
        ]
    );
    let counts: Vec<i64> = ints(&summaries, "count")
        .into_iter()
        .map(|c| c.unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), 150);
}

#[test]
fn metric_files_have_the_documented_encodings_statistics_and_page_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path().join("store"),
        StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let steps: Vec<i64> = (0..50_000).collect();
    let values: Vec<f64> = steps
        .iter()
        .map(|s| f64::from((1.0 / (1.0 + *s as f64)) as f32))
        .collect();
    run.log_batch("loss", &steps, None, &values).unwrap();
    run.finish().unwrap();
    let out = dir.path().join("export");
    store.export(&out).unwrap();
    let path = out
        .join("metrics")
        .join(format!("experiment_id={}", experiment.id))
        .join("part-0.parquet");
    let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    let metadata = reader.metadata();
    let row_group = metadata.row_group(0);
    for column in row_group.columns() {
        assert!(
            matches!(column.compression(), Compression::ZSTD(_)),
            "{}: {:?}",
            column.column_path(),
            column.compression()
        );
        assert!(
            column.statistics().is_some(),
            "{}: no statistics",
            column.column_path()
        );
    }
    let encodings = |name: &str| -> Vec<Encoding> {
        let column = row_group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .unwrap();
        column.encodings().collect()
    };
    assert!(
        encodings("step").contains(&Encoding::DELTA_BINARY_PACKED),
        "{:?}",
        encodings("step")
    );
    assert!(encodings("timestamp").contains(&Encoding::DELTA_BINARY_PACKED));
    assert!(
        encodings("value").contains(&Encoding::BYTE_STREAM_SPLIT),
        "{:?}",
        encodings("value")
    );
    assert!(
        encodings("run_id").contains(&Encoding::RLE_DICTIONARY),
        "{:?}",
        encodings("run_id")
    );
    assert!(encodings("key").contains(&Encoding::RLE_DICTIONARY));
    for column in row_group.columns() {
        let path = column.column_path();
        assert!(
            column.column_index_offset().is_some(),
            "{path}: no column index (page statistics)"
        );
        assert!(
            column.offset_index_offset().is_some(),
            "{path}: no offset index"
        );
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "{bytes} bytes for 50,000 points: {:.2} bytes/point",
        bytes as f64 / 50_000.0
    );
}
