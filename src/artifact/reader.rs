//! Reading an artifact back, checked against the SHA-256 the log recorded for it: whole
//! ([`read`]), or as a stream ([`ArtifactReader`]) whose end is its check.
//!
//! Invariant: a stream never reports its end (`Ok(0)` for a buffer that is not empty) unless
//! the bytes it gave are exactly the recorded size and hash to the recorded SHA-256; otherwise
//! its last read is an error, so a consumer that forwards bytes as they come (a server's
//! download) can cut its answer off instead of finishing it.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::catalog::Artifact;
use crate::error::{Corruption, CorruptionKind, Error, Result};

/// The content of `artifact` in artifact folder `folder` (`run_dir` or `model_dir`), verified.
pub(crate) fn read(folder: &std::path::Path, artifact: &Artifact) -> Result<Vec<u8>> {
    let path = super::file_in(folder, &artifact.path)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io("read artifact", &path, e))?;
    let found: [u8; 32] = Sha256::digest(&bytes).into();
    if found != artifact.sha256 {
        return Err(Error::Corrupt(Corruption {
            path,
            offset: 0,
            kind: CorruptionKind::DigestMismatch {
                expected: hex(&artifact.sha256),
                found: hex(&found),
            },
        }));
    }
    Ok(bytes)
}

/// An artifact's content read a buffer at a time, checked as it goes: made by
/// `Store::open_artifact` and `Store::open_model_artifact`.
#[derive(Debug)]
pub struct ArtifactReader {
    file: File,
    path: PathBuf,
    expected_bytes: u64,
    expected_sha256: [u8; 32],
    read_bytes: u64,
    hasher: Sha256,
    checked: bool,
}

impl ArtifactReader {
    /// The artifact's recorded size: what a complete read yields.
    pub fn size_bytes(&self) -> u64 {
        self.expected_bytes
    }

    fn mismatch(&self, found: String) -> std::io::Error {
        let corruption = Error::Corrupt(Corruption {
            path: self.path.clone(),
            offset: self.read_bytes,
            kind: CorruptionKind::DigestMismatch {
                expected: hex(&self.expected_sha256),
                found,
            },
        });
        std::io::Error::new(std::io::ErrorKind::InvalidData, corruption.to_string())
    }
}

impl Read for ArtifactReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.checked || buffer.is_empty() {
            return Ok(0);
        }
        let read = self.file.read(buffer).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("read artifact {}: {error}", self.path.display()),
            )
        })?;
        self.read_bytes += read as u64;
        if self.read_bytes > self.expected_bytes {
            return Err(self.mismatch(format!("more than {} bytes", self.expected_bytes)));
        }
        if read > 0 {
            self.hasher.update(&buffer[..read]);
            return Ok(read);
        }
        if self.read_bytes < self.expected_bytes {
            return Err(self.mismatch(format!("only {} bytes", self.read_bytes)));
        }
        let found: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if found != self.expected_sha256 {
            return Err(self.mismatch(hex(&found)));
        }
        self.checked = true;
        Ok(0)
    }
}

/// Opens `artifact` in artifact folder `folder` for a checked, streaming read.
pub(crate) fn open(folder: &std::path::Path, artifact: &Artifact) -> Result<ArtifactReader> {
    let path = super::file_in(folder, &artifact.path)?;
    let file = File::open(&path).map_err(|e| Error::io("open artifact", &path, e))?;
    Ok(ArtifactReader {
        file,
        path,
        expected_bytes: artifact.size_bytes,
        expected_sha256: artifact.sha256,
        read_bytes: 0,
        hasher: Sha256::new(),
        checked: false,
    })
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
