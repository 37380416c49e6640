//! A [`Storage`] double that simulates power loss: it forwards every operation to an inner
//! storage (the OS, or a [`FaultStorage`](super::FaultStorage)) and keeps, beside the real
//! files, an image of what the disk is guaranteed to hold. On a crash it writes that image to a
//! new folder, which a test then opens as the store that came back.
//!
//! What counts as durable, per POSIX and the ALICE study (OSDI 2014):
//! - a file's bytes: what [`Storage::sync_map`] (that range) or [`Storage::sync_file`] (the
//!   whole file, and its length) wrote out;
//! - a folder's entries (creations, renames, links, removals): what the folder held at its
//!   last [`Storage::sync_dir`].
//!
//! Everything under the root when the double is made counts as durable.
//!
//! A crash in [`CrashMode::Synced`] keeps only that. [`CrashMode::Torn`] also keeps, at random,
//! each unsynced 4 KiB page of a file's current bytes, its current or its durable length, and
//! each unsynced folder entry change: what a disk that wrote back some of its cache on its own
//! may hold. Nothing else survives: a file the folder's durable entries do not name is gone.
//!
//! After the crash every operation fails with EIO, so the engine still running in the test
//! process cannot change the image, and reports errors as it would on a dead disk.
//!
//! Invariant: the image is written under the lock that counts operations, so it is the state
//! between two operations, never half of one.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use memmap2::MmapMut;

use super::Storage;

/// Unit of a torn write: the page size of the machines runlog targets.
const PAGE_BYTES: usize = 4096;

/// What a crash keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Only what was synced.
    Synced,
    /// What was synced, plus a random subset (from this seed) of what was not.
    Torn {
        /// Seed of the choice of pages, lengths and folder entries.
        seed: u64,
    },
}

/// A file's identity: inode and birth time, so that a new file that reuses a removed one's
/// inode never inherits its image. (Birth time is 0 where the filesystem has none.)
type FileId = (u64, u128);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    /// A file, by identity, so every name of it shares one image.
    File(FileId),
    Dir,
}

#[derive(Debug)]
struct Plan {
    /// The crash happens instead of this 0-based operation.
    at_operation: u64,
    into: PathBuf,
    mode: CrashMode,
}

#[derive(Debug, Default)]
struct State {
    /// Durable bytes of each file.
    images: HashMap<FileId, Vec<u8>>,
    /// Durable entries of each folder, by path relative to the root.
    dirs: HashMap<PathBuf, BTreeMap<OsString, Node>>,
    operations: u64,
    plan: Option<Plan>,
    crashed: bool,
}

/// Forwards to an inner [`Storage`] and can simulate a crash at any operation.
#[derive(Debug)]
pub struct CrashStorage {
    root: PathBuf,
    inner: Arc<dyn Storage>,
    state: Mutex<State>,
}

impl CrashStorage {
    /// A double over `inner` for the store at `root`, which must exist. Everything under
    /// `root` now counts as durable.
    pub fn new(root: impl Into<PathBuf>, inner: Arc<dyn Storage>) -> io::Result<CrashStorage> {
        let root = root.into();
        let mut state = State::default();
        capture_tree(&root, Path::new(""), &mut state)?;
        Ok(CrashStorage {
            root,
            inner,
            state: Mutex::new(state),
        })
    }

    /// Crashes instead of the `operation`-th operation (0-based, counted from the double's
    /// creation), writing the surviving store into `into` (which must not exist).
    pub fn crash_at(&self, operation: u64, into: impl Into<PathBuf>, mode: CrashMode) {
        self.lock().plan = Some(Plan {
            at_operation: operation,
            into: into.into(),
            mode,
        });
    }

    /// Crashes now, between operations, writing the surviving store into `into` (which must
    /// not exist).
    pub fn crash_now(&self, into: &Path, mode: CrashMode) -> io::Result<()> {
        let mut state = self.lock();
        state.crashed = true;
        self.write_image(&state, into, mode)
    }

    /// Operations seen so far (the failed ones after a crash included).
    pub fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// Whether the crash has happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under this lock can only be a test's; the state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an operation, crashing if planned; then runs it and records what it made
    /// durable, all under the lock.
    fn operate<T>(
        &self,
        run: impl FnOnce(&dyn Storage) -> io::Result<T>,
        record: impl FnOnce(&mut State, &Path) -> io::Result<()>,
    ) -> io::Result<T> {
        let mut state = self.lock();
        let index = state.operations;
        state.operations += 1;
        if state.crashed {
            return Err(dead());
        }
        if let Some(plan) = state.plan.take() {
            if plan.at_operation <= index {
                state.crashed = true;
                self.write_image(&state, &plan.into, plan.mode)?;
                return Err(dead());
            }
            state.plan = Some(plan);
        }
        let value = run(self.inner.as_ref())?;
        record(&mut state, &self.root)?;
        Ok(value)
    }

    fn write_image(&self, state: &State, into: &Path, mode: CrashMode) -> io::Result<()> {
        let mut rng = match mode {
            CrashMode::Synced => None,
            CrashMode::Torn { seed } => Some(SplitMix(seed)),
        };
        // A fresh folder: an image written over an older one would mix two crashes.
        std::fs::create_dir(into)?;
        write_dir(&self.root, Path::new(""), into, state, &mut rng)
    }
}

fn dead() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// `path` relative to `root`, if it is under it (files elsewhere, such as an export folder,
/// are not part of the store's image).
fn relative(root: &Path, path: &Path) -> Option<PathBuf> {
    path.strip_prefix(root).ok().map(Path::to_path_buf)
}

fn identity(metadata: &std::fs::Metadata) -> FileId {
    let born = metadata
        .created()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    (metadata.ino(), born)
}

fn file_id(path: &Path) -> io::Result<FileId> {
    Ok(identity(&std::fs::metadata(path)?))
}

/// Records `dir` (relative `rel`) and everything under it as durable.
fn capture_tree(dir: &Path, rel: &Path, state: &mut State) -> io::Result<()> {
    let listing = list(dir)?;
    for (name, node) in &listing {
        match node {
            Node::Dir => capture_tree(&dir.join(name), &rel.join(name), state)?,
            Node::File(id) => {
                state.images.insert(*id, std::fs::read(dir.join(name))?);
            }
        }
    }
    state.dirs.insert(rel.to_path_buf(), listing);
    Ok(())
}

/// A folder's current entries (files and folders; nothing else lives in a store).
fn list(dir: &Path) -> io::Result<BTreeMap<OsString, Node>> {
    let mut listing = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        let node = if metadata.is_dir() {
            Node::Dir
        } else {
            Node::File(identity(&metadata))
        };
        listing.insert(entry.file_name(), node);
    }
    Ok(listing)
}

/// Writes the surviving contents of `root/rel` into `into/rel`.
fn write_dir(
    root: &Path,
    rel: &Path,
    into: &Path,
    state: &State,
    rng: &mut Option<SplitMix>,
) -> io::Result<()> {
    std::fs::create_dir_all(into.join(rel))?;
    let durable = state.dirs.get(rel).cloned().unwrap_or_default();
    let mut entries = durable.clone();
    if let Some(rng) = rng.as_mut() {
        // Each unsynced change of the folder (an entry added, removed or replaced) may or may
        // not have reached the disk.
        let current = list(&root.join(rel)).unwrap_or_default();
        let names: std::collections::BTreeSet<&OsString> =
            durable.keys().chain(current.keys()).collect();
        for name in names {
            let (was, now) = (durable.get(name), current.get(name));
            if was != now && rng.coin() {
                match now {
                    Some(node) => entries.insert(name.clone(), *node),
                    None => entries.remove(name),
                };
            }
        }
    }
    for (name, node) in &entries {
        let rel = rel.join(name);
        match node {
            Node::Dir => write_dir(root, &rel, into, state, rng)?,
            Node::File(id) => {
                let image = state.images.get(id).cloned().unwrap_or_default();
                let bytes = match rng.as_mut() {
                    None => image,
                    Some(rng) => torn(&root.join(&rel), *id, image, rng),
                };
                std::fs::write(into.join(&rel), bytes)?;
            }
        }
    }
    Ok(())
}

/// The durable `image` of a file with, at random, some of its current unsynced pages and its
/// current length.
fn torn(path: &Path, id: FileId, image: Vec<u8>, rng: &mut SplitMix) -> Vec<u8> {
    let current = match std::fs::metadata(path) {
        Ok(metadata) if identity(&metadata) == id => std::fs::read(path).unwrap_or_default(),
        _ => return image,
    };
    let length = if rng.coin() {
        current.len()
    } else {
        image.len()
    };
    let mut bytes = image;
    bytes.resize(length, 0);
    for (index, page) in bytes.chunks_mut(PAGE_BYTES).enumerate() {
        let start = index * PAGE_BYTES;
        let Some(now) = current.get(start..(start + page.len()).min(current.len())) else {
            continue;
        };
        if now != &page[..now.len()] && rng.coin() {
            page[..now.len()].copy_from_slice(now);
        }
    }
    bytes
}

/// A small seeded generator (splitmix64): the library has no random-number dependency.
struct SplitMix(u64);

impl SplitMix {
    fn coin(&mut self) -> bool {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) & 1 == 1
    }
}

impl Storage for CrashStorage {
    fn create_preallocated(&self, path: &Path, bytes: u64) -> io::Result<File> {
        // A new file is durable only once synced and named by a synced folder. Any image
        // left under its identity (an inode reused where there is no birth time) is not its.
        self.operate(
            |s| s.create_preallocated(path, bytes),
            |state, _| {
                state.images.remove(&file_id(path)?);
                Ok(())
            },
        )
    }

    fn sync_map(&self, path: &Path, map: &MmapMut, offset: usize, len: usize) -> io::Result<()> {
        self.operate(
            |s| s.sync_map(path, map, offset, len),
            |state, _| {
                let range = offset
                    .checked_add(len)
                    .and_then(|end| map.get(offset..end).map(|bytes| (end, bytes)));
                let Some((end, bytes)) = range else {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                };
                let image = state.images.entry(file_id(path)?).or_default();
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[offset..end].copy_from_slice(bytes);
                Ok(())
            },
        )
    }

    fn sync_file(&self, path: &Path, file: &File) -> io::Result<()> {
        self.operate(
            |s| s.sync_file(path, file),
            |state, _| {
                let id = identity(&file.metadata()?);
                // Read by path: a published file's handle is write-only. The path names the
                // same file while the engine syncs it.
                if file_id(path)? == id {
                    state.images.insert(id, std::fs::read(path)?);
                }
                Ok(())
            },
        )
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.operate(
            |s| s.sync_dir(dir),
            |state, root| {
                if let Some(rel) = relative(root, dir) {
                    let listing = list(dir)?;
                    // A file first named here keeps the bytes it was synced with; one never
                    // synced is empty.
                    state.dirs.insert(rel, listing);
                }
                Ok(())
            },
        )
    }

    fn set_len(&self, path: &Path, file: &File, bytes: u64) -> io::Result<()> {
        self.operate(|s| s.set_len(path, file, bytes), |_, _| Ok(()))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.operate(|s| s.rename(from, to), |_, _| Ok(()))
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.operate(|s| s.link(from, to), |_, _| Ok(()))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.operate(|s| s.remove(path), |_, _| Ok(()))
    }

    fn write_at(&self, path: &Path, file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.operate(|s| s.write_at(path, file, offset, bytes), |_, _| Ok(()))
    }
}
