//! Tables for people and for tools: one `Table` renders as aligned text, CSV or JSON.
//!
//! Invariant: every cell is a JSON value, so `--format json` keeps numbers as numbers (and
//! NaN/±inf as the strings "NaN"/"Infinity"/"-Infinity", which JSON cannot hold otherwise),
//! while the text and CSV forms print the same cells with `Display`.
//! - The text table shows control characters (an ANSI escape, NUL, a newline) escaped, as
//!   `\u{1b}`, `\0`, `\n`: a run name cannot drive the terminal or break the table's lines.
//!   CSV and JSON carry them unchanged (JSON escapes them itself).

use std::io::{self, Write};

use comfy_table::{ContentLineStyle, LineStyle, TableStyle};
use serde_json::Value;

/// The text table's frame: a rule of `-` under the header, spaces between columns, no borders.
const TEXT_STYLE: TableStyle = TableStyle::new()
    .header_lines(ContentLineStyle::none().junction(' '))
    .header_separator(LineStyle::none().fill('-').junction(' '))
    .content_lines(ContentLineStyle::none().junction(' '));

/// Output format of the inspection commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON array of objects.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// Rows of named columns.
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(headers: impl IntoIterator<Item = impl Into<String>>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Value>) {
        self.rows.push(row);
    }

    pub fn write(&self, out: &mut dyn Write, format: Format) -> io::Result<()> {
        match format {
            Format::Table => self.write_text(out),
            Format::Csv => self.write_csv(out),
            Format::Json => self.write_json(out),
        }
    }

    /// Aligned columns (comfy-table): a header, a rule of `-` under it, no borders, two spaces
    /// between columns, and numeric columns right-aligned.
    fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut table = comfy_table::Table::new();
        table.load_style(TEXT_STYLE);
        table.set_header(self.headers.iter().cloned().map(printable));
        for row in &self.rows {
            table.add_row(row.iter().map(|cell| printable(short_text(cell))));
        }
        let last = self.headers.len().saturating_sub(1);
        for (index, column) in table.column_iter_mut().enumerate() {
            // One space of padding and the junction's space make the gap between columns.
            column.set_padding((0, u16::from(index < last)));
            if self.is_numeric(index) {
                column.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
        for line in table.lines() {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    /// Whether every value of `column` is a number (there is at least one row).
    fn is_numeric(&self, column: usize) -> bool {
        !self.rows.is_empty()
            && self
                .rows
                .iter()
                .all(|row| row.get(column).is_some_and(is_number))
    }

    /// RFC 4180 CSV (the `csv` crate), with `\n` line ends.
    fn write_csv(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(&self.headers).map_err(csv_error)?;
        for row in &self.rows {
            writer
                .write_record(row.iter().map(text))
                .map_err(csv_error)?;
        }
        writer.flush()
    }

    fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        let objects: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                Value::Object(
                    self.headers
                        .iter()
                        .cloned()
                        .zip(row.iter().cloned())
                        .collect(),
                )
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &Value::Array(objects)).map_err(io::Error::from)?;
        writeln!(out)
    }
}

/// `text` with each control character escaped as Rust escapes it in a string literal.
fn printable(text: String) -> String {
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn is_number(value: &Value) -> bool {
    match value {
        Value::Number(_) => true,
        Value::String(s) => matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity"),
        _ => false,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A cell for people: floats to 6 significant digits (JSON and CSV keep every digit).
fn short_text(value: &Value) -> String {
    match value.as_f64() {
        Some(x) if value.is_f64() => significant(x, 6),
        _ => text(value),
    }
}

/// `x` to `digits` significant digits, without trailing zeros; scientific when very large or
/// very small.
pub fn significant(x: f64, digits: usize) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-4..15).contains(&magnitude) {
        return format!("{:.*e}", digits.saturating_sub(1), x);
    }
    let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
    let fixed = format!("{x:.decimals$}");
    if fixed.contains('.') {
        fixed
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        fixed
    }
}

/// A CSV writer's error as the I/O error it is (a record never fails to encode).
fn csv_error(error: csv::Error) -> io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => error,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// A float as a cell: a JSON number, or the string MLflow and the ingest format use for the
/// values JSON has no number for.
pub fn float(value: f64) -> Value {
    if value.is_nan() {
        Value::from("NaN")
    } else if value == f64::INFINITY {
        Value::from("Infinity")
    } else if value == f64::NEG_INFINITY {
        Value::from("-Infinity")
    } else {
        Value::from(value)
    }
}

/// An optional float; missing is null.
pub fn float_or_null(value: Option<f64>) -> Value {
    value.map_or(Value::Null, float)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), as the engine stamps times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A time in ms since the Unix epoch, as `YYYY-MM-DD HH:MM:SS` UTC for the text table, and as
/// the number itself for tools.
pub fn time(ms: i64, format: Format) -> Value {
    match format {
        Format::Table => Value::from(utc(ms)),
        Format::Json | Format::Csv => Value::from(ms),
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for `ms` since the Unix epoch: RFC 3339 with a space for the
/// `T` and whole seconds. A time outside the calendar chrono knows (some ±262,000 years) is
/// shown as the number of ms.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |time| time.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(-1_000), "1969-12-31 23:59:59");
        assert_eq!(utc(-1), "1969-12-31 23:59:59");
        assert_eq!(utc(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn floats_are_shortened_for_people_only() {
        assert_eq!(significant(0.748570084571838, 6), "0.74857");
        assert_eq!(significant(1234.5678, 6), "1234.57");
        assert_eq!(significant(1e-7, 6), "1.00000e-7");
        assert_eq!(significant(3.0, 6), "3");
        assert_eq!(significant(-0.5, 6), "-0.5");
        let mut table = Table::new(["x"]);
        table.push(vec![float(0.748570084571838)]);
        let mut out = Vec::new();
        table.write(&mut out, Format::Table).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("0.74857\n"));
        let mut out = Vec::new();
        table.write(&mut out, Format::Csv).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("0.748570084571838")
        );
    }

    #[test]
    fn the_text_table_escapes_control_characters() {
        let mut table = Table::new(["name"]);
        table.push(vec![Value::from("\u{1b}[31mred\u{0}\nx")]);
        let mut out = Vec::new();
        table.write(&mut out, Format::Table).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\\u{1b}[31mred\\0\\nx\n"), "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\0'), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn the_text_table_aligns_columns_under_a_rule() {
        let render = |table: &Table| {
            let mut out = Vec::new();
            table.write(&mut out, Format::Table).unwrap();
            String::from_utf8(out).unwrap()
        };
        let mut table = Table::new(["name", "n"]);
        assert_eq!(render(&table), "name  n\n----- -\n");
        table.push(vec![Value::from("a"), Value::from(10)]);
        table.push(vec![Value::from("bcdefg"), Value::from(7)]);
        assert_eq!(
            render(&table),
            "name     n\n------- --\na       10\nbcdefg   7\n"
        );
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut table = Table::new(["a", "b"]);
        table.push(vec![Value::from("x,y"), Value::from("say \"hi\"")]);
        table.push(vec![float(f64::NAN), Value::from(2)]);
        let mut out = Vec::new();
        table.write(&mut out, Format::Csv).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,b\n\"x,y\",\"say \"\"hi\"\"\"\nNaN,2\n"
        );
    }

    #[test]
    fn json_keeps_numbers_and_names_columns() {
        let mut table = Table::new(["run", "value"]);
        table.push(vec![Value::from("r1"), float(0.5)]);
        let mut out = Vec::new();
        table.write(&mut out, Format::Json).unwrap();
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, serde_json::json!([{"run": "r1", "value": 0.5}]));
    }
}
