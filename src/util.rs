//! Crate-wide utilities with no dependency on the rest of the crate: the wall clock in ms, random
//! ids, file identity and the hasher of the engine's internal maps. A leaf: every module may use
//! it, and it uses none of them.

use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether `file` is the file now at `path` (same device and inode).
pub(crate) fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// 64 random bits from the OS-seeded hasher keys of the standard library.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A small multiplicative hasher for the key-interning maps on the hot path: their keys come
/// from the process itself, so flooding resistance buys nothing there.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

/// `BuildHasher` of [`FastHasher`].
pub type FastHash = BuildHasherDefault<FastHasher>;

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ rest.len() as u64);
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u128(&mut self, value: u128) {
        self.add(value as u64);
        self.add((value >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
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
