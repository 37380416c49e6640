//! Fuzzes the manifest decoder: any bytes give a manifest or a corruption error, never a panic
//! or an allocation the input does not pay for. A manifest that decodes re-encodes to bytes
//! that decode to the same manifest.
//!
//! Each input is tried twice: as it is, and with a correct CRC appended, so the fuzzer gets
//! past the checksum into the body's decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runlog::compaction::Manifest;

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    fixed.extend_from_slice(&crc32(data).to_le_bytes());
    check(&fixed);
});

fn check(bytes: &[u8]) {
    let Ok(manifest) = Manifest::decode(bytes) else {
        return;
    };
    // A version 1 manifest re-encodes as the current version, so compare from the second
    // encoding on.
    let once = manifest.encode();
    let again = Manifest::decode(&once).expect("an encoded manifest decodes");
    assert_eq!(again.encode(), once, "re-encoding changed the manifest");
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
