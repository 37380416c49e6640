//! One request: `/health` and `/version` here, everything else read under the body limits and
//! handed to [`Service::handle`] on the blocking pool.
//!
//! Invariants: no body over the limit is buffered; the body's share of the in-flight budget is
//! held until the engine call that reads it has returned; every error this transport makes up
//! itself (413, 408, a failed body read) uses MLflow's JSON error shape.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::mlflow::{ErrorCode, Method, MlflowError, Reply, Request, Service};

use super::ServerOptions;

/// The body budget is counted in units of this many bytes, so that a budget of any size fits
/// tokio's semaphore.
const BUDGET_UNIT_BYTES: usize = 1 << 10;

/// What every connection's requests share.
#[derive(Debug)]
pub(super) struct Shared {
    service: Service,
    /// Units of body bytes that may be held at once.
    body_budget: Arc<Semaphore>,
    /// Engine calls that may run at once.
    engine_slots: Arc<Semaphore>,
    body_bytes_max: usize,
    body_read_timeout: Duration,
}

impl Shared {
    pub(super) fn new(service: Service, options: &ServerOptions) -> Shared {
        // The budget holds at least one largest body, so every acceptable request can proceed.
        let budget_bytes = options.body_bytes_in_flight_max.max(options.body_bytes_max);
        Shared {
            service,
            body_budget: Arc::new(Semaphore::new(units(budget_bytes))),
            engine_slots: Arc::new(Semaphore::new(options.requests_in_flight_max.max(1))),
            body_bytes_max: options.body_bytes_max,
            body_read_timeout: options.body_read_timeout,
        }
    }
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(BUDGET_UNIT_BYTES).max(1)
}

/// Answers one request. Never fails: every failure is an HTTP answer.
pub(super) async fn answer(
    shared: Arc<Shared>,
    request: hyper::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_read = matches!(*request.method(), hyper::Method::GET | hyper::Method::HEAD);
    match request.uri().path() {
        "/health" if is_read => return Ok(text("OK")),
        "/version" if is_read => return Ok(text(env!("CARGO_PKG_VERSION"))),
        _ => {}
    }
    Ok(forward(shared, request).await)
}

/// Reads the body and hands the request to the service.
async fn forward(shared: Arc<Shared>, request: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let (body, _budget) = match read_body(&shared, body).await {
        Ok(read) => read,
        Err(reply) => return response(reply),
    };
    let Ok(_engine_slot) = shared.engine_slots.clone().acquire_owned().await else {
        return response(internal("the server is shutting down"));
    };
    let service = shared.service.clone();
    let method = method(&parts.method);
    let handled = tokio::task::spawn_blocking(move || {
        service.handle(Request {
            method,
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            body: &body,
        })
    })
    .await;
    match handled {
        Ok(reply) => response(reply),
        // The engine call panicked: a bug. The client gets a 500 and the server goes on.
        Err(_) => response(internal("the request's handler failed unexpectedly")),
    }
}

/// The whole body, within the size limit and the body read timeout, with the share of the
/// in-flight budget it holds.
async fn read_body(
    shared: &Shared,
    body: Incoming,
) -> Result<(Bytes, OwnedSemaphorePermit), Reply> {
    // hyper knows the exact length of a body with `Content-Length` (0 without a body, as for
    // most GETs) and refuses a malformed one itself; a chunked body has no exact length.
    let hint = body.size_hint();
    if hint.lower() > shared.body_bytes_max as u64 {
        return Err(too_large(shared.body_bytes_max));
    }
    // A chunked body may be as large as the limit allows.
    let reserved_bytes = hint.exact().map_or(shared.body_bytes_max, |n| n as usize);
    let budget =
        u32::try_from(units(reserved_bytes)).map_err(|_| too_large(shared.body_bytes_max))?;
    let Ok(permit) = shared.body_budget.clone().acquire_many_owned(budget).await else {
        return Err(internal("the server is shutting down"));
    };
    let collect = Limited::new(body, shared.body_bytes_max).collect();
    match tokio::time::timeout(shared.body_read_timeout, collect).await {
        Ok(Ok(collected)) => Ok((collected.to_bytes(), permit)),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(too_large(shared.body_bytes_max))
        }
        Ok(Err(error)) => Err(MlflowError::new(
            ErrorCode::BadRequest,
            format!("reading the request body failed: {error}"),
        )
        .reply()),
        Err(_elapsed) => Err(with_status(
            MlflowError::new(
                ErrorCode::BadRequest,
                format!(
                    "the request body did not arrive within {} s",
                    shared.body_read_timeout.as_secs_f64()
                ),
            )
            .reply(),
            408,
        )),
    }
}

fn too_large(body_bytes_max: usize) -> Reply {
    let reply = MlflowError::invalid(format!(
        "the request body exceeds the server's limit of {body_bytes_max} bytes"
    ))
    .reply();
    with_status(reply, 413)
}

fn internal(message: &str) -> Reply {
    MlflowError::new(ErrorCode::InternalError, message).reply()
}

fn with_status(reply: Reply, status: u16) -> Reply {
    Reply { status, ..reply }
}

fn method(method: &hyper::Method) -> Method {
    match *method {
        hyper::Method::GET => Method::Get,
        hyper::Method::POST => Method::Post,
        hyper::Method::PUT => Method::Put,
        hyper::Method::PATCH => Method::Patch,
        hyper::Method::DELETE => Method::Delete,
        _ => Method::Other,
    }
}

fn text(body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(reply.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    response
}
