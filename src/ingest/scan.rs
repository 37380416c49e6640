//! A fast path for the common ingest line: one flat JSON object whose values are plain strings
//! and numbers, scanned in place into the same [`Raw`] serde_json would build.
//!
//! serde_json spends most of ingest's parse time matching field names and checking strings
//! through generic machinery; this scanner does the same work for the one shape that matters
//! for speed.
//!
//! Invariant: [`scan`] returns `Some` only when serde_json would deserialize the same bytes
//! into an equal [`Raw`]. A `value` that is a number is kept as its text in both. Anything it
//! is not sure of (an escape, `null`, a nested value, a duplicate or unknown field, a step or
//! timestamp serde_json would read differently, any error) gives `None`, and the caller asks serde_json, whose error messages are the ones
//! users see. The `ingest_line` fuzz target compares the two on arbitrary input.

use std::borrow::Cow;

use super::{Raw, Scalar};

/// The fields the scanner fills; `params` and `tags` (objects) always go to serde_json.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    Kind,
    Experiment,
    Run,
    RunId,
    Key,
    Value,
    Step,
    Timestamp,
    Status,
    Parent,
}

impl Field {
    fn from_name(name: &[u8]) -> Option<Field> {
        Some(match name {
            b"type" => Field::Kind,
            b"experiment" => Field::Experiment,
            b"run" => Field::Run,
            b"run_id" => Field::RunId,
            b"key" => Field::Key,
            b"value" => Field::Value,
            b"step" => Field::Step,
            b"timestamp" => Field::Timestamp,
            b"status" => Field::Status,
            b"parent" => Field::Parent,
            _ => return None,
        })
    }
}

/// A scalar as written.
enum Token<'a> {
    Text(&'a str),
    /// A number in JSON's grammar; `integer` when it has neither fraction nor exponent.
    Number {
        text: &'a str,
        integer: bool,
    },
}

/// `line` as serde_json would read it into [`Raw`], or `None` to let serde_json decide.
pub(crate) fn scan(line: &[u8]) -> Option<Raw<'_>> {
    let mut cursor = Cursor { bytes: line, at: 0 };
    let mut raw = Raw::default();
    let mut kind = false;
    let mut seen = [false; 10];
    cursor.skip_space();
    cursor.expect(b'{')?;
    cursor.skip_space();
    if cursor.peek()? == b'}' {
        // `{}` lacks "type": serde_json says so.
        return None;
    }
    loop {
        cursor.skip_space();
        let name = cursor.string()?;
        let field = Field::from_name(name.as_bytes())?;
        let seen = &mut seen[field as usize];
        if std::mem::replace(seen, true) {
            return None;
        }
        cursor.skip_space();
        cursor.expect(b':')?;
        cursor.skip_space();
        let token = cursor.token()?;
        match (field, token) {
            (Field::Kind, Token::Text(text)) => {
                raw.kind = Cow::Borrowed(text);
                kind = true;
            }
            (Field::Experiment, Token::Text(text)) => raw.experiment = Some(Cow::Borrowed(text)),
            (Field::Run, Token::Text(text)) => raw.run = Some(Cow::Borrowed(text)),
            (Field::RunId, Token::Text(text)) => raw.run_id = Some(Cow::Borrowed(text)),
            (Field::Key, Token::Text(text)) => raw.key = Some(Cow::Borrowed(text)),
            (Field::Status, Token::Text(text)) => raw.status = Some(Cow::Borrowed(text)),
            (Field::Parent, Token::Text(text)) => raw.parent = Some(Cow::Borrowed(text)),
            (Field::Value, Token::Text(text)) => {
                raw.value = Some(Scalar::Text(Cow::Borrowed(text)))
            }
            (Field::Value, Token::Number { text, .. }) => {
                raw.value = Some(Scalar::Number(text));
            }
            (
                Field::Step,
                Token::Number {
                    text,
                    integer: true,
                },
            ) => raw.step = Some(integer(text)?),
            (
                Field::Timestamp,
                Token::Number {
                    text,
                    integer: true,
                },
            ) => {
                raw.timestamp = Some(integer(text)?);
            }
            // A type serde_json would refuse: let it say so.
            _ => return None,
        }
        cursor.skip_space();
        match cursor.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    cursor.skip_space();
    (kind && cursor.at == line.len()).then_some(raw)
}

/// An integer field (step, timestamp). serde_json reads `-0` as a float (refused here) and
/// integers beyond 18 digits by other rules; those go to it.
fn integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.len() > 18 || text == "-0" {
        return None;
    }
    text.parse().ok()
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters (serde_json refuses the latter).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let rest = self.bytes.get(start..)?;
        let length = rest
            .iter()
            .position(|b| *b == b'"' || *b == b'\\' || *b < 0x20)?;
        if rest[length] != b'"' {
            return None;
        }
        self.at = start + length + 1;
        std::str::from_utf8(&rest[..length]).ok()
    }

    /// A string, or a number in JSON's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn token(&mut self) -> Option<Token<'a>> {
        if self.peek()? == b'"' {
            return self.string().map(Token::Text);
        }
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digit()?;
            self.digits();
            integer = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digit()?;
            self.digits();
            integer = false;
        }
        // The grammar is ASCII, so this is the token's text.
        let text = std::str::from_utf8(self.bytes.get(start..self.at)?).ok()?;
        Some(Token::Number { text, integer })
    }

    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_line, parse_line_reference};

    /// Lines the scanner takes, and lines it must hand to serde_json; either way the result
    /// must be serde_json's.
    #[test]
    fn the_scanner_agrees_with_serde_json() {
        let taken: &[&str] = &[
            r#"{"type":"metric","experiment":"mnist","run":"r1","key":"loss","value":0.25,"step":3,"timestamp":1700000000000}"#,
            r#" { "type" : "metric" , "run" : "r1" , "key" : "loss" , "value" : -1.5e-3 } "#,
            r#"{"type":"metric","run":"r1","key":"loss","value":"NaN"}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":-0}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":-0.0}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":0.1000000000000000055511151231257827}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":123456789012345678,"step":-5}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":12345678901234567890123}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":1e400}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":1e-400}"#,
            r#"{"type":"param","run":"r1","key":"seed","value":17661420568835545977}"#,
            r#"{"type":"param","run":"r1","key":"lr","value":1.50e-3}"#,
            r#"{"type":"status","run":"r1","status":"FINISHED"}"#,
            r#"{"type":"status","run":"r1","status":"DONE"}"#,
        ];
        let handed_over: &[&str] = &[
            r#"{"type":"metric","run":"r1","key":"loss","value":1,"step":-0}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":1,"step":1.0}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":1,"step":9223372036854775808}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":1,"step":null}"#,
            r#"{"type":"metric","run":"r1","key":"lo\"ss","value":1}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":1,"key":"acc"}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":01}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":1.}"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":1} x"#,
            r#"{"type":"metric","run":"r1","key":"loss","value":1,}"#,
            r#"{"type":"metric","run":"r1","stpe":1}"#,
            r#"{"type":"run","run":"r1","params":{"lr":0.1}}"#,
            r#"{"type":"run","run":"r1","params":{"seed":17661420568835545977,"lr":1.0}}"#,
            r#"{"type":"run","run":"r1","params":{"lr":0.1,"lr":0.2}}"#,
            r#"{"type":"run","run":"r1","tags":{"a":"x","a":"x"}}"#,
            r#"{"type":"run","run":"r1","params":{"lr":null}}"#,
            "{\"type\":\"run\",\"run\":\"r1\",\"tags\":{\"a\":\"x\\ty\"}}",
            "{\"type\":\"tag\",\"run\":\"r1\",\"key\":\"k\",\"value\":\"a\tb\"}",
            "{}",
            "[]",
            "{\"type\":\"metric\"",
        ];
        for line in taken.iter().chain(handed_over) {
            let fast = format!("{:?}", parse_line(line.as_bytes(), 7));
            let reference = format!("{:?}", parse_line_reference(line.as_bytes(), 7));
            assert_eq!(fast, reference, "line {line}");
        }
        // The fast path is taken where it should be, or the comparison above proves little.
        for line in taken {
            assert!(super::scan(line.as_bytes()).is_some(), "line {line}");
        }
        for line in handed_over {
            assert!(super::scan(line.as_bytes()).is_none(), "line {line}");
        }
    }

    /// A number's text reaches a param as written on both paths; a key given twice inside
    /// `params` or `tags` is refused.
    #[test]
    fn number_text_is_kept_and_duplicate_keys_are_refused() {
        use super::super::Line;
        let value_of = |line: &str| match parse_line(line.as_bytes(), 7) {
            Ok(Some(Line::Param { value, .. })) => value,
            other => panic!("{line}: {other:?}"),
        };
        let seed = r#"{"type":"param","run":"r","key":"seed","value":17661420568835545977}"#;
        assert_eq!(value_of(seed), "17661420568835545977");
        let spaced = r#"{"type":"param","run":"r","key":"lr","value": 1.50e-3 ,"step":null}"#;
        assert_eq!(value_of(spaced), "1.50e-3");
        let run = r#"{"type":"run","run":"r","params":{"seed":17661420568835545977,"lr":-0.0}}"#;
        match parse_line(run.as_bytes(), 7) {
            Ok(Some(Line::Run { params, .. })) => assert_eq!(
                params,
                [
                    ("seed".to_string(), "17661420568835545977".to_string()),
                    ("lr".to_string(), "-0.0".to_string())
                ]
            ),
            other => panic!("{other:?}"),
        }
        for line in [
            r#"{"type":"run","run":"r","params":{"a":1,"a":1}}"#,
            r#"{"type":"run","run":"r","tags":{"a":"x","a":"y"}}"#,
        ] {
            let error = parse_line(line.as_bytes(), 7).unwrap_err();
            assert!(error.contains("\"a\" twice"), "{error}");
        }
        let broken = r#"{"type":"metric","run":"r","key":"k","value":}"#;
        let error = parse_line(broken.as_bytes(), 7).unwrap_err();
        assert_eq!(error, "expected value at column 46");
    }
}
