//! MLflow's tracking REST protocol over the engine: MLflow's request and response messages,
//! its validation, limits and error codes, mapped onto [`Store`](crate::Store) and
//! [`query`](crate::query). It knows nothing of HTTP servers: a front-end (the HTTP server, the
//! Python plugin) turns its transport into a [`Request`] and sends back the [`Reply`].
//!
//! Invariants: every answer is either MLflow's JSON response message or MLflow's error shape
//! (`{"error_code": ..., "message": ...}`); a request that fails validation writes nothing;
//! this layer calls only the engine's public API and nothing below may import it.

mod artifacts;
pub mod error;

use std::sync::Arc;

use crate::Store;

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

/// MLflow's tracking protocol over one store. Cheap to share between threads.
#[derive(Clone, Debug)]
pub struct Service {
    store: Arc<Store>,
}

impl Service {
    /// A service over `store`.
    pub fn new(store: Arc<Store>) -> Service {
        Service { store }
    }

    /// The store this service answers from.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Answers one request of MLflow's REST API. Blocking: it calls the engine directly, so an
    /// async front-end calls it off its executor threads.
    pub fn handle(&self, request: Request<'_>) -> Reply {
        if request.path.starts_with("/api/2.0/mlflow-artifacts/") {
            return artifacts::handle(self, request);
        }
        match tracking_route(request.path) {
            Some("artifacts/list") => artifacts::list(self, request),
            _ => MlflowError::endpoint_not_found(request.method, request.path).reply(),
        }
    }
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
