//! Input rules of the tracking API, MLflow's where MLflow has one (MLflow 3.17,
//! `mlflow/utils/validation.py`). Lengths count characters, as MLflow does.
//!
//! Where MLflow truncates (param values over 6,000 characters, tag values over 8,000), runlog
//! refuses with an error instead: a tracking store that silently shortens a value loses data
//! nobody asked it to lose, and a caller that wants truncation can truncate.

use crate::error::{Error, Result};

/// Longest metric, param or tag key.
pub const KEY_CHARS_MAX: usize = 250;
/// Longest param value.
pub const PARAM_VALUE_CHARS_MAX: usize = 6_000;
/// Longest run tag value.
pub const TAG_VALUE_CHARS_MAX: usize = 8_000;
/// Longest experiment name.
pub const EXPERIMENT_NAME_CHARS_MAX: usize = 500;
/// Longest experiment tag value.
pub const EXPERIMENT_TAG_VALUE_CHARS_MAX: usize = 20_000;
/// Longest artifact path.
pub const ARTIFACT_PATH_BYTES_MAX: usize = 1_024;
/// Most metric points in one `Store::log_batch`.
pub const BATCH_METRICS_MAX: usize = 1_000;
/// Most params in one `Store::log_batch`.
pub const BATCH_PARAMS_MAX: usize = 100;
/// Most tags in one `Store::log_batch`.
pub const BATCH_TAGS_MAX: usize = 100;
/// Most items (points, params and tags together) in one `Store::log_batch`.
pub const BATCH_ITEMS_MAX: usize = 1_000;

/// Longest dataset name.
pub const DATASET_NAME_CHARS_MAX: usize = 500;
/// Longest dataset digest.
pub const DATASET_DIGEST_CHARS_MAX: usize = 36;
/// Longest dataset source (MLflow's SQL `TEXT` column, 64 KiB - 1).
pub const DATASET_SOURCE_CHARS_MAX: usize = 65_535;
/// Longest dataset schema (1 MiB - 1). In bytes the log's `STRING_BYTES_MAX` (1 MiB) also
/// applies, which only a schema of characters outside ASCII reaches first.
pub const DATASET_SCHEMA_CHARS_MAX: usize = 1_048_575;
/// Longest dataset profile as MLflow counts it (16 MiB - 1). The log keeps a field in at most
/// `STRING_BYTES_MAX` (1 MiB) bytes, so a profile past that is refused although MLflow would
/// keep it: profiles MLflow's clients compute are a few hundred bytes.
pub const DATASET_PROFILE_CHARS_MAX: usize = 16_777_215;
/// Longest input tag key.
pub const INPUT_TAG_KEY_CHARS_MAX: usize = 255;
/// Longest input tag value.
pub const INPUT_TAG_VALUE_CHARS_MAX: usize = 500;

const _: () = assert!(BATCH_METRICS_MAX <= BATCH_ITEMS_MAX);
const _: () = assert!(DATASET_SCHEMA_CHARS_MAX < crate::limits::STRING_BYTES_MAX);
const _: () = assert!(BATCH_PARAMS_MAX + BATCH_TAGS_MAX <= BATCH_ITEMS_MAX);

/// Checks a metric, param or tag key: at most 250 characters of letters, digits, `_ - . : /`
/// and space, and a normalized relative path (no empty, `.` or `..` segments, no leading `/`),
/// because MLflow's file-based stores use keys as file paths.
pub fn key(what: &str, key: &str) -> Result<()> {
    let chars = key.chars().count();
    if chars > KEY_CHARS_MAX {
        return Err(invalid(format!(
            "{what} key of {chars} characters exceeds {KEY_CHARS_MAX}"
        )));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_alphanumeric() || "_-.:/ ".contains(*c)))
    {
        return Err(invalid(format!(
            "{what} key {key:?} contains {bad:?}; keys may hold only letters, digits, \
             '_', '-', '.', ':', '/' and spaces"
        )));
    }
    if key.starts_with("..") || !is_normal_relative_path(key) {
        return Err(invalid(format!(
            "{what} key {key:?} is not a normalized relative path (no leading '/' or '..', no \
             empty, '.' or '..' segments)"
        )));
    }
    Ok(())
}

/// Checks a value's length.
pub fn value(what: &str, key: &str, value: &str, chars_max: usize) -> Result<()> {
    let chars = value.chars().count();
    if chars > chars_max {
        return Err(invalid(format!(
            "{what} '{key}' value of {chars} characters exceeds {chars_max} (runlog refuses \
             rather than truncating)"
        )));
    }
    Ok(())
}

/// Checks the sizes of a batch against MLflow's LogBatch limits.
pub fn batch_sizes(metrics: usize, params: usize, tags: usize) -> Result<()> {
    let limits = [
        ("metrics", metrics, BATCH_METRICS_MAX),
        ("params", params, BATCH_PARAMS_MAX),
        ("tags", tags, BATCH_TAGS_MAX),
        ("items", metrics + params + tags, BATCH_ITEMS_MAX),
    ];
    for (what, count, count_max) in limits {
        if count > count_max {
            return Err(invalid(format!(
                "a batch may hold at most {count_max} {what}; this one holds {count} (split it)"
            )));
        }
    }
    Ok(())
}

/// Checks an experiment name: not empty, at most 500 characters.
pub fn experiment_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err(invalid("experiment name is empty".to_string()));
    }
    if chars > EXPERIMENT_NAME_CHARS_MAX {
        return Err(invalid(format!(
            "experiment name of {chars} characters exceeds {EXPERIMENT_NAME_CHARS_MAX}"
        )));
    }
    Ok(())
}

/// Checks an artifact path: relative, normalized, at most 1,024 bytes, no NUL or other control
/// character, no backslash (a separator on some systems, so `a\..\b` could escape there). Every
/// front-end goes through this check, so a path that could leave the run's artifact folder is
/// refused before anything is written.
pub fn artifact_path(path: &str) -> Result<()> {
    if path.len() > ARTIFACT_PATH_BYTES_MAX {
        return Err(invalid(format!(
            "artifact path of {} bytes exceeds {ARTIFACT_PATH_BYTES_MAX}",
            path.len()
        )));
    }
    if !crate::artifact::is_contained_path(path) {
        return Err(invalid(format!(
            "artifact path {path:?} must be a relative path without empty, '.' or '..' \
             segments, backslashes or control characters"
        )));
    }
    Ok(())
}

fn is_normal_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

fn invalid(message: String) -> Error {
    Error::InvalidInput(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_mlflow() {
        for good in [
            "loss",
            "train/loss",
            "val acc",
            "a:b",
            "a-b_c.d",
            "ünï",
            "a/..b",
            "x".repeat(250).as_str(),
        ] {
            assert!(key("metric", good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            "/a",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "a/../b",
            "..a",
            "a\\b",
            "a*b",
            "a\nb",
            "x".repeat(251).as_str(),
        ] {
            assert!(key("metric", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn values_and_names_have_limits() {
        assert!(value("param", "k", &"é".repeat(6_000), PARAM_VALUE_CHARS_MAX).is_ok());
        assert!(value("param", "k", &"é".repeat(6_001), PARAM_VALUE_CHARS_MAX).is_err());
        assert!(experiment_name("").is_err());
        assert!(experiment_name(&"n".repeat(501)).is_err());
        assert!(artifact_path("model/weights.bin").is_ok());
        assert!(artifact_path("../etc/passwd").is_err());
        assert!(artifact_path("/abs").is_err());
        for bad in [
            "",
            "a/../../b",
            "..",
            ".",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "a\nb",
            "./a",
            "a/.",
        ] {
            assert!(artifact_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(artifact_path("a/..b/c..d/.e").is_ok());
    }
}
