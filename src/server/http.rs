//! One request: `/health` and `/version` here, everything else checked for its `Host` and
//! `Origin` ([`Security`]), read under the body limits and handed to [`Service::handle`] on the
//! blocking pool; an artifact upload streamed to [`Service::upload_artifact`] instead.
//!
//! Invariants: no body over its route's limit is buffered or stored (an artifact upload's
//! limit is `body_bytes_max`, every other route's the smaller `json_body_bytes_max`); a body's
//! bytes hold their share of the in-flight budget until the engine has consumed them (a whole
//! JSON body until the engine call that reads it has returned, an upload's piece until it is
//! copied to the artifact's file), so an upload of any size holds at most
//! `UPLOAD_PIECES_QUEUED` pieces; an upload the client does not finish (cut off, too slow, too
//! large) stores nothing: the engine sees it end only on an explicit end marker; every error
//! this transport makes up itself (413, 408, a failed body read) uses MLflow's JSON error
//! shape; a body that arrives slower than the rate floor
//! (`ServerOptions::body_rate_min_bytes_per_second`, after its grace period) is cut off with
//! 408, so a trickling client holds its connection and its bytes only briefly.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use http_body_util::{BodyExt, Either, Full};
use hyper::body::Body as _;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::mlflow::{Download, ErrorCode, Method, MlflowError, Reply, Request, Service};

use super::ServerOptions;
use super::security::Security;

/// The body budget is counted in units of this many bytes, so that a budget of any size fits
/// tokio's semaphore.
const BUDGET_UNIT_BYTES: usize = 1 << 10;

/// Pieces of an artifact upload queued between its connection and the engine at most, so an
/// upload's memory does not grow with its size.
const UPLOAD_PIECES_QUEUED: usize = 4;

/// Bytes of an artifact download read from its file at a time, and how many such pieces may
/// wait for the connection, so a download's memory does not grow with its size.
const DOWNLOAD_PIECE_BYTES: usize = 256 << 10;
const DOWNLOAD_PIECES_QUEUED: usize = 4;

/// A response's body: whole, or an artifact's content as it is read.
pub(super) type Body = Either<Full<Bytes>, Streamed>;

/// What every connection's requests share.
#[derive(Debug)]
pub(super) struct Shared {
    service: Service,
    security: Security,
    /// Units of body bytes that may be held at once, taken as body bytes arrive.
    body_budget: Arc<Semaphore>,
    /// Engine calls that may run at once.
    engine_slots: Arc<Semaphore>,
    /// Artifact uploads and downloads that may stream at once, apart from `engine_slots`: a
    /// stream holds its slot for as long as its client takes, which must not stall JSON
    /// requests.
    stream_slots: Arc<Semaphore>,
    /// Units in `body_budget` when nothing is held.
    budget_units: usize,
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
        // The budget holds at least one largest JSON body, so an acceptable request alone can
        // proceed; uploads stream, so their size does not count.
        let json_body_bytes_max = options.json_body_bytes_max.min(options.body_bytes_max);
        let budget_units = units(options.body_bytes_in_flight_max.max(json_body_bytes_max));
        let slots = options.requests_in_flight_max.max(1);
        Shared {
            service,
            security: Security::new(&options.allowed_hosts, &options.cors_allowed_origins, bound),
            body_budget: Arc::new(Semaphore::new(budget_units)),
            engine_slots: Arc::new(Semaphore::new(slots)),
            stream_slots: Arc::new(Semaphore::new(slots)),
            budget_units,
            body_bytes_max: options.body_bytes_max,
            json_body_bytes_max,
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
) -> Result<Response<Body>, Infallible> {
    let is_read = matches!(*request.method(), hyper::Method::GET | hyper::Method::HEAD);
    let whole = match request.uri().path() {
        "/health" if is_read => text("OK"),
        "/version" if is_read => text(env!("CARGO_PKG_VERSION")),
        _ => match shared.security.check(&request) {
            // Refused before its body is read: a body that may come makes this the
            // connection's last answer.
            Err(refused) if request.body().is_end_stream() => response(refused),
            Err(refused) => closing(response(refused)),
            Ok(()) => {
                let method = method(request.method());
                if Service::is_artifact_download(method, request.uri().path()) {
                    let route = request.uri().path_and_query().map(|p| p.as_str());
                    let route = route.unwrap_or(request.uri().path()).to_owned();
                    return Ok(forward_download(shared, route).await);
                }
                forward(shared, request).await
            }
        },
    };
    Ok(whole.map(Either::Left))
}

/// Streams an artifact's content from the engine to the client, piece by piece. Errors found
/// before the first byte (no such artifact, a folder) are whole answers; a file found damaged
/// while it is sent (its size or SHA-256 not as recorded) cuts the answer off, which the client
/// sees as a body shorter than its `Content-Length`.
async fn forward_download(shared: Arc<Shared>, path: String) -> Response<Body> {
    let Ok(stream_slot) = shared.stream_slots.clone().acquire_owned().await else {
        return response(internal("the server is shutting down")).map(Either::Left);
    };
    let service = shared.service.clone();
    let route = path.clone();
    let opened = tokio::task::spawn_blocking(move || service.download_artifact(&route)).await;
    let (content_type, mut reader) = match opened {
        Ok(Download::Stream {
            content_type,
            reader,
        }) => (content_type, reader),
        Ok(Download::Reply(reply)) => return response(reply).map(Either::Left),
        Err(_) => {
            return response(internal("the request's handler failed unexpectedly"))
                .map(Either::Left);
        }
    };
    let length = reader.size_bytes();
    let (sender, receiver) = mpsc::channel(DOWNLOAD_PIECES_QUEUED);
    tokio::task::spawn_blocking(move || {
        let _stream_slot = stream_slot;
        // Each piece is sent only once the next one is read, so the last bytes wait for the
        // reader's check at the end: a damaged file's answer always stops short.
        let mut held: Option<Bytes> = None;
        loop {
            let mut piece = vec![0u8; DOWNLOAD_PIECE_BYTES];
            let (next, done) = match reader.read(&mut piece) {
                Ok(0) => (held.take().map(Ok), true),
                Ok(read) => {
                    piece.truncate(read);
                    (held.replace(Bytes::from(piece)).map(Ok), false)
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // The client sees only a body cut short; the operator needs the file.
                    log_error(&format!("download of {path} cut off: {error}"));
                    (Some(Err(error)), true)
                }
            };
            // A client that went away closes the channel: nothing more to send.
            if let Some(next) = next
                && sender.blocking_send(next).is_err()
            {
                return;
            }
            if done {
                return;
            }
        }
    });
    let mut answer = Response::new(Either::Right(Streamed { receiver, length }));
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    answer
}

/// Writes one line about a failure the client cannot be told of to stderr, where `runlog
/// serve` prints its other lines; a stderr that cannot be written is ignored.
fn log_error(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "runlog serve: error: {line}");
}

/// An artifact's content as the engine reads it: exactly `length` bytes, or an error that
/// makes hyper cut the connection off.
pub(super) struct Streamed {
    receiver: mpsc::Receiver<std::io::Result<Bytes>>,
    length: u64,
}

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.receiver
            .poll_recv(context)
            .map(|next| next.map(|piece| piece.map(hyper::body::Frame::data)))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.length)
    }
}

/// Reads the body and hands the request to the service.
async fn forward(shared: Arc<Shared>, request: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let method = method(&parts.method);
    if Service::is_artifact_upload(method, parts.uri.path()) {
        return forward_upload(shared, parts.uri.path().to_owned(), body).await;
    }
    let limit_bytes = shared.json_body_bytes_max;
    let (body, _budget) = match read_body(&shared, body, limit_bytes).await {
        Ok(read) => read,
        Err(reply) => return closing(response(reply)),
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

/// Streams an artifact upload to the engine piece by piece, answering with the engine's reply,
/// or with the transport's own if the body failed (too large, too slow, cut off), in which case
/// the engine stored nothing.
async fn forward_upload(
    shared: Arc<Shared>,
    path: String,
    body: Incoming,
) -> Response<Full<Bytes>> {
    let limit_bytes = shared.body_bytes_max;
    if body.size_hint().lower() > limit_bytes as u64 {
        return closing(response(too_large(limit_bytes)));
    }
    let Ok(stream_slot) = shared.stream_slots.clone().acquire_owned().await else {
        return response(internal("the server is shutting down"));
    };
    let (sender, receiver) = mpsc::channel(UPLOAD_PIECES_QUEUED);
    let service = shared.service.clone();
    let engine = tokio::task::spawn_blocking(move || {
        // The slot is the engine's: it goes when the engine is done, not when the answer is.
        let _stream_slot = stream_slot;
        service.upload_artifact(&path, &mut Pieces::new(receiver))
    });
    let body_read = match feed_upload(&shared, body, sender, limit_bytes).await {
        Ok(body_read) => body_read,
        // The engine sees the channel close without an end and stores nothing; the client need
        // not wait for it.
        Err(reply) => return closing(response(reply)),
    };
    let answer = match engine.await {
        Ok(reply) => response(reply),
        // The engine call panicked: a bug. The client gets a 500 and the server goes on.
        Err(_) => response(internal("the request's handler failed unexpectedly")),
    };
    match body_read {
        BodyRead::Whole => answer,
        BodyRead::Abandoned => closing(answer),
    }
}

/// Whether an upload's body was read to its end, so that its connection can carry the next
/// request.
enum BodyRead {
    Whole,
    /// The engine refused the upload before its end, so the rest of the body is never read.
    Abandoned,
}

/// Marks an answer sent before its request's body was read whole as the connection's last.
/// The connection cannot carry another request (its next bytes are the rest of the body), and
/// a client told so does not send one on it, instead of finding it closed under a pooled
/// request: the answer may come before the client has even sent the body's last bytes.
fn closing(mut answer: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    answer
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    answer
}

/// Sends `body`'s data to the engine, each piece with its share of the budget, then the end
/// marker. A body over `limit_bytes`, slower than the rate floor, silent for longer than the
/// body read timeout, or failing, is an error and gets no end marker. Stops quietly when the
/// engine stops reading (it refused the upload, and its reply says why), and tells whether the
/// body was read to its end.
async fn feed_upload(
    shared: &Shared,
    mut body: Incoming,
    sender: mpsc::Sender<Piece>,
    limit_bytes: usize,
) -> Result<BodyRead, Reply> {
    let started = Instant::now();
    let mut waited = Duration::ZERO;
    let mut received_bytes = 0usize;
    loop {
        let next = next_frame(shared, &mut body, started, waited, received_bytes);
        // An engine that refused the upload (no such run, a bad path) closes the channel; its
        // reply is the answer, whatever the client is doing.
        let frame = tokio::select! {
            biased;
            () = sender.closed() => return Ok(BodyRead::Abandoned),
            timed = tokio::time::timeout(shared.body_read_timeout, next) => match timed {
                Ok(frame) => frame?,
                Err(_elapsed) => return Err(silent_too_long(shared.body_read_timeout)),
            },
        };
        let Some(frame) = frame else {
            // The engine may have stopped reading already; its reply then says why.
            let _ = sender.send(Piece::End).await;
            return Ok(BodyRead::Whole);
        };
        let frame = frame.map_err(body_failed)?;
        let Ok(data) = frame.into_data() else {
            continue; // Trailers carry nothing the service reads.
        };
        received_bytes = received_bytes.saturating_add(data.len());
        if received_bytes > limit_bytes {
            return Err(too_large(limit_bytes));
        }
        let waiting_since = Instant::now();
        let wanted = units(data.len()).min(shared.budget_units);
        let wanted = u32::try_from(wanted).map_err(|_| too_large(limit_bytes))?;
        let acquired = tokio::select! {
            biased;
            () = sender.closed() => return Ok(BodyRead::Abandoned),
            acquired = shared.body_budget.clone().acquire_many_owned(wanted) => acquired,
        };
        let Ok(budget) = acquired else {
            return Err(internal("the server is shutting down"));
        };
        let sent = sender.send(Piece::Data(data, budget)).await;
        waited += waiting_since.elapsed();
        if sent.is_err() {
            return Ok(BodyRead::Abandoned);
        }
    }
}

/// What the connection hands the engine of an upload.
enum Piece {
    /// The next bytes, holding their share of the body budget until they are copied.
    Data(Bytes, OwnedSemaphorePermit),
    /// The body is complete.
    End,
}

/// The engine's side of an upload: a blocking reader over the pieces the connection sends.
/// The channel closing without [`Piece::End`] is an error, so an upload cut off for any reason
/// (the client, a limit, the connection's task dropped) never stores a truncated file.
struct Pieces {
    receiver: mpsc::Receiver<Piece>,
    current: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
    ended: bool,
}

impl Pieces {
    fn new(receiver: mpsc::Receiver<Piece>) -> Pieces {
        Pieces {
            receiver,
            current: Bytes::new(),
            _budget: None,
            ended: false,
        }
    }
}

impl Read for Pieces {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.current.is_empty() {
                let taken = self.current.len().min(buffer.len());
                buffer[..taken].copy_from_slice(&self.current.split_to(taken));
                return Ok(taken);
            }
            if self.ended || buffer.is_empty() {
                return Ok(0);
            }
            // The copied piece's budget goes back before the next piece is awaited.
            self._budget = None;
            match self.receiver.blocking_recv() {
                Some(Piece::Data(bytes, budget)) => {
                    self.current = bytes;
                    self._budget = Some(budget);
                }
                Some(Piece::End) => self.ended = true,
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upload ended before its body was complete",
                    ));
                }
            }
        }
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
        let frame = frame.map_err(body_failed)?;
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

fn body_failed(error: hyper::Error) -> Reply {
    MlflowError::new(
        ErrorCode::BadRequest,
        format!("reading the request body failed: {error}"),
    )
    .reply()
}

fn silent_too_long(timeout: Duration) -> Reply {
    let reply = MlflowError::new(
        ErrorCode::BadRequest,
        format!(
            "the upload's body sent nothing for {} s",
            timeout.as_secs_f64()
        ),
    )
    .reply();
    with_status(reply, 408)
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
