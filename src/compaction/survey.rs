//! What the compacted part of a store holds, set against the manifest in force: which files in
//! `experiments/` a compaction may remove because it can prove them its own leftovers, which
//! are compacted files no manifest accounts for (damage: a manifest is missing), and which are
//! not runlog's at all. Also the log chains that start past what the manifest covers.
//!
//! A file is a provable leftover when, and only when:
//! - its name is a compacted file's (`<g:010>.parquet`, `<g:010>-merged.parquet`) in a folder
//!   named by an experiment id, and the manifest in force does not list it; and
//! - either its generation is the next one or the one in force, and that generation's intent
//!   (`intent.rs`) is there: the compaction of that generation created it and crashed before
//!   its manifest, or merged it away and has not yet cleaned up; or the previous manifest
//!   (still kept) lists it, so the manifest in force superseded it (merged away, or a version
//!   1 file compacted again); or the manifest in force is of version 1 or 2, written before
//!   compactions wrote intents, and the file is of the next generation.
//!
//! Temporary names of `io::publish` are leftovers when their generation's intent is there, or
//! when their target name exists (a publish never replaces, so they can never become it).
//! Anything else, user files and folders included, is never removed.
//!
//! Invariant kept by the readers of this module: nothing in `experiments/` is removed unless
//! `Survey::leftovers` lists it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::intent;
use super::manifest::{self, Manifest};
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::ids::SegmentSequence;
use crate::layout::{COMPACTED_EXTENSION, EXPERIMENTS_DIR, WAL_DIR};
use crate::wal::{reader, segment};

/// The files of `experiments/`, sorted by what may be done with them.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    /// Provably a compaction's own leftovers: removable.
    pub leftovers: Vec<PathBuf>,
    /// Missing history: compacted files no manifest accounts for, and log chains that start
    /// past what the manifest covers; each with what is missing.
    pub missing: Vec<(PathBuf, String)>,
    /// Not runlog's (or not provably a leftover): left alone.
    pub foreign: Vec<PathBuf>,
}

impl Survey {
    /// The first missing piece of history as an error naming its file.
    pub fn check(&self) -> Result<()> {
        match self.missing.first() {
            None => Ok(()),
            Some((path, why)) => Err(Error::Corrupt(Corruption {
                path: path.clone(),
                offset: 0,
                kind: CorruptionKind::MissingHistory(why.clone()),
            })),
        }
    }
}

/// What a name in an experiment's folder is.
enum Name<'a> {
    /// A compacted file of this generation.
    Compacted(u64),
    /// A temporary name of `io::publish` for this compacted file name.
    Temporary(&'a str, u64),
    /// Not a name runlog writes there.
    Foreign,
}

fn compacted_generation(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(&format!(".{COMPACTED_EXTENSION}"))?;
    let stem = stem.strip_suffix("-merged").unwrap_or(stem);
    manifest::parse_generation(stem)
}

fn classify(name: &str) -> Name<'_> {
    if let Some(generation) = compacted_generation(name) {
        return Name::Compacted(generation);
    }
    let temporary = name
        .strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".tmp-"))
        .filter(|(_, random)| random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()));
    match temporary {
        Some((target, _)) => match compacted_generation(target) {
            Some(generation) => Name::Temporary(target, generation),
            None => Name::Foreign,
        },
        None => Name::Foreign,
    }
}

/// A folder name that is an experiment id as runlog writes it (decimal, no leading zero).
fn is_experiment_folder(name: &str) -> bool {
    name.parse::<u64>().is_ok_and(|id| id.to_string() == name)
}

/// The previous manifest, if it is kept and reads; one that does not read proves nothing.
fn previous(root: &Path, newest: &Manifest) -> Option<Manifest> {
    let generation = newest.generation.checked_sub(1).filter(|g| *g > 0)?;
    manifest::load_generation(root, generation).ok()
}

/// Surveys `experiments/` and `wal/` against `newest`, the manifest in force. Consistent only
/// while no compaction runs: a compactor calls it under its lock; others use `survey_newest`.
pub(crate) fn survey(root: &Path, newest: &Manifest) -> Result<Survey> {
    let mut survey = Survey::default();
    let listed: HashSet<&str> = newest.files.iter().map(|f| f.path.as_str()).collect();
    // Read only if some file is not listed: decoding a manifest costs.
    let mut superseded: Option<HashSet<String>> = None;
    let mut is_superseded = |relative: &str| {
        superseded
            .get_or_insert_with(|| {
                previous(root, newest)
                    .map(|m| m.files.into_iter().map(|f| f.path).collect())
                    .unwrap_or_default()
            })
            .contains(relative)
    };
    let mut intents: HashMap<u64, bool> = HashMap::new();
    // Manifests before version 3 were written by compactions that wrote no intents: the next
    // generation's files beside such a manifest are a crashed compaction's, as they were taken
    // to be then. A store with no manifest at all gets no such allowance.
    let written_without_intents = (1..3).contains(&newest.version);
    let mut proven_by_intent = |generation: u64| -> bool {
        let next = generation == newest.generation + 1;
        (written_without_intents && next)
            || ((generation == newest.generation || next)
                && *intents
                    .entry(generation)
                    .or_insert_with(|| intent::is_valid(root, generation)))
    };
    let dir = root.join(EXPERIMENTS_DIR);
    for (folder, name, path) in list_experiment_files(&dir, &mut survey.foreign)? {
        let relative = format!("{EXPERIMENTS_DIR}/{folder}/{name}");
        match classify(&name) {
            Name::Foreign => survey.foreign.push(path),
            Name::Compacted(_) if listed.contains(relative.as_str()) => {}
            Name::Compacted(generation) => {
                if proven_by_intent(generation) || is_superseded(&relative) {
                    survey.leftovers.push(path);
                } else if path.exists() {
                    survey.missing.push((
                        path,
                        format!(
                            "a compacted file of generation {generation} that no manifest \
                             lists (the manifest in force is generation {}): a manifest is \
                             missing, or the file does not belong here",
                            newest.generation
                        ),
                    ));
                }
            }
            Name::Temporary(target, generation) => {
                if proven_by_intent(generation) || dir.join(&folder).join(target).exists() {
                    survey.leftovers.push(path);
                } else {
                    survey.foreign.push(path);
                }
            }
        }
    }
    survey
        .missing
        .extend(chains_past_the_manifest(root, newest)?);
    Ok(survey)
}

/// `(folder, file name, path)` of every entry inside an experiment's folder; entries of
/// `experiments/` that are not such folders go to `foreign`.
fn list_experiment_files(
    dir: &Path,
    foreign: &mut Vec<PathBuf>,
) -> Result<Vec<(String, String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Error::io("list", dir, error)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let folder = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || !is_experiment_folder(&folder) {
            foreign.push(entry.path());
            continue;
        }
        let files =
            std::fs::read_dir(entry.path()).map_err(|e| Error::io("list", entry.path(), e))?;
        for file in files {
            let file = file.map_err(|e| Error::io("list", entry.path(), e))?;
            let name = file.file_name().to_string_lossy().into_owned();
            out.push((folder.clone(), name, file.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Writers whose first segment in `wal/` comes after what `newest` covers: the segments
/// between were compacted and deleted under a manifest that is no longer there.
fn chains_past_the_manifest(root: &Path, newest: &Manifest) -> Result<Vec<(PathBuf, String)>> {
    let wal_dir = root.join(WAL_DIR);
    let mut missing = Vec::new();
    for (writer, files) in reader::list_writers(&wal_dir)? {
        let Some(first) = files.segments.first() else {
            continue;
        };
        let start = newest
            .writers
            .get(&writer)
            .and_then(|mark| mark.through)
            .map_or(0, |through| through.0.saturating_add(1));
        if first.0 > start {
            missing.push((
                segment::segment_path(&wal_dir, writer, *first),
                format!(
                    "writer {writer}'s chain starts at segment {}, but the manifest in force \
                     (generation {}) covers it only before segment {start}: the manifest that \
                     compacted the segments between is missing",
                    first.0, newest.generation
                ),
            ));
        }
    }
    Ok(missing)
}

/// A survey against the newest manifest (taken from `manifests`), taken while no compaction
/// published a newer one (retried otherwise), for a reader that holds no compaction lock: a
/// compaction publishes its intent before its files and removes it only after its manifest,
/// and removes a superseded file before the manifest that lists it, so within one generation
/// a survey meets no file it cannot account for.
pub(crate) fn survey_newest(
    root: &Path,
    manifests: &manifest::ManifestCache,
) -> Result<(std::sync::Arc<Manifest>, Survey)> {
    for _ in 0..super::READ_ATTEMPTS_MAX {
        let newest = manifests.newest(root)?;
        let survey = survey(root, &newest)?;
        if manifest::newest_generation(root)? == newest.generation {
            return Ok((newest, survey));
        }
    }
    Err(Error::StaleRead {
        what: root.display().to_string(),
        attempts: super::READ_ATTEMPTS_MAX,
    })
}

/// Checks that every metadata chain `manifest` lists still has the segment its watermark
/// starts from. Compaction closes a chain before any manifest lists it and deletes it only
/// after a newer manifest stops listing it, so a listed chain without that segment has lost
/// its files, and with them the experiments and runs it holds: `MissingSegment`.
pub fn check_listed_chains(wal_dir: &Path, manifest: &Manifest) -> Result<()> {
    for chain in &manifest.metadata {
        let mark = manifest.writers.get(chain);
        if mark.is_some_and(|mark| mark.finished) {
            continue;
        }
        let start = SegmentSequence(mark.and_then(|m| m.through).map_or(0, |s| s.0 + 1));
        let path = segment::segment_path(wal_dir, *chain, start);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let kind = CorruptionKind::MissingSegment {
                    writer: *chain,
                    sequence: start.0,
                };
                return Err(Error::Corrupt(Corruption {
                    path,
                    offset: 0,
                    kind,
                }));
            }
            Err(error) => return Err(Error::io("look for", path, error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runlogs_own_names_are_classified_as_compacted() {
        assert!(matches!(classify("0000000007.parquet"), Name::Compacted(7)));
        assert!(matches!(
            classify("0000000009-merged.parquet"),
            Name::Compacted(9)
        ));
        assert!(matches!(
            classify(".0000000009.parquet.tmp-00000000deadbeef"),
            Name::Temporary("0000000009.parquet", 9)
        ));
        for foreign in [
            "notes.txt",
            "7.parquet",
            "000000007x.parquet",
            "0000000007.parquet.bak",
            ".0000000009.parquet.tmp-xyz",
            ".notes.tmp-00000000deadbeef",
        ] {
            assert!(matches!(classify(foreign), Name::Foreign), "{foreign}");
        }
        assert!(is_experiment_folder("1839779020800012345"));
        assert!(!is_experiment_folder("01"));
        assert!(!is_experiment_folder("my-notes"));
    }
}
