//! Identifier newtypes shared by every layer.
//!
//! Ids and sequence numbers are distinct types so that a writer id can never be passed where a
//! segment sequence is expected. Their textual forms are part of the on-disk naming contract
//! (`docs/FORMAT.md`): writer ids print as 16 lower-case hex digits, run ids as 32, logged
//! model ids as `m-` and 32.

use std::fmt;

/// Identifies one writer (one append-only chain of segments). Unique within a store for ever:
/// ids are never reused, which is what lets a missing lock file mean "this writer is finished".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriterId(pub u64);

/// Position of a segment in its writer's chain, starting at 0 with no gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentSequence(pub u64);

/// A run, as a 128-bit id (printed as 32 hex digits, like MLflow's run ids).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u128);

/// A logged model (MLflow 3), as a 128-bit id printed as `m-` and 32 hex digits, as MLflow
/// makes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelId(pub u128);

/// An experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExperimentId(pub u64);

/// A metric key interned within one writer's log, for one run. Defined by a
/// `MetricKeyDefined` event earlier in the same writer's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u32);

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for SegmentSequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}", self.0)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for RunId {
    type Err = crate::Error;

    /// Parses the 32 hex digits [`Display`](fmt::Display) prints.
    fn from_str(text: &str) -> crate::Result<RunId> {
        let valid = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
        match u128::from_str_radix(text, 16) {
            Ok(id) if valid => Ok(RunId(id)),
            _ => Err(crate::Error::InvalidInput(format!(
                "{text:?} is not a run id (32 hex digits)"
            ))),
        }
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m-{:032x}", self.0)
    }
}

impl std::str::FromStr for ModelId {
    type Err = crate::Error;

    /// Parses the `m-` and 32 hex digits [`Display`](fmt::Display) prints.
    fn from_str(text: &str) -> crate::Result<ModelId> {
        let hex = text.strip_prefix("m-").unwrap_or("");
        let valid = hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        match u128::from_str_radix(hex, 16) {
            Ok(id) if valid => Ok(ModelId(id)),
            _ => Err(crate::Error::InvalidInput(format!(
                "{text:?} is not a logged model id (m- and 32 hex digits)"
            ))),
        }
    }
}

impl fmt::Display for ExperimentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
