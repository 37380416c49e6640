//! `ForkGuard`: tells whether the running process is the one that created a handle, so a
//! child forked from it (Python's `multiprocessing` forks) never appends into its parent's
//! mapped segments, syncs them, seals them or removes their lock files.
//!
//! Invariants:
//! - A guard created in process P reports "forked" in every process forked from P, and never
//!   in P itself.
//! - Checking costs one memory load on Linux and no system call: the guard owns a private
//!   anonymous page marked `MADV_WIPEONFORK`, which the kernel hands to a child zeroed. Where
//!   that advice is refused (other systems, kernels before 4.14), the guard compares the pid it
//!   stored with `getpid`, a system call per check. Each guard keeps its own state: there is no
//!   process-global flag and no `pthread_atfork` handler.

use memmap2::{MmapMut, MmapOptions};

use crate::error::{Error, Result};

/// The byte the marker page holds in the process that created the guard.
const OWNER_MARK: u8 = 1;

/// Remembers which process created a handle.
#[derive(Debug)]
pub(crate) struct ForkGuard {
    owner_pid: u32,
    /// A page that reads `OWNER_MARK` in the owner and zero in a forked child.
    marker: Option<MmapMut>,
}

impl ForkGuard {
    /// A guard owned by the calling process.
    pub(crate) fn new() -> ForkGuard {
        ForkGuard {
            owner_pid: std::process::id(),
            marker: wipe_on_fork_page(),
        }
    }

    /// Whether the caller runs in a process forked from the guard's owner.
    #[inline]
    pub(crate) fn is_forked(&self) -> bool {
        match &self.marker {
            // Volatile: the kernel, not this program, changes the byte (at fork), so the load
            // must really happen on every check.
            // SAFETY: the map is at least one byte long, mapped for the guard's whole life.
            Some(page) => (unsafe { std::ptr::read_volatile(page.as_ptr()) }) != OWNER_MARK,
            None => std::process::id() != self.owner_pid,
        }
    }

    /// Fails with [`Error::Forked`] in a forked child.
    #[inline]
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_forked() {
            return Err(Error::Forked {
                owner_pid: self.owner_pid,
                pid: std::process::id(),
            });
        }
        Ok(())
    }
}

/// A one-page private anonymous map holding `OWNER_MARK`, which a forked child sees zeroed;
/// None where the kernel does not support `MADV_WIPEONFORK`.
#[cfg(target_os = "linux")]
fn wipe_on_fork_page() -> Option<MmapMut> {
    let mut page = MmapOptions::new().len(1).map_anon().ok()?;
    // SAFETY: the range is the map's own, page-aligned start; the advice changes only what a
    // child sees.
    let advised = unsafe {
        libc::madvise(
            page.as_mut_ptr().cast::<libc::c_void>(),
            page.len(),
            libc::MADV_WIPEONFORK,
        )
    };
    if advised != 0 {
        return None;
    }
    let first = page.first_mut()?;
    *first = OWNER_MARK;
    Some(page)
}

#[cfg(not(target_os = "linux"))]
fn wipe_on_fork_page() -> Option<MmapMut> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_not_forked() {
        let guard = ForkGuard::new();
        assert!(!guard.is_forked());
        assert!(guard.check().is_ok());
        #[cfg(target_os = "linux")]
        assert!(guard.marker.is_some(), "MADV_WIPEONFORK was refused");
    }
}
