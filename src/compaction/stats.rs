//! What the manifests cost on disk, for storage figures (`runlog stats`): every manifest kept
//! (the one in force and the previous one), and per series of the one in force.

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
    /// Manifest files in `manifest/` (the one in force and the previous one, normally).
    pub manifests: u64,
    /// Bytes of every file in `manifest/`: manifests, intents and temporaries.
    pub bytes: u64,
    /// Bytes of the manifest in force.
    pub newest_bytes: u64,
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
        let newest = self.manifests().newest(root)?;
        stats.generation = newest.generation;
        if newest.generation == 0 {
            return Ok(stats);
        }
        let path = manifest::path(root, newest.generation);
        stats.newest_bytes = std::fs::metadata(&path)
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        let mut series: HashSet<(crate::ids::RunId, &str)> = HashSet::new();
        for mark in newest.writers.values() {
            series.extend(mark.summaries.keys().map(|(run, key)| (*run, key.as_str())));
        }
        for file in &newest.files {
            series.extend(file.series.iter().map(|s| (s.run, s.key.as_str())));
        }
        stats.series = series.len() as u64;
        Ok(stats)
    }
}
