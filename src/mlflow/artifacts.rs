//! MLflow's artifact routes, as `mlflow server --serve-artifacts` answers them over a local
//! destination: the mlflow-artifacts service (`PUT`, `GET` and `DELETE` of
//! `<experiment>/<run>/artifacts/<path>` and of a logged model's
//! `<experiment>/models/<model_id>/artifacts/<path>`, and listing with `?path=`) and the
//! tracking API's
//! `artifacts/list`, all over the store's artifact files (`Store::log_artifact_bytes` and
//! friends). Multipart uploads and presigned URLs answer 501 `NOT_IMPLEMENTED`, as MLflow's
//! local destination does, and the client falls back to a plain `PUT`.
//!
//! Invariants:
//! - A path with an encoded separator or NUL (`%2F`, `%5C`, `%00`) is refused before it is
//!   decoded, so one path segment can never turn into several; the decoded path is then
//!   checked whole by the library's artifact path rule (no `..`, `.`, empty or absolute
//!   segments, no backslash or control character). A refused path writes nothing and answers
//!   `INVALID_PARAMETER_VALUE`.
//! - Every answer about a run or logged model that does not exist, or an experiment that is not
//!   its own, is 404 `RESOURCE_DOES_NOT_EXIST`.

use std::io::Read;

use crate::tracking::validation;
use crate::{ArtifactEntry, ArtifactReader, ExperimentId, ModelId, RunId};

use super::{ErrorCode, JSON, Method, MlflowError, Reply, Request, Service};

/// The prefixes the mlflow-artifacts service is served under.
const PREFIXES: [&str; 2] = [
    "/api/2.0/mlflow-artifacts/",
    "/ajax-api/2.0/mlflow-artifacts/",
];

/// The folder every run's artifacts live in, in MLflow's artifact URIs.
const RUN_FOLDER: &str = "artifacts";

/// Whether `method` on `path` is a `PUT` of an artifact's content.
pub(crate) fn is_upload(method: Method, path: &str) -> bool {
    method == Method::Put
        && PREFIXES.iter().any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|route| route.starts_with("artifacts/"))
        })
}

/// Whether `method` on `path` is a `GET` of an artifact's content (or of a folder, which
/// answers an error): of the mlflow-artifacts service, or of the UI's logged-model files route.
pub(crate) fn is_download(method: Method, path: &str) -> bool {
    method == Method::Get
        && (PREFIXES.iter().any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|route| route.starts_with("artifacts/"))
        }) || super::model_artifacts::is_file_route(path))
}

/// Answers a request under `/api/2.0/mlflow-artifacts/` (or its `ajax-api` twin).
pub(crate) fn handle(service: &Service, request: Request<'_>) -> Reply {
    let Some(route) = PREFIXES
        .iter()
        .find_map(|prefix| request.path.strip_prefix(prefix))
    else {
        return MlflowError::endpoint_not_found(request.method, request.path).reply();
    };
    let answer = match (request.method, route) {
        (Method::Get, "artifacts") => list_service(service, request.query),
        (method, route) if route.starts_with("artifacts/") => {
            let raw = &route["artifacts/".len()..];
            match method {
                Method::Put => upload(service, raw, &mut { request.body }),
                Method::Get => download(service, raw),
                Method::Delete => delete(service, raw),
                _ => Err(MlflowError::endpoint_not_found(
                    request.method,
                    request.path,
                )),
            }
        }
        (Method::Post, route) if route.starts_with("mpu/") => Err(MlflowError::new(
            ErrorCode::NotImplemented,
            "Multipart upload is not supported for the current artifact repository",
        )),
        (Method::Get, route) if route.starts_with("presigned/") => Err(MlflowError::new(
            ErrorCode::NotImplemented,
            "Presigned URLs are not supported for the current artifact repository",
        )),
        _ => Err(MlflowError::endpoint_not_found(
            request.method,
            request.path,
        )),
    };
    answer.unwrap_or_else(|error| error.reply())
}

/// Answers `artifacts/list` of the tracking API: the direct children of `path` (default the
/// run's artifact folder), with paths relative to that folder.
pub(crate) fn list(service: &Service, request: Request<'_>) -> Reply {
    list_tracking(service, request.query).unwrap_or_else(|error| error.reply())
}

fn list_tracking(service: &Service, query: &str) -> Result<Reply, MlflowError> {
    let fields = query_fields(query)?;
    let find = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let Some(run_text) = find("run_id").or(find("run_uuid")) else {
        return Err(MlflowError::invalid(
            "Missing value for required parameter 'run_id'.",
        ));
    };
    let run = parse_run(run_text)?;
    let dir = find("path").unwrap_or("").trim_matches('/');
    let view = service.store().run(run)?;
    let entries = service.store().list_artifacts(run, dir)?;
    let files: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| file_info(entry, entry.path()))
        .collect();
    let mut body = serde_json::Map::new();
    body.insert(
        "root_uri".into(),
        format!(
            "mlflow-artifacts:/{}/{run}/{RUN_FOLDER}",
            view.info.experiment
        )
        .into(),
    );
    if !files.is_empty() {
        body.insert("files".into(), files.into());
    }
    Ok(json(&serde_json::Value::Object(body)))
}

/// The mlflow-artifacts listing: direct children of `?path=<experiment>/<run>/artifacts[/dir]`
/// by base name; a path that names no folder lists nothing (`{}`), as MLflow answers.
fn list_service(service: &Service, query: &str) -> Result<Reply, MlflowError> {
    let fields = query_fields(query)?;
    let raw = fields
        .iter()
        .find(|(key, _)| key == "path")
        .map_or("", |(_, value)| value.as_str());
    let path = raw.trim_matches('/');
    if path.is_empty() {
        return Ok(json(&serde_json::json!({})));
    }
    check_whole(path)?;
    let entries = match locate(service, path) {
        Ok(location) => location.list(service)?,
        // A run's own folder (`<experiment>/<run>`) holds only its artifact folder.
        Err(_) if path.split('/').count() == 2 => {
            let (experiment, run) = path.split_once('/').unwrap_or((path, ""));
            run_of(service, experiment, run)?;
            let folder = serde_json::json!({"path": RUN_FOLDER, "is_dir": true});
            return Ok(json(&serde_json::json!({ "files": [folder] })));
        }
        Err(_) => Vec::new(),
    };
    if entries.is_empty() {
        return Ok(json(&serde_json::json!({})));
    }
    let files: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            let name = entry.path().rsplit('/').next().unwrap_or(entry.path());
            file_info(entry, name)
        })
        .collect();
    Ok(json(&serde_json::json!({ "files": files })))
}

pub(crate) fn file_info(entry: &ArtifactEntry, path: &str) -> serde_json::Value {
    match entry {
        ArtifactEntry::File { size_bytes, .. } => {
            serde_json::json!({"path": path, "is_dir": false, "file_size": size_bytes})
        }
        ArtifactEntry::Dir { .. } => serde_json::json!({"path": path, "is_dir": true}),
    }
}

/// Answers a `PUT` of an artifact whose content `body` yields, read only once the path, its
/// run or model and its experiment are known to be good, so the engine reads nothing of a
/// refused upload.
pub(crate) fn upload_from(service: &Service, path: &str, body: &mut dyn Read) -> Reply {
    let Some(raw) = PREFIXES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .and_then(|route| route.strip_prefix("artifacts/"))
    else {
        return MlflowError::endpoint_not_found(Method::Put, path).reply();
    };
    upload(service, raw, body).unwrap_or_else(|error| error.reply())
}

fn upload(service: &Service, raw: &str, body: &mut dyn Read) -> Result<Reply, MlflowError> {
    let decoded = decode_path(raw)?;
    let location = locate(service, &decoded)?;
    match location.owner {
        Owner::Run(run) => service
            .store()
            .log_artifact_from(run, location.path, body)?,
        Owner::Model(model) => {
            service
                .store()
                .log_model_artifact_from(model, location.path, body)?
        }
    };
    Ok(json(&serde_json::json!({})))
}

fn download(service: &Service, raw: &str) -> Result<Reply, MlflowError> {
    let decoded = decode_path(raw)?;
    let location = locate(service, &decoded)?;
    let path = location.path;
    let read = match location.owner {
        Owner::Run(run) => service.store().read_artifact(run, path),
        Owner::Model(model) => service.store().read_model_artifact(model, path),
    };
    match read {
        Ok(bytes) => Ok(Reply {
            status: 200,
            content_type: content_type(path),
            body: bytes,
        }),
        Err(error) => Err(download_error(service, &location, &decoded, error)),
    }
}

/// An artifact download answered as a stream: what [`Service::download_artifact`] gives.
#[derive(Debug)]
pub enum Download {
    /// An answer with its whole body: an error, or anything but a file's content.
    Reply(Reply),
    /// A file's content, to be sent as `reader` yields it. The reader's last read fails unless
    /// the content is exactly what was recorded, so a transport that has already sent the
    /// status must then cut the answer off rather than end it.
    Stream {
        /// The answer's `Content-Type`.
        content_type: &'static str,
        /// The checked reader of the content; its `size_bytes` is the body's length.
        reader: ArtifactReader,
    },
}

/// Opens the artifact a `GET` on `path` (with its query after a `?`) names, for a transport
/// to stream.
pub(crate) fn download_from(service: &Service, path: &str) -> Download {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if super::model_artifacts::is_file_route(path) {
        return match super::model_artifacts::open_file(service, path, query) {
            Ok((content_type, reader)) => Download::Stream {
                content_type,
                reader,
            },
            Err(error) => Download::Reply(error.reply()),
        };
    }
    let Some(raw) = PREFIXES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .and_then(|route| route.strip_prefix("artifacts/"))
    else {
        return Download::Reply(MlflowError::endpoint_not_found(Method::Get, path).reply());
    };
    let opened = (|| {
        let decoded = decode_path(raw)?;
        let location = locate(service, &decoded)?;
        let opened = match location.owner {
            Owner::Run(run) => service.store().open_artifact(run, location.path),
            Owner::Model(model) => service.store().open_model_artifact(model, location.path),
        };
        opened
            .map(|reader| (content_type(location.path), reader))
            .map_err(|error| download_error(service, &location, &decoded, error))
    })();
    match opened {
        Ok((content_type, reader)) => Download::Stream {
            content_type,
            reader,
        },
        Err(error) => Download::Reply(error.reply()),
    }
}

/// What a download that failed answers: a path that names no file is 404 unless it is a
/// folder, which is 400 as in MLflow.
fn download_error(
    service: &Service,
    location: &Location<'_>,
    decoded: &str,
    error: crate::Error,
) -> MlflowError {
    match error {
        crate::Error::NotFound(_) => match location.list(service) {
            Ok(entries) if entries.is_empty() => no_such_artifact(decoded),
            Ok(_) => MlflowError::invalid(format!("'{decoded}' is a directory, not a file")),
            Err(error) => error,
        },
        other => other.into(),
    }
}

fn delete(service: &Service, raw: &str) -> Result<Reply, MlflowError> {
    let decoded = decode_path(raw)?;
    let location = locate(service, &decoded)?;
    let Owner::Run(run) = location.owner else {
        return Err(MlflowError::new(
            ErrorCode::NotImplemented,
            "runlog does not delete a logged model's artifact files (its artifacts are \
             write-once); delete the model instead",
        ));
    };
    match service.store().delete_artifacts(run, location.path) {
        Ok(_) => Ok(json(&serde_json::json!({}))),
        Err(crate::Error::NotFound(_)) => Err(no_such_artifact(&decoded)),
        Err(other) => Err(other.into()),
    }
}

/// Whose artifact folder a path is in.
#[derive(Clone, Copy)]
enum Owner {
    Run(RunId),
    Model(ModelId),
}

/// A run or logged model and a path inside its artifact folder.
struct Location<'a> {
    owner: Owner,
    path: &'a str,
}

impl Location<'_> {
    /// The direct children of the location's folder.
    fn list(&self, service: &Service) -> Result<Vec<ArtifactEntry>, MlflowError> {
        Ok(match self.owner {
            Owner::Run(run) => service.store().list_artifacts(run, self.path)?,
            Owner::Model(model) => service.store().list_model_artifacts(model, self.path)?,
        })
    }
}

/// The folder of logged models' artifact folders in an experiment, in MLflow's artifact URIs.
const MODELS_FOLDER: &str = "models";

/// Splits `<experiment>/<run>/artifacts[/<path>]` or
/// `<experiment>/models/<model_id>/artifacts[/<path>]`, checking the path whole first and that
/// the run or model exists in that experiment.
fn locate<'a>(service: &Service, decoded: &'a str) -> Result<Location<'a>, MlflowError> {
    check_whole(decoded)?;
    if let Some((experiment, rest)) = decoded.split_once('/')
        && let Some(rest) = rest
            .strip_prefix(MODELS_FOLDER)
            .and_then(|r| r.strip_prefix('/'))
    {
        let mut parts = rest.splitn(3, '/');
        let (Some(model), Some(RUN_FOLDER)) = (parts.next(), parts.next()) else {
            return Err(no_such_artifact(decoded));
        };
        let path = parts.next().unwrap_or("");
        let model = model_of(service, experiment, model)?;
        return Ok(Location {
            owner: Owner::Model(model),
            path,
        });
    }
    let mut parts = decoded.splitn(4, '/');
    let (Some(experiment), Some(run), Some(RUN_FOLDER)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(no_such_artifact(decoded));
    };
    // Nothing after the run's folder names the folder itself (a listing); the library refuses
    // an empty path for anything else.
    let path = parts.next().unwrap_or("");
    let run = run_of(service, experiment, run)?;
    Ok(Location {
        owner: Owner::Run(run),
        path,
    })
}

/// The logged model `model` of experiment `experiment`: 404 if there is no such model, the
/// engine's own error (I/O, damage, a stale read) if it could not be read.
fn model_of(service: &Service, experiment: &str, model: &str) -> Result<ModelId, MlflowError> {
    let id = super::models::parse_id(model)?;
    let found = service
        .store()
        .logged_model(id)
        .map_err(|e| super::models::model_error(model, e))?;
    let in_experiment = experiment
        .parse::<u64>()
        .is_ok_and(|number| found.experiment == ExperimentId(number));
    if !in_experiment {
        return Err(MlflowError::not_found(format!(
            "Logged model '{model}' is not in experiment '{experiment}'"
        )));
    }
    Ok(id)
}

/// The run `run` of experiment `experiment`, or 404.
fn run_of(service: &Service, experiment: &str, run: &str) -> Result<RunId, MlflowError> {
    let id = parse_run(run)?;
    let view = service.store().run(id)?;
    let in_experiment = experiment
        .parse::<u64>()
        .is_ok_and(|number| view.info.experiment == ExperimentId(number));
    if !in_experiment {
        return Err(MlflowError::not_found(format!(
            "Run '{run}' is not in experiment '{experiment}'"
        )));
    }
    Ok(id)
}

fn parse_run(text: &str) -> Result<RunId, MlflowError> {
    text.parse::<RunId>()
        .map_err(|_| MlflowError::not_found(format!("Run '{text}' not found")))
}

/// The library's path rule, applied to the whole path below the service root.
fn check_whole(path: &str) -> Result<(), MlflowError> {
    validation::artifact_path(path)
        .map_err(|_| MlflowError::invalid(format!("Invalid path: '{path}'")))
}

fn no_such_artifact(path: &str) -> MlflowError {
    MlflowError::not_found(format!("No such artifact: '{path}'"))
}

/// Percent-decodes a URL path, refusing encoded separators and NUL (see the module doc).
fn decode_path(raw: &str) -> Result<String, MlflowError> {
    let lowered = raw.to_ascii_lowercase();
    if ["%2f", "%5c", "%00"]
        .iter()
        .any(|code| lowered.contains(code))
    {
        return Err(MlflowError::invalid(format!(
            "Invalid path: '{raw}' (encoded separators and NUL are not allowed)"
        )));
    }
    percent_decode(raw, Plus::Literal)
}

/// Whether `+` means a space (form-encoded query strings) or itself (paths).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plus {
    Space,
    Literal,
}

fn percent_decode(raw: &str, plus: Plus) -> Result<String, MlflowError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'%' => {
                let hex = bytes
                    .get(at + 1..at + 3)
                    // Two hex digits: `from_str_radix` would also take `+0`.
                    .filter(|pair| pair.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|pair| std::str::from_utf8(pair).ok())
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| {
                        MlflowError::invalid(format!("Invalid percent-encoding in '{raw}'"))
                    })?;
                out.push(hex);
                at += 3;
            }
            b'+' if plus == Plus::Space => {
                out.push(b' ');
                at += 1;
            }
            other => {
                out.push(other);
                at += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| MlflowError::invalid(format!("'{raw}' does not decode to UTF-8")))
}

/// The decoded `name=value` pairs of a query string, in order.
fn query_fields(query: &str) -> Result<Vec<(String, String)>, MlflowError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((
                percent_decode(name, Plus::Space)?,
                percent_decode(value, Plus::Space)?,
            ))
        })
        .collect()
}

/// A `Content-Type` for a download, from the file's extension (MLflow guesses it the same
/// way); the client writes the bytes whatever it says.
pub(crate) fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    match extension.to_ascii_lowercase().as_str() {
        "txt" | "log" | "md" | "py" | "yaml" | "yml" | "csv" | "html" => {
            "text/plain; charset=utf-8"
        }
        "json" => JSON,
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn json(value: &serde_json::Value) -> Reply {
    Reply::json(value.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_separators_are_refused_before_decoding() {
        for bad in [
            "a%2F..%2Fb",
            "a%2f..",
            "a%5Cb",
            "a%00b",
            "%zz",
            "%e2%28",
            "a%+0b",
            "%-1",
        ] {
            assert!(decode_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode_path("a%20b/c+d").ok().as_deref(), Some("a b/c+d"));
        assert_eq!(decode_path("%2e%2e/x").ok().as_deref(), Some("../x"));
        assert!(check_whole("../x").is_err());
    }

    #[test]
    fn a_model_that_cannot_be_read_is_not_reported_missing() {
        let id = "m-00000000000000000000000000000000";
        let missing = crate::Error::NotFound(format!("logged model {id}"));
        assert_eq!(
            super::super::models::model_error(id, missing).code,
            ErrorCode::ResourceDoesNotExist
        );
        let stale = crate::Error::StaleRead {
            what: "manifest".to_string(),
            attempts: 3,
        };
        assert_ne!(
            super::super::models::model_error(id, stale).code,
            ErrorCode::ResourceDoesNotExist
        );
    }

    #[test]
    fn query_strings_decode_plus_as_space() {
        let fields = query_fields("path=1%2Fr+x&&run_id=").ok();
        assert_eq!(
            fields,
            Some(vec![
                ("path".to_string(), "1/r x".to_string()),
                ("run_id".to_string(), String::new())
            ])
        );
    }
}
