//! What the manifests cost on disk, for storage figures (`runlog stats`): every manifest file
//! kept (the chains of the generation in force and of the one before), the base and the edits
//! the state in force is built from, and per series of that state.

use std::collections::HashSet;

use super::manifest;
use crate::error::{Error, Result};
use crate::layout::{MANIFEST_DIR, MANIFEST_EXTENSION};
use crate::tracking::Store;

/// The manifests' size.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManifestStats {
    /// The generation in force (0: none).
    pub generation: u64,
    /// Manifest files in `manifest/`: bases and edits (the chains of the generation in force
    /// and of the one before, normally).
    pub manifests: u64,
    /// Bytes of every file in `manifest/`: manifests, intents and temporaries.
    pub bytes: u64,
    /// Bytes of the file of the generation in force: an edit, or a whole manifest.
    pub newest_bytes: u64,
    /// The generation of the base the state in force is built on (0: none, or a version 1
    /// to 3 manifest, which stands alone).
    pub base_generation: u64,
    /// Bytes of that base.
    pub base_bytes: u64,
    /// Edits applied on the base to make the state in force.
    pub edits: u64,
    /// Their bytes, in all.
    pub edit_bytes: u64,
    /// Distinct (run, key) series the manifest in force describes.
    pub series: u64,
}

impl ManifestStats {
    /// Bytes of `manifest/` per series of the manifest in force (0 with no series).
    pub fn bytes_per_series(&self) -> f64 {
        if self.series == 0 {
            0.0
        } else {
            self.bytes as f64 / self.series as f64
        }
    }
}

impl Store {
    /// The manifests' size on disk, and per series.
    pub fn manifest_stats(&self) -> Result<ManifestStats> {
        let root = self.root();
        let dir = root.join(MANIFEST_DIR);
        let mut stats = ManifestStats::default();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                    let metadata = entry
                        .metadata()
                        .map_err(|e| Error::io("stat", entry.path(), e))?;
                    stats.bytes += metadata.len();
                    if entry
                        .file_name()
                        .to_string_lossy()
                        .ends_with(&format!(".{MANIFEST_EXTENSION}"))
                    {
                        stats.manifests += 1;
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(stats),
            Err(error) => return Err(Error::io("list", &dir, error)),
        }
        let generation = manifest::newest_generation(root)?;
        if generation == 0 {
            return Ok(stats);
        }
        let (newest, chain) = manifest::load_with_chain(root, generation)?;
        stats.generation = newest.generation;
        let path = manifest::path(root, newest.generation);
        stats.newest_bytes = std::fs::metadata(&path)
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        if let Some(chain) = chain {
            stats.base_generation = chain.base;
            stats.base_bytes = chain.base_bytes;
            stats.edits = chain.edits;
            stats.edit_bytes = chain.edit_bytes;
        }
        let mut series: HashSet<(crate::ids::RunId, &str)> = HashSet::new();
        for mark in newest.writers.values() {
            series.extend(mark.summaries.keys().map(|(run, key)| (*run, key.as_str())));
        }
        for file in &newest.files {
            series.extend(file.series.iter().map(|s| (s.run, &*s.key)));
        }
        stats.series = series.len() as u64;
        Ok(stats)
    }
}
