//! `runs/log-batch`'s body read in one pass: each `metrics[]` entry scanned straight into its
//! four fields, its key borrowed from the body, instead of a `serde_json::Value` tree of owned
//! strings and maps per point that is then read again (the general reader, `wire::Fields`).
//!
//! Invariants:
//! - This reader takes only what it reads exactly as `Fields` would, and refuses the rest: a
//!   body that is not one JSON object, a name with an escape, a field given twice, a
//!   `metrics` that is not an array of entries holding no field but `key`, `value`,
//!   `timestamp`, `step` and `model_id`, each of a form this reader reads (a string without
//!   escapes, a number; no null, no float timestamp, no negative timestamp), an entry that
//!   names a logged model (a non-empty `model_id`: what a model's entry implies, its repeats
//!   dropped and its metric kept for the model, is the general path's). A refused body
//!   goes to the general reader, whose answer, error message included, is then the answer, so
//!   every body gets the answer the general reader gives it.
//! - What it takes is valid JSON: every byte it steps over is checked against JSON's grammar
//!   here, or read by serde_json (the fields other than `metrics`).
//! - Numbers are read as serde_json reads them: a double is the nearest `f64` to the decimal
//!   text (serde_json's `float_roundtrip`; std's `f64::from_str` is correctly rounded as
//!   well), and a number serde_json finds out of range is refused.
//! - Every field of the body but `metrics` goes into the [`Fields`] the general reader would
//!   have made of it, so the batch's other fields are read and checked by the same code.

use serde_json::{Map, Value};

use super::wire::{Fields, double_from_str, int_from_str};
use crate::MetricPoint;
use crate::tracking::validation;

/// A log-batch body: its metric entries, read, and the rest of its fields.
pub(crate) struct BatchBody<'a> {
    /// Every field but `metrics`.
    pub fields: Fields,
    /// `metrics[]`'s points, in order, as the general reader reads them; their keys are
    /// borrowed from the body. None names a logged model.
    pub points: Vec<MetricPoint<'a>>,
}

/// Nesting this reader lets serde_json read in a field other than `metrics`, well below the
/// 127 levels serde_json allows within the body's object: deeper is the general reader's.
const FIELD_DEPTH_MAX: usize = 64;

/// The body read, or `None` if this reader does not take it (see the module doc): the caller
/// then reads it with [`Fields`].
pub(crate) fn read(body: &[u8]) -> Option<BatchBody<'_>> {
    let mut scanner = Scanner {
        text: body,
        at: 0,
        last_key: "",
    };
    let read = scanner.body()?;
    scanner.whitespace();
    (scanner.at == body.len()).then_some(read)
}

/// A position in the body. Every method returns `None`, its position then meaningless, when
/// the text there is not what it reads.
struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
    /// The last entry's key, so that a batch of one key checks its UTF-8 once.
    last_key: &'a str,
}

/// The fields of a metric entry, as bits of the set of fields seen.
const KEY: u8 = 1;
const VALUE: u8 = 2;
const TIMESTAMP: u8 = 4;
const STEP: u8 = 8;
const MODEL_ID: u8 = 16;

/// Decimal digits a `u64` always holds.
const EXACT_DIGITS_MAX: u32 = 19;

/// The powers of ten an `f64` holds exactly (10^0 to 10^22).
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Integers below this are exact in an `f64` (2^53).
const EXACT_INTEGER_LIMIT: u64 = 1 << 53;

/// A JSON number as scanned: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
struct Number<'a> {
    text: &'a [u8],
    negative: bool,
    /// Its significant digits, when there are at most `EXACT_DIGITS_MAX` of them.
    digits: Option<u64>,
    /// The power of ten `digits` is multiplied by, when `digits` is known and the exponent
    /// written is small.
    exponent: Option<i32>,
    /// Neither fraction nor exponent.
    integer: bool,
}

impl Number<'_> {
    /// The nearest `f64`, as serde_json reads the text, or `None` out of `f64`'s range (which
    /// serde_json refuses).
    fn double(&self) -> Option<f64> {
        let magnitude = match (self.digits, self.exponent) {
            // One rounding: the integer's (a cast rounds to nearest) ...
            (Some(digits), Some(0)) => Some(digits as f64),
            // ... or, both operands exact, the product's or quotient's (Clinger's fast path).
            (Some(digits), Some(exponent)) if digits < EXACT_INTEGER_LIMIT => {
                let power = EXACT_POWERS_OF_TEN.get(exponent.unsigned_abs() as usize);
                power.map(|&power| match exponent {
                    0.. => digits as f64 * power,
                    _ => digits as f64 / power,
                })
            }
            _ => None,
        };
        let value = match magnitude {
            Some(magnitude) if self.negative => -magnitude,
            Some(magnitude) => magnitude,
            // The rest: std's correctly rounded reading of the text (ASCII, so UTF-8).
            None => std::str::from_utf8(self.text).ok()?.parse::<f64>().ok()?,
        };
        value.is_finite().then_some(value)
    }

    /// The integer, if the text is one in `i64`'s range.
    fn int(&self) -> Option<i64> {
        let digits = self.digits.filter(|_| self.integer)?;
        if self.negative {
            0i64.checked_sub_unsigned(digits)
        } else {
            i64::try_from(digits).ok()
        }
    }
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    #[inline]
    fn whitespace(&mut self) {
        let mut at = self.at;
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(at) {
            at += 1;
        }
        self.at = at;
    }

    /// The next byte after whitespace, stepped over.
    #[inline]
    fn next_token(&mut self) -> Option<u8> {
        self.whitespace();
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// `byte`, after whitespace.
    #[inline]
    fn token(&mut self, byte: u8) -> Option<()> {
        (self.next_token()? == byte).then_some(())
    }

    /// After an object's member or an array's element: `true` at a comma (another follows),
    /// `false` at `close` (the end).
    #[inline]
    fn more(&mut self, close: u8) -> Option<bool> {
        match self.next_token()? {
            b',' => Some(true),
            byte => (byte == close).then_some(false),
        }
    }

    /// The bytes of a string without escapes or control characters, after whitespace; not yet
    /// checked to be UTF-8.
    #[inline]
    fn plain_string_bytes(&mut self) -> Option<&'a [u8]> {
        self.token(b'"')?;
        let start = self.at;
        let mut at = start;
        loop {
            match *self.text.get(at)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => at += 1,
            }
        }
        self.at = at + 1;
        Some(&self.text[start..at])
    }

    /// A string without escapes or control characters, after whitespace.
    fn plain_string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.plain_string_bytes()?).ok()
    }

    /// A metric key: a plain string, most often the entry before's, which is then recognised
    /// by its bytes alone (a plain string holds no quote, so the same bytes and a closing
    /// quote are the same string).
    #[inline]
    fn key(&mut self) -> Option<&'a str> {
        self.whitespace();
        let last = self.last_key.as_bytes();
        if let Some(rest) = self.text.get(self.at..)
            && !last.is_empty()
            && rest.first() == Some(&b'"')
            && rest[1..].starts_with(last)
            && rest.get(1 + last.len()) == Some(&b'"')
        {
            self.at += last.len() + 2;
            return Some(self.last_key);
        }
        let bytes = self.plain_string_bytes()?;
        self.last_key = std::str::from_utf8(bytes).ok()?;
        Some(self.last_key)
    }

    /// A metric entry's member name and its colon: the field's bit, or `None` for a name this
    /// reader does not read (any other, or one written with an escape).
    #[inline]
    fn entry_field(&mut self) -> Option<u8> {
        self.token(b'"')?;
        let rest = self.text.get(self.at..)?;
        let (field, length) = match rest.first()? {
            b'k' if rest.starts_with(b"key\"") => (KEY, 4),
            b'v' if rest.starts_with(b"value\"") => (VALUE, 6),
            b't' if rest.starts_with(b"timestamp\"") => (TIMESTAMP, 10),
            b's' if rest.starts_with(b"step\"") => (STEP, 5),
            b'm' if rest.starts_with(b"model_id\"") => (MODEL_ID, 9),
            _ => return None,
        };
        self.at += length;
        self.token(b':')?;
        Some(field)
    }

    /// A member's name (its bytes, to compare with the names expected) and its colon.
    #[inline]
    fn name_bytes(&mut self) -> Option<&'a [u8]> {
        let name = self.plain_string_bytes()?;
        self.token(b':')?;
        Some(name)
    }

    /// A JSON number, after whitespace.
    fn number(&mut self) -> Option<Number<'a>> {
        self.whitespace();
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        // The digits are summed wrapping; the sum is kept only if it did not wrap (at most
        // `EXACT_DIGITS_MAX` significant digits).
        let mut sum = 0u64;
        // The integer part: one 0, or digits not starting with 0.
        let whole = match self.peek()? {
            b'0' => {
                self.at += 1;
                &self.text[self.at - 1..self.at]
            }
            b'1'..=b'9' => self.digits(&mut sum),
            _ => return None,
        };
        let mut fraction: &[u8] = &[];
        if self.peek() == Some(b'.') {
            self.at += 1;
            fraction = self.digits(&mut sum);
            if fraction.is_empty() {
                return None;
            }
        }
        let mut integer = fraction.is_empty();
        let mut written = Some(0i32);
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            written = self.exponent()?;
            integer = false;
        }
        let significant = if whole == b"0" {
            let zeros = fraction.iter().take_while(|&&digit| digit == b'0').count();
            fraction.len() - zeros
        } else {
            whole.len() + fraction.len()
        };
        let digits = (significant <= EXACT_DIGITS_MAX as usize).then_some(sum);
        let fraction_digits = i32::try_from(fraction.len()).ok();
        Some(Number {
            text: &self.text[start..self.at],
            negative,
            digits,
            exponent: written
                .zip(fraction_digits)
                .map(|(written, fraction)| written - fraction),
            integer,
        })
    }

    /// Decimal digits (perhaps none), each added to `sum` (×10 + digit, wrapping), eight at a
    /// time while eight come.
    #[inline]
    fn digits(&mut self, sum: &mut u64) -> &'a [u8] {
        let start = self.at;
        let mut at = start;
        let mut total = *sum;
        while let Some(eight) = self.text.get(at..at + 8).and_then(eight_digits) {
            total = total.wrapping_mul(100_000_000).wrapping_add(eight);
            at += 8;
        }
        while let Some(&byte) = self.text.get(at) {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            total = total.wrapping_mul(10).wrapping_add(u64::from(digit));
            at += 1;
        }
        *sum = total;
        self.at = at;
        &self.text[start..at]
    }

    /// An exponent after its `e`: `[+-]? [0-9]+`, its value if under 10,000 (beyond, the
    /// fast paths do not apply and std reads the text).
    fn exponent(&mut self) -> Option<Option<i32>> {
        let negative = match self.peek()? {
            b'-' => true,
            b'+' => false,
            _ => {
                return self.exponent_digits(false);
            }
        };
        self.at += 1;
        self.exponent_digits(negative)
    }

    fn exponent_digits(&mut self, negative: bool) -> Option<Option<i32>> {
        let mut sum = 0u64;
        let digits = self.digits(&mut sum);
        if digits.is_empty() {
            return None;
        }
        let value = (digits.len() <= 4)
            .then(|| i32::try_from(sum).ok())
            .flatten();
        Some(value.map(|value| if negative { -value } else { value }))
    }

    /// A double as `wire::double_value` reads it: a number, or a string it accepts.
    fn double(&mut self) -> Option<f64> {
        self.whitespace();
        if self.peek()? == b'"' {
            return double_from_str(self.plain_string()?);
        }
        self.number()?.double()
    }

    /// An int64 as `wire::int_value` reads it: an integer in range, or a string it accepts;
    /// a float with no fraction is left to it.
    fn int(&mut self) -> Option<i64> {
        self.whitespace();
        if self.peek()? == b'"' {
            return int_from_str(self.plain_string()?);
        }
        self.number()?.int()
    }

    /// `model_id`'s value when it names no model: null or an empty string.
    fn no_model_id(&mut self) -> Option<()> {
        self.whitespace();
        if self.text[self.at..].starts_with(b"null") {
            self.at += 4;
            return Some(());
        }
        self.plain_string()?.is_empty().then_some(())
    }

    /// One `metrics[]` entry that names no logged model.
    fn entry(&mut self) -> Option<MetricPoint<'a>> {
        self.token(b'{')?;
        let mut point = MetricPoint {
            key: "",
            value: 0.0,
            step: 0,
            timestamp_ms: 0,
        };
        let mut seen = 0u8;
        loop {
            let field = self.entry_field()?;
            match field {
                KEY => point.key = self.key()?,
                VALUE => point.value = self.double()?,
                TIMESTAMP => point.timestamp_ms = self.int()?,
                STEP => point.step = self.int()?,
                _ => self.no_model_id()?,
            }
            if seen & field != 0 {
                return None;
            }
            seen |= field;
            if !self.more(b'}')? {
                break;
            }
        }
        let complete = seen & (KEY | VALUE | TIMESTAMP) == KEY | VALUE | TIMESTAMP;
        (complete && !point.key.is_empty() && point.timestamp_ms >= 0).then_some(point)
    }

    /// `metrics`' array. More entries than a batch may hold are refused, so the general
    /// reader answers with MLflow's message.
    fn metrics(&mut self) -> Option<Vec<MetricPoint<'a>>> {
        self.token(b'[')?;
        let mut points = Vec::with_capacity(validation::BATCH_METRICS_MAX);
        self.whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(points);
        }
        loop {
            if points.len() == validation::BATCH_METRICS_MAX {
                return None;
            }
            points.push(self.entry()?);
            if !self.more(b']')? {
                return Some(points);
            }
        }
    }

    /// A field other than `metrics`, read by serde_json as the general reader reads it.
    fn other_field(&mut self) -> Option<Value> {
        self.whitespace();
        let rest = &self.text[self.at..];
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        let value = values.next()?.ok()?;
        self.at += values.byte_offset();
        (depth(&value) <= FIELD_DEPTH_MAX).then_some(value)
    }

    /// The body's object.
    fn body(&mut self) -> Option<BatchBody<'a>> {
        self.token(b'{')?;
        let mut fields = Map::new();
        let mut metrics = None;
        self.whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
        } else {
            loop {
                let name = std::str::from_utf8(self.name_bytes()?).ok()?;
                if name == "metrics" {
                    if metrics.replace(self.metrics()?).is_some() {
                        return None;
                    }
                } else {
                    let value = self.other_field()?;
                    if fields.insert(name.to_owned(), value).is_some() {
                        return None;
                    }
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        Some(BatchBody {
            fields: Fields::from_map(fields),
            points: metrics.unwrap_or_default(),
        })
    }
}

/// The value of eight ASCII decimal digits, or `None` if any of them is not one: all eight
/// converted at once in a `u64` (the digit pairs, then quads, then the whole, each a multiply
/// and a shift; the method of simdjson's `parse_eight_digits_unrolled`).
#[inline]
fn eight_digits(bytes: &[u8]) -> Option<u64> {
    const LOW: u64 = 0x0000_00ff_0000_00ff;
    // Pairs 0 and 2 times 10^6 and 10^2, pairs 1 and 3 times 10^4 and 1, summed in the high
    // half.
    const FIRST: u64 = 100 + (1_000_000 << 32);
    const SECOND: u64 = 1 + (10_000 << 32);
    let chunk = u64::from_le_bytes(bytes.try_into().ok()?);
    let values = chunk.wrapping_sub(0x3030_3030_3030_3030);
    // A byte below '0' borrows into its top bit in `values`; one above '9' carries into it
    // in `chunk + 0x46`.
    if (chunk.wrapping_add(0x4646_4646_4646_4646) | values) & 0x8080_8080_8080_8080 != 0 {
        return None;
    }
    // Each byte's digit times ten plus the next byte's: pairs in alternate bytes.
    let pairs = values.wrapping_mul(10).wrapping_add(values >> 8);
    let first = (pairs & LOW).wrapping_mul(FIRST);
    let second = ((pairs >> 16) & LOW).wrapping_mul(SECOND);
    Some(first.wrapping_add(second) >> 32)
}

/// Levels of arrays and objects in `value` (0 for a scalar).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::TestRng;

    fn scanned(text: &str) -> Option<(Option<f64>, Option<i64>)> {
        let mut scanner = Scanner {
            text: text.as_bytes(),
            at: 0,
            last_key: "",
        };
        let number = scanner.number()?;
        (scanner.at == text.len()).then(|| (number.double(), number.int()))
    }

    #[test]
    fn eight_digits_read_as_a_number_or_not_at_all() {
        assert_eq!(eight_digits(b"12345678"), Some(12_345_678));
        assert_eq!(eight_digits(b"00000000"), Some(0));
        assert_eq!(eight_digits(b"99999999"), Some(99_999_999));
        assert_eq!(eight_digits(b"00000001"), Some(1));
        for bad in [
            b"1234567.",
            b"/2345678",
            b"1234567:",
            b"1234 678",
            b"e2345678",
        ] {
            assert_eq!(eight_digits(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(eight_digits(b"1234567"), None);
        let mut rng = TestRng::from_env("eight_digits_read_as_a_number_or_not_at_all");
        for _ in 0..100_000 {
            let bytes: Vec<u8> = (0..8).map(|_| rng.below(256) as u8).collect();
            let expected = std::str::from_utf8(&bytes)
                .ok()
                .filter(|text| text.bytes().all(|byte| byte.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok());
            assert_eq!(eight_digits(&bytes), expected, "{bytes:?}");
            let digits: Vec<u8> = (0..8).map(|_| b'0' + rng.below(10) as u8).collect();
            let expected = std::str::from_utf8(&digits)
                .ok()
                .and_then(|t| t.parse().ok());
            assert_eq!(eight_digits(&digits), expected, "{digits:?}");
        }
    }

    /// What the general reader makes of `text` (parsed by serde_json): a double, and an int64
    /// if it reads one.
    fn general_reads(text: &str) -> Option<(f64, Option<i64>)> {
        let value: Value = serde_json::from_str(text).ok()?;
        let double = super::super::wire::double_value("value", &value).ok()?;
        Some((double, super::super::wire::int_value("step", &value).ok()))
    }

    /// Every number text this reader takes, the general reader reads to the same double, bit
    /// for bit, and to the same integer where this reader reads one; and every JSON number
    /// serde_json reads, this reader reads.
    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        let mut rng = TestRng::from_env("numbers_read_as_serde_json_reads_them");
        for case in 0..200_000 {
            // At least `least` digits, and up to `more` more.
            let digits = |rng: &mut TestRng, least: u64, more: u64| -> String {
                (0..least + rng.below(more + 1))
                    .map(|_| char::from(b'0' + rng.below(10) as u8))
                    .collect()
            };
            let sign = ["", "-"][rng.below(2) as usize];
            let whole = match rng.below(4) {
                0 => "0".to_string(),
                _ => format!("{}{}", 1 + rng.below(9), digits(&mut rng, 0, 21)),
            };
            let fraction = match rng.below(3) {
                0 => String::new(),
                _ => format!(".{}", digits(&mut rng, 1, 23)),
            };
            let exponent = match rng.below(3) {
                0 => format!("e{}", rng.below(700) as i64 - 350),
                1 => format!("E+{}", rng.below(30)),
                _ => String::new(),
            };
            let text = match rng.below(5) {
                0 => format!("{}", f64::from_bits(rng.below(u64::MAX))),
                _ => format!("{sign}{whole}{fraction}{exponent}"),
            };
            let ours = scanned(&text);
            let theirs = general_reads(&text);
            match (ours, theirs) {
                (Some((Some(double), int)), Some((expected, expected_int))) => {
                    assert_eq!(double.to_bits(), expected.to_bits(), "case {case}: {text}");
                    if let Some(int) = int {
                        assert_eq!(Some(int), expected_int, "case {case}: {text}");
                    }
                }
                // Out of range: serde_json refuses it, and so does this reader.
                (Some((None, None)), None) => {}
                // Not JSON (`NaN`, `inf` from the formatting above).
                (None, None) => {}
                other => panic!("case {case}: {text}: {other:?}"),
            }
        }
    }
}
