//! The events of datasets (MLflow's `Dataset`, `DatasetInput`) and their record payloads
//! (format version 5).
//!
//! Payload layouts (as in `event.rs`: integers little-endian, `str` a u32 byte length then
//! UTF-8, `opt<T>` a u8 0/1 then `T` when 1):
//!
//! ```text
//! DatasetLogged       experiment u64, time_ms i64, name str, digest str, source_type str,
//!                     source str, schema opt<str>, profile opt<str>
//! DatasetInputLogged  run u128, time_ms i64, name str, digest str, tag_count u32,
//!                     tag_count × (key str, value str)
//! ```
//!
//! Invariant: `decode(encode(e)) == e` for every event, and decode consumes the whole payload.
//! A dataset belongs to an experiment, named by `(name, digest)` there, and its event is owned
//! by the experiment; a run's input names a dataset of the run's experiment by the same pair,
//! and is owned by the run, like the run's other metadata.

use crate::error::CorruptionKind;
use crate::ids::{ExperimentId, RunId};
use crate::wal::codec::{Decoder, Encoder, malformed};
use crate::wal::event::Owner;
use crate::wal::record::RecordType;

/// A dataset as MLflow describes one: what identifies it in its experiment (`name`, `digest`)
/// and where it came from. The strings are MLflow's, kept as given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dataset {
    /// Its name.
    pub name: String,
    /// A digest of its content (MLflow's client computes it).
    pub digest: String,
    /// The kind of its source (`"local"`, `"http"`, `"code"`, ...).
    pub source_type: String,
    /// Its source, as JSON text.
    pub source: String,
    /// Its schema, as JSON text, if known.
    pub schema: Option<String>,
    /// Its profile (summary statistics), as JSON text, if known.
    pub profile: Option<String>,
}

/// One event of a dataset, or of a run's use of one.
#[derive(Clone, Debug, PartialEq)]
pub enum DatasetEvent {
    /// A dataset was logged in an experiment; the earliest such event of a `(name, digest)`
    /// pair gives the experiment's dataset.
    Logged {
        /// The experiment.
        experiment: ExperimentId,
        /// When, ms since the Unix epoch.
        time_ms: i64,
        /// The dataset.
        dataset: Dataset,
    },
    /// A run used a dataset of its experiment; the earliest such event of a run and a
    /// `(name, digest)` pair gives the input's tags.
    InputLogged {
        /// The run.
        run: RunId,
        /// When.
        time_ms: i64,
        /// The dataset's name.
        name: String,
        /// The dataset's digest.
        digest: String,
        /// The input's tags (MLflow's `InputTag`s, e.g. `mlflow.data.context`), in order.
        tags: Vec<(String, String)>,
    },
}

/// Bytes the smallest tag takes: two empty strings.
const TAG_BYTES_MIN: usize = 4 + 4;

impl DatasetEvent {
    /// The experiment, or for an input the run, whose register the event sets.
    pub fn owner(&self) -> Owner {
        match self {
            DatasetEvent::Logged { experiment, .. } => Owner::Experiment(*experiment),
            DatasetEvent::InputLogged { run, .. } => Owner::Run(*run),
        }
    }

    /// The record type the event is written as.
    pub(crate) fn record_type(&self) -> RecordType {
        match self {
            DatasetEvent::Logged { .. } => RecordType::DatasetLogged,
            DatasetEvent::InputLogged { .. } => RecordType::DatasetInputLogged,
        }
    }

    /// Appends the payload to `out`.
    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        let mut e = Encoder::new(out);
        match self {
            DatasetEvent::Logged {
                experiment,
                time_ms,
                dataset,
            } => {
                e.u64(experiment.0);
                e.i64(*time_ms);
                e.str(&dataset.name);
                e.str(&dataset.digest);
                e.str(&dataset.source_type);
                e.str(&dataset.source);
                for text in [&dataset.schema, &dataset.profile] {
                    match text {
                        Some(text) => {
                            e.u8(1);
                            e.str(text);
                        }
                        None => e.u8(0),
                    }
                }
            }
            DatasetEvent::InputLogged {
                run,
                time_ms,
                name,
                digest,
                tags,
            } => {
                e.u128(run.0);
                e.i64(*time_ms);
                e.str(name);
                e.str(digest);
                // The writer refuses a payload over `RECORD_PAYLOAD_BYTES_MAX`, far below
                // `u32::MAX` tags of 8 bytes at least.
                e.u32(tags.len() as u32);
                for (key, value) in tags {
                    e.str(key);
                    e.str(value);
                }
            }
        }
    }

    /// Decodes the payload of a record of one of the dataset record types; `None` for any
    /// other type.
    pub(crate) fn decode(
        record_type: RecordType,
        d: &mut Decoder<'_>,
    ) -> Option<Result<DatasetEvent, CorruptionKind>> {
        match record_type {
            RecordType::DatasetLogged => Some(logged(d)),
            RecordType::DatasetInputLogged => Some(input_logged(d)),
            _ => None,
        }
    }
}

fn optional_string(d: &mut Decoder<'_>) -> Result<Option<String>, CorruptionKind> {
    match d.u8()? {
        0 => Ok(None),
        1 => d.string().map(Some),
        tag => Err(malformed(format!("option tag {tag}, must be 0 or 1"))),
    }
}

fn logged(d: &mut Decoder<'_>) -> Result<DatasetEvent, CorruptionKind> {
    Ok(DatasetEvent::Logged {
        experiment: ExperimentId(d.u64()?),
        time_ms: d.i64()?,
        dataset: Dataset {
            name: d.string()?,
            digest: d.string()?,
            source_type: d.string()?,
            source: d.string()?,
            schema: optional_string(d)?,
            profile: optional_string(d)?,
        },
    })
}

fn input_logged(d: &mut Decoder<'_>) -> Result<DatasetEvent, CorruptionKind> {
    let run = RunId(d.u128()?);
    let time_ms = d.i64()?;
    let name = d.string()?;
    let digest = d.string()?;
    let count = d.u32()? as usize;
    // Checked before reserving: a damaged count must not allocate beyond the payload.
    if count > d.remaining() / TAG_BYTES_MIN {
        return Err(malformed(format!(
            "{count} input tags cannot fit the {} bytes left",
            d.remaining()
        )));
    }
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        tags.push((d.string()?, d.string()?));
    }
    Ok(DatasetEvent::InputLogged {
        run,
        time_ms,
        name,
        digest,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(event: &DatasetEvent) -> Result<DatasetEvent, CorruptionKind> {
        let mut payload = Vec::new();
        event.encode_payload(&mut payload);
        let mut d = Decoder::new(&payload);
        let decoded = DatasetEvent::decode(event.record_type(), &mut d).expect("a dataset type");
        d.finish()?;
        decoded
    }

    #[test]
    fn events_round_trip() {
        let events = [
            DatasetEvent::Logged {
                experiment: ExperimentId(3),
                time_ms: -1,
                dataset: Dataset {
                    name: "train".into(),
                    digest: "abc".into(),
                    source_type: "local".into(),
                    source: "{\"uri\": \"/d\"}".into(),
                    schema: None,
                    profile: Some("{}".into()),
                },
            },
            DatasetEvent::InputLogged {
                run: RunId(u128::MAX),
                time_ms: 7,
                name: "é".into(),
                digest: String::new(),
                tags: vec![
                    ("mlflow.data.context".into(), "training".into()),
                    (String::new(), String::new()),
                ],
            },
        ];
        for event in &events {
            assert_eq!(round_trip(event).as_ref(), Ok(event));
        }
    }

    #[test]
    fn a_tag_count_beyond_the_payload_is_refused_before_allocating() {
        let mut payload = Vec::new();
        DatasetEvent::InputLogged {
            run: RunId(1),
            time_ms: 0,
            name: "n".into(),
            digest: "d".into(),
            tags: Vec::new(),
        }
        .encode_payload(&mut payload);
        let count_at = payload.len() - 4;
        payload[count_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut d = Decoder::new(&payload);
        let decoded = DatasetEvent::decode(RecordType::DatasetInputLogged, &mut d);
        assert!(matches!(
            decoded,
            Some(Err(CorruptionKind::MalformedPayload(_)))
        ));
    }
}
