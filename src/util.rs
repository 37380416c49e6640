//! Crate-wide utilities with no dependency on the rest of the crate: the wall clock in ms, random
//! ids, file identity, poison-tolerant locking, the hashers of the engine's maps, the
//! prefaulting of fresh result columns, and the seeded generator of randomized unit tests. A
//! leaf: every module may use it, and it uses none of them.

use std::fs::File;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Locks `mutex`, ignoring poisoning: the engine keeps the structures behind its mutexes valid
/// at every step, so data whose holder panicked is still consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `file` is the file now at `path` (same device and inode).
pub(crate) fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// 64 random bits from the OS (`getrandom`). If the OS source fails, which Linux's `getrandom`
/// system call does not once the pool is seeded at boot, the bits come from the OS-seeded keys
/// of the standard library's `RandomState`: ids must not fail to be made, and both sources are
/// seeded by the OS.
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::process::id())
    })
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The hasher of maps whose keys come from callers, files or the network: metric, param and
/// tag keys, experiment names. Its seed is random per process (foldhash's `RandomState`), so no
/// one can choose keys that all collide and turn lookups quadratic (hash flooding through a
/// server).
pub type KeyHash = foldhash::fast::RandomState;

/// The hasher of maps whose keys the engine makes itself (run, experiment and key ids): fixed
/// seed, so equal inputs hash alike in every process. Never use it for keys a caller chooses.
pub type IdHash = foldhash::fast::FixedState;

/// Maps in the pages of `columns`, a part of a freshly allocated result column about to be
/// written, in one call instead of one page fault per 4 KiB page as each is first written
/// (`MADV_POPULATE_WRITE`): a 10 M-point history fills 240 MB of fresh pages, and in this
/// machine's VM the fault per page cost more than zeroing it. Contents do not change (pages
/// already mapped stay as they are, new ones are zero, as they would be). Only whole pages
/// inside the slice are advised; where the advice is not known (kernels before 5.14, other
/// systems) the pages are faulted in by the writes as before.
pub(crate) fn prefault<T: Copy>(columns: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        /// The smallest page size: a larger page makes the range unaligned, and the advice
        /// then fails harmlessly.
        const PAGE_BYTES: usize = 4096;
        let start = columns.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(columns);
        let (first, last) = (start.next_multiple_of(PAGE_BYTES), end & !(PAGE_BYTES - 1));
        if last > first {
            // SAFETY: the range lies inside `columns`, which this call borrows mutably, and the
            // advice leaves its contents as they are; its result is ignored because a refusal
            // only leaves the pages to be faulted in by the writes.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_POPULATE_WRITE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = columns;
}

/// SplitMix64 for randomized tests, seeded from `RUNLOG_SEED` or the clock, the seed printed so
/// that a failure replays.
#[cfg(test)]
pub(crate) struct TestRng(u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn from_env(test: &str) -> TestRng {
        let seed = std::env::var("RUNLOG_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: seed {seed} (replay with RUNLOG_SEED={seed})");
        TestRng(seed)
    }

    /// A number below `bound` (below 1 for 0).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_on_a_file_no_longer_at_its_path_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.lock");
        let file = File::create(&path).unwrap();
        assert!(same_file(&file, &path));
        std::fs::remove_file(&path).unwrap();
        assert!(!same_file(&file, &path));
        File::create(&path).unwrap();
        assert!(!same_file(&file, &path));
    }
}
