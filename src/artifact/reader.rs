//! Reading an artifact back, checked against the SHA-256 the log recorded for it.

use sha2::{Digest, Sha256};

use crate::catalog::Artifact;
use crate::error::{Corruption, CorruptionKind, Error, Result};

/// The content of `artifact` in artifact folder `folder` (`run_dir` or `model_dir`), verified.
pub(crate) fn read(folder: &std::path::Path, artifact: &Artifact) -> Result<Vec<u8>> {
    let path = folder.join(&artifact.path);
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

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
