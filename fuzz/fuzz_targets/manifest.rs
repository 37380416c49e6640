//! Fuzzes the manifest decoder: any bytes give a manifest file (a whole manifest of version 1
//! to 4, or a version 4 edit) or a corruption error, never a panic or an allocation the input
//! does not pay for. A file that decodes re-encodes to bytes that decode to the same file; an
//! edit applied to the state it cannot follow, or to one it can, fails or succeeds without a
//! panic, and the state it makes encodes and decodes again.
//!
//! Each input is tried twice: as it is, and with a correct CRC appended, so the fuzzer gets
//! past the checksum into the body's decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runlog::compaction::{Manifest, ManifestFile};

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    fixed.extend_from_slice(&crc32(data).to_le_bytes());
    check(&fixed);
});

fn check(bytes: &[u8]) {
    let Ok(file) = ManifestFile::decode(bytes) else {
        return;
    };
    // A version 1 to 3 manifest re-encodes as a version 4 base, so compare from the second
    // encoding on.
    let once = file.encode();
    let again = ManifestFile::decode(&once).expect("an encoded manifest file decodes");
    assert_eq!(again.encode(), once, "re-encoding changed the manifest file");
    if let ManifestFile::Edit(edit) = file {
        // The empty state of the generation before the edit: the edit may remove what it does
        // not hold (an error), or build a state, which must then encode as a base that decodes.
        let mut state = Manifest {
            version: 4,
            generation: edit.generation() - 1,
            ..Manifest::default()
        };
        if edit.apply(&mut state).is_ok() {
            let base = state.encode();
            Manifest::decode(&base).expect("an applied edit's state decodes as a base");
        }
    }
}

/// CRC-32 (IEEE), bit by bit: the fuzz crate does not need crc32fast for one checksum per input.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
