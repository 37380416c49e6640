//! The JSON Lines event format of `runlog ingest` (schema in `docs/CLI.md`): one line of bytes
//! into a validated [`Line`].
//!
//! Invariants:
//! - A line is either refused with a message naming what is wrong, or every field of it has
//!   passed the tracking API's checks, so that applying it cannot fail half-way for reasons of
//!   the input.
//! - Unknown fields, and fields that do not belong to the line's type, are refused rather than
//!   silently dropped (a typo such as `"stpe"` is an error). So is a key given twice inside
//!   `params` or `tags`: nothing is silently resolved.
//! - A number becomes a param or tag value with its text exactly as written, never through a
//!   float (a 64-bit seed keeps every digit).
//! - The fast path (`scan.rs`) and serde_json produce the same [`Line`] for every input the fast
//!   path takes; anything else goes to serde_json, whose errors are the ones reported.

mod scan;

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;
use serde::de::{Error as _, Unexpected};
use serde_json::value::RawValue;

use crate::RunId;
use crate::tracking::validation;
use crate::wal::RunStatus;

/// Which run a line is about; `S` is the line's string type.
#[derive(Clone, Debug, PartialEq)]
pub enum Target<S> {
    /// A run named within an experiment: created at its first mention.
    Named {
        /// The experiment's name (`"Default"` when the line names none).
        experiment: S,
        /// The run's name.
        run: S,
    },
    /// A run that already exists.
    Id(RunId),
}

/// A validated line, ready to apply; `S` is its string type (`Cow<str>` from [`parse_line`],
/// borrowing the input where it can).
///
/// Every field has been checked against the tracking API's limits (keys, value lengths,
/// statuses), so applying a line fails only for reasons of the store (a run id that does not
/// exist, a param that would change, a full disk).
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // The fields are those of the JSON object, documented in docs/CLI.md.
pub enum Line<S> {
    Metric {
        target: Target<S>,
        key: S,
        value: f64,
        step: i64,
        timestamp_ms: i64,
    },
    Param {
        target: Target<S>,
        key: S,
        value: String,
    },
    Tag {
        target: Target<S>,
        key: S,
        value: String,
    },
    Status {
        target: Target<S>,
        status: RunStatus,
    },
    Run {
        experiment: S,
        name: S,
        parent: Option<S>,
        params: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    },
}

impl<S> Target<S> {
    /// The same target with each string mapped by `f`.
    pub fn map<T>(self, mut f: impl FnMut(S) -> T) -> Target<T> {
        match self {
            Target::Named { experiment, run } => Target::Named {
                experiment: f(experiment),
                run: f(run),
            },
            Target::Id(id) => Target::Id(id),
        }
    }

    /// The same target, borrowing its strings.
    pub fn as_ref(&self) -> Target<&S> {
        match self {
            Target::Named { experiment, run } => Target::Named { experiment, run },
            Target::Id(id) => Target::Id(*id),
        }
    }
}

impl<S> Line<S> {
    /// The same line with each string of the input mapped by `f` (for carrying a parsed line
    /// away from the buffer it borrows).
    pub fn map<T>(self, mut f: impl FnMut(S) -> T) -> Line<T> {
        match self {
            Line::Metric {
                target,
                key,
                value,
                step,
                timestamp_ms,
            } => Line::Metric {
                target: target.map(&mut f),
                key: f(key),
                value,
                step,
                timestamp_ms,
            },
            Line::Param { target, key, value } => Line::Param {
                target: target.map(&mut f),
                key: f(key),
                value,
            },
            Line::Tag { target, key, value } => Line::Tag {
                target: target.map(&mut f),
                key: f(key),
                value,
            },
            Line::Status { target, status } => Line::Status {
                target: target.map(f),
                status,
            },
            Line::Run {
                experiment,
                name,
                parent,
                params,
                tags,
            } => Line::Run {
                experiment: f(experiment),
                name: f(name),
                parent: parent.map(&mut f),
                params,
                tags,
            },
        }
    }
}

/// The experiment of a `run` line that names none.
const DEFAULT_EXPERIMENT: &str = "Default";

/// The run a line names: by name within `experiment`, or by id.
fn target<'a>(
    run: Option<Cow<'a, str>>,
    run_id: Option<Cow<'a, str>>,
    experiment: Cow<'a, str>,
) -> Result<Target<Cow<'a, str>>, String> {
    match (run, run_id) {
        (Some(_), Some(_)) => Err("give \"run\" or \"run_id\", not both".to_string()),
        (None, None) => Err("needs \"run\" (a name) or \"run_id\"".to_string()),
        (None, Some(id)) => Ok(Target::Id(id.parse::<RunId>().map_err(|e| e.to_string())?)),
        (Some(run), None) => Ok(Target::Named { experiment, run }),
    }
}

/// Parses and validates one line; `Ok(None)` for a blank one.
///
/// `now` (ms since the epoch) is the timestamp of a metric line that gives none. The error is
/// one line of text naming the field at fault, as `runlog ingest` reports it.
pub fn parse_line(bytes: &[u8], now: i64) -> Result<Option<Line<Cow<'_, str>>>, String> {
    parse_with(bytes, now, Parser::ScannerFirst)
}

/// [`parse_line`] without the fast path: every line goes through serde_json. The two must agree
/// on every input; the `ingest_line` fuzz target checks that they do.
pub fn parse_line_reference(bytes: &[u8], now: i64) -> Result<Option<Line<Cow<'_, str>>>, String> {
    parse_with(bytes, now, Parser::SerdeJsonOnly)
}

/// How a line's JSON is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parser {
    /// The scanner takes the common flat lines and gives up on anything else (escapes,
    /// nesting, null, duplicates, errors), which serde_json then parses and reports.
    ScannerFirst,
    /// serde_json reads every line.
    SerdeJsonOnly,
}

/// The type of a line (its `"type"` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Metric,
    Param,
    Tag,
    Status,
    Run,
}

impl Kind {
    fn parse(text: &str) -> Result<Kind, String> {
        match text {
            "metric" => Ok(Kind::Metric),
            "param" => Ok(Kind::Param),
            "tag" => Ok(Kind::Tag),
            "status" => Ok(Kind::Status),
            "run" => Ok(Kind::Run),
            other => Err(unknown_type(other)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Metric => "metric",
            Kind::Param => "param",
            Kind::Tag => "tag",
            Kind::Status => "status",
            Kind::Run => "run",
        }
    }

    /// The fields a line of this type may give, besides `type`, `experiment` and `run`.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Metric => &["run_id", "key", "value", "step", "timestamp"],
            Kind::Param | Kind::Tag => &["run_id", "key", "value"],
            Kind::Status => &["run_id", "status"],
            Kind::Run => &["params", "tags", "parent"],
        }
    }
}

fn parse_with(
    bytes: &[u8],
    now: i64,
    parser: Parser,
) -> Result<Option<Line<Cow<'_, str>>>, String> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let scanned = match parser {
        Parser::ScannerFirst => scan::scan(bytes),
        Parser::SerdeJsonOnly => None,
    };
    let raw = match scanned {
        Some(raw) => raw,
        None => serde_json::from_slice::<Raw<'_>>(bytes).map_err(|e| json_error(&e))?,
    };
    let kind = Kind::parse(&raw.kind)?;
    refuse_unused_fields(&raw, kind)?;
    let line = match kind {
        Kind::Metric => metric_line(raw, now)?,
        Kind::Param | Kind::Tag => text_line(raw, kind)?,
        Kind::Status => status_line(raw)?,
        Kind::Run => run_line(raw)?,
    };
    Ok(Some(line))
}

/// A field the line's type does not use is refused, never silently dropped.
fn refuse_unused_fields(raw: &Raw<'_>, kind: Kind) -> Result<(), String> {
    let present = [
        ("run_id", raw.run_id.is_some()),
        ("key", raw.key.is_some()),
        ("value", raw.value.is_some()),
        ("step", raw.step.is_some()),
        ("timestamp", raw.timestamp.is_some()),
        ("status", raw.status.is_some()),
        ("params", raw.params.is_some()),
        ("tags", raw.tags.is_some()),
        ("parent", raw.parent.is_some()),
    ];
    match present
        .iter()
        .find(|(field, present)| *present && !kind.fields().contains(field))
    {
        Some((field, _)) => Err(format!(
            "\"{field}\" does not belong in a {:?} line",
            kind.name()
        )),
        None => Ok(()),
    }
}

/// A validation error as the one line of text a line's error is.
fn invalid(error: crate::Error) -> String {
    error.to_string()
}

/// The line's experiment, or the default one.
fn experiment_or_default(experiment: Option<Cow<'_, str>>) -> Cow<'_, str> {
    experiment.unwrap_or(Cow::Borrowed(DEFAULT_EXPERIMENT))
}

/// The line's `key`, required and valid for a `what` line.
fn required_key<'a>(key: Option<Cow<'a, str>>, what: &str) -> Result<Cow<'a, str>, String> {
    let key = key.ok_or_else(|| format!("a {what} line needs \"key\""))?;
    validation::key(what, &key).map_err(invalid)?;
    Ok(key)
}

fn metric_line(raw: Raw<'_>, now: i64) -> Result<Line<Cow<'_, str>>, String> {
    let key = required_key(raw.key, "metric")?;
    let value = match raw.value {
        Some(Scalar::Number(text)) => metric_number(text)?,
        Some(Scalar::Text(text)) => match text.as_ref() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => {
                return Err(format!(
                    "metric value {other:?} is not a number, \"NaN\", \"Infinity\" or \"-Infinity\""
                ));
            }
        },
        None => return Err("a metric line needs \"value\"".into()),
    };
    Ok(Line::Metric {
        target: target(raw.run, raw.run_id, experiment_or_default(raw.experiment))?,
        key,
        value,
        step: raw.step.unwrap_or(0),
        timestamp_ms: raw.timestamp.unwrap_or(now),
    })
}

/// A param or a tag line (`kind`).
fn text_line(raw: Raw<'_>, kind: Kind) -> Result<Line<Cow<'_, str>>, String> {
    let what = kind.name();
    let key = required_key(raw.key, what)?;
    let value = raw
        .value
        .ok_or_else(|| format!("a {what} line needs \"value\""))?
        .into_text();
    let target = target(raw.run, raw.run_id, experiment_or_default(raw.experiment))?;
    if kind == Kind::Param {
        validation::value("param", &key, &value, validation::PARAM_VALUE_CHARS_MAX)
            .map_err(invalid)?;
        Ok(Line::Param { target, key, value })
    } else {
        validation::value("tag", &key, &value, validation::TAG_VALUE_CHARS_MAX).map_err(invalid)?;
        Ok(Line::Tag { target, key, value })
    }
}

fn status_line(raw: Raw<'_>) -> Result<Line<Cow<'_, str>>, String> {
    let status = match raw.status.as_deref() {
        Some("FINISHED") => RunStatus::Finished,
        Some("FAILED") => RunStatus::Failed,
        Some("KILLED") => RunStatus::Killed,
        Some(other) => {
            return Err(format!(
                "status {other:?} is not FINISHED, FAILED or KILLED"
            ));
        }
        None => return Err("a status line needs \"status\"".into()),
    };
    Ok(Line::Status {
        target: target(raw.run, raw.run_id, experiment_or_default(raw.experiment))?,
        status,
    })
}

fn run_line(raw: Raw<'_>) -> Result<Line<Cow<'_, str>>, String> {
    let name = raw.run.ok_or("a run line needs \"run\" (its name)")?;
    Ok(Line::Run {
        experiment: experiment_or_default(raw.experiment),
        name,
        parent: raw.parent,
        params: checked_pairs("param", raw.params, validation::PARAM_VALUE_CHARS_MAX)?,
        tags: checked_pairs("tag", raw.tags, validation::TAG_VALUE_CHARS_MAX)?,
    })
}

/// The params or tags (`what`) of a run line, each key and value valid, no key twice.
fn checked_pairs(
    what: &str,
    pairs: Option<Pairs<'_>>,
    value_chars_max: usize,
) -> Result<Vec<(String, String)>, String> {
    let pairs = pairs.map(|pairs| pairs.0).unwrap_or_default();
    if let Some(key) = duplicate_key(&pairs) {
        return Err(format!("\"{what}s\" gives the key {key:?} twice"));
    }
    pairs
        .into_iter()
        .map(|(k, v)| {
            let v = v.into_text();
            validation::key(what, &k).map_err(invalid)?;
            validation::value(what, &k, &v, value_chars_max).map_err(invalid)?;
            Ok((k, v))
        })
        .collect()
}

fn unknown_type(kind: &str) -> String {
    format!("unknown type {kind:?} (metric, param, tag, status or run)")
}

/// serde_json's message for `error`, with its position as a column of this line: every line
/// is parsed on its own, so serde_json's "line 1" is never the input's line, which the caller
/// names.
fn json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&position) {
        Some(message) if error.line() > 0 => format!("{message} at column {}", error.column()),
        _ => text,
    }
}

/// The first key that `pairs` gives twice, if any.
fn duplicate_key<'p>(pairs: &'p [(String, Scalar<'_>)]) -> Option<&'p str> {
    let mut seen = HashSet::with_capacity(pairs.len());
    pairs
        .iter()
        .map(|(key, _)| key.as_str())
        .find(|key| !seen.insert(*key))
}

/// A metric value from the text of a JSON number, read exactly as serde_json reads it (with
/// `float_roundtrip`) so both parsing paths agree.
///
/// The standard library rounds a decimal to the nearest f64 as serde_json does, and an integer
/// of up to 18 digits converts the same way; values that overflow or underflow, and longer
/// integers, are left to serde_json itself.
fn metric_number(text: &str) -> Result<f64, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let integer = !text.contains(['.', 'e', 'E']);
    if !(integer && digits.len() > 18)
        && let Ok(value) = text.parse::<f64>()
    {
        let underflow = value == 0.0 && digits.bytes().any(|b| matches!(b, b'1'..=b'9'));
        if value.is_finite() && !underflow {
            return Ok(value);
        }
    }
    serde_json::from_str::<f64>(text)
        .map_err(|_| format!("metric value {text} is out of the range of a 64-bit float"))
}

/// One input object, as written. Unknown fields are refused, so a typo (`"stpe"`) is an error
/// rather than a silently defaulted field.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(crate) experiment: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) run: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) run_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) value: Option<Scalar<'a>>,
    #[serde(default)]
    pub(crate) step: Option<i64>,
    #[serde(default)]
    pub(crate) timestamp: Option<i64>,
    #[serde(borrow, default)]
    pub(crate) status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) params: Option<Pairs<'a>>,
    #[serde(borrow, default)]
    pub(crate) tags: Option<Pairs<'a>>,
    #[serde(borrow, default)]
    pub(crate) parent: Option<Cow<'a, str>>,
}

/// A JSON number or string. A number keeps its text as written: a param such as a 64-bit seed
/// must not lose digits to a float, and a metric value is read from the text when needed.
#[derive(Debug)]
pub(crate) enum Scalar<'a> {
    /// A number in JSON's grammar, as written.
    Number(&'a str),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    /// Only serde_json deserializes this (it takes the value's raw text, which only serde_json
    /// offers); `Raw` must therefore stay free of buffering attributes such as `flatten`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        let unexpected = match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => {
                // serde_json has checked the string; without escapes its content is the text
                // between the quotes.
                let inner = text
                    .get(1..text.len().saturating_sub(1))
                    .unwrap_or_default();
                return Ok(Scalar::Text(Cow::Borrowed(inner)));
            }
            Some(b'"') => {
                return serde_json::from_str::<String>(text)
                    .map(|text| Scalar::Text(Cow::Owned(text)))
                    .map_err(|e| D::Error::custom(json_error(&e)));
            }
            Some(b'-' | b'0'..=b'9') => return Ok(Scalar::Number(text)),
            Some(b't') => Unexpected::Bool(true),
            Some(b'f') => Unexpected::Bool(false),
            Some(b'n') => Unexpected::Unit,
            Some(b'[') => Unexpected::Seq,
            _ => Unexpected::Map,
        };
        Err(D::Error::invalid_type(unexpected, &"a number or a string"))
    }
}

impl Scalar<'_> {
    /// As a param or tag value: strings as they are, numbers as written.
    fn into_text(self) -> String {
        match self {
            Scalar::Text(text) => text.into_owned(),
            Scalar::Number(text) => text.to_string(),
        }
    }
}

/// The members of a `params` or `tags` object, in input order and with any duplicate kept, so
/// that a key given twice is refused rather than silently resolved.
#[derive(Debug, Default)]
pub(crate) struct Pairs<'a>(pub(crate) Vec<(String, Scalar<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Pairs<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Pairs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of numbers and strings")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Pairs<'a>, M::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(pair) = map.next_entry::<String, Scalar<'a>>()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}
