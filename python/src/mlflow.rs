//! `runlog._native.MlflowService`: MLflow's REST protocol (`runlog::mlflow::Service`) called
//! in-process, for the `runlog://` tracking-store plugin.
//!
//! Owns only the crossing between Python and the service: the plugin hands it MLflow's own
//! requests (method, path, query, JSON body) and gets back what `mlflow server` would answer.
//! Invariants: validation and error codes are the service's, never re-done here; `handle` runs
//! with the GIL released, so Python threads (MLflow's async logging among them) log in
//! parallel; one service per store directory per process, so every `runlog://` URI naming the
//! same directory shares one open store, and a forked child opens its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use runlog::mlflow::{Method, Request, Service};

use crate::errors::{IntoPy, invalid};

/// The services opened so far, by opening process and the store's canonical directory. The
/// process is part of the key because a forked child inherits this map, and the parent's
/// service refuses every call in the child with `Forked`: the child opens its own.
static SERVICES: Mutex<Option<HashMap<(u32, PathBuf), Service>>> = Mutex::new(None);

/// MLflow's tracking REST API answered in-process by the engine, over the store at `path`
/// (created if missing). Instances for the same directory share one open store.
#[pyclass(frozen, module = "runlog")]
pub struct MlflowService {
    /// The directory as given, to reopen from.
    path: PathBuf,
    /// Replaced by a freshly opened service once this one can no longer log (see `handle`).
    service: RwLock<Service>,
}

fn method(name: &str) -> PyResult<Method> {
    match name.to_ascii_uppercase().as_str() {
        "GET" => Ok(Method::Get),
        "POST" => Ok(Method::Post),
        "PUT" => Ok(Method::Put),
        "PATCH" => Ok(Method::Patch),
        "DELETE" => Ok(Method::Delete),
        other => Err(invalid(format!(
            "HTTP method {other:?} is not one MLflow uses"
        ))),
    }
}

/// The key a store directory is shared under: canonical when the directory exists, so two
/// spellings of one directory share a service.
fn key_of(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The shared service for the store at `path` in this process, opening the store on first
/// use. The store is opened outside the map's lock, so a fork while another thread opens a
/// store never leaves the child a lock that no thread of it will release.
fn service_at(path: &Path) -> runlog::Result<Service> {
    let key = (std::process::id(), key_of(path));
    if let Some(service) = services().get_or_insert_with(HashMap::new).get(&key) {
        return Ok(service.clone());
    }
    let store = runlog::Store::open(&key.1)?;
    let opened = Service::new(Arc::new(store));
    // Another thread may have opened the same store meanwhile: every caller shares the first,
    // and the second is dropped (closing its store) after the lock is let go.
    let first = services()
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert_with(|| opened.clone())
        .clone();
    drop(opened);
    Ok(first)
}

/// Whether `service` can no longer log in this process: its store handle was opened by a
/// parent process, or a failed sync poisoned it. Asked only after an `INTERNAL_ERROR`
/// answer, so the flush it takes costs nothing on the path that succeeds.
fn is_unusable(service: &Service) -> bool {
    matches!(
        service.store().flush(),
        Err(runlog::Error::Forked { .. } | runlog::Error::Poisoned { .. })
    )
}

/// Forgets `service` if it is still the one shared for `path` in this process, so the next
/// caller opens the store again.
fn evict(path: &Path, service: &Service) {
    let key = (std::process::id(), key_of(path));
    let mut services = services();
    let Some(map) = services.as_mut() else {
        return;
    };
    if map
        .get(&key)
        .is_some_and(|shared| Arc::ptr_eq(shared.store(), service.store()))
    {
        map.remove(&key);
    }
}

fn services() -> std::sync::MutexGuard<'static, Option<HashMap<(u32, PathBuf), Service>>> {
    SERVICES.lock().unwrap_or_else(PoisonError::into_inner)
}

#[pymethods]
impl MlflowService {
    /// Opens (or reuses this process's) service over the store at `path`.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<MlflowService> {
        let service = py.detach(|| service_at(&path)).py_err()?;
        Ok(MlflowService {
            path,
            service: RwLock::new(service),
        })
    }

    /// The store's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.current().store().root().to_path_buf()
    }

    /// Answers one MLflow REST request: `method` (`"GET"`, `"POST"`, ...), the full `path`
    /// (`"/api/2.0/mlflow/runs/get"`), the raw URL `query` (no `?`) and the raw `body`.
    /// Returns `(status, content_type, body)` exactly as `mlflow server` would send them.
    #[pyo3(signature = (method, path, query = "", body = b"".as_slice()))]
    fn handle<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> PyResult<(u16, &'static str, Bound<'py, PyBytes>)> {
        let method = self::method(method)?;
        let request = Request {
            method,
            path,
            query,
            body,
        };
        let reply = py.detach(|| {
            let service = self.current();
            let reply = service.handle(request);
            if reply.status == 500 && is_unusable(&service) {
                self.reopen(&service);
            }
            reply
        });
        Ok((
            reply.status,
            reply.content_type,
            PyBytes::new(py, &reply.body),
        ))
    }

    fn __repr__(&self) -> String {
        format!("MlflowService({:?})", self.current().store().root())
    }
}

impl MlflowService {
    fn current(&self) -> Service {
        self.service
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drops `failed` from the process's services and takes a freshly opened one in its
    /// place; the request that failed stays failed, the next one goes to the new store. If
    /// the store cannot be opened now, `failed` stays and the next failure tries again.
    fn reopen(&self, failed: &Service) {
        evict(&self.path, failed);
        if let Ok(fresh) = service_at(&self.path) {
            let mut service = self.service.write().unwrap_or_else(PoisonError::into_inner);
            if Arc::ptr_eq(service.store(), failed.store()) {
                *service = fresh;
            }
        }
    }
}
