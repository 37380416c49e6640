//! MLflow's artifact routes (`/api/2.0/mlflow-artifacts/...` and `artifacts/list`).

use super::{MlflowError, Reply, Request, Service};

/// Answers a request under `/api/2.0/mlflow-artifacts/`.
pub(crate) fn handle(_service: &Service, request: Request<'_>) -> Reply {
    MlflowError::endpoint_not_found(request.method, request.path).reply()
}

/// Answers `artifacts/list` of the tracking API.
pub(crate) fn list(_service: &Service, request: Request<'_>) -> Reply {
    MlflowError::endpoint_not_found(request.method, request.path).reply()
}
