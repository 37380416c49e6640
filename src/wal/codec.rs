//! Primitive little-endian codec for record payloads: fixed-width integers, LEB128 varints,
//! zigzag, and length-prefixed UTF-8 strings.
//!
//! The decoder never panics and never allocates more than the bytes in front of it justify:
//! every length is checked against what is left before anything is read or reserved.

use crate::error::CorruptionKind;
use crate::limits::STRING_BYTES_MAX;

/// Appends encoded values to a byte vector.
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// Encodes onto the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Encoder { out }
    }

    /// One byte.
    pub fn u8(&mut self, value: u8) {
        self.out.push(value);
    }

    /// u32 LE.
    pub fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// u64 LE.
    pub fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// i64 LE.
    pub fn i64(&mut self, value: i64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// u128 LE.
    pub fn u128(&mut self, value: u128) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// Unsigned LEB128.
    pub fn varint(&mut self, value: u64) {
        let mut buffer = [0u8; VARINT_BYTES_MAX];
        let len = encode_varint(value, &mut buffer);
        self.out.extend_from_slice(&buffer[..len]);
    }

    /// Unsigned LEB128 of each of `values`, as `varint` would append them one by one. Encoded
    /// a block at a time on the stack, so a column of millions costs one append per block, not
    /// one per value.
    #[inline]
    pub fn varints(&mut self, values: impl Iterator<Item = u64>) {
        const BLOCK_BYTES: usize = 64 * VARINT_BYTES_MAX;
        let mut block = [0u8; BLOCK_BYTES];
        let mut at = 0;
        for mut value in values {
            if at > BLOCK_BYTES - VARINT_BYTES_MAX {
                self.out.extend_from_slice(&block[..at]);
                at = 0;
            }
            while value >= 0x80 {
                block[at] = (value as u8) | 0x80;
                value >>= 7;
                at += 1;
            }
            block[at] = value as u8;
            at += 1;
        }
        self.out.extend_from_slice(&block[..at]);
    }

    /// The little-endian bytes of each of `values` (`N` bytes each), a block at a time.
    #[inline]
    pub fn le_bytes<const N: usize>(&mut self, values: impl Iterator<Item = [u8; N]>) {
        const BLOCK_BYTES: usize = 4096;
        let mut block = [0u8; BLOCK_BYTES];
        let mut at = 0;
        for bytes in values {
            if at + N > BLOCK_BYTES {
                self.out.extend_from_slice(&block[..at]);
                at = 0;
            }
            block[at..at + N].copy_from_slice(&bytes);
            at += N;
        }
        self.out.extend_from_slice(&block[..at]);
    }

    /// u32 length, then UTF-8 bytes.
    pub fn str(&mut self, value: &str) {
        self.u32(value.len() as u32);
        self.out.extend_from_slice(value.as_bytes());
    }

    /// Raw bytes.
    pub fn bytes(&mut self, value: &[u8]) {
        self.out.extend_from_slice(value);
    }
}

/// Longest LEB128 encoding of a u64.
pub const VARINT_BYTES_MAX: usize = 10;

/// The length of the varint that `bytes` starts with, if `Decoder::varint` would accept it
/// there; its value is not computed. For scans that only check and pass over values.
#[inline(always)]
pub fn varint_length(bytes: &[u8]) -> Option<usize> {
    let mut length = 0;
    loop {
        let byte = *bytes.get(length)?;
        length += 1;
        if byte < 0x80 {
            return (length < VARINT_BYTES_MAX || byte <= 1).then_some(length);
        }
        if length == VARINT_BYTES_MAX {
            return None;
        }
    }
}

/// Encodes `value` as LEB128 into `out`, returning the length.
#[inline]
pub fn encode_varint(mut value: u64, out: &mut [u8; VARINT_BYTES_MAX]) -> usize {
    let mut len = 0;
    while value >= 0x80 {
        out[len] = (value as u8) | 0x80;
        value >>= 7;
        len += 1;
    }
    out[len] = value as u8;
    len + 1
}

/// Maps signed to unsigned so that small magnitudes encode short.
#[inline]
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Reads values from a payload, tracking the position for error messages. A copy reads on
/// from where the original was, independently (a decoder that may have to start over).
#[derive(Clone)]
pub struct Decoder<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Decoder<'a> {
    /// Decodes `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Decoder { bytes, position: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// The next byte, not consumed.
    #[inline]
    pub fn peek_u8(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    /// Takes the next `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], CorruptionKind> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(malformed(format!(
                "needs {len} bytes at payload offset {}, {} left",
                self.position,
                self.remaining()
            )));
        };
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CorruptionKind> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, CorruptionKind> {
        Ok(self.array::<1>()?[0])
    }

    /// u32 LE.
    pub fn u32(&mut self) -> Result<u32, CorruptionKind> {
        self.array().map(u32::from_le_bytes)
    }

    /// u64 LE.
    pub fn u64(&mut self) -> Result<u64, CorruptionKind> {
        self.array().map(u64::from_le_bytes)
    }

    /// i64 LE.
    pub fn i64(&mut self) -> Result<i64, CorruptionKind> {
        self.array().map(i64::from_le_bytes)
    }

    /// u128 LE.
    pub fn u128(&mut self) -> Result<u128, CorruptionKind> {
        self.array().map(u128::from_le_bytes)
    }

    /// f32 LE.
    pub fn f32(&mut self) -> Result<f32, CorruptionKind> {
        self.array().map(f32::from_le_bytes)
    }

    /// f64 LE.
    pub fn f64(&mut self) -> Result<f64, CorruptionKind> {
        self.array().map(f64::from_le_bytes)
    }

    /// Unsigned LEB128; rejects encodings longer than ten bytes or overflowing u64.
    ///
    /// One byte (a value below 128) is the case of most counts, indexes and small steps, and is
    /// decoded inline; the loop, whose error paths kept the whole function from being inlined
    /// (a seventh of a large manifest's load), is out of line.
    #[inline]
    pub fn varint(&mut self) -> Result<u64, CorruptionKind> {
        if let Some(&byte) = self.bytes.get(self.position)
            && byte < 0x80
        {
            self.position += 1;
            return Ok(u64::from(byte));
        }
        self.varint_long()
    }

    /// The bytes not yet consumed.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    /// Moves past `len` bytes, failing as `take` does if fewer are left.
    #[inline]
    pub fn skip(&mut self, len: usize) -> Result<(), CorruptionKind> {
        if len <= self.remaining() {
            self.position += len;
            return Ok(());
        }
        self.take(len).map(drop)
    }

    /// `varint` of any length.
    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, CorruptionKind> {
        let mut value = 0u64;
        for index in 0..VARINT_BYTES_MAX {
            let Some(&byte) = self.bytes.get(self.position) else {
                return Err(malformed("varint runs past the end".to_string()));
            };
            self.position += 1;
            let bits = u64::from(byte & 0x7f);
            if index == VARINT_BYTES_MAX - 1 && byte > 1 {
                return Err(malformed("varint overflows u64".to_string()));
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint longer than ten bytes".to_string()))
    }

    /// u32 length, then that many bytes of UTF-8.
    pub fn string(&mut self) -> Result<String, CorruptionKind> {
        let len = self.u32()? as usize;
        if len > STRING_BYTES_MAX {
            return Err(malformed(format!(
                "string of {len} bytes exceeds {STRING_BYTES_MAX}"
            )));
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|error| malformed(format!("string is not UTF-8: {error}")))
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), CorruptionKind> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(malformed(format!("{} trailing bytes", self.remaining())))
        }
    }
}

/// A payload that passed its CRC but does not decode.
pub fn malformed(why: String) -> CorruptionKind {
    CorruptionKind::MalformedPayload(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(value in any::<u64>()) {
            let mut out = Vec::new();
            Encoder::new(&mut out).varint(value);
            let mut decoder = Decoder::new(&out);
            prop_assert_eq!(decoder.varint(), Ok(value));
            prop_assert!(decoder.finish().is_ok());
        }

        /// `varint_length` accepts exactly what `varint` accepts, and ends where it ends: a
        /// run of continuation bytes up to past the longest varint, then any bytes, so that
        /// ten-byte and overlong varints come up as often as short ones.
        #[test]
        fn varint_length_agrees_with_varint(
            continued in 0usize..=VARINT_BYTES_MAX + 1,
            rest in proptest::collection::vec(prop_oneof![0u8..=2, any::<u8>()], 0..4),
        ) {
            let mut bytes = vec![0x80u8; continued];
            bytes.extend_from_slice(&rest);
            let mut decoder = Decoder::new(&bytes);
            let decoded = decoder.varint().map(|_| decoder.position()).ok();
            prop_assert_eq!(varint_length(&bytes), decoded);
        }

        /// The block encoders append exactly what the one-value encoders do, across block
        /// edges (columns up to a few blocks long, varints of every length).
        #[test]
        fn block_encoders_match_one_value_encoders(
            values in proptest::collection::vec(
                prop_oneof![0u64..0x80, 0u64..0x4000, any::<u64>()],
                0..1_200,
            ),
        ) {
            let (mut one, mut block) = (vec![7u8], vec![7u8]);
            let mut encoder = Encoder::new(&mut one);
            for value in &values {
                encoder.varint(*value);
            }
            for value in &values {
                encoder.u64(*value);
            }
            let mut encoder = Encoder::new(&mut block);
            encoder.varints(values.iter().copied());
            encoder.le_bytes(values.iter().map(|v| v.to_le_bytes()));
            prop_assert_eq!(one, block);
        }

        #[test]
        fn zigzag_round_trips(value in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(value)), value);
        }
    }

    #[test]
    fn overlong_varints_are_rejected() {
        let eleven = [0xffu8; 11];
        assert!(Decoder::new(&eleven).varint().is_err());
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Decoder::new(&overflow).varint().is_err());
    }
}
