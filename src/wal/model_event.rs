//! The events of logged models (MLflow 3's `LoggedModel`) and their record payloads (format
//! version 4; `LoggedModelMetricLogged` and status 0 from version 6).
//!
//! Payload layouts (as in `event.rs`: integers little-endian, `str` a u32 byte length then
//! UTF-8, `opt<T>` a u8 0/1 then `T` when 1):
//!
//! ```text
//! LoggedModelCreated           model u128, time_ms i64, experiment u64, source_run opt<u128>,
//!                              name str, model_type str
//! LoggedModelStatusChanged     model u128, time_ms i64, status u8 (0 unspecified, 1 pending,
//!                              2 ready, 3 upload failed)
//! LoggedModelDeleted           model u128, time_ms i64
//! LoggedModelTagSet            model u128, time_ms i64, key str, value str
//! LoggedModelTagDeleted        model u128, time_ms i64, key str
//! LoggedModelParamLogged       model u128, time_ms i64, key str, value str
//! LoggedModelArtifactRecorded  model u128, time_ms i64, size_bytes u64, sha256 [32], path str
//! RunModelLinked               run u128, time_ms i64, model u128, link u8 (0 output, 1 input),
//!                              step i64 (output links only)
//! LoggedModelMetricLogged      model u128, run u128, timestamp_ms i64, step i64, value f64,
//!                              key str, dataset_name opt<str>, dataset_digest opt<str>
//! ```
//!
//! Invariant: `decode(encode(e)) == e` for every event, and decode consumes the whole payload.
//! A model's events are owned by the model (one lane per model, so they replay in order); a
//! run's link to a model is owned by the run, like the run's other metadata.

use crate::error::CorruptionKind;
use crate::ids::{ExperimentId, ModelId, RunId};
use crate::wal::codec::{Decoder, Encoder, malformed};
use crate::wal::event::Owner;
use crate::wal::record::RecordType;

/// A logged model's status. Values are MLflow's `LoggedModelStatus` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ModelStatus {
    /// No status: MLflow's `LOGGED_MODEL_STATUS_UNSPECIFIED`, which its finalize accepts.
    Unspecified = 0,
    /// Created; its files are being uploaded.
    Pending = 1,
    /// Finalized: its files are complete.
    Ready = 2,
    /// Its upload failed.
    UploadFailed = 3,
}

impl ModelStatus {
    /// The status for a stored byte.
    pub fn from_byte(byte: u8) -> Option<ModelStatus> {
        match byte {
            0 => Some(ModelStatus::Unspecified),
            1 => Some(ModelStatus::Pending),
            2 => Some(ModelStatus::Ready),
            3 => Some(ModelStatus::UploadFailed),
            _ => None,
        }
    }

    /// MLflow's proto name for the status (`LOGGED_MODEL_READY`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Unspecified => "LOGGED_MODEL_STATUS_UNSPECIFIED",
            ModelStatus::Pending => "LOGGED_MODEL_PENDING",
            ModelStatus::Ready => "LOGGED_MODEL_READY",
            ModelStatus::UploadFailed => "LOGGED_MODEL_UPLOAD_FAILED",
        }
    }
}

/// How a run relates to a logged model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelLink {
    /// The run produced the model at `step` (MLflow's `LoggedModelOutput`).
    Output {
        /// The step it was produced at.
        step: i64,
    },
    /// The run used the model (MLflow's `LoggedModelInput`).
    Input,
}

/// A metric point a run logged for a logged model (MLflow's `Metric` with a `model_id`): a row
/// of MLflow's `logged_model_metrics`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMetric {
    /// The model it was logged for.
    pub model: ModelId,
    /// The run that logged it.
    pub run: RunId,
    /// Metric key.
    pub key: String,
    /// Its value.
    pub value: f64,
    /// Its timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Its step.
    pub step: i64,
    /// The name of the dataset it was computed on, if given.
    pub dataset_name: Option<String>,
    /// The digest of that dataset, if given.
    pub dataset_digest: Option<String>,
}

/// One event of a logged model, or of a run's link to one.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelEvent {
    /// A logged model was created (status pending).
    Created {
        /// The new model.
        model: ModelId,
        /// When, ms since the Unix epoch.
        time_ms: i64,
        /// Its experiment.
        experiment: ExperimentId,
        /// The run that logged it, if any.
        source_run: Option<RunId>,
        /// Its name.
        name: String,
        /// Its type (free text, often empty).
        model_type: String,
    },
    /// Its status changed (finalized).
    StatusChanged {
        /// The model.
        model: ModelId,
        /// When.
        time_ms: i64,
        /// The new status.
        status: ModelStatus,
    },
    /// It was deleted; a deleted model is gone for every reader.
    Deleted {
        /// The model.
        model: ModelId,
        /// When.
        time_ms: i64,
    },
    /// A tag was set (replacing any earlier value).
    TagSet {
        /// The model.
        model: ModelId,
        /// When.
        time_ms: i64,
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
    /// A tag was deleted.
    TagDeleted {
        /// The model.
        model: ModelId,
        /// When.
        time_ms: i64,
        /// Tag key.
        key: String,
    },
    /// A param was logged.
    ParamLogged {
        /// The model.
        model: ModelId,
        /// When.
        time_ms: i64,
        /// Param key.
        key: String,
        /// Param value.
        value: String,
    },
    /// An artifact file of the model was stored.
    ArtifactRecorded {
        /// The model.
        model: ModelId,
        /// When.
        time_ms: i64,
        /// File size.
        size_bytes: u64,
        /// SHA-256 of the content.
        sha256: [u8; 32],
        /// Path relative to the model's artifact folder.
        path: String,
    },
    /// A run was linked to a model.
    RunLinked {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
        /// The model.
        model: ModelId,
        /// How.
        link: ModelLink,
    },
    /// A metric point was logged for the model (format version 6).
    MetricLogged(ModelMetric),
}

impl ModelEvent {
    /// The model, or for a link the run, whose register the event sets.
    pub fn owner(&self) -> Owner {
        match self {
            ModelEvent::Created { model, .. }
            | ModelEvent::StatusChanged { model, .. }
            | ModelEvent::Deleted { model, .. }
            | ModelEvent::TagSet { model, .. }
            | ModelEvent::TagDeleted { model, .. }
            | ModelEvent::ParamLogged { model, .. }
            | ModelEvent::ArtifactRecorded { model, .. } => Owner::Model(*model),
            ModelEvent::MetricLogged(metric) => Owner::Model(metric.model),
            ModelEvent::RunLinked { run, .. } => Owner::Run(*run),
        }
    }

    /// The record type the event is written as.
    pub(crate) fn record_type(&self) -> RecordType {
        match self {
            ModelEvent::Created { .. } => RecordType::LoggedModelCreated,
            ModelEvent::StatusChanged { .. } => RecordType::LoggedModelStatusChanged,
            ModelEvent::Deleted { .. } => RecordType::LoggedModelDeleted,
            ModelEvent::TagSet { .. } => RecordType::LoggedModelTagSet,
            ModelEvent::TagDeleted { .. } => RecordType::LoggedModelTagDeleted,
            ModelEvent::ParamLogged { .. } => RecordType::LoggedModelParamLogged,
            ModelEvent::ArtifactRecorded { .. } => RecordType::LoggedModelArtifactRecorded,
            ModelEvent::RunLinked { .. } => RecordType::RunModelLinked,
            ModelEvent::MetricLogged(_) => RecordType::LoggedModelMetricLogged,
        }
    }

    /// Appends the payload to `out`.
    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        let mut e = Encoder::new(out);
        match self {
            ModelEvent::Created {
                model,
                time_ms,
                experiment,
                source_run,
                name,
                model_type,
            } => {
                e.u128(model.0);
                e.i64(*time_ms);
                e.u64(experiment.0);
                match source_run {
                    Some(run) => {
                        e.u8(1);
                        e.u128(run.0);
                    }
                    None => e.u8(0),
                }
                e.str(name);
                e.str(model_type);
            }
            ModelEvent::StatusChanged {
                model,
                time_ms,
                status,
            } => {
                e.u128(model.0);
                e.i64(*time_ms);
                e.u8(*status as u8);
            }
            ModelEvent::Deleted { model, time_ms } => {
                e.u128(model.0);
                e.i64(*time_ms);
            }
            ModelEvent::TagSet {
                model,
                time_ms,
                key,
                value,
            }
            | ModelEvent::ParamLogged {
                model,
                time_ms,
                key,
                value,
            } => {
                e.u128(model.0);
                e.i64(*time_ms);
                e.str(key);
                e.str(value);
            }
            ModelEvent::TagDeleted {
                model,
                time_ms,
                key,
            } => {
                e.u128(model.0);
                e.i64(*time_ms);
                e.str(key);
            }
            ModelEvent::ArtifactRecorded {
                model,
                time_ms,
                size_bytes,
                sha256,
                path,
            } => {
                e.u128(model.0);
                e.i64(*time_ms);
                e.u64(*size_bytes);
                e.bytes(sha256);
                e.str(path);
            }
            ModelEvent::RunLinked {
                run,
                time_ms,
                model,
                link,
            } => {
                e.u128(run.0);
                e.i64(*time_ms);
                e.u128(model.0);
                match link {
                    ModelLink::Output { step } => {
                        e.u8(0);
                        e.i64(*step);
                    }
                    ModelLink::Input => e.u8(1),
                }
            }
            ModelEvent::MetricLogged(metric) => {
                e.u128(metric.model.0);
                e.u128(metric.run.0);
                e.i64(metric.timestamp_ms);
                e.i64(metric.step);
                e.u64(metric.value.to_bits());
                e.str(&metric.key);
                for text in [&metric.dataset_name, &metric.dataset_digest] {
                    match text {
                        Some(text) => {
                            e.u8(1);
                            e.str(text);
                        }
                        None => e.u8(0),
                    }
                }
            }
        }
    }

    /// Decodes the payload of a record of one of the model record types; `None` for any other
    /// type.
    pub(crate) fn decode(
        record_type: RecordType,
        d: &mut Decoder<'_>,
    ) -> Option<Result<ModelEvent, CorruptionKind>> {
        let decoded = match record_type {
            RecordType::LoggedModelCreated => created(d),
            RecordType::LoggedModelStatusChanged => status_changed(d),
            RecordType::LoggedModelDeleted => (|| {
                Ok(ModelEvent::Deleted {
                    model: ModelId(d.u128()?),
                    time_ms: d.i64()?,
                })
            })(),
            RecordType::LoggedModelTagSet => (|| {
                Ok(ModelEvent::TagSet {
                    model: ModelId(d.u128()?),
                    time_ms: d.i64()?,
                    key: d.string()?,
                    value: d.string()?,
                })
            })(),
            RecordType::LoggedModelTagDeleted => (|| {
                Ok(ModelEvent::TagDeleted {
                    model: ModelId(d.u128()?),
                    time_ms: d.i64()?,
                    key: d.string()?,
                })
            })(),
            RecordType::LoggedModelParamLogged => (|| {
                Ok(ModelEvent::ParamLogged {
                    model: ModelId(d.u128()?),
                    time_ms: d.i64()?,
                    key: d.string()?,
                    value: d.string()?,
                })
            })(),
            RecordType::LoggedModelArtifactRecorded => artifact_recorded(d),
            RecordType::RunModelLinked => run_linked(d),
            RecordType::LoggedModelMetricLogged => metric_logged(d),
            _ => return None,
        };
        Some(decoded)
    }
}

fn created(d: &mut Decoder<'_>) -> Result<ModelEvent, CorruptionKind> {
    Ok(ModelEvent::Created {
        model: ModelId(d.u128()?),
        time_ms: d.i64()?,
        experiment: ExperimentId(d.u64()?),
        source_run: match d.u8()? {
            0 => None,
            1 => Some(RunId(d.u128()?)),
            tag => return Err(malformed(format!("option tag {tag}, must be 0 or 1"))),
        },
        name: d.string()?,
        model_type: d.string()?,
    })
}

fn status_changed(d: &mut Decoder<'_>) -> Result<ModelEvent, CorruptionKind> {
    let model = ModelId(d.u128()?);
    let time_ms = d.i64()?;
    let byte = d.u8()?;
    let status = ModelStatus::from_byte(byte)
        .ok_or_else(|| malformed(format!("unknown logged model status {byte}")))?;
    Ok(ModelEvent::StatusChanged {
        model,
        time_ms,
        status,
    })
}

fn artifact_recorded(d: &mut Decoder<'_>) -> Result<ModelEvent, CorruptionKind> {
    Ok(ModelEvent::ArtifactRecorded {
        model: ModelId(d.u128()?),
        time_ms: d.i64()?,
        size_bytes: d.u64()?,
        sha256: {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(d.take(32)?);
            digest
        },
        path: d.string()?,
    })
}

fn run_linked(d: &mut Decoder<'_>) -> Result<ModelEvent, CorruptionKind> {
    let run = RunId(d.u128()?);
    let time_ms = d.i64()?;
    let model = ModelId(d.u128()?);
    let link = match d.u8()? {
        0 => ModelLink::Output { step: d.i64()? },
        1 => ModelLink::Input,
        other => return Err(malformed(format!("unknown model link kind {other}"))),
    };
    Ok(ModelEvent::RunLinked {
        run,
        time_ms,
        model,
        link,
    })
}

fn metric_logged(d: &mut Decoder<'_>) -> Result<ModelEvent, CorruptionKind> {
    let model = ModelId(d.u128()?);
    let run = RunId(d.u128()?);
    let timestamp_ms = d.i64()?;
    let step = d.i64()?;
    let value = d.f64()?;
    let key = d.string()?;
    let mut optional_text = || match d.u8()? {
        0 => Ok(None),
        1 => d.string().map(Some),
        tag => Err(malformed(format!("option tag {tag}, must be 0 or 1"))),
    };
    let dataset_name = optional_text()?;
    let dataset_digest = optional_text()?;
    Ok(ModelEvent::MetricLogged(ModelMetric {
        model,
        run,
        key,
        value,
        timestamp_ms,
        step,
        dataset_name,
        dataset_digest,
    }))
}
