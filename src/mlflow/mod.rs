//! MLflow's tracking REST protocol over the engine: MLflow's request and response messages,
//! its validation, limits and error codes, mapped onto [`Store`] and
//! [`query`](crate::query). It knows nothing of HTTP servers: a front-end (the HTTP server, the
//! Python plugin) turns its transport into a [`Request`] and sends back the [`Reply`].
//!
//! Invariants: every answer is either MLflow's JSON response message or MLflow's error shape
//! (`{"error_code": ..., "message": ...}`); a request that fails validation writes nothing;
//! this layer calls only the engine's public API and nothing below may import it.

mod artifacts;
mod batch;
mod datasets;
pub mod error;
mod experiments;
mod messages;
mod metrics;
mod model_artifacts;
mod model_metrics;
mod models;
mod runs;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Store;

pub use artifacts::Download;
pub use error::{ErrorCode, MlflowError};

/// The HTTP method of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// Any other method; no route accepts it.
    Other,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Other => "(other method)",
        }
    }
}

/// One request of MLflow's REST API, as the transport received it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The full request path (`"/api/2.0/mlflow/runs/log-batch"`), percent-encoded as received.
    pub path: &'a str,
    /// The raw URL query string, without the `?`.
    pub query: &'a str,
    /// The raw body bytes.
    pub body: &'a [u8],
}

/// The answer to a [`Request`]: what the transport sends back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

/// The `Content-Type` of every JSON answer.
pub const JSON: &str = "application/json";

impl Reply {
    /// A 200 answer with a JSON body.
    pub fn json(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            content_type: JSON,
            body,
        }
    }
}

/// What a route answers: a JSON response body, or an error.
type Body = Result<Vec<u8>, MlflowError>;

/// One route's handler.
type Handler = fn(&Service, &Request<'_>) -> Body;

/// MLflow's tracking protocol over one store. Cheap to share between threads.
#[derive(Clone, Debug)]
pub struct Service {
    store: Arc<Store>,
    /// Whether MLflow's default experiment (id 0) was made sure of.
    default_experiment: Arc<AtomicBool>,
}

impl Service {
    /// A service over `store`. MLflow's default experiment (id `"0"`, `Default`), which MLflow's
    /// clients log to when none is chosen, is created on the first request if the store lacks
    /// it.
    pub fn new(store: Arc<Store>) -> Service {
        Service {
            store,
            default_experiment: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The store this service answers from.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Whether `method` on `path` is an artifact upload, the one route whose body is a file's
    /// content rather than a small JSON message, so a transport may give it a larger body limit.
    pub fn is_artifact_upload(method: Method, path: &str) -> bool {
        artifacts::is_upload(method, path)
    }

    /// Answers an artifact upload (`PUT` on `path`, for which [`Service::is_artifact_upload`]
    /// holds) whose content `body` yields, so a transport can stream it to the artifact store
    /// instead of holding it. `body` is read only after the path and its owner are checked; an
    /// error from it stores nothing. Blocking, as [`Service::handle`].
    pub fn upload_artifact(&self, path: &str, body: &mut dyn std::io::Read) -> Reply {
        artifacts::upload_from(self, path, body)
    }

    /// Whether `method` on `path` is an artifact download, which a transport may stream with
    /// [`Service::download_artifact`].
    pub fn is_artifact_download(method: Method, path: &str) -> bool {
        artifacts::is_download(method, path)
    }

    /// Answers a `GET` of an artifact's content on `path` (for which
    /// [`Service::is_artifact_download`] holds; its query, if any, after a `?`) with a reader
    /// to stream, or with a whole reply (an error, or a folder). Blocking, as
    /// [`Service::handle`]; so is reading the stream.
    pub fn download_artifact(&self, path: &str) -> Download {
        artifacts::download_from(self, path)
    }

    /// Answers one request of MLflow's REST API. Blocking: it calls the engine directly, so an
    /// async front-end calls it off its executor threads.
    pub fn handle(&self, request: Request<'_>) -> Reply {
        if request.path.starts_with("/api/2.0/mlflow-artifacts/")
            || request.path.starts_with("/ajax-api/2.0/mlflow-artifacts/")
        {
            return artifacts::handle(self, request);
        }
        if request.method == Method::Get && model_artifacts::is_file_route(request.path) {
            return model_artifacts::file_reply(self, &request);
        }
        let Some(route) = tracking_route(request.path) else {
            return MlflowError::endpoint_not_found(request.method, request.path).reply();
        };
        if route == "artifacts/list" {
            return artifacts::list(self, request);
        }
        if let Some(rest) = route
            .strip_prefix("logged-models/")
            .filter(|rest| !rest.is_empty() && *rest != "search")
        {
            self.ensure_default_experiment();
            return match models::handle_path(self, &request, rest) {
                Ok(body) => Reply::json(body),
                Err(error) => error.reply(),
            };
        }
        let Some(handler) = handler(route, request.method) else {
            return MlflowError::endpoint_not_found(request.method, request.path).reply();
        };
        self.ensure_default_experiment();
        match handler(self, &request) {
            Ok(body) => Reply::json(body),
            Err(error) => error.reply(),
        }
    }

    /// Creates MLflow's default experiment once per service. A store that cannot (read-only,
    /// or the name `Default` taken by another experiment) goes without it: requests naming
    /// experiment 0 then get MLflow's not-found answer. Any other failure (a damaged store, an
    /// I/O error) is tried again by the next request, so one bad moment does not lose the
    /// default experiment for the life of the service; the request itself reports the error.
    fn ensure_default_experiment(&self) {
        if self.default_experiment.load(Ordering::Acquire) {
            return;
        }
        let settled = match self.store.default_experiment() {
            Ok(_) | Err(crate::Error::ReadOnly) | Err(crate::Error::AlreadyExists(_)) => true,
            Err(_) => false,
        };
        if settled {
            self.default_experiment.store(true, Ordering::Release);
        }
    }
}

/// The handler of `route` for `method`, as MLflow's server maps them.
fn handler(route: &str, method: Method) -> Option<Handler> {
    use Method::{Get, Post};
    let handler: Handler = match (route, method) {
        ("experiments/create", Post) => experiments::create,
        ("experiments/get", Get) => experiments::get,
        ("experiments/get-by-name", Get) => experiments::get_by_name,
        ("experiments/search", Get | Post) => experiments::search,
        ("experiments/update", Post) => experiments::update,
        ("experiments/delete", Post) => experiments::delete,
        ("experiments/restore", Post) => experiments::restore,
        ("experiments/set-experiment-tag", Post) => experiments::set_tag,
        ("experiments/delete-experiment-tag", Post) => experiments::delete_tag,
        ("experiments/search-datasets", Post) => datasets::search,
        ("runs/create", Post) => runs::create,
        ("runs/get", Get) => runs::get,
        ("runs/update", Post) => runs::update,
        ("runs/delete", Post) => runs::delete,
        ("runs/restore", Post) => runs::restore,
        ("runs/search", Get | Post) => runs::search,
        ("runs/log-metric", Post) => runs::log_metric,
        ("runs/log-parameter", Post) => runs::log_param,
        ("runs/log-batch", Post) => runs::log_batch,
        ("runs/set-tag", Post) => runs::set_tag,
        ("runs/delete-tag", Post) => runs::delete_tag,
        ("runs/log-inputs", Post) => runs::log_inputs,
        ("metrics/get-history", Get) => metrics::get_history,
        ("metrics/get-history-bulk", Get) => metrics::get_history_bulk,
        ("metrics/get-history-bulk-interval", Get) => metrics::get_history_bulk_interval,
        ("server-info", Get) => server_info,
        ("runs/outputs", Post) => models::log_outputs,
        ("logged-models/search", Post) => models::search,
        ("logged-models", Post) => models::create,
        _ => return None,
    };
    Some(handler)
}

/// `server-info` (MLflow 3): what the server supports. The store type is MLflow's SQL store,
/// whose semantics this layer follows; multipart and presigned transfers are off.
fn server_info(_: &Service, _: &Request<'_>) -> Body {
    let body = serde_json::json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": false,
        "multipart_downloads_enabled": false,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "features_enabled": {},
    });
    Ok(body.to_string().into_bytes())
}

/// The route of a tracking endpoint (`"runs/log-batch"`) under one of the prefixes MLflow
/// serves it on, or `None` for any other path.
fn tracking_route(path: &str) -> Option<&str> {
    const PREFIXES: [&str; 4] = [
        "/api/2.0/mlflow/",
        "/ajax-api/2.0/mlflow/",
        "/api/3.0/mlflow/",
        "/ajax-api/3.0/mlflow/",
    ];
    PREFIXES.iter().find_map(|prefix| path.strip_prefix(prefix))
}
