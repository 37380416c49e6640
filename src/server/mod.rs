//! The HTTP server (feature `server`): a thin transport that carries MLflow's REST API
//! ([`crate::mlflow::Service`]) over HTTP/1.1, for `runlog serve` and for any program that
//! embeds it.
//!
//! It owns HTTP concerns only: `/health` and `/version`, the `Host` and `Origin` checks mlflow
//! server makes by default, limits on bodies, time and
//! concurrency, and shutdown. Every other path goes to [`Service::handle`], which routes it and
//! answers unknown ones; no MLflow or engine logic lives here.
//!
//! Invariants:
//! - The engine's blocking calls never run on the async executor threads: each request's
//!   `Service::handle` runs on tokio's blocking pool, and at most
//!   [`ServerOptions::requests_in_flight_max`] run at once.
//! - Memory is bounded whatever the clients do: at most `connections_max` connections are
//!   accepted, no body over its route's limit is read (413), and the body bytes held at once
//!   total at most `body_bytes_in_flight_max`, counted as they arrive.
//! - A reply is sent only after `Service::handle` returned, so a 200 to a write means the
//!   engine call returned, with the durability the store was opened with.
//! - Shutdown stops accepting, lets every request already received finish within
//!   `shutdown_drain_timeout`, closes idle connections, then returns; the caller flushes and
//!   closes the store.

mod deadline;
mod http;
mod security;
mod signals;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;

use crate::mlflow::Service;

/// Limits of a [`Server`]. The defaults suit one trusted machine or a private network.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Largest artifact upload (`PUT` under `mlflow-artifacts`; default 16 GiB); a larger one
    /// is answered 413, unread when its `Content-Length` says so, and stores nothing. Uploads
    /// are streamed to the artifact store, so this bounds disk, not memory.
    pub body_bytes_max: usize,
    /// Largest body of every other route (default 8 MiB; MLflow's client sends batches under
    /// 1 MB), so that parsing JSON stays small; never above `body_bytes_max`.
    pub json_body_bytes_max: usize,
    /// Most body bytes held by all requests together (default 256 MiB), taken as the bytes
    /// arrive and, for an upload, given back as they are written; a request whose next bytes
    /// do not fit waits for room (within its body timeout).
    pub body_bytes_in_flight_max: usize,
    /// Most requests handed to the engine at once (default 64); others wait.
    pub requests_in_flight_max: usize,
    /// Most open connections (default 1,024); further ones wait in the listen queue.
    pub connections_max: usize,
    /// Time a client has to send a request's headers, counted from the connection's start or
    /// the end of its previous reply, so it also closes idle keep-alive connections (default
    /// 60 s).
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body once its headers arrived (default
    /// 120 s); a stalled body is answered 408. An artifact upload, which may be large, has this
    /// long between any two of its pieces instead, and the rate floor over its whole length.
    pub body_read_timeout: Duration,
    /// Least average rate at which a request body must arrive, in bytes per second, once
    /// `body_rate_grace` is over (default 64 KiB/s; 0 turns the floor off); a slower body is
    /// answered 408, so a client that trickles its upload cannot hold a connection and the
    /// memory of its body for the whole `body_read_timeout`. Time the server spends waiting for
    /// body budget is not counted against the client.
    pub body_rate_min_bytes_per_second: u64,
    /// Time from a body's start during which the rate floor is not enforced (default 5 s), so
    /// that small bodies and the start of a large one never meet it.
    pub body_rate_grace: Duration,
    /// Longest a write to a client may make no progress (default 60 s); then the connection is
    /// dropped, so a client that stops reading a reply does not hold it forever.
    pub write_timeout: Duration,
    /// Longest a graceful shutdown waits for the requests already received (default 30 s);
    /// then the connections still open are closed and the caller flushes and closes the store.
    pub shutdown_drain_timeout: Duration,
    /// `Host` header patterns accepted besides mlflow server's defaults (`localhost`,
    /// `127.0.0.1`, `[::1]`, `0.0.0.0` and the bound address, any port, and private-network
    /// addresses); `*` matches any run of characters and a lone `*` accepts every host.
    pub allowed_hosts: Vec<String>,
    /// Origins whose state-changing requests (POST, PUT, PATCH, DELETE) are accepted besides
    /// this machine's and the bound address's; `*` as in `allowed_hosts`.
    pub cors_allowed_origins: Vec<String>,
    /// Threads of the async executor (default: the number of cores).
    pub worker_threads: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            body_bytes_max: usize::try_from(16u64 << 30).unwrap_or(usize::MAX),
            json_body_bytes_max: 8 << 20,
            body_bytes_in_flight_max: 256 << 20,
            requests_in_flight_max: 64,
            connections_max: 1_024,
            header_read_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(120),
            body_rate_min_bytes_per_second: 64 << 10,
            body_rate_grace: Duration::from_secs(5),
            write_timeout: Duration::from_secs(60),
            shutdown_drain_timeout: Duration::from_secs(30),
            allowed_hosts: Vec::new(),
            cors_allowed_origins: Vec::new(),
            worker_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// An error that stops the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listener or starting the runtime.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// A bound HTTP server over one [`Service`]; [`Server::run_until`] serves.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    service: Service,
    options: ServerOptions,
}

/// How often the server looks for a new manifest generation whose files to check ahead of
/// the first read (one listing of `manifest/` when there is none).
#[cfg(feature = "parquet")]
const WARM_INTERVAL: Duration = Duration::from_secs(1);

/// Checks the store's newest compacted files at the start and after each compaction (by
/// anyone), so the first chart over them does not wait for their whole-file CRC checks
/// (`Store::warm_compacted_files`). Runs until aborted; a failed round is tried again.
#[cfg(feature = "parquet")]
async fn warm_compacted_files(store: Arc<crate::Store>, stop: Arc<AtomicBool>) {
    let mut seen = None;
    loop {
        let (store, stop) = (store.clone(), stop.clone());
        let looked =
            tokio::task::spawn_blocking(move || store.warm_compacted_files(seen, &stop)).await;
        if let Ok(Ok(generation)) = looked {
            seen = Some(generation);
        }
        tokio::time::sleep(WARM_INTERVAL).await;
    }
}

impl Server {
    /// Binds `address` (port 0 picks a free port; see [`Server::local_address`]).
    pub fn bind(
        address: SocketAddr,
        service: Service,
        options: ServerOptions,
    ) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(address).map_err(io_error(format!("bind {address}")))?;
        listener
            .set_nonblocking(true)
            .map_err(io_error(format!("configure listener on {address}")))?;
        Ok(Server {
            listener,
            service,
            options,
        })
    }

    /// The address the server listens on.
    pub fn local_address(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(io_error("read the listener's address"))
    }

    /// Serves on a runtime of its own until `shutdown` completes, then stops accepting,
    /// finishes the requests already received and returns. The store is left open: flush and
    /// close it after.
    pub fn run_until<F>(self, shutdown: F) -> Result<(), ServerError>
    where
        F: Future<Output = ()> + Send,
    {
        self.runtime()?.block_on(self.serve(shutdown))
    }

    /// Serves until SIGTERM or SIGINT, then shuts down as [`Server::run_until`] does; a second
    /// signal ends the process at once (exit status 130). `ready` is called once the signal
    /// handlers are installed, so a signal sent after it is always a graceful shutdown (the
    /// place to print where the server listens).
    ///
    /// The second signal is acted on until the process exits, so also while the caller
    /// flushes and closes the store after this returns.
    pub fn run_until_signal(self, ready: impl FnOnce()) -> Result<(), ServerError> {
        let first = signals::install().map_err(io_error("install signal handlers"))?;
        ready();
        self.runtime()?.block_on(self.serve(async move {
            let _ = first.await;
        }))
    }

    fn runtime(&self) -> Result<tokio::runtime::Runtime, ServerError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.options.worker_threads.max(1))
            // Engine calls and artifact streams are each bounded by `requests_in_flight_max`;
            // a few more threads serve tokio's own blocking work.
            .max_blocking_threads(self.options.requests_in_flight_max.max(1) * 2 + 4)
            .enable_io()
            .enable_time()
            .thread_name("runlog-serve")
            .build()
            .map_err(io_error("start the async runtime"))
    }

    async fn serve<F: Future<Output = ()>>(self, shutdown: F) -> Result<(), ServerError> {
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(io_error("register the listener"))?;
        let bound = listener
            .local_addr()
            .map_err(io_error("read the listener's address"))?;
        let stop_warming = Arc::new(AtomicBool::new(false));
        #[cfg(feature = "parquet")]
        let warm = tokio::spawn(warm_compacted_files(
            self.service.store().clone(),
            stop_warming.clone(),
        ));
        let shared = Arc::new(http::Shared::new(self.service, &self.options, bound));
        let connections = Arc::new(Semaphore::new(self.options.connections_max.max(1)));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.options.header_read_timeout)
            .keep_alive(true);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => permit,
                () = &mut shutdown => break,
            };
            let Ok(permit) = permit else { break };
            let stream = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let stream = match stream {
                Ok((stream, _peer)) => stream,
                // Out of file descriptors, or a connection reset before it was accepted: the
                // listener is still fine. Pause so a persistent error does not spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Small replies must not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let connection = builder.serve_connection(
                TokioIo::new(deadline::WriteDeadline::new(
                    stream,
                    self.options.write_timeout,
                )),
                service_fn(move |request| http::answer(shared.clone(), request)),
            );
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                // A connection's error (reset, timeout, malformed request) ends that connection
                // only; hyper has answered what could be answered.
                let _ = connection.await;
                drop(permit);
            });
        }
        drop(listener);
        // An abort does not stop a check already running on a blocking thread, which the
        // runtime's drop would then wait for: the flag ends it after its current file.
        stop_warming.store(true, Ordering::Relaxed);
        #[cfg(feature = "parquet")]
        warm.abort();
        // Past the drain time the connections still open are dropped with the runtime, so a
        // client that neither sends nor reads cannot hold the shutdown.
        let _ =
            tokio::time::timeout(self.options.shutdown_drain_timeout, graceful.shutdown()).await;
        Ok(())
    }
}
