//! `runs/log-batch`'s body read in one pass: each `metrics[]` entry straight into its four
//! fields, its key borrowed from the body, instead of a `serde_json::Value` tree of owned
//! strings and maps per point that is then read again (the general reader, `wire::Fields`).
//!
//! Invariants:
//! - This reader only takes what it reads exactly as `Fields` would and refuses the rest:
//!   a body that is not one JSON object, a `metrics` that is not an array of objects, a
//!   field given twice, an entry whose `key`, `value`, `timestamp` or `step` the general
//!   reader would refuse or read through a rule of its own (null, a float timestamp, a
//!   negative timestamp). A refused body goes to the general reader, whose answer, error
//!   message included, is then the answer; so every body gets the answer it got before.
//! - Every field of the body but `metrics` goes into the [`Fields`] the general reader would
//!   have made of it, so the batch's other fields are read and checked by the same code.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::wire::{Fields, double_from_str, int_from_str};
use crate::tracking::validation;

/// A log-batch body: its metric entries, read, and the rest of its fields.
pub(crate) struct BatchBody<'a> {
    /// Every field but `metrics`.
    pub fields: Fields,
    /// `metrics[]`, in order.
    pub metrics: Vec<MetricEntry<'a>>,
}

/// One `metrics[]` entry, as the general reader reads it.
pub(crate) struct MetricEntry<'a> {
    /// Non-empty; borrowed from the body unless it holds escapes.
    pub key: Cow<'a, str>,
    pub value: f64,
    /// Non-negative.
    pub timestamp_ms: i64,
    pub step: i64,
    /// The entry names a logged model (a non-empty string `model_id`).
    pub from_model: bool,
}

/// The body read, or `None` if this reader does not take it (see the module doc): the caller
/// then reads it with [`Fields`].
pub(crate) fn read(body: &[u8]) -> Option<BatchBody<'_>> {
    // Anything but an object (an empty body, a message sent JSON-encoded as a string) is the
    // general reader's.
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let read = deserializer.deserialize_map(BodyVisitor).ok()?;
    deserializer.end().ok()?;
    Some(read)
}

/// Why this reader gave a body up; never shown, as the general reader then answers.
fn refused<E: de::Error>() -> E {
    E::custom("left to the general reader")
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = BatchBody<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a log-batch message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BatchBody<'de>, A::Error> {
        let mut fields = Map::new();
        let mut metrics = None;
        while let Some(name) = map.next_key::<String>()? {
            if name == "metrics" {
                if metrics.is_some() {
                    return Err(refused());
                }
                metrics = Some(map.next_value_seed(MetricsSeed)?);
            } else {
                let value: Value = map.next_value()?;
                if fields.insert(name, value).is_some() {
                    return Err(refused());
                }
            }
        }
        Ok(BatchBody {
            fields: Fields::from_map(fields),
            metrics: metrics.unwrap_or_default(),
        })
    }
}

struct MetricsSeed;

impl<'de> DeserializeSeed<'de> for MetricsSeed {
    type Value = Vec<MetricEntry<'de>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MetricsSeed {
    type Value = Vec<MetricEntry<'de>>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an array of metric entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let mut read = Vec::with_capacity(validation::BATCH_METRICS_MAX);
        while let Some(entry) = entries.next_element_seed(EntrySeed)? {
            // An oversized batch is refused by the general reader, with MLflow's message.
            if read.len() == validation::BATCH_METRICS_MAX {
                return Err(refused());
            }
            read.push(entry);
        }
        Ok(read)
    }
}

/// The fields of a metric entry this reader reads.
enum EntryField {
    Key,
    Value,
    Timestamp,
    Step,
    ModelId,
    Other,
}

impl EntryField {
    /// Its bit in the set of fields seen.
    fn bit(&self) -> u8 {
        match self {
            EntryField::Key => 1,
            EntryField::Value => 2,
            EntryField::Timestamp => 4,
            EntryField::Step => 8,
            EntryField::ModelId => 16,
            EntryField::Other => 0,
        }
    }
}

impl<'de> de::Deserialize<'de> for EntryField {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(EntryFieldVisitor)
    }
}

struct EntryFieldVisitor;

impl Visitor<'_> for EntryFieldVisitor {
    type Value = EntryField;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<EntryField, E> {
        Ok(match name {
            "key" => EntryField::Key,
            "value" => EntryField::Value,
            "timestamp" => EntryField::Timestamp,
            "step" => EntryField::Step,
            "model_id" => EntryField::ModelId,
            _ => EntryField::Other,
        })
    }
}

struct EntrySeed;

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = MetricEntry<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed {
    type Value = MetricEntry<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a metric entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetricEntry<'de>, A::Error> {
        let (mut key, mut value, mut timestamp_ms, mut step) = (None, None, None, None);
        let mut from_model = false;
        let mut seen = 0u8;
        while let Some(field) = map.next_key::<EntryField>()? {
            if seen & field.bit() != 0 {
                return Err(refused());
            }
            seen |= field.bit();
            match field {
                EntryField::Key => key = Some(map.next_value_seed(BorrowedText)?),
                EntryField::Value => value = Some(map.next_value_seed(Double)?),
                EntryField::Timestamp => timestamp_ms = Some(map.next_value_seed(Int)?),
                EntryField::Step => step = Some(map.next_value_seed(Int)?),
                EntryField::ModelId => {
                    let model: Value = map.next_value()?;
                    from_model = model.as_str().is_some_and(|id| !id.is_empty());
                }
                EntryField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (Some(key), Some(value), Some(timestamp_ms)) = (key, value, timestamp_ms) else {
            return Err(refused());
        };
        if key.is_empty() || timestamp_ms < 0 {
            return Err(refused());
        }
        Ok(MetricEntry {
            key,
            value,
            timestamp_ms,
            step: step.unwrap_or(0),
            from_model,
        })
    }
}

/// A JSON string, borrowed from the body when it holds no escapes.
struct BorrowedText;

impl<'de> DeserializeSeed<'de> for BorrowedText {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for BorrowedText {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text))
    }
}

/// A double field as `wire::double_value` reads it: a number, or a string it accepts.
struct Double;

impl<'de> DeserializeSeed<'de> for Double {
    type Value = f64;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for Double {
    type Value = f64;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a double")
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
        Ok(value)
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "as serde_json's `Number::as_f64`, which the general reader uses"
    )]
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
        Ok(value as f64)
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "as serde_json's `Number::as_f64`, which the general reader uses"
    )]
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
        Ok(value as f64)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<f64, E> {
        double_from_str(text).ok_or_else(refused)
    }
}

/// An int64 field as `wire::int_value` reads it, less a float with no fraction (left to it).
struct Int;

impl<'de> DeserializeSeed<'de> for Int {
    type Value = i64;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<i64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for Int {
    type Value = i64;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an int64")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
        Ok(value)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
        i64::try_from(value).map_err(|_| refused())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<i64, E> {
        int_from_str(text).ok_or_else(refused)
    }
}
