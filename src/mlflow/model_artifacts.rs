//! The logged-model artifact routes MLflow's UI calls: `GET logged-models/<id>/artifacts/
//! directories?artifact_directory_path=` (a tracking API route) and `GET /ajax-api/2.0/mlflow/
//! logged-models/<id>/artifacts/files?artifact_file_path=` (the UI's, under `ajax-api` only),
//! over the engine's model artifacts (`Store::list_model_artifacts`, `open_model_artifact`).
//!
//! Invariants:
//! - A path is checked whole by the library's artifact path rule, as the run artifact routes
//!   check theirs, before the model is looked up: a path that could leave the model's folder is
//!   400 `INVALID_PARAMETER_VALUE` and reads nothing.
//! - A deleted model is not found (404), as MLflow's handlers look it up without
//!   `allow_deleted`.

use std::io::Read as _;

use serde_json::Value;

use super::models::{artifact_uri, model_error, parse_id};
use super::{Body, ErrorCode, MlflowError, Reply, Request, Service};
use crate::catalog::LoggedModel;
use crate::tracking::validation;
use crate::{ArtifactReader, Error};

/// The prefix of the UI's logged-model file route, which MLflow serves under `ajax-api` only.
const FILE_ROUTE_PREFIX: &str = "/ajax-api/2.0/mlflow/logged-models/";
/// The end of the UI's logged-model file route.
const FILE_ROUTE_SUFFIX: &str = "/artifacts/files";

/// Whether `path` is the UI's `GET /ajax-api/2.0/mlflow/logged-models/<id>/artifacts/files`.
pub(crate) fn is_file_route(path: &str) -> bool {
    path.strip_prefix(FILE_ROUTE_PREFIX)
        .and_then(|rest| rest.strip_suffix(FILE_ROUTE_SUFFIX))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The value of query field `name`, percent-decoded.
fn query_field(query: &str, name: &str) -> Option<String> {
    super::wire::query_pairs(query).find_map(|(key, value)| (key == name).then_some(value))
}

/// A path inside a model's artifact folder, checked whole by the library's artifact path rule
/// (as the run artifact routes check theirs): no `..`, `.`, empty or absolute segments, no
/// backslash or control character. `""` names the folder itself.
fn checked_path(path: &str) -> Result<&str, MlflowError> {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Ok(path);
    }
    validation::artifact_path(path)
        .map_err(|_| MlflowError::invalid(format!("Invalid path: '{path}'")))?;
    Ok(path)
}

/// The live model a route names: 404 for an unknown or deleted one, as MLflow's artifact
/// handlers look it up without `allow_deleted`.
fn live_model(service: &Service, id_text: &str) -> Result<LoggedModel, MlflowError> {
    let id = parse_id(id_text)?;
    service
        .store()
        .logged_model(id)
        .map_err(|e| model_error(id_text, e))
}

/// `GET logged-models/<id>/artifacts/directories?artifact_directory_path=`: the direct children
/// of a folder of the model's artifacts (its root when no path is given), their paths relative
/// to the root, and the root's URI.
pub(crate) fn list(service: &Service, id_text: &str, query: &str) -> Body {
    let asked = query_field(query, "artifact_directory_path").unwrap_or_default();
    let dir = checked_path(&asked)?;
    let model = live_model(service, id_text)?;
    let entries = service.store().list_model_artifacts(model.id, dir)?;
    let files: Vec<Value> = entries
        .iter()
        .map(|entry| super::artifacts::file_info(entry, entry.path()))
        .collect();
    let mut body = serde_json::Map::new();
    body.insert(
        "root_uri".to_string(),
        Value::String(artifact_uri(model.experiment, model.id)),
    );
    if !files.is_empty() {
        body.insert("files".to_string(), Value::Array(files));
    }
    Ok(Value::Object(body).to_string().into_bytes())
}

/// Opens the file the UI's file route names (`path` is the route, `query` its query string):
/// `artifact_file_path` required (400 `BAD_REQUEST`, MLflow's words) and checked before the
/// model is looked up; a folder is 400 and a missing file 404, as the mlflow-artifacts
/// downloads answer.
pub(crate) fn open_file(
    service: &Service,
    path: &str,
    query: &str,
) -> Result<(&'static str, ArtifactReader), MlflowError> {
    let id_text = path
        .strip_prefix(FILE_ROUTE_PREFIX)
        .and_then(|rest| rest.strip_suffix(FILE_ROUTE_SUFFIX))
        .map(super::wire::percent_decode)
        .unwrap_or_default();
    let asked = query_field(query, "artifact_file_path").unwrap_or_default();
    if asked.is_empty() {
        return Err(MlflowError::new(
            ErrorCode::BadRequest,
            "Request must include the \"artifact_file_path\" query parameter.",
        ));
    }
    let file = checked_path(&asked)?;
    let model = live_model(service, &id_text)?;
    match service.store().open_model_artifact(model.id, file) {
        Ok(reader) => Ok((super::artifacts::content_type(file), reader)),
        Err(Error::NotFound(_)) => {
            let listed = service.store().list_model_artifacts(model.id, file)?;
            Err(if listed.is_empty() || file.is_empty() {
                MlflowError::not_found(format!("No such artifact: '{asked}'"))
            } else {
                MlflowError::invalid(format!("'{asked}' is a directory, not a file"))
            })
        }
        Err(other) => Err(other.into()),
    }
}

/// Answers the UI's file route whole, for a caller that does not stream
/// (`Service::download_artifact` streams it).
pub(crate) fn file_reply(service: &Service, request: &Request<'_>) -> Reply {
    let read = || -> Result<Reply, MlflowError> {
        let (content_type, mut reader) = open_file(service, request.path, request.query)?;
        let mut body = Vec::new();
        reader
            .read_to_end(&mut body)
            .map_err(|e| MlflowError::new(ErrorCode::InternalError, e.to_string()))?;
        Ok(Reply {
            status: 200,
            content_type,
            body,
        })
    };
    read().unwrap_or_else(|error| error.reply())
}
