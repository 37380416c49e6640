//! The JSON Lines event format of `runlog ingest` (schema in `docs/CLI.md`): one line of bytes
//! into a validated [`Line`].
//!
//! Invariants:
//! - A line is either refused with a message naming what is wrong, or every field of it has
//!   passed the tracking API's checks, so that applying it cannot fail half-way for reasons of
//!   the input.
//! - Unknown fields, and fields that do not belong to the line's type, are refused rather than
//!   silently dropped (a typo such as `"stpe"` is an error).
//! - The fast path (`scan.rs`) and serde_json produce the same [`Line`] for every input the fast
//!   path takes; anything else goes to serde_json, whose errors are the ones reported.

mod scan;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

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
    parse_with(bytes, now, true)
}

/// [`parse_line`] without the fast path: every line goes through serde_json. The two must agree
/// on every input; the `ingest_line` fuzz target checks that they do.
pub fn parse_line_reference(bytes: &[u8], now: i64) -> Result<Option<Line<Cow<'_, str>>>, String> {
    parse_with(bytes, now, false)
}

fn parse_with(bytes: &[u8], now: i64, fast: bool) -> Result<Option<Line<Cow<'_, str>>>, String> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // The scanner takes the common flat lines and gives up on anything else (escapes, nesting,
    // null, duplicates, errors), which serde_json then parses and reports.
    let raw = match fast.then(|| scan::scan(bytes)).flatten() {
        Some(raw) => raw,
        None => serde_json::from_slice::<Raw<'_>>(bytes).map_err(|e| e.to_string())?,
    };
    let invalid = |e: crate::Error| e.to_string();
    let Raw {
        kind,
        experiment,
        run,
        run_id,
        key,
        value,
        step,
        timestamp,
        status,
        params,
        tags,
        parent,
    } = raw;
    let experiment = experiment.unwrap_or(Cow::Borrowed(DEFAULT_EXPERIMENT));
    // A field the line's type does not use is refused, never silently dropped.
    let used: &[&str] = match kind.as_ref() {
        "metric" => &["run_id", "key", "value", "step", "timestamp"],
        "param" | "tag" => &["run_id", "key", "value"],
        "status" => &["run_id", "status"],
        "run" => &["params", "tags", "parent"],
        other => return Err(unknown_type(other)),
    };
    let present = [
        ("run_id", run_id.is_some()),
        ("key", key.is_some()),
        ("value", value.is_some()),
        ("step", step.is_some()),
        ("timestamp", timestamp.is_some()),
        ("status", status.is_some()),
        ("params", params.is_some()),
        ("tags", tags.is_some()),
        ("parent", parent.is_some()),
    ];
    if let Some((field, _)) = present
        .iter()
        .find(|(field, present)| *present && !used.contains(field))
    {
        return Err(format!("\"{field}\" does not belong in a {kind:?} line"));
    }
    let need_key = |what: &str| -> Result<Cow<'_, str>, String> {
        let key = key
            .clone()
            .ok_or_else(|| format!("a {what} line needs \"key\""))?;
        validation::key(what, &key).map_err(invalid)?;
        Ok(key)
    };
    let line = match kind.as_ref() {
        "metric" => {
            let key = need_key("metric")?;
            let value = match value {
                Some(Scalar::Number(n)) => n,
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
            Line::Metric {
                target: target(run, run_id, experiment)?,
                key,
                value,
                step: step.unwrap_or(0),
                timestamp_ms: timestamp.unwrap_or(now),
            }
        }
        "param" | "tag" => {
            let what = kind.as_ref();
            let key = need_key(what)?;
            let value = value
                .ok_or_else(|| format!("a {what} line needs \"value\""))?
                .into_text();
            let target = target(run, run_id, experiment)?;
            if what == "param" {
                validation::value("param", &key, &value, validation::PARAM_VALUE_CHARS_MAX)
                    .map_err(invalid)?;
                Line::Param { target, key, value }
            } else {
                validation::value("tag", &key, &value, validation::TAG_VALUE_CHARS_MAX)
                    .map_err(invalid)?;
                Line::Tag { target, key, value }
            }
        }
        "status" => {
            let status = match status.as_deref() {
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
            Line::Status {
                target: target(run, run_id, experiment)?,
                status,
            }
        }
        "run" => {
            let name = run.ok_or("a run line needs \"run\" (its name)")?;
            let checked = |what: &str, map: Option<BTreeMap<String, Scalar<'_>>>, max| {
                map.unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| {
                        let v = v.into_text();
                        validation::key(what, &k).map_err(invalid)?;
                        validation::value(what, &k, &v, max).map_err(invalid)?;
                        Ok((k, v))
                    })
                    .collect::<Result<Vec<_>, String>>()
            };
            Line::Run {
                experiment,
                name,
                parent,
                params: checked("param", params, validation::PARAM_VALUE_CHARS_MAX)?,
                tags: checked("tag", tags, validation::TAG_VALUE_CHARS_MAX)?,
            }
        }
        other => return Err(unknown_type(other)),
    };
    Ok(Some(line))
}

fn unknown_type(kind: &str) -> String {
    format!("unknown type {kind:?} (metric, param, tag, status or run)")
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
    pub(crate) params: Option<BTreeMap<String, Scalar<'a>>>,
    #[serde(borrow, default)]
    pub(crate) tags: Option<BTreeMap<String, Scalar<'a>>>,
    #[serde(borrow, default)]
    pub(crate) parent: Option<Cow<'a, str>>,
}

/// A JSON number or string.
#[derive(Debug)]
pub(crate) enum Scalar<'a> {
    Number(f64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v as f64))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

impl Scalar<'_> {
    /// As a param or tag value: strings as they are, numbers in their shortest decimal form.
    fn into_text(self) -> String {
        match self {
            Scalar::Text(text) => text.into_owned(),
            Scalar::Number(number) => number.to_string(),
        }
    }
}
