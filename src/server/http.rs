//! One request: `/health` and `/version` here, everything else checked for its `Host` and
//! `Origin` ([`Security`]), read under the body limits and handed to [`Service::handle`] on the blocking pool.
//!
//! Invariants: no body over its route's limit is buffered (an artifact upload's limit is
//! `body_bytes_max`, every other route's the smaller `json_body_bytes_max`); the body's share of the in-flight budget is
//! held until the engine call that reads it has returned; every error this transport makes up
//! itself (413, 408, a failed body read) uses MLflow's JSON error shape; a body that arrives
//! slower than the rate floor (`ServerOptions::body_rate_min_bytes_per_second`, after its grace
//! period) is cut off with 408, so a trickling client holds its connection and its bytes only
//! briefly.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::mlflow::{ErrorCode, Method, MlflowError, Reply, Request, Service};

use super::ServerOptions;
use super::security::Security;

/// The body budget is counted in units of this many bytes, so that a budget of any size fits
/// tokio's semaphore.
const BUDGET_UNIT_BYTES: usize = 1 << 10;

/// What every connection's requests share.
#[derive(Debug)]
pub(super) struct Shared {
    service: Service,
    security: Security,
    /// Units of body bytes that may be held at once, taken as body bytes arrive.
    body_budget: Arc<Semaphore>,
    /// Engine calls that may run at once.
    engine_slots: Arc<Semaphore>,
    body_bytes_max: usize,
    json_body_bytes_max: usize,
    body_read_timeout: Duration,
    body_rate_floor: Option<RateFloor>,
}

/// The least average rate at which a body must arrive once its grace period is over: by any
/// moment `t` after the body's first poll, at least `bytes_per_second × (t − grace − waited)`
/// bytes have arrived, `waited` being the time the server itself spent waiting for body budget.
#[derive(Clone, Copy, Debug)]
struct RateFloor {
    bytes_per_second: u64,
    grace: Duration,
}

impl RateFloor {
    fn of(options: &ServerOptions) -> Option<RateFloor> {
        (options.body_rate_min_bytes_per_second > 0).then_some(RateFloor {
            bytes_per_second: options.body_rate_min_bytes_per_second,
            grace: options.body_rate_grace,
        })
    }

    /// When the body falls below the floor unless more bytes arrive, having `received_bytes`
    /// after starting at `started` and the server having waited `waited`.
    fn deadline(self, started: Instant, waited: Duration, received_bytes: usize) -> Instant {
        let earned = Duration::from_secs_f64(received_bytes as f64 / self.bytes_per_second as f64);
        started + self.grace + waited + earned
    }
}

impl Shared {
    pub(super) fn new(service: Service, options: &ServerOptions, bound: SocketAddr) -> Shared {
        // The budget holds at least one largest body, so an acceptable request alone can proceed.
        let budget_bytes = options.body_bytes_in_flight_max.max(options.body_bytes_max);
        Shared {
            service,
            security: Security::new(&options.allowed_hosts, &options.cors_allowed_origins, bound),
            body_budget: Arc::new(Semaphore::new(units(budget_bytes))),
            engine_slots: Arc::new(Semaphore::new(options.requests_in_flight_max.max(1))),
            body_bytes_max: options.body_bytes_max,
            json_body_bytes_max: options.json_body_bytes_max.min(options.body_bytes_max),
            body_read_timeout: options.body_read_timeout,
            body_rate_floor: RateFloor::of(options),
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
    if let Err(refused) = shared.security.check(&request) {
        return Ok(response(refused));
    }
    Ok(forward(shared, request).await)
}

/// Reads the body and hands the request to the service.
async fn forward(shared: Arc<Shared>, request: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let method = method(&parts.method);
    let limit_bytes = if Service::is_artifact_upload(method, parts.uri.path()) {
        shared.body_bytes_max
    } else {
        shared.json_body_bytes_max
    };
    let (body, _budget) = match read_body(&shared, body, limit_bytes).await {
        Ok(read) => read,
        Err(reply) => return response(reply),
    };
    let Ok(_engine_slot) = shared.engine_slots.clone().acquire_owned().await else {
        return response(internal("the server is shutting down"));
    };
    let service = shared.service.clone();
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

/// The whole body, within the route's size limit and the body read timeout, with the share of
/// the in-flight budget it holds.
///
/// The budget is taken as bytes arrive, never for what a request only declares, so clients that
/// announce large bodies and send nothing hold nothing and stall no one.
async fn read_body(
    shared: &Shared,
    body: Incoming,
    limit_bytes: usize,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Reply> {
    // hyper knows the exact length of a body with `Content-Length` and refuses a malformed one
    // itself; a larger declared body is refused before a byte of it is read.
    if body.size_hint().lower() > limit_bytes as u64 {
        return Err(too_large(limit_bytes));
    }
    let read = collect_within_budget(shared, body, limit_bytes);
    match tokio::time::timeout(shared.body_read_timeout, read).await {
        Ok(read) => read,
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

/// Reads `body` frame by frame, refusing it once it passes `limit_bytes` (chunked bodies
/// included) or falls below the rate floor, and taking budget for each frame before keeping it.
async fn collect_within_budget(
    shared: &Shared,
    mut body: Incoming,
    limit_bytes: usize,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Reply> {
    let mut bytes = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let started = Instant::now();
    let mut waited = Duration::ZERO;
    while let Some(frame) = next_frame(shared, &mut body, started, waited, bytes.len()).await? {
        let frame = frame.map_err(|error| {
            MlflowError::new(
                ErrorCode::BadRequest,
                format!("reading the request body failed: {error}"),
            )
            .reply()
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // Trailers carry nothing the service reads.
        };
        let total_bytes = bytes.len().saturating_add(data.len());
        if total_bytes > limit_bytes {
            return Err(too_large(limit_bytes));
        }
        let held_units = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        let more_units = units(total_bytes).saturating_sub(held_units);
        if more_units > 0 {
            let more = u32::try_from(more_units).map_err(|_| too_large(limit_bytes))?;
            let waiting_since = Instant::now();
            let acquired = shared.body_budget.clone().acquire_many_owned(more).await;
            waited += waiting_since.elapsed();
            let Ok(permit) = acquired else {
                return Err(internal("the server is shutting down"));
            };
            match held.as_mut() {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes, held))
}

/// The body's next frame, or a 408 if it does not come before the rate floor's deadline.
async fn next_frame(
    shared: &Shared,
    body: &mut Incoming,
    started: Instant,
    waited: Duration,
    received_bytes: usize,
) -> Result<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>, Reply> {
    let Some(floor) = shared.body_rate_floor else {
        return Ok(body.frame().await);
    };
    let deadline = floor.deadline(started, waited, received_bytes);
    tokio::time::timeout_at(deadline, body.frame())
        .await
        .map_err(|_elapsed| too_slow(floor, received_bytes))
}

fn too_slow(floor: RateFloor, received_bytes: usize) -> Reply {
    let reply = MlflowError::new(
        ErrorCode::BadRequest,
        format!(
            "the request body arrived slower than the server's floor of {} bytes/s (after a \
             grace period of {} s): {received_bytes} bytes had arrived",
            floor.bytes_per_second,
            floor.grace.as_secs_f64()
        ),
    )
    .reply();
    with_status(reply, 408)
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
