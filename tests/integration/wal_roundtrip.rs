//! Every event type and every metric path round-trips through real segment files.

use proptest::prelude::*;
use runlog::wal::metric::{Columns, decode_columns, encode_columns};
use runlog::wal::reader::scan_segment;
use runlog::wal::segment::{FORMAT_VERSION, SegmentHeader};
use runlog::wal::{
    Dataset, DatasetEvent, Event, Log, ModelEvent, ModelLink, ModelMetric, ModelStatus, RunStatus,
};
use runlog::{ExperimentId, KeyId, ModelId, RunId, SegmentSequence, WriterId};

use crate::util::{Point, Rng, Store, read, small_options};

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn run() -> impl Strategy<Value = RunId> {
    any::<u128>().prop_map(RunId)
}

fn experiment() -> impl Strategy<Value = ExperimentId> {
    any::<u64>().prop_map(ExperimentId)
}

fn status() -> impl Strategy<Value = RunStatus> {
    prop_oneof![
        Just(RunStatus::Running),
        Just(RunStatus::Scheduled),
        Just(RunStatus::Finished),
        Just(RunStatus::Failed),
        Just(RunStatus::Killed),
    ]
}

/// Every metadata event type (metric events go through log_point / log_columns).
fn metadata_event() -> impl Strategy<Value = Event> {
    let t = any::<i64>;
    prop_oneof![
        (experiment(), t(), text()).prop_map(|(experiment, time_ms, name)| {
            Event::ExperimentCreated {
                experiment,
                time_ms,
                name,
            }
        }),
        (experiment(), t(), text()).prop_map(|(experiment, time_ms, name)| {
            Event::ExperimentRenamed {
                experiment,
                time_ms,
                name,
            }
        }),
        (experiment(), t()).prop_map(|(experiment, time_ms)| Event::ExperimentDeleted {
            experiment,
            time_ms
        }),
        (experiment(), t()).prop_map(|(experiment, time_ms)| Event::ExperimentRestored {
            experiment,
            time_ms
        }),
        (experiment(), t(), text(), text()).prop_map(|(experiment, time_ms, key, value)| {
            Event::ExperimentTagSet {
                experiment,
                time_ms,
                key,
                value,
            }
        }),
        (experiment(), t(), text()).prop_map(|(experiment, time_ms, key)| {
            Event::ExperimentTagDeleted {
                experiment,
                time_ms,
                key,
            }
        }),
        (
            run(),
            t(),
            experiment(),
            proptest::option::of(run()),
            text()
        )
            .prop_map(
                |(run, time_ms, experiment, parent, name)| Event::RunCreated {
                    run,
                    time_ms,
                    experiment,
                    parent,
                    name
                }
            ),
        (run(), t(), status(), proptest::option::of(any::<i64>())).prop_map(
            |(run, time_ms, status, end_time_ms)| Event::RunStatusChanged {
                run,
                time_ms,
                status,
                end_time_ms
            }
        ),
        (run(), t()).prop_map(|(run, time_ms)| Event::RunDeleted { run, time_ms }),
        (run(), t()).prop_map(|(run, time_ms)| Event::RunRestored { run, time_ms }),
        (run(), t(), text(), text()).prop_map(|(run, time_ms, key, value)| Event::ParamLogged {
            run,
            time_ms,
            key,
            value
        }),
        (run(), t(), text(), text()).prop_map(|(run, time_ms, key, value)| Event::TagSet {
            run,
            time_ms,
            key,
            value
        }),
        (run(), t(), text()).prop_map(|(run, time_ms, key)| Event::TagDeleted {
            run,
            time_ms,
            key
        }),
        (run(), t(), any::<u64>(), any::<[u8; 32]>(), text()).prop_map(
            |(run, time_ms, size_bytes, sha256, path)| Event::ArtifactRecorded {
                run,
                time_ms,
                size_bytes,
                sha256,
                path
            }
        ),
        (run(), t(), text()).prop_map(|(run, time_ms, path)| Event::ArtifactDeleted {
            run,
            time_ms,
            path
        }),
        model_event().prop_map(Event::Model),
        dataset_event().prop_map(Event::Dataset),
    ]
}

/// Both dataset event types.
fn dataset_event() -> impl Strategy<Value = DatasetEvent> {
    let t = any::<i64>;
    let dataset = (
        (text(), text(), text(), text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(
            |((name, digest, source_type, source), schema, profile)| Dataset {
                name,
                digest,
                source_type,
                source,
                schema,
                profile,
            },
        );
    let tags = proptest::collection::vec((text(), text()), 0..4);
    prop_oneof![
        (experiment(), t(), dataset).prop_map(|(experiment, time_ms, dataset)| {
            DatasetEvent::Logged {
                experiment,
                time_ms,
                dataset,
            }
        }),
        (run(), t(), text(), text(), tags).prop_map(|(run, time_ms, name, digest, tags)| {
            DatasetEvent::InputLogged {
                run,
                time_ms,
                name,
                digest,
                tags,
            }
        }),
    ]
}

fn model() -> impl Strategy<Value = ModelId> {
    any::<u128>().prop_map(ModelId)
}

/// Every logged-model event type.
fn model_event() -> impl Strategy<Value = ModelEvent> {
    let t = any::<i64>;
    let status = prop_oneof![
        Just(ModelStatus::Unspecified),
        Just(ModelStatus::Pending),
        Just(ModelStatus::Ready),
        Just(ModelStatus::UploadFailed),
    ];
    let link = prop_oneof![
        any::<i64>().prop_map(|step| ModelLink::Output { step }),
        Just(ModelLink::Input),
    ];
    prop_oneof![
        (
            model(),
            t(),
            experiment(),
            proptest::option::of(run()),
            text(),
            text()
        )
            .prop_map(
                |(model, time_ms, experiment, source_run, name, model_type)| {
                    ModelEvent::Created {
                        model,
                        time_ms,
                        experiment,
                        source_run,
                        name,
                        model_type,
                    }
                }
            ),
        (model(), t(), status).prop_map(|(model, time_ms, status)| ModelEvent::StatusChanged {
            model,
            time_ms,
            status
        }),
        (model(), t()).prop_map(|(model, time_ms)| ModelEvent::Deleted { model, time_ms }),
        (model(), t(), text(), text()).prop_map(|(model, time_ms, key, value)| {
            ModelEvent::TagSet {
                model,
                time_ms,
                key,
                value,
            }
        }),
        (model(), t(), text()).prop_map(|(model, time_ms, key)| ModelEvent::TagDeleted {
            model,
            time_ms,
            key
        }),
        (model(), t(), text(), text()).prop_map(|(model, time_ms, key, value)| {
            ModelEvent::ParamLogged {
                model,
                time_ms,
                key,
                value,
            }
        }),
        (model(), t(), any::<u64>(), any::<[u8; 32]>(), text()).prop_map(
            |(model, time_ms, size_bytes, sha256, path)| ModelEvent::ArtifactRecorded {
                model,
                time_ms,
                size_bytes,
                sha256,
                path,
            }
        ),
        (run(), t(), model(), link).prop_map(|(run, time_ms, model, link)| {
            ModelEvent::RunLinked {
                run,
                time_ms,
                model,
                link,
            }
        }),
        (
            (model(), run(), text()),
            // Finite, so that the event compares equal to itself.
            (-1e300f64..1e300, t(), t()),
            (proptest::option::of(text()), proptest::option::of(text())),
        )
            .prop_map(
                |(
                    (model, run, key),
                    (value, timestamp_ms, step),
                    (dataset_name, dataset_digest),
                )| {
                    ModelEvent::MetricLogged(ModelMetric {
                        model,
                        run,
                        key,
                        value,
                        timestamp_ms,
                        step,
                        dataset_name,
                        dataset_digest,
                    })
                }
            ),
    ]
}

/// Any f64 bit pattern: NaN payloads, infinities, subnormals, negative zero.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        any::<f32>().prop_map(f64::from),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
    ]
}

#[derive(Clone, Debug)]
struct PointOp {
    run: u8,
    key: u8,
    step: i64,
    timestamp_ms: i64,
    value: f64,
}

fn point_op() -> impl Strategy<Value = PointOp> {
    (0u8..3, 0u8..4, any::<i64>(), any::<i64>(), value()).prop_map(
        |(run, key, step, timestamp_ms, value)| PointOp {
            run,
            key,
            step,
            timestamp_ms,
            value,
        },
    )
}

const KEYS: [&str; 4] = ["loss", "val/acc", "ünïcødé key", "lr"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_event_type_round_trips_through_segments(
        events in proptest::collection::vec(metadata_event(), 1..40),
        segment_kib in 4u64..32,
    ) {
        let store = Store::new();
        let mut writer = store.writer(segment_kib * 1024);
        for event in &events {
            writer.append(event).unwrap();
        }
        writer.close().unwrap();
        let contents = read(&store.wal()).unwrap();
        let read_back: Vec<Event> = contents.events.into_iter().map(|(_, e)| e).collect();
        prop_assert_eq!(read_back, events);
    }

    #[test]
    fn points_round_trip_bit_for_bit_through_streams_and_columns(
        ops in proptest::collection::vec(point_op(), 1..300),
        batch_every in 1usize..50,
    ) {
        let store = Store::new();
        let mut writer = store.writer(8 * 1024);
        let mut expected = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let run = RunId(u128::from(op.run) + 1);
            let key = KEYS[usize::from(op.key)];
            if index % batch_every == 0 {
                let values = [op.value, -op.value];
                let steps = [op.step, op.step.wrapping_add(1)];
                let timestamps = [op.timestamp_ms, op.timestamp_ms];
                writer.log_columns(run, key, &steps, &timestamps, &values).unwrap();
                for i in 0..2 {
                    expected.push(Point { run, key: key.to_string(), step: steps[i], timestamp_ms: timestamps[i], value_bits: values[i].to_bits() });
                }
            } else {
                writer.log_point(run, key, op.step, op.timestamp_ms, op.value).unwrap();
                expected.push(Point { run, key: key.to_string(), step: op.step, timestamp_ms: op.timestamp_ms, value_bits: op.value.to_bits() });
            }
        }
        writer.close().unwrap();
        let contents = read(&store.wal()).unwrap();
        // Each run's points come back in logging order (a stream groups its points by run, so
        // the order across runs is not kept).
        let mut points: Vec<Point> = contents.points.into_iter().map(|(_, p)| p).collect();
        points.sort_by_key(|p| p.run);
        expected.sort_by_key(|p| p.run);
        prop_assert_eq!(points, expected);
    }

    #[test]
    fn columns_codec_round_trips_bit_for_bit(
        rows in proptest::collection::vec((any::<u32>(), any::<i64>(), any::<i64>(), value()), 0..200),
        run in any::<u128>(),
    ) {
        let key_ids: Vec<KeyId> = rows.iter().map(|r| KeyId(r.0)).collect();
        let steps: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let timestamps: Vec<i64> = rows.iter().map(|r| r.2).collect();
        let values: Vec<f64> = rows.iter().map(|r| r.3).collect();
        let mut payload = Vec::new();
        encode_columns(RunId(run), Columns { key_ids: &key_ids, steps: &steps, timestamps_ms: &timestamps, values: &values }, &mut payload);
        let batch = decode_columns(&payload).unwrap();
        prop_assert_eq!(batch.run, RunId(run));
        prop_assert_eq!(&batch.key_ids, &key_ids);
        prop_assert_eq!(&batch.steps, &steps);
        prop_assert_eq!(&batch.timestamps_ms, &timestamps);
        let bits: Vec<u64> = batch.values.iter().map(|v| v.to_bits()).collect();
        let expected: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
        prop_assert_eq!(bits, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        salvage in any::<bool>(),
    ) {
        let _ = scan_segment(&bytes, 0, salvage, &mut |_, _| {});
        let header = SegmentHeader {
            format_version: FORMAT_VERSION,
            writer: WriterId(1),
            sequence: SegmentSequence(0),
            created_unix_ms: 0,
            segment_bytes: 4096,
        };
        let mut with_header = header.encode().to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = scan_segment(&with_header, 0, salvage, &mut |_, _| {});
    }

    #[test]
    fn arbitrary_segment_files_never_panic_open_or_read(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        keep_header in any::<bool>(),
    ) {
        let store = Store::new();
        std::fs::create_dir_all(store.wal()).unwrap();
        let mut file = Vec::new();
        if keep_header {
            let header = SegmentHeader {
                format_version: FORMAT_VERSION,
                writer: WriterId(1),
                sequence: SegmentSequence(0),
                created_unix_ms: 0,
                segment_bytes: 4096,
            };
            file.extend_from_slice(&header.encode());
        }
        file.extend_from_slice(&bytes);
        std::fs::write(store.wal().join("0000000000000001-0000000000.wal"), &file).unwrap();
        let _ = Log::open(store.wal(), small_options());
        let _ = read(&store.wal());
    }
}

/// The floor: at most 12 bytes per point in the log on a realistic workload (several
/// keys per step, noisy values of f32 origin, millisecond timestamps), one call per point.
#[test]
fn single_point_calls_cost_at_most_12_bytes_per_point() {
    let store = Store::new();
    let (log, _) = Log::open(store.wal(), small_options()).unwrap();
    let mut rng = Rng::new(7);
    let run = RunId(1);
    let keys = ["train/loss", "train/acc", "lr", "grad_norm"];
    let mut timestamp_ms = 1_700_000_000_000i64;
    let steps = 20_000i64;
    for step in 0..steps {
        timestamp_ms += rng.below(3) as i64;
        for key in keys {
            log.log_point(run, key, step, timestamp_ms, rng.loss(step))
                .unwrap();
        }
    }
    log.close().unwrap();
    let bytes = store.log_bytes();
    let points = steps as u64 * keys.len() as u64;
    let per_point = bytes as f64 / points as f64;
    eprintln!("{bytes} bytes for {points} points: {per_point:.2} bytes/point");
    assert!(per_point <= 12.0, "{per_point:.2} bytes per point");
    assert_eq!(read(&store.wal()).unwrap().points.len() as u64, points);
}

/// One thread logging ten runs round-robin: each switch back to a run already in the stream
/// costs one byte, and a reader gets one batch per run per stream, not one per switch.
#[test]
fn one_thread_interleaving_ten_runs_stays_compact() {
    let store = Store::new();
    let (log, _) = Log::open(store.wal(), small_options()).unwrap();
    let mut rng = Rng::new(3);
    let points = 100_000i64;
    for i in 0..points {
        let run = RunId((i % 10) as u128);
        let j = i / 10;
        log.log_point(run, "loss", j, 1_700_000_000_000 + j, rng.loss(j))
            .unwrap();
    }
    log.close().unwrap();
    let bytes = store.log_bytes();
    let per_point = bytes as f64 / points as f64;
    eprintln!("{per_point:.2} bytes/point with 10 interleaved runs");
    assert!(per_point <= 10.0, "{per_point:.2} bytes per point");
    let mut batches = 0;
    runlog::wal::read_dir(&store.wal(), Default::default(), &mut |_, event| {
        if matches!(event, Event::Metrics(_)) {
            batches += 1;
        }
    })
    .unwrap();
    let contents = read(&store.wal()).unwrap();
    assert!(batches <= 10 * 100, "{batches} batches for 100k points");
    for run in 0..10u128 {
        let steps: Vec<i64> = contents.steps_of(RunId(run));
        assert_eq!(steps, (0..points / 10).collect::<Vec<_>>(), "run {run}");
    }
}

#[test]
fn batches_of_f32_origin_values_cost_at_most_12_bytes_per_point() {
    let store = Store::new();
    let (log, _) = Log::open(store.wal(), small_options()).unwrap();
    let mut rng = Rng::new(11);
    let run = RunId(1);
    let points = 100_000usize;
    let steps: Vec<i64> = (0..points as i64).collect();
    let timestamps: Vec<i64> = steps.iter().map(|s| 1_700_000_000_000 + s * 3).collect();
    let values: Vec<f64> = steps.iter().map(|s| rng.loss(*s)).collect();
    for chunk in 0..points / 1000 {
        let range = chunk * 1000..(chunk + 1) * 1000;
        log.log_columns(
            run,
            "loss",
            &steps[range.clone()],
            &timestamps[range.clone()],
            &values[range],
        )
        .unwrap();
    }
    log.close().unwrap();
    let bytes = store.log_bytes();
    let per_point = bytes as f64 / points as f64;
    eprintln!("{bytes} bytes for {points} points: {per_point:.2} bytes/point");
    assert!(per_point <= 12.0, "{per_point:.2} bytes per point");
}
