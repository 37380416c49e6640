//! Reading MLflow's request messages: the JSON body, or for a `GET` with a query string the
//! query parameters (as MLflow's server reads them), into typed fields with MLflow's checks and
//! error messages.
//!
//! Invariants: every accessor either returns a value of the proto field's type or an
//! `INVALID_PARAMETER_VALUE` naming the field; nothing here panics on any input. int64 fields
//! accept JSON numbers and decimal strings (proto JSON allows both); double fields accept
//! numbers and the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.

use serde_json::{Map, Value};

use super::{Method, MlflowError, Request};

/// The fields of one request message.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    map: Map<String, Value>,
}

/// MLflow's suffix on schema errors.
const SEE_DOCS: &str = " See the API docs for more information about request parameters.";

/// `Missing value for required parameter 'x'.`, MLflow's words.
pub(crate) fn missing(name: &str) -> MlflowError {
    MlflowError::invalid(format!(
        "Missing value for required parameter '{name}'.{SEE_DOCS}"
    ))
}

/// `Invalid value ... for parameter 'x' supplied`, with the JSON type of the value.
pub(crate) fn wrong_type(name: &str, value: &Value) -> MlflowError {
    MlflowError::invalid(format!(
        "Invalid value {value} for parameter '{name}' supplied. Hint: Value was of type '{}'.{SEE_DOCS}",
        python_type(value)
    ))
}

/// The name Python gives the type of a parsed JSON value, as MLflow's messages show it.
fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

impl Fields {
    /// The fields of `request`: its query parameters for a `GET` with a query string (fields
    /// named in `repeated` collect every occurrence into a list), else its JSON body (an empty
    /// body is an empty message).
    pub(crate) fn of(request: &Request<'_>, repeated: &[&str]) -> Result<Fields, MlflowError> {
        if request.method == Method::Get && !request.query.is_empty() {
            return Ok(Fields::from_query(request.query, repeated));
        }
        Fields::from_body(request.body)
    }

    /// The fields of a message already read into `map`.
    pub(crate) fn from_map(map: Map<String, Value>) -> Fields {
        Fields { map }
    }

    /// Parses a JSON body that must be an object.
    pub(crate) fn from_body(body: &[u8]) -> Result<Fields, MlflowError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::default());
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            MlflowError::new(
                super::ErrorCode::MalformedRequest,
                format!("Malformed JSON request body: {e}"),
            )
        })?;
        // Older clients send the message JSON-encoded a second time, as a string.
        let value = match value {
            Value::String(inner) => serde_json::from_str(&inner).map_err(|e| {
                MlflowError::new(
                    super::ErrorCode::MalformedRequest,
                    format!("Malformed JSON request body: {e}"),
                )
            })?,
            other => other,
        };
        match value {
            Value::Object(map) => Ok(Fields { map }),
            Value::Null => Ok(Fields::default()),
            other => Err(MlflowError::new(
                super::ErrorCode::MalformedRequest,
                format!(
                    "Malformed JSON request body: expected an object, got a {}",
                    python_type(&other)
                ),
            )),
        }
    }

    fn from_query(query: &str, repeated: &[&str]) -> Fields {
        let mut map = Map::new();
        for (name, value) in query_pairs(query) {
            if repeated.contains(&name.as_str()) {
                let list = map.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = list {
                    items.push(Value::String(value));
                }
            } else {
                // The first occurrence wins, as Flask's `args.get` does.
                map.entry(name).or_insert(Value::String(value));
            }
        }
        Fields { map }
    }

    /// Every field but `name`, in name order.
    #[cfg(test)]
    pub(crate) fn map_without(&self, name: &str) -> Vec<(String, Value)> {
        let others = self.map.iter().filter(|(field, _)| *field != name);
        others
            .map(|(field, value)| (field.clone(), value.clone()))
            .collect()
    }

    /// The raw value of `name`, if present and not null.
    pub(crate) fn raw(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// An optional string field.
    pub(crate) fn string(&self, name: &str) -> Result<Option<&str>, MlflowError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(name, other)),
        }
    }

    /// A required, non-empty string field.
    pub(crate) fn required_string(&self, name: &str) -> Result<&str, MlflowError> {
        match self.string(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(missing(name)),
        }
    }

    /// `run_id`, or its deprecated alias `run_uuid`, required.
    pub(crate) fn run_id(&self) -> Result<&str, MlflowError> {
        match self.string("run_id")? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => match self.string("run_uuid")? {
                Some(s) if !s.is_empty() => Ok(s),
                _ => Err(missing("run_id")),
            },
        }
    }

    /// An optional int64 field.
    pub(crate) fn int(&self, name: &str) -> Result<Option<i64>, MlflowError> {
        self.raw(name).map(|v| int_value(name, v)).transpose()
    }

    /// An optional double field.
    pub(crate) fn double(&self, name: &str) -> Result<Option<f64>, MlflowError> {
        self.raw(name).map(|v| double_value(name, v)).transpose()
    }

    /// An optional list field (absent: empty).
    pub(crate) fn list(&self, name: &str) -> Result<&[Value], MlflowError> {
        match self.raw(name) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(wrong_type(name, other)),
        }
    }

    /// An optional list of strings.
    pub(crate) fn strings(&self, name: &str) -> Result<Vec<&str>, MlflowError> {
        let items = match self.raw(name) {
            // A single query parameter of a repeated field, or a client sending a bare string.
            Some(Value::String(s)) => return Ok(vec![s.as_str()]),
            _ => self.list(name)?,
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(wrong_type(name, self.raw(name).unwrap_or(&Value::Null))),
            })
            .collect()
    }
}

/// An int64 from a JSON number or a decimal string.
pub(crate) fn int_value(name: &str, value: &Value) -> Result<i64, MlflowError> {
    let parsed = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => int_from_str(s),
        _ => None,
    };
    parsed.ok_or_else(|| wrong_type(name, value))
}

/// An int64 sent as a string (proto JSON's form): decimal, surrounding whitespace ignored.
pub(crate) fn int_from_str(text: &str) -> Option<i64> {
    text.trim().parse::<i64>().ok()
}

/// A double from a JSON number, a numeric string, or proto JSON's `"NaN"`, `"Infinity"` and
/// `"-Infinity"`.
pub(crate) fn double_value(name: &str, value: &Value) -> Result<f64, MlflowError> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => double_from_str(s),
        _ => None,
    };
    parsed.ok_or_else(|| wrong_type(name, value))
}

/// A double sent as a string: proto JSON's `"NaN"`, `"Infinity"` and `"-Infinity"` (and
/// Python's spellings of them), or a decimal number, surrounding whitespace ignored.
pub(crate) fn double_from_str(text: &str) -> Option<f64> {
    match text {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.trim().parse::<f64>().ok(),
    }
}

/// The `name=value` pairs of a URL query string, percent-decoded (`+` is a space).
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(name), percent_decode(value))
        })
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as written, and invalid UTF-8 is
/// replaced, as form decoders do.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: &u8) -> Option<u8> {
    (*byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_and_collect_repeated_fields() {
        let fields = Fields::from_query(
            "run_ids=a&run_ids=b&metric_key=my%20loss&order_by=x+DESC&bad=%zz",
            &["run_ids"],
        );
        assert_eq!(fields.strings("run_ids").unwrap(), ["a", "b"]);
        assert_eq!(fields.string("metric_key").unwrap(), Some("my loss"));
        assert_eq!(fields.string("order_by").unwrap(), Some("x DESC"));
        assert_eq!(fields.string("bad").unwrap(), Some("%zz"));
    }

    #[test]
    fn int_and_double_fields_take_proto_json_forms() {
        let fields = Fields::from_body(
            br#"{"a": 5, "b": "-7", "c": "NaN", "d": "-Infinity", "e": 1.5, "f": true}"#,
        )
        .unwrap();
        assert_eq!(fields.int("a").unwrap(), Some(5));
        assert_eq!(fields.int("b").unwrap(), Some(-7));
        assert!(fields.double("c").unwrap().unwrap().is_nan());
        assert_eq!(fields.double("d").unwrap(), Some(f64::NEG_INFINITY));
        assert!(fields.int("e").is_err());
        assert!(fields.double("f").is_err());
        assert!(fields.int("missing").unwrap().is_none());
    }
}
