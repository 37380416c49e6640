//! The fixed names of a store's folder: every file and folder name the engine creates or
//! recognises under a store root, in one place (`docs/FORMAT.md` section 12).
//!
//! Invariant: this module imports nothing from the crate, so every layer can name the
//! layout without depending on the layer that writes it. A name here is part of the on-disk
//! format: changing one is a format change.

/// The log folder inside a store.
pub const WAL_DIR: &str = "wal";
/// The folder holding every run's artifacts.
pub const ARTIFACTS_DIR: &str = "artifacts";
/// The folder of compacted files inside a store.
pub const EXPERIMENTS_DIR: &str = "experiments";
/// The folder of manifests inside a store.
pub const MANIFEST_DIR: &str = "manifest";

/// The lock file that serializes experiment creation and renaming.
pub const CATALOG_LOCK: &str = "catalog.lock";
/// The lock file that lets a store of an artifact remove a file a crash left at its path
/// (taken shared to publish or delete, exclusively to remove an orphan).
pub const ARTIFACTS_LOCK: &str = "artifacts.lock";
/// The lock file that serializes compactions (only a build that compacts takes it).
#[cfg_attr(
    not(any(feature = "parquet", feature = "testing")),
    expect(dead_code, reason = "compaction needs the parquet feature")
)]
pub const COMPACTION_LOCK: &str = "compaction.lock";

/// Extension of segment files in [`WAL_DIR`].
pub const SEGMENT_EXTENSION: &str = "wal";
/// Extension of writer lock files in [`WAL_DIR`].
pub const LOCK_EXTENSION: &str = "lock";
/// Extension of manifest files in [`MANIFEST_DIR`].
pub const MANIFEST_EXTENSION: &str = "manifest";
/// Extension of compaction intent files in [`MANIFEST_DIR`].
pub const INTENT_EXTENSION: &str = "compacting";
/// Extension of compacted files in [`EXPERIMENTS_DIR`].
pub const COMPACTED_EXTENSION: &str = "parquet";
