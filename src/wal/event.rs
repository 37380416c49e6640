//! The events of the tracking model and their record payloads.
//!
//! Payload layouts (all integers little-endian; `str` is a u32 byte length then UTF-8;
//! `opt<T>` is a u8 0/1 then `T` when 1):
//!
//! ```text
//! ExperimentCreated     experiment u64, time_ms i64, name str
//! ExperimentRenamed     experiment u64, time_ms i64, name str
//! ExperimentDeleted     experiment u64, time_ms i64
//! ExperimentRestored    experiment u64, time_ms i64
//! ExperimentTagSet      experiment u64, time_ms i64, key str, value str
//! ExperimentTagDeleted  experiment u64, time_ms i64, key str
//! RunCreated            run u128, time_ms i64 (start time), experiment u64,
//!                       parent opt<u128>, name str
//! RunStatusChanged      run u128, time_ms i64, status u8, end_time_ms opt<i64>
//! RunDeleted            run u128, time_ms i64
//! RunRestored           run u128, time_ms i64
//! ParamLogged           run u128, time_ms i64, key str, value str
//! TagSet                run u128, time_ms i64, key str, value str
//! TagDeleted            run u128, time_ms i64, key str
//! MetricKeyDefined      run u128, key_id u32, key str
//! MetricColumns         see metric.rs (optionally lz4-compressed)
//! ArtifactRecorded      run u128, time_ms i64, size_bytes u64, sha256 [32], path str
//! ArtifactDeleted       run u128, time_ms i64, path str
//! Seal                  record_count u64, final_segment u8 (0 or 1)
//! ```
//!
//! Logged models' events (record types 19 to 26, and 29) are laid out in `model_event.rs`,
//! datasets' (27 and 28) in `dataset_event.rs`.
//!
//! Invariant: `decode(encode(e)) == e` for every event, and decode consumes the whole payload.

use crate::error::CorruptionKind;
use crate::ids::{ExperimentId, KeyId, ModelId, RunId};
use crate::wal::codec::{Decoder, Encoder, malformed};
use crate::wal::dataset_event::DatasetEvent;
use crate::wal::metric::{self, Columns, MetricBatch};
use crate::wal::model_event::ModelEvent;
use crate::wal::record::{FLAG_COMPRESSED, RecordType};

/// Lifecycle status of a run. Values are MLflow's `RunStatus` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RunStatus {
    /// Still logging.
    Running = 1,
    /// Scheduled but not started.
    Scheduled = 2,
    /// Ended normally.
    Finished = 3,
    /// Ended with an error.
    Failed = 4,
    /// Stopped from outside (or its process died).
    Killed = 5,
}

impl RunStatus {
    /// The status for a stored byte.
    pub fn from_byte(byte: u8) -> Option<RunStatus> {
        match byte {
            1 => Some(RunStatus::Running),
            2 => Some(RunStatus::Scheduled),
            3 => Some(RunStatus::Finished),
            4 => Some(RunStatus::Failed),
            5 => Some(RunStatus::Killed),
            _ => None,
        }
    }

    /// MLflow's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// One entry of a writer's log.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An experiment was created.
    ExperimentCreated {
        /// The new experiment.
        experiment: ExperimentId,
        /// When, ms since the Unix epoch.
        time_ms: i64,
        /// Its name.
        name: String,
    },
    /// An experiment was renamed.
    ExperimentRenamed {
        /// The experiment.
        experiment: ExperimentId,
        /// When.
        time_ms: i64,
        /// The new name.
        name: String,
    },
    /// An experiment was soft-deleted.
    ExperimentDeleted {
        /// The experiment.
        experiment: ExperimentId,
        /// When.
        time_ms: i64,
    },
    /// A deleted experiment was restored.
    ExperimentRestored {
        /// The experiment.
        experiment: ExperimentId,
        /// When.
        time_ms: i64,
    },
    /// An experiment tag was set (replacing any earlier value).
    ExperimentTagSet {
        /// The experiment.
        experiment: ExperimentId,
        /// When.
        time_ms: i64,
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
    /// An experiment tag was deleted.
    ExperimentTagDeleted {
        /// The experiment.
        experiment: ExperimentId,
        /// When.
        time_ms: i64,
        /// Tag key.
        key: String,
    },
    /// A run was created.
    RunCreated {
        /// The new run.
        run: RunId,
        /// Its start time.
        time_ms: i64,
        /// The experiment it belongs to.
        experiment: ExperimentId,
        /// The parent run, for nested runs.
        parent: Option<RunId>,
        /// Its name.
        name: String,
    },
    /// A run's status changed.
    RunStatusChanged {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
        /// The new status.
        status: RunStatus,
        /// End time, for terminal statuses.
        end_time_ms: Option<i64>,
    },
    /// A run was soft-deleted.
    RunDeleted {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
    },
    /// A deleted run was restored.
    RunRestored {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
    },
    /// A param was logged (params are immutable per run).
    ParamLogged {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
        /// Param key.
        key: String,
        /// Param value.
        value: String,
    },
    /// A run tag was set.
    TagSet {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
    /// A run tag was deleted.
    TagDeleted {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
        /// Tag key.
        key: String,
    },
    /// A metric key was interned: later points of `run` in the same writer's log refer to `key`
    /// by `key_id`.
    MetricKeyDefined {
        /// The run.
        run: RunId,
        /// The id points use.
        key_id: KeyId,
        /// The key.
        key: String,
    },
    /// Metric points of one run.
    Metrics(MetricBatch),
    /// An artifact file was stored for a run.
    ArtifactRecorded {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
        /// File size.
        size_bytes: u64,
        /// SHA-256 of the content.
        sha256: [u8; 32],
        /// Path relative to the run's artifact folder.
        path: String,
    },
    /// An artifact file of a run was deleted.
    ArtifactDeleted {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
        /// Path relative to the run's artifact folder.
        path: String,
    },
    /// An event of a logged model, or of a run's link to one.
    Model(ModelEvent),
    /// An event of a dataset of an experiment, or of a run's use of one.
    Dataset(DatasetEvent),
}

/// Whose register an event sets: the run or experiment whose metadata it changes. A handle
/// appends every event of one owner through one lane (`Log::append`), so events of one owner
/// replay in the order they were acknowledged even within one millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A run's metadata (creation, status, lifecycle, params, tags, artifacts).
    Run(RunId),
    /// An experiment's metadata.
    Experiment(ExperimentId),
    /// A logged model's metadata.
    Model(ModelId),
}

impl Event {
    /// The run or experiment whose metadata this event sets; `None` for metric points and key
    /// definitions, which belong to the writer that logs them.
    pub fn owner(&self) -> Option<Owner> {
        match self {
            Event::ExperimentCreated { experiment, .. }
            | Event::ExperimentRenamed { experiment, .. }
            | Event::ExperimentDeleted { experiment, .. }
            | Event::ExperimentRestored { experiment, .. }
            | Event::ExperimentTagSet { experiment, .. }
            | Event::ExperimentTagDeleted { experiment, .. } => {
                Some(Owner::Experiment(*experiment))
            }
            Event::RunCreated { run, .. }
            | Event::RunStatusChanged { run, .. }
            | Event::RunDeleted { run, .. }
            | Event::RunRestored { run, .. }
            | Event::ParamLogged { run, .. }
            | Event::TagSet { run, .. }
            | Event::TagDeleted { run, .. }
            | Event::ArtifactRecorded { run, .. }
            | Event::ArtifactDeleted { run, .. } => Some(Owner::Run(*run)),
            Event::Model(event) => Some(event.owner()),
            Event::Dataset(event) => Some(event.owner()),
            Event::MetricKeyDefined { .. } | Event::Metrics(_) => None,
        }
    }

    /// The record type this event is written as.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn record_type(&self) -> RecordType {
        match self {
            Event::ExperimentCreated { .. } => RecordType::ExperimentCreated,
            Event::ExperimentRenamed { .. } => RecordType::ExperimentRenamed,
            Event::ExperimentDeleted { .. } => RecordType::ExperimentDeleted,
            Event::ExperimentRestored { .. } => RecordType::ExperimentRestored,
            Event::ExperimentTagSet { .. } => RecordType::ExperimentTagSet,
            Event::ExperimentTagDeleted { .. } => RecordType::ExperimentTagDeleted,
            Event::RunCreated { .. } => RecordType::RunCreated,
            Event::RunStatusChanged { .. } => RecordType::RunStatusChanged,
            Event::RunDeleted { .. } => RecordType::RunDeleted,
            Event::RunRestored { .. } => RecordType::RunRestored,
            Event::ParamLogged { .. } => RecordType::ParamLogged,
            Event::TagSet { .. } => RecordType::TagSet,
            Event::TagDeleted { .. } => RecordType::TagDeleted,
            Event::MetricKeyDefined { .. } => RecordType::MetricKeyDefined,
            Event::Metrics(_) => RecordType::MetricColumns,
            Event::ArtifactRecorded { .. } => RecordType::ArtifactRecorded,
            Event::ArtifactDeleted { .. } => RecordType::ArtifactDeleted,
            Event::Model(event) => event.record_type(),
            Event::Dataset(event) => event.record_type(),
        }
    }

    /// Appends the (uncompressed) payload to `out`.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        let mut e = Encoder::new(out);
        match self {
            Event::ExperimentCreated {
                experiment,
                time_ms,
                name,
            }
            | Event::ExperimentRenamed {
                experiment,
                time_ms,
                name,
            } => {
                e.u64(experiment.0);
                e.i64(*time_ms);
                e.str(name);
            }
            Event::ExperimentDeleted {
                experiment,
                time_ms,
            }
            | Event::ExperimentRestored {
                experiment,
                time_ms,
            } => {
                e.u64(experiment.0);
                e.i64(*time_ms);
            }
            Event::ExperimentTagSet {
                experiment,
                time_ms,
                key,
                value,
            } => {
                e.u64(experiment.0);
                e.i64(*time_ms);
                e.str(key);
                e.str(value);
            }
            Event::ExperimentTagDeleted {
                experiment,
                time_ms,
                key,
            } => {
                e.u64(experiment.0);
                e.i64(*time_ms);
                e.str(key);
            }
            Event::RunCreated {
                run,
                time_ms,
                experiment,
                parent,
                name,
            } => {
                e.u128(run.0);
                e.i64(*time_ms);
                e.u64(experiment.0);
                match parent {
                    Some(parent) => {
                        e.u8(1);
                        e.u128(parent.0);
                    }
                    None => e.u8(0),
                }
                e.str(name);
            }
            Event::RunStatusChanged {
                run,
                time_ms,
                status,
                end_time_ms,
            } => {
                e.u128(run.0);
                e.i64(*time_ms);
                e.u8(*status as u8);
                match end_time_ms {
                    Some(end) => {
                        e.u8(1);
                        e.i64(*end);
                    }
                    None => e.u8(0),
                }
            }
            Event::RunDeleted { run, time_ms } | Event::RunRestored { run, time_ms } => {
                e.u128(run.0);
                e.i64(*time_ms);
            }
            Event::ParamLogged {
                run,
                time_ms,
                key,
                value,
            }
            | Event::TagSet {
                run,
                time_ms,
                key,
                value,
            } => {
                e.u128(run.0);
                e.i64(*time_ms);
                e.str(key);
                e.str(value);
            }
            Event::TagDeleted { run, time_ms, key } => {
                e.u128(run.0);
                e.i64(*time_ms);
                e.str(key);
            }
            Event::MetricKeyDefined { run, key_id, key } => {
                e.u128(run.0);
                e.u32(key_id.0);
                e.str(key);
            }
            Event::Metrics(batch) => {
                let columns = Columns {
                    key_ids: &batch.key_ids,
                    steps: &batch.steps,
                    timestamps_ms: &batch.timestamps_ms,
                    values: &batch.values,
                };
                metric::encode_columns(batch.run, columns, out);
            }
            Event::ArtifactRecorded {
                run,
                time_ms,
                size_bytes,
                sha256,
                path,
            } => {
                e.u128(run.0);
                e.i64(*time_ms);
                e.u64(*size_bytes);
                e.bytes(sha256);
                e.str(path);
            }
            Event::ArtifactDeleted { run, time_ms, path } => {
                e.u128(run.0);
                e.i64(*time_ms);
                e.str(path);
            }
            Event::Model(event) => event.encode_payload(out),
            Event::Dataset(event) => event.encode_payload(out),
        }
    }

    /// Decodes the payload of a non-stream, non-seal record.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn decode(
        record_type: RecordType,
        flags: u8,
        payload: &[u8],
    ) -> Result<Event, CorruptionKind> {
        if record_type == RecordType::MetricColumns {
            return if flags & FLAG_COMPRESSED != 0 {
                metric::decode_columns(&metric::decompress(payload)?).map(Event::Metrics)
            } else {
                metric::decode_columns(payload).map(Event::Metrics)
            };
        }
        let mut d = Decoder::new(payload);
        if let Some(decoded) = ModelEvent::decode(record_type, &mut d) {
            let event = Event::Model(decoded?);
            d.finish()?;
            return Ok(event);
        }
        if let Some(decoded) = DatasetEvent::decode(record_type, &mut d) {
            let event = Event::Dataset(decoded?);
            d.finish()?;
            return Ok(event);
        }
        let event = match record_type {
            RecordType::ExperimentCreated => Event::ExperimentCreated {
                experiment: ExperimentId(d.u64()?),
                time_ms: d.i64()?,
                name: d.string()?,
            },
            RecordType::ExperimentRenamed => Event::ExperimentRenamed {
                experiment: ExperimentId(d.u64()?),
                time_ms: d.i64()?,
                name: d.string()?,
            },
            RecordType::ExperimentDeleted => Event::ExperimentDeleted {
                experiment: ExperimentId(d.u64()?),
                time_ms: d.i64()?,
            },
            RecordType::ExperimentRestored => Event::ExperimentRestored {
                experiment: ExperimentId(d.u64()?),
                time_ms: d.i64()?,
            },
            RecordType::ExperimentTagSet => Event::ExperimentTagSet {
                experiment: ExperimentId(d.u64()?),
                time_ms: d.i64()?,
                key: d.string()?,
                value: d.string()?,
            },
            RecordType::ExperimentTagDeleted => Event::ExperimentTagDeleted {
                experiment: ExperimentId(d.u64()?),
                time_ms: d.i64()?,
                key: d.string()?,
            },
            RecordType::RunCreated => Event::RunCreated {
                run: RunId(d.u128()?),
                time_ms: d.i64()?,
                experiment: ExperimentId(d.u64()?),
                parent: option(&mut d, |d| d.u128().map(RunId))?,
                name: d.string()?,
            },
            RecordType::RunStatusChanged => Event::RunStatusChanged {
                run: RunId(d.u128()?),
                time_ms: d.i64()?,
                status: {
                    let byte = d.u8()?;
                    RunStatus::from_byte(byte)
                        .ok_or_else(|| malformed(format!("unknown run status {byte}")))?
                },
                end_time_ms: option(&mut d, Decoder::i64)?,
            },
            RecordType::RunDeleted => Event::RunDeleted {
                run: RunId(d.u128()?),
                time_ms: d.i64()?,
            },
            RecordType::RunRestored => Event::RunRestored {
                run: RunId(d.u128()?),
                time_ms: d.i64()?,
            },
            RecordType::ParamLogged => Event::ParamLogged {
                run: RunId(d.u128()?),
                time_ms: d.i64()?,
                key: d.string()?,
                value: d.string()?,
            },
            RecordType::TagSet => Event::TagSet {
                run: RunId(d.u128()?),
                time_ms: d.i64()?,
                key: d.string()?,
                value: d.string()?,
            },
            RecordType::TagDeleted => Event::TagDeleted {
                run: RunId(d.u128()?),
                time_ms: d.i64()?,
                key: d.string()?,
            },
            RecordType::MetricKeyDefined => Event::MetricKeyDefined {
                run: RunId(d.u128()?),
                key_id: KeyId(d.u32()?),
                key: d.string()?,
            },
            RecordType::ArtifactRecorded => Event::ArtifactRecorded {
                run: RunId(d.u128()?),
                time_ms: d.i64()?,
                size_bytes: d.u64()?,
                sha256: {
                    let mut digest = [0u8; 32];
                    digest.copy_from_slice(d.take(32)?);
                    digest
                },
                path: d.string()?,
            },
            RecordType::ArtifactDeleted => Event::ArtifactDeleted {
                run: RunId(d.u128()?),
                time_ms: d.i64()?,
                path: d.string()?,
            },
            RecordType::MetricColumns
            | RecordType::MetricStream
            | RecordType::Seal
            | RecordType::LoggedModelCreated
            | RecordType::LoggedModelStatusChanged
            | RecordType::LoggedModelDeleted
            | RecordType::LoggedModelTagSet
            | RecordType::LoggedModelTagDeleted
            | RecordType::LoggedModelParamLogged
            | RecordType::LoggedModelArtifactRecorded
            | RecordType::RunModelLinked
            | RecordType::DatasetLogged
            | RecordType::LoggedModelMetricLogged
            | RecordType::DatasetInputLogged => {
                return Err(malformed(format!("{record_type:?} is not an event record")));
            }
        };
        d.finish()?;
        Ok(event)
    }
}

fn option<'a, T>(
    d: &mut Decoder<'a>,
    read: impl FnOnce(&mut Decoder<'a>) -> Result<T, CorruptionKind>,
) -> Result<Option<T>, CorruptionKind> {
    match d.u8()? {
        0 => Ok(None),
        1 => read(d).map(Some),
        tag => Err(malformed(format!("option tag {tag}, must be 0 or 1"))),
    }
}

/// The payload of a seal record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seal {
    /// Records in the segment before the seal (a stream counts as one).
    pub record_count: u64,
    /// Whether the writer closed after this segment (no segment follows).
    pub final_segment: bool,
}

impl Seal {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Encoder::new(out);
        e.u64(self.record_count);
        e.u8(u8::from(self.final_segment));
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Seal, CorruptionKind> {
        let mut d = Decoder::new(payload);
        let record_count = d.u64()?;
        let final_segment = match d.u8()? {
            0 => false,
            1 => true,
            other => return Err(malformed(format!("seal final flag {other}"))),
        };
        d.finish()?;
        Ok(Seal {
            record_count,
            final_segment,
        })
    }
}
