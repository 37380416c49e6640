//! Load generator for `runlog serve` (docs/BENCHMARKS.md, "Server"): starts the release
//! binary on a fresh store and a free port, drives it over HTTP/1.1 keep-alive connections from
//! this process, and prints one line per measure:
//!
//! - `log-batch`: 1,000 metrics per request, 8 connections, into 10 runs (10 M points, which
//!   the next measure reads);
//! - `log-metric`: single points, 32 connections;
//! - `get-history-bulk-interval`: 10 runs × 1 M points, 320 points per run, latency until the
//!   body is read whole (the client's JSON parse of it timed apart), twice:
//!   first with the points still in the log (as right after they were logged), then after the
//!   server is stopped, the store compacted through the library (as the server's background
//!   compaction would) and a server started again on it, asked at once and, on another
//!   start, 2 s later (each also times its first request alone);
//! - `runs/search`: 10,000 runs, a two-clause filter, 100 results, latency;
//! - server RSS with 64 clients logging, on a fresh server over a fresh store (its own
//!   process), so it is what those clients cost and nothing the measures before left behind.
//!
//! Run with `cargo bench --bench serve`; `RUNLOG_BENCH_SCALE=0.1` shrinks every count for a
//! quick check, and `RUNLOG_BENCH_ONLY=log-batch` runs the `log-batch` measure alone (on its
//! own fresh server and store, as in the full run), to profile or compare builds under it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const RUNS: usize = 10;
const POINTS_PER_RUN: usize = 1_000_000;
const BATCH_POINTS: usize = 1_000;
const SEARCH_RUNS: usize = 10_000;
/// Requests timed per latency measure.
const SAMPLES: usize = 50;

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(store: &std::path::Path) -> Server {
        // `RUNLOG_SERVE_BINARY` runs another build (another branch's) under the same load.
        let binary = std::env::var_os("RUNLOG_SERVE_BINARY")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_runlog").into());
        let mut child = Command::new(binary)
            .arg("--store")
            .arg(store)
            .args(["serve", "--port", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap()
            .to_string();
        eprintln!("{}", line.trim());
        Server { child, base }
    }

    /// (current, peak) resident set size in MiB, from /proc.
    fn rss_mib(&self) -> (f64, f64) {
        rss_of(self.child.id())
    }
}

/// (current, peak) resident set size of process `pid` in MiB, from /proc.
fn rss_of(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Server {
    /// Stops the server as SIGTERM does (drain, flush, close), so its log is sealed.
    fn stop(mut self) {
        // SAFETY: kill(2) on the child's pid, which this handle has not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

fn post(agent: &ureq::Agent, base: &str, route: &str, body: &[u8]) -> Value {
    let mut response = agent
        .post(format!("{base}/api/2.0/mlflow/{route}"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    let status = response.status();
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap();
    assert_eq!(status, 200, "{route}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn get(agent: &ureq::Agent, url: &str) -> Value {
    serde_json::from_str(&get_text(agent, url)).unwrap()
}

/// The body of a `GET` answered 200, read whole and not parsed.
fn get_text(agent: &ureq::Agent, url: &str) -> String {
    let mut response = agent.get(url).call().unwrap();
    let status = response.status();
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap();
    assert_eq!(status, 200, "{url}: {text}");
    text
}

fn scaled(count: usize) -> usize {
    let scale: f64 = std::env::var("RUNLOG_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((count as f64 * scale) as usize).max(1)
}

/// Runs `work(connection, index)` for indexes `0..total` on `connections` threads, each with
/// its own keep-alive connection; the elapsed time.
fn drive(
    connections: usize,
    total: usize,
    work: impl Fn(&ureq::Agent, usize) + Send + Sync + 'static,
) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let next = next.clone();
            let work = work.clone();
            std::thread::spawn(move || {
                let agent = agent();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return;
                    }
                    work(&agent, index);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    started.elapsed()
}

/// Median and 99th percentile of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

fn create_run(agent: &ureq::Agent, base: &str, experiment: &str, name: &str) -> String {
    let created = post(
        agent,
        base,
        "runs/create",
        json!({"experiment_id": experiment, "run_name": name})
            .to_string()
            .as_bytes(),
    );
    created["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn log_batch(server: &Server, runs: &[String]) {
    let points_per_run = scaled(POINTS_PER_RUN);
    let requests_per_run = points_per_run.div_ceil(BATCH_POINTS);
    // Bodies are made before the clock starts: the measure is the server's, not serde's here.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..requests_per_run * runs.len())
            .map(|index| {
                let run = &runs[index % runs.len()];
                let first = (index / runs.len()) * BATCH_POINTS;
                let metrics: Vec<Value> = (first..first + BATCH_POINTS)
                    .map(|step| {
                        json!({"key": "loss", "value": 1.0 / (1.0 + step as f64),
                               "timestamp": 1_700_000_000_000i64 + step as i64, "step": step})
                    })
                    .collect();
                json!({"run_id": run, "metrics": metrics})
                    .to_string()
                    .into_bytes()
            })
            .collect(),
    );
    let base = server.base.clone();
    let total = bodies.len();
    let elapsed = drive(8, total, move |agent, index| {
        post(agent, &base, "runs/log-batch", &bodies[index]);
    });
    let points = total * BATCH_POINTS;
    println!(
        "log-batch, 1,000 metrics/request, 8 connections: {points} points in {:.2} s = {:.2} M points/s ({:.0} requests/s)",
        elapsed.as_secs_f64(),
        points as f64 / elapsed.as_secs_f64() / 1e6,
        total as f64 / elapsed.as_secs_f64()
    );
}

fn log_metric(server: &Server, run: &str, connections: usize, total: usize) -> Duration {
    let base = server.base.clone();
    let run = run.to_string();
    drive(connections, total, move |agent, index| {
        let body = format!(
            r#"{{"run_id":"{run}","key":"single","value":{index},"timestamp":1700000000000,"step":{index}}}"#
        );
        post(agent, &base, "runs/log-metric", body.as_bytes());
    })
}

fn bulk_interval(server: &Server, runs: &[String], source: &str) {
    let agent = agent();
    let mut url = format!(
        "{}/api/2.0/mlflow/metrics/get-history-bulk-interval?metric_key=loss&max_results=320",
        server.base
    );
    for run in runs {
        url.push_str(&format!("&run_ids={run}"));
    }
    let started = Instant::now();
    let first = get(&agent, &url);
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    let returned = first["metrics"].as_array().map_or(0, Vec::len);
    // Timed until the body is read whole: the server's latency. Parsing the 3,200 metrics
    // into a `serde_json::Value` (the check below) is the client's work and timed apart.
    let mut parse = Vec::with_capacity(SAMPLES);
    let samples: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            let text = get_text(&agent, &url);
            let elapsed = started.elapsed();
            let parsed = Instant::now();
            let value: Value = serde_json::from_str(&text).unwrap();
            parse.push(parsed.elapsed());
            assert_eq!(value["metrics"].as_array().map_or(0, Vec::len), returned);
            elapsed
        })
        .collect();
    let (median, p99) = percentiles(samples);
    let (parse_median, _) = percentiles(parse);
    println!(
        "get-history-bulk-interval, {source}, {} runs x {} points, 320 points/run ({returned} returned): first request {first_ms:.2} ms (parse included); then median {median:.2} ms, p99 {p99:.2} ms to the body read whole (the client's JSON parse apart: median {parse_median:.2} ms)",
        runs.len(),
        scaled(POINTS_PER_RUN)
    );
}

fn search(server: &Server) {
    let agent = agent();
    let created = post(
        &agent,
        &server.base,
        "experiments/create",
        br#"{"name": "search-bench"}"#,
    );
    let experiment = created["experiment_id"].as_str().unwrap().to_string();
    let runs = scaled(SEARCH_RUNS);
    let base = server.base.clone();
    let experiment_for_runs = experiment.clone();
    drive(8, runs, move |agent, index| {
        let run = create_run(agent, &base, &experiment_for_runs, &format!("r{index}"));
        let lr = ["0.1", "0.01", "0.001"][index % 3];
        let body = json!({
            "run_id": run,
            "metrics": [{"key": "acc", "value": (index % 1000) as f64 / 1000.0, "timestamp": 1, "step": 0}],
            "params": [{"key": "lr", "value": lr}],
        });
        post(agent, &base, "runs/log-batch", body.to_string().as_bytes());
    });
    let body = json!({
        "experiment_ids": [experiment],
        "filter": "metrics.acc > 0.5 and params.lr = '0.01'",
        "max_results": 100,
    })
    .to_string();
    let first = post(&agent, &server.base, "runs/search", body.as_bytes());
    let returned = first["runs"].as_array().map_or(0, Vec::len);
    let samples: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            post(&agent, &server.base, "runs/search", body.as_bytes());
            started.elapsed()
        })
        .collect();
    let (median, p99) = percentiles(samples);
    println!(
        "runs/search, {runs} runs, two-clause filter, 100 results ({returned} returned): median {median:.2} ms, p99 {p99:.2} ms"
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let setup = agent();
    let runs: Vec<String> = (0..RUNS)
        .map(|i| create_run(&setup, &server.base, "0", &format!("bulk-{i}")))
        .collect();

    log_batch(&server, &runs);
    if std::env::var("RUNLOG_BENCH_ONLY").is_ok_and(|only| only == "log-batch") {
        // Stopped as SIGTERM does, so a profiler wrapping the server writes its data.
        server.stop();
        return;
    }
    bulk_interval(&server, &runs, "points in the log");
    server.stop();
    let started = Instant::now();
    let report = runlog::Store::open(dir.path()).unwrap().compact().unwrap();
    println!(
        "compaction through the store: {} points in {:.2} s",
        report.points,
        started.elapsed().as_secs_f64()
    );
    let server = Server::start(dir.path());
    bulk_interval(&server, &runs, "compacted, asked at once after the start");
    server.stop();
    // The server checks new compacted files in the background after a start or a
    // compaction; a chart asked for a moment later finds them checked.
    let server = Server::start(dir.path());
    std::thread::sleep(Duration::from_secs(2));
    bulk_interval(&server, &runs, "compacted, asked 2 s after the start");

    let single_run = create_run(&setup, &server.base, "0", "single");
    let total = scaled(200_000);
    let elapsed = log_metric(&server, &single_run, 32, total);
    println!(
        "log-metric, single points, keep-alive, 32 connections: {total} requests in {:.2} s = {:.0} requests/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );

    search(&server);

    drop(server);
    let rss_dir = tempfile::tempdir().unwrap();
    let server = Server::start(rss_dir.path());
    let (before, _) = server.rss_mib();
    let rss_run = create_run(&setup, &server.base, "0", "rss");
    let total = scaled(200_000);
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pid = server.child.id();
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut most = 0.0f64;
            while sampling.load(Ordering::Relaxed) {
                most = most.max(rss_of(pid).0);
                std::thread::sleep(Duration::from_millis(10));
            }
            most
        })
    };
    log_metric(&server, &rss_run, 64, total);
    sampling.store(false, Ordering::Relaxed);
    let during = sampler.join().unwrap();
    let (_, peak) = server.rss_mib();
    println!(
        "server RSS, fresh server and store, 64 clients logging {total} single points: {before:.0} MiB before, at most {during:.0} MiB while they log; peak {peak:.0} MiB"
    );
}
