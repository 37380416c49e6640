//! Keeping a handle's catalog in step with the store: other writers' log, and, since compaction
//! deletes the segments it compacted, the compaction manifest.
//!
//! A `Follower` holds a tail over `wal/`, the key ids of the writers it follows, and the newest
//! manifest generation it has taken in. Each refresh first takes in a newer manifest: a writer
//! compacted there that this handle has never read is adopted whole (its compacted points'
//! summaries and key ids from the manifest, its tail from the segment after its watermark). Then
//! it polls the tail. The summaries are adopted by reference to the manifest (`catalog`'s
//! `Pending`), and the manifest comes from the store's `ManifestCache`, which the open's survey
//! has already filled: an open decodes the manifest once and copies no summary out of it.
//!
//! Invariant: every foreign point is counted exactly once, either through the manifest (a
//! writer adopted at its watermark) or through the log (every segment after where the tail
//! started it). A segment the tail still needed can vanish, deleted by a compaction this handle
//! did not see in time; the tail reports a missing segment, and the follower then rebuilds every
//! foreign summary from the newest manifest and the log after it, and swaps them in. A missing
//! segment that a rebuild does not explain is damage and is returned as such.
//!
//! The sealed segments a poll reads whole leave their directories in the handle's
//! `SegmentDirectories` (`wal::directory`), for the queries that read the log after.
//!
//! Each newly taken-in manifest's metadata chains are checked to still have their files
//! (`compaction::survey::check_listed_chains`): a listed chain whose files are gone would otherwise take
//! its experiments and runs with it silently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{Catalog, KeyMap, Origin, Staged};
use crate::compaction::manifest::ManifestCache;
use crate::compaction::{manifest, survey};
use crate::error::{CorruptionKind, Error, Result};
use crate::ids::{SegmentSequence, WriterId};
use crate::summary::{CompactedSummaries, ReplaySummaries};
use crate::wal::Event;
use crate::wal::directory::SegmentDirectories;
use crate::wal::replay::ReplaySink;
use crate::wal::segment;
use crate::wal::tail::Tail;
use crate::wal::writer::is_metadata_chain;

/// Rebuilds tried before a missing segment counts as damage. Each one loads the newest
/// manifest; more than one is needed only when compactions keep deleting under it.
const REBUILDS_MAX: usize = 4;

/// Manifests one refresh takes in before it gives up: each takes a compaction that published
/// while the refresh polled, so reaching this means compactions outpace the poll, and the
/// caller gets a stale read to retry rather than a loop.
const MANIFESTS_PER_REFRESH_MAX: usize = 64;

/// A handle's position in the store (see the module doc).
#[derive(Debug)]
pub(crate) struct Follower {
    root: PathBuf,
    tail: Tail,
    keys: KeyMap,
    generation: u64,
    /// The metadata chains of the newest manifest taken in: their events are copies (`lww`).
    /// Chains written since chains took ids of their own are also known by their id.
    chains: BTreeSet<WriterId>,
}

impl Follower {
    /// A follower that has read nothing.
    pub fn new(root: &Path, wal_dir: &Path) -> Follower {
        Follower {
            root: root.to_path_buf(),
            tail: Tail::new(wal_dir),
            keys: KeyMap::default(),
            generation: 0,
            chains: BTreeSet::new(),
        }
    }

    /// Applies to `catalog` everything other writers (those `own` says are not this handle's)
    /// added since the last call. `own` is asked after each listing, never before, so a writer
    /// this handle creates meanwhile is never taken for another's.
    /// The sealed segments read whole on the way leave their directories in `directories`.
    pub fn refresh(
        &mut self,
        catalog: &Catalog,
        (manifests, directories): (&ManifestCache, &SegmentDirectories),
        own: &dyn Fn(WriterId) -> bool,
    ) -> Result<()> {
        let mut error = match self.step(catalog, (manifests, directories), own, None) {
            Err(error) if is_gap(&error) => error,
            other => return other,
        };
        for _ in 0..REBUILDS_MAX {
            let mut fresh = Follower::new(&self.root, self.tail.dir());
            let mut staged = Staged::default();
            match fresh.step(catalog, (manifests, directories), own, Some(&mut staged)) {
                Ok(()) => {
                    catalog.replace_foreign(staged);
                    *self = fresh;
                    return Ok(());
                }
                Err(next) if is_gap(&next) => error = next,
                Err(other) => return Err(other),
            }
        }
        Err(error)
    }

    /// Takes in the newest manifest, then polls; again if a compaction published a manifest
    /// meanwhile, since its deletions may have hidden writers from the poll.
    fn step(
        &mut self,
        catalog: &Catalog,
        (manifests, directories): (&ManifestCache, &SegmentDirectories),
        own: &dyn Fn(WriterId) -> bool,
        mut staged: Option<&mut Staged>,
    ) -> Result<()> {
        let mut listed = None;
        for _ in 0..MANIFESTS_PER_REFRESH_MAX {
            let newest = manifest::newest_generation(&self.root)?;
            if newest > self.generation {
                // Loaded by the generation just listed, which it must hold: so each round
                // takes in a newer generation than the last.
                let manifest = manifests.generation(&self.root, newest)?;
                let source: Arc<dyn CompactedSummaries> = manifest.clone();
                if manifest.covers_catalog() {
                    for (writer, mark) in &manifest.writers {
                        if own(*writer) || self.tail.knows(*writer) {
                            continue;
                        }
                        catalog.adopt_compacted(
                            &mut self.keys,
                            *writer,
                            mark,
                            &manifest.runs_of(*writer),
                            &source,
                            staged.as_deref_mut(),
                        );
                        let next = SegmentSequence(mark.through.map_or(0, |s| s.0 + 1));
                        // A manifest written while a dead writer's lock file was still there
                        // does not know the writer is done; no lock file and no next segment
                        // say it is (a live or dead writer keeps its lock until recovery).
                        let wal_dir = self.tail.dir();
                        let done = mark.finished
                            || (!segment::lock_path(wal_dir, *writer).exists()
                                && !segment::segment_path(wal_dir, *writer, next).exists());
                        self.tail.start_at(*writer, next, done);
                    }
                }
                // The compacted segments' directories go now, not at the next query: a handle
                // that only serves the catalog would otherwise keep them, full, for good.
                let compacted = (manifest.writers.iter())
                    .filter_map(|(writer, mark)| Some((*writer, mark.through?)));
                directories.prune(manifest.generation, compacted);
                self.generation = manifest.generation;
                self.chains = manifest.metadata.clone();
                listed = Some(manifest);
            }
            self.poll(catalog, directories, own, staged.as_deref_mut())?;
            if manifest::newest_generation(&self.root)? == self.generation {
                // Only now: a listed chain may be deleted by a compaction whose newer
                // manifest no longer lists it, which the check above would have caught.
                if let Some(manifest) = &listed {
                    survey::check_listed_chains(self.tail.dir(), manifest)?;
                }
                return Ok(());
            }
        }
        Err(Error::StaleRead {
            what: self.root.display().to_string(),
            attempts: MANIFESTS_PER_REFRESH_MAX,
        })
    }
}

impl Follower {
    /// Reads the log from where the tail is, applying other writers' events to `catalog` and
    /// their points as summaries (`wal::replay`), once the poll ends, whether it ends well or
    /// not: the tail has moved past every record they hold.
    fn poll(
        &mut self,
        catalog: &Catalog,
        directories: &SegmentDirectories,
        own: &dyn Fn(WriterId) -> bool,
        mut staged: Option<&mut Staged>,
    ) -> Result<()> {
        let (keys, chains) = (&mut self.keys, &self.chains);
        let mut summaries = ReplaySummaries::default();
        let mut visit = |writer: WriterId, event: Event, summaries: &mut ReplaySummaries| {
            // Points read before the definition of their key id (which a writer never
            // writes) were skipped when points were applied one by one: applying what is
            // summed so far first keeps that.
            if let Event::MetricKeyDefined { run, key_id, .. } = &event
                && summaries.has_points(writer, *run, *key_id)
            {
                catalog.apply_foreign_summaries(keys, summaries, staged.as_deref_mut());
            }
            let origin = if chains.contains(&writer) || is_metadata_chain(writer) {
                Origin::MetadataChain
            } else {
                Origin::Writer
            };
            catalog.apply_foreign(keys, writer, event, origin, staged.as_deref_mut());
        };
        let polled = self.tail.poll_into(
            own,
            &mut ReplaySink::new(&mut summaries, &mut visit),
            Some(directories),
        );
        catalog.apply_foreign_summaries(&self.keys, &mut summaries, staged);
        polled
    }
}

/// Whether `error` may come from a compaction deleting segments under the tail, or from
/// manifests changing faster than (or, lost, behind) what the follower took in: a rebuild from
/// the newest manifest settles each.
fn is_gap(error: &Error) -> bool {
    match error {
        Error::StaleRead { .. } => true,
        Error::Corrupt(corruption) => {
            matches!(corruption.kind, CorruptionKind::MissingSegment { .. })
        }
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}
