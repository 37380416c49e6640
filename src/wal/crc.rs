//! CRC-32/IEEE (the log's one checksum, `crc32fast`'s) of short byte strings appended one at a
//! time: a stream's ops, a few bytes per logged point.
//!
//! `crc32fast` is fast on long inputs, but an input shorter than 64 bytes takes its byte-at-a-
//! time loop: eight dependent table lookups for an 8-byte point op, a sixth of a metric
//! handle's call. Here up to eight bytes go through eight tables at once (slicing by 8): the
//! lookups are independent, so they overlap. Longer inputs go to `crc32fast` whole.
//!
//! Invariant: [`update`] returns exactly what `crc32fast` computes for the same input and
//! initial value, for every length; the stream's CRC on disk does not depend on which one
//! the writer used (the test below compares them on random inputs).

/// The reflected CRC-32/IEEE polynomial.
const POLYNOMIAL: u32 = 0xedb8_8320;

/// Bytes folded in at once by the tables.
const SLICE_BYTES: usize = 8;

/// From this length on, `crc32fast`'s own wide paths are at least as fast.
const SHORT_BYTES_MAX: usize = 64;

/// `TABLES[k][v]`: the CRC register after byte `v` enters it and `k` zero bytes follow it, for
/// a register that was zero: one input byte's contribution, `k` bytes before the end.
static TABLES: [[u32; 256]; SLICE_BYTES] = tables();

const fn tables() -> [[u32; 256]; SLICE_BYTES] {
    let mut tables = [[0u32; 256]; SLICE_BYTES];
    let mut value = 0;
    while value < 256 {
        let mut crc = value as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLYNOMIAL } else { crc >> 1 };
            bit += 1;
        }
        tables[0][value] = crc;
        value += 1;
    }
    let mut slice = 1;
    while slice < SLICE_BYTES {
        let mut value = 0;
        while value < 256 {
            let previous = tables[slice - 1][value];
            tables[slice][value] = (previous >> 8) ^ tables[0][(previous & 0xff) as usize];
            value += 1;
        }
        slice += 1;
    }
    tables
}

/// The CRC-32/IEEE of the bytes `crc` covers followed by `bytes`: as
/// `crc32fast::Hasher::new_with_initial(crc)` updated with `bytes` and finalized.
#[inline]
pub(crate) fn update(crc: u32, bytes: &[u8]) -> u32 {
    if bytes.len() >= SHORT_BYTES_MAX {
        let mut hasher = crc32fast::Hasher::new_with_initial(crc);
        hasher.update(bytes);
        return hasher.finalize();
    }
    let mut register = !crc;
    let mut chunks = bytes.chunks_exact(SLICE_BYTES);
    for chunk in &mut chunks {
        register = fold(register, chunk);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        register = fold(register, rest);
    }
    !register
}

/// The register after the 1 to 8 bytes of `chunk` enter it. By linearity each byte, xored
/// with the register byte it meets, contributes its own table entry (as many zero bytes
/// follow it as bytes of `chunk` come after it), and the register bytes that no input byte
/// reaches are shifted along.
///
/// The bytes are loaded one at a time: they were usually just stored one at a time (the
/// encoder writes a point op byte by byte), and a wider load of them would wait for those
/// stores to drain instead of taking their values from the store buffer.
#[inline]
fn fold(register: u32, chunk: &[u8]) -> u32 {
    let len = chunk.len();
    debug_assert!((1..=SLICE_BYTES).contains(&len));
    let wide = u64::from(register);
    // Register bytes past the input's end: none once four or more bytes come in.
    let mut folded = (wide >> (8 * len).min(32)) as u32;
    for (index, byte) in chunk.iter().enumerate() {
        let mixed = byte ^ (wide >> (8 * index)) as u8;
        folded ^= TABLES[len - 1 - index][usize::from(mixed)];
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(crc: u32, bytes: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new_with_initial(crc);
        hasher.update(bytes);
        hasher.finalize()
    }

    /// Every length up to past the short limit, from random registers, and chained appends:
    /// the same CRC as `crc32fast` each time. Replay a failure with `RUNLOG_SEED`.
    #[test]
    fn the_short_update_is_crc32fast_bit_for_bit() {
        let seed = std::env::var("RUNLOG_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(crate::util::random_u64);
        println!("seed {seed} (replay with RUNLOG_SEED={seed})");
        let mut state = seed | 1;
        let mut next = move || {
            // xorshift64: enough for test inputs.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200 {
            let len = (next() % (SHORT_BYTES_MAX as u64 + 20)) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let crc = next() as u32;
            assert_eq!(update(crc, &bytes), reference(crc, &bytes), "{bytes:?} from {crc:#x}");
        }
        let (mut ours, mut theirs) = (0, crc32fast::Hasher::new());
        for _ in 0..1000 {
            let len = (next() % 20) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            ours = update(ours, &bytes);
            theirs.update(&bytes);
            assert_eq!(ours, theirs.clone().finalize());
        }
        assert_eq!(update(0, b"123456789"), 0xcbf4_3926, "the CRC-32/IEEE check value");
    }
}
