//! The I/O seam: every file operation that matters for durability goes through [`Storage`].
//!
//! Segment creation with real preallocated blocks, msync, fsync of files and directories,
//! truncation, renames and removals. The engine never calls these OS functions directly, so
//! tests can swap in `FaultStorage` to fail the Nth operation or return ENOSPC/EIO, and
//! `CrashStorage` to simulate a power loss that keeps only what was synced (or a torn subset
//! of the rest), and check that the real code paths react correctly; both exist only with the
//! `testing` feature. Plain reads do not go through the seam: they cannot lose data.

#[cfg(feature = "testing")]
mod crash;
#[cfg(feature = "testing")]
mod fault;
mod fork;
mod publish;

#[cfg(feature = "testing")]
pub use crash::{CrashMode, CrashStorage};
#[cfg(feature = "testing")]
pub use fault::{FaultStorage, Operation};
pub(crate) use fork::ForkGuard;
pub(crate) use publish::{TemporaryName, create_dirs, publish, publish_named};

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use memmap2::MmapMut;

/// File operations the engine relies on for durability.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `path`, which must not exist, with `bytes` of allocated blocks, so that a full
    /// disk is reported here and never as SIGBUS on a later write through a map.
    fn create_preallocated(&self, path: &Path, bytes: u64) -> io::Result<File>;
    /// Writes `map[offset..offset + len]` to disk and waits (msync MS_SYNC).
    fn sync_map(&self, path: &Path, map: &MmapMut, offset: usize, len: usize) -> io::Result<()>;
    /// fsyncs a file's data and metadata.
    fn sync_file(&self, path: &Path, file: &File) -> io::Result<()>;
    /// fsyncs a directory, making creations, renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Sets a file's length (used to trim a sealed segment to its records).
    fn set_len(&self, path: &Path, file: &File, bytes: u64) -> io::Result<()>;
    /// Renames a file atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes `to` a new name of `from`, failing with `AlreadyExists` if `to` exists: an atomic
    /// publish that never replaces.
    fn link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Writes `bytes` at `offset` of an open file (used to seal a crashed writer's segment).
    fn write_at(&self, path: &Path, file: &File, offset: u64, bytes: &[u8]) -> io::Result<()>;
}

/// The real operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

impl Storage for OsStorage {
    fn create_preallocated(&self, path: &Path, bytes: u64) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        if let Err(error) = allocate(&file, bytes) {
            // Leave no half-made file behind: a later scan would take it for a torn segment.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(error);
        }
        Ok(file)
    }

    fn sync_map(&self, _path: &Path, map: &MmapMut, offset: usize, len: usize) -> io::Result<()> {
        map.flush_range(offset, len)
    }

    fn sync_file(&self, _path: &Path, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn set_len(&self, _path: &Path, file: &File, bytes: u64) -> io::Result<()> {
        file.set_len(bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn write_at(&self, _path: &Path, file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.write_all_at(bytes, offset)
    }
}

/// Allocates real blocks for the first `bytes` of `file` and sets its length.
#[cfg(target_os = "linux")]
fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let length = libc::off_t::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size too large"))?;
    // SAFETY: the descriptor is open for writing for the duration of the call.
    let status = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, length) };
    match status {
        0 => Ok(()),
        // Filesystems without fallocate: fall back to writing zeros, which also allocates.
        libc::EOPNOTSUPP | libc::EINVAL => write_zeros(file, bytes),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    write_zeros(file, bytes)
}

fn write_zeros(file: &File, bytes: u64) -> io::Result<()> {
    use std::io::Write;
    let zeros = vec![0u8; 1 << 20];
    let mut writer = io::BufWriter::new(file);
    let mut left = bytes;
    while left > 0 {
        let chunk = left.min(zeros.len() as u64) as usize;
        writer.write_all(&zeros[..chunk])?;
        left -= chunk as u64;
    }
    writer.flush()
}
