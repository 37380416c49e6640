//! The HTTP server over real HTTP on 127.0.0.1, embedded in the test process: health and
//! version, routing under both prefixes, the body limit, malformed and stalled requests, and
//! the artifact routes with every escape attempt.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use runlog::RunId;
use runlog::server::ServerOptions;
use serde_json::json;

use crate::server_util::{Client, Embedded};

/// Sends `request` as is on a new connection and reads until the server closes it; the status
/// and the body of the first answer (`None` if the server closed without answering).
fn raw(client: &Client, request: &[u8]) -> Option<(u16, String)> {
    let answer = exchange(client, request);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// Sends `request` as is on a new connection and reads every byte until the server closes it.
fn exchange(client: &Client, request: &[u8]) -> Vec<u8> {
    let address = client.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    // A guard against a hung test, not an assertion about time.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn health_and_version_answer_once_the_store_is_open() {
    let server = Embedded::start();
    let health = server.client.get("/health");
    assert_eq!((health.status, health.text().as_str()), (200, "OK"));
    let version = server.client.get("/version");
    assert_eq!(version.status, 200);
    assert_eq!(version.text(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn tracking_routes_answer_under_both_prefixes_and_unknown_ones_are_mlflow_errors() {
    let server = Embedded::start();
    let created = server
        .client
        .post("experiments/create", json!({"name": "both"}));
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["experiment_id"].clone();
    for prefix in ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"] {
        let found = server.client.get(&format!(
            "{prefix}/experiments/get-by-name?experiment_name=both"
        ));
        assert_eq!(found.status, 200, "{prefix}: {}", found.text());
        assert_eq!(found.json()["experiment"]["experiment_id"], id);
        assert_eq!(found.content_type, "application/json");
    }
    for path in [
        "/api/2.0/mlflow/no-such-endpoint",
        "/api/2.0/other",
        "/",
        "/healthz",
    ] {
        let answer = server.client.get(path);
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.error_code(), "ENDPOINT_NOT_FOUND", "{path}");
    }
    // Only GET reads health; anything else is the protocol layer's business.
    let posted = server.client.post_bytes("/health", b"");
    assert_eq!(posted.error_code(), "ENDPOINT_NOT_FOUND");
}

#[test]
fn a_body_over_the_limit_is_413_in_mlflows_shape_and_writes_nothing() {
    let server = Embedded::with(ServerOptions {
        body_bytes_max: 4_096,
        ..ServerOptions::default()
    });
    let (_, run) = server.client.create_run();
    let metrics: Vec<_> = (0..200)
        .map(|step| json!({"key": "loss", "value": 1.0, "timestamp": 1, "step": step}))
        .collect();
    let body = json!({"run_id": run, "metrics": metrics}).to_string();
    assert!(body.len() > 4_096);
    let refused = server
        .client
        .post_bytes("/api/2.0/mlflow/runs/log-batch", body.as_bytes());
    assert_eq!(refused.status, 413);
    assert_eq!(refused.error_code(), "INVALID_PARAMETER_VALUE");
    assert!(refused.json()["message"].as_str().unwrap().contains("4096"));

    // A chunked body (no Content-Length) is cut off at the limit too.
    let chunk = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let request = format!(
        "POST /api/2.0/mlflow/runs/log-batch HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
    );
    let (status, answer) = raw(&server.client, request.as_bytes()).unwrap();
    assert_eq!(status, 413, "{answer}");

    let id: RunId = run.parse().unwrap();
    assert!(server.store.run(id).unwrap().metrics.is_empty());
    // The server goes on.
    assert_eq!(server.client.get("/health").status, 200);
}

#[test]
fn malformed_requests_get_clear_errors_and_the_server_goes_on() {
    let server = Embedded::start();
    let (_, run) = server.client.create_run();
    let bad_json = server
        .client
        .post_bytes("/api/2.0/mlflow/runs/log-metric", b"{\"run_id\": ");
    assert_eq!(bad_json.status, 400);
    assert_eq!(bad_json.error_code(), "MALFORMED_REQUEST");
    let wrong_type = server.client.post(
        "runs/log-metric",
        json!({"run_id": run, "key": "k", "value": "high", "timestamp": 1}),
    );
    assert_eq!(wrong_type.status, 400);
    assert_eq!(wrong_type.error_code(), "INVALID_PARAMETER_VALUE");

    // Not HTTP at all: hyper answers 400 (or closes) and the server keeps serving.
    let garbage = raw(&server.client, b"\x00\x01 not http\r\n\r\n");
    assert!(matches!(garbage, None | Some((400, _))), "{garbage:?}");
    let bad_length = raw(
        &server.client,
        b"POST /api/2.0/mlflow/runs/log-metric HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: lots\r\n\r\n",
    );
    assert!(
        matches!(bad_length, None | Some((400, _))),
        "{bad_length:?}"
    );
    let id: RunId = run.parse().unwrap();
    assert!(server.store.run(id).unwrap().metrics.is_empty());
    assert_eq!(server.client.get("/health").status, 200);
}

#[test]
fn a_stalled_body_is_answered_408_and_stalled_headers_are_dropped() {
    let server = Embedded::with(ServerOptions {
        body_read_timeout: Duration::from_millis(200),
        header_read_timeout: Duration::from_millis(200),
        ..ServerOptions::default()
    });
    let (_, run) = server.client.create_run();
    // Promises 500 bytes, sends 10, then waits: the server must not wait forever.
    let stalled = b"POST /api/2.0/mlflow/runs/log-metric HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                    Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"run_id\":";
    let (status, body) = raw(&server.client, stalled).unwrap();
    assert_eq!(status, 408, "{body}");
    // Half a request line, then silence: the connection is closed without an answer or with
    // 408, never left open.
    let half = raw(&server.client, b"GET /hea");
    assert!(matches!(half, None | Some((408, _))), "{half:?}");
    let id: RunId = run.parse().unwrap();
    assert!(server.store.run(id).unwrap().metrics.is_empty());
    assert_eq!(server.client.get("/health").status, 200);
}

const ARTIFACTS: &str = "/api/2.0/mlflow-artifacts/artifacts";

#[test]
fn artifacts_go_up_and_down_are_listed_and_deleted() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    let root = format!("{experiment}/{run}/artifacts");
    for (path, content) in [
        ("a.txt", &b"hello"[..]),
        ("dd/b.txt", b"bb"),
        ("dd/ee/c.json", b"{}"),
        ("with%20space.bin", &[0, 1, 2, 255]),
    ] {
        let put = client.put(&format!("{ARTIFACTS}/{root}/{path}"), content);
        assert_eq!(put.status, 200, "{path}: {}", put.text());
    }
    let got = client.get(&format!("{ARTIFACTS}/{root}/with%20space.bin"));
    assert_eq!(
        (got.status, got.body.as_slice()),
        (200, &[0, 1, 2, 255][..])
    );
    let got = client.get(&format!(
        "/ajax-api/2.0/mlflow-artifacts/artifacts/{root}/a.txt"
    ));
    assert_eq!((got.status, got.text().as_str()), (200, "hello"));

    // The mlflow-artifacts listing: base names, sizes for files only.
    let listed = client.get(&format!("{ARTIFACTS}?path={root}"));
    assert_eq!(
        listed.json(),
        json!({"files": [
            {"path": "a.txt", "is_dir": false, "file_size": 5},
            {"path": "dd", "is_dir": true},
            {"path": "with space.bin", "is_dir": false, "file_size": 4},
        ]})
    );
    let listed = client.get(&format!("{ARTIFACTS}?path={root}/dd"));
    assert_eq!(
        listed.json(),
        json!({"files": [
            {"path": "b.txt", "is_dir": false, "file_size": 2},
            {"path": "ee", "is_dir": true},
        ]})
    );
    assert_eq!(
        client.get(&format!("{ARTIFACTS}?path={root}/a.txt")).json(),
        json!({})
    );
    assert_eq!(
        client.get(&format!("{ARTIFACTS}?path={root}/none")).json(),
        json!({})
    );

    // The tracking API's listing: paths relative to the run's folder, and its root URI.
    let tracking = client.get(&format!(
        "/api/2.0/mlflow/artifacts/list?run_id={run}&path=dd"
    ));
    assert_eq!(tracking.status, 200, "{}", tracking.text());
    assert_eq!(
        tracking.json(),
        json!({
            "root_uri": format!("mlflow-artifacts:/{root}"),
            "files": [
                {"path": "dd/b.txt", "is_dir": false, "file_size": 2},
                {"path": "dd/ee", "is_dir": true},
            ]
        })
    );

    // Missing files, directories, other runs.
    let missing = client.get(&format!("{ARTIFACTS}/{root}/nope.txt"));
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (404, "RESOURCE_DOES_NOT_EXIST")
    );
    let directory = client.get(&format!("{ARTIFACTS}/{root}/dd"));
    assert_eq!(directory.status, 400);
    let other = RunId(u128::from_str_radix(&run, 16).unwrap() ^ 1);
    let unknown = client.put(
        &format!("{ARTIFACTS}/{experiment}/{other}/artifacts/x"),
        b"x",
    );
    assert_eq!(unknown.status, 404);
    let wrong_experiment = client.get(&format!("{ARTIFACTS}/9999/{run}/artifacts/a.txt"));
    assert_eq!(wrong_experiment.status, 404);

    // Write-once: the same path again is refused and keeps its content.
    let again = client.put(&format!("{ARTIFACTS}/{root}/a.txt"), b"other");
    assert_eq!(again.error_code(), "RESOURCE_ALREADY_EXISTS");
    assert_eq!(
        client.get(&format!("{ARTIFACTS}/{root}/a.txt")).text(),
        "hello"
    );

    // Delete a file, then a folder with everything under it.
    assert_eq!(
        client.delete(&format!("{ARTIFACTS}/{root}/a.txt")).status,
        200
    );
    assert_eq!(client.get(&format!("{ARTIFACTS}/{root}/a.txt")).status, 404);
    assert_eq!(client.delete(&format!("{ARTIFACTS}/{root}/dd")).status, 200);
    assert_eq!(client.delete(&format!("{ARTIFACTS}/{root}/dd")).status, 404);
    let left = client.get(&format!("{ARTIFACTS}?path={root}"));
    assert_eq!(
        left.json(),
        json!({"files": [{"path": "with space.bin", "is_dir": false, "file_size": 4}]})
    );

    // Multipart and presigned transfers are not offered.
    for (answer, what) in [
        (
            client.post_bytes(
                &format!("/api/2.0/mlflow-artifacts/mpu/create/{root}"),
                br#"{"path": "big.bin", "num_parts": 2}"#,
            ),
            "mpu",
        ),
        (
            client.get(&format!("/api/2.0/mlflow-artifacts/presigned/{root}/x")),
            "presigned",
        ),
    ] {
        assert_eq!(answer.status, 501, "{what}");
        assert_eq!(answer.error_code(), "NOT_IMPLEMENTED", "{what}");
    }
}

/// An upload refused before its body is read (no such run) is answered at once, and the
/// connection is then useless for another request: its next bytes are the rest of the body. The
/// answer says so (`Connection: close`), or a client that pools connections sends its next
/// request on one the server is closing and sees it cut off.
#[test]
fn an_upload_refused_before_its_body_is_read_closes_its_connection() {
    let server = Embedded::start();
    let (experiment, run) = server.client.create_run();
    let other = RunId(u128::from_str_radix(&run, 16).unwrap() ^ 1);
    let address = server.client.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    // A guard against a hung test, not an assertion about time.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // The headers announce a body that is never sent: the refusal cannot wait for it.
    let request = format!(
        "PUT {ARTIFACTS}/{experiment}/{other}/artifacts/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Length: 1000000\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "closed before the answer");
        answer.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");

    // A request the host check refuses, its body still to come, likewise.
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let request = format!(
        "PUT {ARTIFACTS}/{experiment}/{run}/artifacts/x HTTP/1.1\r\nHost: evil.example\r\n\
         Content-Length: 1000000\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "closed before the answer");
        answer.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
}

#[test]
fn artifact_paths_that_try_to_escape_are_refused_and_write_nothing() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    let root = format!("{experiment}/{run}/artifacts");
    let attempts = [
        format!("{root}/../../../escape.txt"),
        format!("{root}/a/../../escape.txt"),
        format!("{root}/%2e%2e/%2e%2e/escape.txt"),
        format!("{root}/a%2F..%2F..%2Fescape.txt"),
        format!("{root}/a%2f..%2f..%2fescape.txt"),
        format!("{root}/..%5C..%5Cescape.txt"),
        format!("{root}/a%00.txt"),
        format!("{root}/a%0a.txt"),
        format!("{root}//etc/escape.txt"),
        format!("{root}/./escape.txt"),
        format!("{root}/a\\..\\escape.txt"),
        format!("../{run}/artifacts/escape.txt"),
        "%2Fetc%2Fescape.txt".to_string(),
        "/etc/escape.txt".to_string(),
    ];
    for attempt in &attempts {
        let path = format!("{ARTIFACTS}/{attempt}");
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 4\r\n\r\nevil"
        );
        let (status, body) = raw(client, request.as_bytes()).unwrap();
        assert_eq!(status, 400, "{attempt}: {body}");
        assert!(
            body.contains("INVALID_PARAMETER_VALUE"),
            "{attempt}: {body}"
        );
        let (status, _) = raw(client, &get_request(&path)).unwrap();
        assert_eq!(status, 400, "GET {attempt}");
    }
    let listing = raw(
        client,
        &get_request(&format!("{ARTIFACTS}?path={root}/../..")),
    );
    assert_eq!(listing.map(|(status, _)| status), Some(400));
    let tracking = client.get(&format!(
        "/api/2.0/mlflow/artifacts/list?run_id={run}&path=../.."
    ));
    assert_eq!(tracking.status, 400);

    // Nothing was written anywhere: no artifact listed, no file outside the run's folder.
    let id: RunId = run.parse().unwrap();
    assert!(server.store.run(id).unwrap().artifacts.is_empty());
    let store_dir = server.store.root().to_path_buf();
    let mut stack = vec![store_dir.parent().unwrap().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            assert!(
                !path.to_string_lossy().contains("escape"),
                "{} was written",
                path.display()
            );
            if path.is_dir() && path.starts_with(&store_dir) {
                stack.push(path);
            }
        }
    }
}

#[test]
fn requests_without_a_body_do_not_wait_for_the_body_budget() {
    // The budget holds exactly one largest body; one request holding a few bytes of it must
    // not stop requests that have no body at all.
    let server = Embedded::with(ServerOptions {
        body_bytes_max: 1 << 20,
        body_bytes_in_flight_max: 1 << 20,
        ..ServerOptions::default()
    });
    let (_, run) = server.client.create_run();
    let address = server.client.base.trim_start_matches("http://");
    let mut held = TcpStream::connect(address).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    held.write_all(
        b"POST /api/2.0/mlflow/runs/log-metric HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n\
          Content-Type: application/json\r\nContent-Length: 10\r\n\r\n",
    )
    .unwrap();
    // `100 Continue` comes once the handler reads the body, holding its share of the budget.
    let mut continued = [0u8; 12];
    held.read_exact(&mut continued).unwrap();
    assert_eq!(&continued, b"HTTP/1.1 100");

    // A guard against a hang, not a timing assertion: a GET that reserved a whole largest
    // body would wait for the held request forever.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = format!(
        "{}/api/2.0/mlflow/runs/get?run_id={run}",
        server.client.base
    );
    let answer = agent.get(&url).call();
    assert_eq!(answer.map(|a| a.status().as_u16()).ok(), Some(200));
    drop(held);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = Embedded::with(ServerOptions {
        header_read_timeout: Duration::from_millis(200),
        ..ServerOptions::default()
    });
    let address = server.client.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    // A guard against a hang, not a timing assertion: an idle connection left open fails here.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 256];
    while !answer.ends_with(b"\r\n\r\nOK") {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "closed before the answer");
        answer.extend_from_slice(&buffer[..read]);
    }
    // Kept alive after the answer, then idle: the server closes it.
    let after = stream.read(&mut buffer);
    assert!(matches!(after, Ok(0)), "{after:?}");
}

#[test]
fn json_routes_take_the_small_limit_and_only_artifact_uploads_the_large_one() {
    let server = Embedded::with(ServerOptions {
        body_bytes_max: 1 << 20,
        json_body_bytes_max: 64 << 10,
        body_read_timeout: Duration::from_secs(5),
        ..ServerOptions::default()
    });
    let (experiment, run) = server.client.create_run();
    // Only the headers: a body declared over the JSON limit is refused before it is sent
    // (sending it would race the server's close and reset the connection).
    let declared = format!(
        "POST /api/2.0/mlflow/runs/log-metric HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        128 << 10
    );
    let (status, answer) = raw(&server.client, declared.as_bytes()).unwrap();
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("65536"), "{answer}");
    // A chunked body is refused once what arrived passes the limit.
    let chunked = format!(
        "POST /api/2.0/mlflow/runs/log-metric HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}",
        128 << 10,
        " ".repeat((64 << 10) + 1)
    );
    let (status, answer) = raw(&server.client, chunked.as_bytes()).unwrap();
    assert_eq!(status, 413, "{answer}");
    let id: RunId = run.parse().unwrap();
    assert!(server.store.run(id).unwrap().metrics.is_empty());

    let content = vec![7u8; 512 << 10];
    let put = server.client.put(
        &format!("{ARTIFACTS}/{experiment}/{run}/artifacts/big.bin"),
        &content,
    );
    assert_eq!(put.status, 200, "{}", put.text());
}

/// Files in `dir` whose names say they are being written (`.tmp-<hex>`).
fn temporary_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(".tmp-"))
            .count()
    })
}

/// Polls `done` for up to 60 s: a guard against a hang, not a timing assertion.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_upload_streams_to_disk_and_one_cut_off_midway_stores_nothing() {
    let server = Embedded::with(ServerOptions {
        body_rate_min_bytes_per_second: 0,
        ..ServerOptions::default()
    });
    let (experiment, run) = server.client.create_run();
    let id: RunId = run.parse().unwrap();
    let run_dir = server.store.root().join("artifacts").join(id.to_string());
    let address = server.client.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    let head = format!(
        "PUT {ARTIFACTS}/{experiment}/{run}/artifacts/model.bin HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        4 << 20
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![1u8; 1 << 20]).unwrap();
    // A quarter of the body has arrived, and the artifact's file is already being written.
    eventually("the upload's temporary file appears", || {
        temporary_files(&run_dir) == 1
    });
    drop(stream);
    eventually("the cut-off upload's temporary file goes", || {
        temporary_files(&run_dir) == 0
    });
    assert!(server.store.run(id).unwrap().artifacts.is_empty());
    assert!(!run_dir.join("model.bin").exists());

    // The path is free: a whole upload of it is stored.
    let content: Vec<u8> = (0..(3 << 20) as u32).map(|i| (i % 251) as u8).collect();
    let put = server.client.put(
        &format!("{ARTIFACTS}/{experiment}/{run}/artifacts/model.bin"),
        &content,
    );
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(
        server.store.read_artifact(id, "model.bin").unwrap(),
        content
    );
}

#[test]
fn a_download_streams_the_file_and_a_damaged_one_is_cut_off_not_finished() {
    let server = Embedded::start();
    let (experiment, run) = server.client.create_run();
    let id: RunId = run.parse().unwrap();
    let content: Vec<u8> = (0..(3 << 20) as u32).map(|i| (i % 253) as u8).collect();
    let url = format!("{ARTIFACTS}/{experiment}/{run}/artifacts/weights.bin");
    assert_eq!(server.client.put(&url, &content).status, 200);
    let got = server.client.get(&url);
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), content.len());
    assert!(got.body == content, "the streamed content differs");

    // The same size, one byte changed near the end: the status and most of the body are sent
    // before the check at the end fails, so the answer must be cut off, never completed.
    let file = server
        .store
        .root()
        .join("artifacts")
        .join(id.to_string())
        .join("weights.bin");
    let mut damaged = content.clone();
    let last = damaged.len() - 10;
    damaged[last] ^= 0xff;
    std::fs::write(&file, &damaged).unwrap();
    let (status, body) = raw_bytes(
        &server.client,
        format!("GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(
        body.len() < content.len(),
        "a damaged file's download ended whole ({} bytes)",
        body.len()
    );
    // A folder is still a whole answer in MLflow's shape.
    let folder = server
        .client
        .get(&format!("{ARTIFACTS}/{experiment}/{run}/artifacts"));
    assert_ne!(folder.status, 200);
}

/// Sends `request` and reads the answer until the server closes: its status and the bytes of
/// its body that arrived.
fn raw_bytes(client: &Client, request: &[u8]) -> (u16, Vec<u8>) {
    let answer = exchange(client, request);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer with headers");
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, answer[split + 4..].to_vec())
}

#[test]
fn an_upload_the_engine_refuses_is_answered_at_once_whatever_the_client_sends() {
    let server = Embedded::with(ServerOptions {
        body_read_timeout: Duration::from_secs(600),
        body_rate_min_bytes_per_second: 0,
        ..ServerOptions::default()
    });
    let (experiment, _) = server.client.create_run();
    let missing = "0123456789abcdef0123456789abcdef";
    let address = server.client.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    // A guard against a hang, not a timing assertion: the body never comes, and only the
    // 600 s body timeout would end a wait for it.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "PUT {ARTIFACTS}/{experiment}/{missing}/artifacts/a.bin HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("RESOURCE_DOES_NOT_EXIST") {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&buffer[..read]),
            Err(error) => panic!("no answer: {error}"),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("404"), "{text}");
}

#[test]
fn an_upload_over_the_limit_stores_nothing_even_when_chunked() {
    let server = Embedded::with(ServerOptions {
        body_bytes_max: 1 << 20,
        ..ServerOptions::default()
    });
    let (experiment, run) = server.client.create_run();
    let id: RunId = run.parse().unwrap();
    let chunk = vec![b'x'; 256 << 10];
    let mut request = format!(
        "PUT {ARTIFACTS}/{experiment}/{run}/artifacts/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..5 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, answer) = raw(&server.client, &request).unwrap();
    assert_eq!(status, 413, "{answer}");
    let run_dir = server.store.root().join("artifacts").join(id.to_string());
    eventually("the refused upload's temporary file goes", || {
        temporary_files(&run_dir) == 0
    });
    assert!(server.store.run(id).unwrap().artifacts.is_empty());
    assert!(!run_dir.join("big.bin").exists());
}

#[test]
fn uploads_that_declare_large_bodies_and_send_nothing_do_not_stall_other_requests() {
    // The budget admits exactly four largest bodies; four uploads declare them and send
    // nothing, with a body timeout far longer than the test's guard.
    let server = Embedded::with(ServerOptions {
        body_bytes_max: 1 << 20,
        body_bytes_in_flight_max: 4 << 20,
        body_read_timeout: Duration::from_secs(600),
        ..ServerOptions::default()
    });
    let (experiment, run) = server.client.create_run();
    let address = server.client.base.trim_start_matches("http://");
    let stalled: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut stream = TcpStream::connect(address).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let head = format!(
                "PUT {ARTIFACTS}/{experiment}/{run}/artifacts/s{i}.bin HTTP/1.1\r\n\
                 Host: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                1 << 20
            );
            stream.write_all(head.as_bytes()).unwrap();
            // `100 Continue` comes once the handler reads the body.
            let mut continued = [0u8; 12];
            stream.read_exact(&mut continued).unwrap();
            assert_eq!(&continued, b"HTTP/1.1 100");
            stream
        })
        .collect();
    // A guard against a hang, not a timing assertion: the stalled uploads time out only after
    // 600 s, so a GET waiting for their budget fails here.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!(
        "{}/api/2.0/mlflow/runs/get?run_id={run}",
        server.client.base
    );
    let answer = agent.get(&url).call();
    assert_eq!(answer.map(|a| a.status().as_u16()).ok(), Some(200));
    drop(stalled);
}

/// A request with the given method, path, `Host` and extra header lines, and an empty JSON body
/// for writes.
fn request_with(method: &str, path: &str, host: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn a_host_that_is_not_loopback_private_or_allowed_is_refused_403() {
    let server = Embedded::start();
    let get = "/api/2.0/mlflow/experiments/search?max_results=1";
    for host in [
        "evil.example",
        "evil.example:5000",
        "localhost.evil.example",
        "",
    ] {
        let (status, body) = raw(&server.client, &request_with("GET", get, host, "", "")).unwrap();
        assert_eq!(status, 403, "{host}: {body}");
        assert!(body.contains("PERMISSION_DENIED"), "{host}: {body}");
    }
    for host in [
        "localhost",
        "localhost:5000",
        "127.0.0.1:5000",
        "[::1]:5000",
        "10.1.2.3:5000",
        "192.168.0.7",
        "172.20.0.1:80",
    ] {
        let (status, body) = raw(&server.client, &request_with("GET", get, host, "", "")).unwrap();
        assert_eq!(status, 200, "{host}: {body}");
    }
    // Health and version are for probes, whatever name they use.
    for path in ["/health", "/version"] {
        let (status, _) = raw(
            &server.client,
            &request_with("GET", path, "evil.example", "", ""),
        )
        .unwrap();
        assert_eq!(status, 200, "{path}");
    }
}

#[test]
fn a_state_changing_request_from_another_origin_is_refused_403_and_changes_nothing() {
    let server = Embedded::start();
    let create = "/api/2.0/mlflow/experiments/create";
    let body = r#"{"name": "from-a-page"}"#;
    let evil = "Origin: http://evil.example\r\n";
    let (status, answer) = raw(
        &server.client,
        &request_with("POST", create, "127.0.0.1", evil, body),
    )
    .unwrap();
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("PERMISSION_DENIED"), "{answer}");
    let found = server
        .client
        .get("/api/2.0/mlflow/experiments/get-by-name?experiment_name=from-a-page");
    assert_eq!(found.status, 404, "{}", found.text());
    // A read from another origin is not refused (the browser keeps its answer from the page).
    let search = "/api/2.0/mlflow/experiments/search?max_results=1";
    let (status, _) = raw(
        &server.client,
        &request_with("GET", search, "127.0.0.1", evil, ""),
    )
    .unwrap();
    assert_eq!(status, 200);
    // This machine's pages may write.
    let local = "Origin: http://localhost:3000\r\n";
    let (status, answer) = raw(
        &server.client,
        &request_with("POST", create, "127.0.0.1", local, body),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn allowed_hosts_and_origins_widen_the_checks() {
    let server = Embedded::with(ServerOptions {
        allowed_hosts: vec!["runlog.corp.example".into(), "*.lab.example".into()],
        cors_allowed_origins: vec!["https://ui.corp.example".into()],
        ..ServerOptions::default()
    });
    let search = "/api/2.0/mlflow/experiments/search?max_results=1";
    for (host, expected) in [
        ("runlog.corp.example", 200),
        ("a.lab.example:5000", 200),
        ("other.corp.example", 403),
    ] {
        let (status, _) = raw(&server.client, &request_with("GET", search, host, "", "")).unwrap();
        assert_eq!(status, expected, "{host}");
    }
    let create = "/api/2.0/mlflow/experiments/create";
    for (origin, name, expected) in [
        ("https://ui.corp.example", "ui", 200),
        ("https://other.corp.example", "other", 403),
    ] {
        let headers = format!("Origin: {origin}\r\n");
        let body = format!("{{\"name\": \"{name}\"}}");
        let request = request_with("POST", create, "runlog.corp.example", &headers, &body);
        let (status, answer) = raw(&server.client, &request).unwrap();
        assert_eq!(status, expected, "{origin}: {answer}");
    }
}

#[test]
fn artifact_paths_the_file_system_cannot_take_are_400_naming_the_relative_path() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    let root = format!("{ARTIFACTS}/{experiment}/{run}/artifacts");
    let store_dir = server.store_dir().display().to_string();
    assert_eq!(client.put(&format!("{root}/a.txt"), b"a").status, 200);
    assert_eq!(client.put(&format!("{root}/dd/b.txt"), b"b").status, 200);

    let long = "n".repeat(300);
    for path in ["a.txt/b.txt", "a.txt/deeper/c.txt", long.as_str()] {
        let put = client.put(&format!("{root}/{path}"), b"x");
        assert_eq!(put.status, 400, "{path}: {}", put.text());
        assert_eq!(put.error_code(), "INVALID_PARAMETER_VALUE", "{path}");
        let message = put.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(path), "{message}");
        assert!(!message.contains(&store_dir), "{message}");
    }
    // A folder's name as a file's: the client's mistake, never a 500.
    let put = client.put(&format!("{root}/dd"), b"x");
    assert!((400..500).contains(&put.status), "{}", put.text());

    // A name that fits the file system is stored, however close to its limit.
    let near_limit = "m".repeat(250);
    let put = client.put(&format!("{root}/{near_limit}"), b"near");
    assert_eq!(put.status, 200, "{}", put.text());
    let got = client.get(&format!("{root}/{near_limit}"));
    assert_eq!((got.status, got.body.as_slice()), (200, &b"near"[..]));
}

/// Stops `server` on another thread; whether it stopped within a guard far longer than its
/// drain time (a guard against a hang, not a timing assertion).
fn stops(mut server: Embedded) -> bool {
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.stop();
        let _ = done.send(());
    });
    stopped.recv_timeout(Duration::from_secs(60)).is_ok()
}

#[test]
fn the_shutdown_drain_is_bounded_by_its_timeout() {
    let server = Embedded::with(ServerOptions {
        body_read_timeout: Duration::from_secs(600),
        shutdown_drain_timeout: Duration::from_millis(500),
        ..ServerOptions::default()
    });
    let (_, run) = server.client.create_run();
    let address = server.client.base.trim_start_matches("http://");
    // A request whose body never comes: the drain alone would wait for it 600 s.
    let mut held = TcpStream::connect(address).unwrap();
    held.write_all(
        format!(
            "POST /api/2.0/mlflow/runs/log-metric HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Expect: 100-continue\r\nContent-Length: 100\r\n\r\n{{\"run_id\": \"{run}\""
        )
        .as_bytes(),
    )
    .unwrap();
    held.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut continued = [0u8; 12];
    held.read_exact(&mut continued).unwrap();
    assert_eq!(&continued, b"HTTP/1.1 100");
    assert!(stops(server), "the drain waited for the stalled request");
    drop(held);
}

#[test]
fn a_client_that_stops_reading_a_reply_is_dropped_after_the_write_timeout() {
    let server = Embedded::with(ServerOptions {
        write_timeout: Duration::from_millis(500),
        shutdown_drain_timeout: Duration::from_secs(600),
        ..ServerOptions::default()
    });
    let (experiment, run) = server.client.create_run();
    // Larger than what the sockets' buffers on both sides hold.
    let path = format!("{ARTIFACTS}/{experiment}/{run}/artifacts/large.bin");
    let put = server.client.put(&path, &vec![1u8; 24 << 20]);
    assert_eq!(put.status, 200, "{}", put.text());
    let address = server.client.base.trim_start_matches("http://");
    let mut reader = TcpStream::connect(address).unwrap();
    reader
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    // Its reply is under way and never read: the drain alone would wait for it 600 s.
    let mut first = [0u8; 12];
    reader.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(stops(server), "the stalled reply held the connection");
    drop(reader);
}

/// Whether `name` has the shape of a name MLflow's server makes up: `<adjective>-<noun>-<n>`,
/// lower-case words, `n` from 0 to 1000, at most 20 characters.
fn is_generated_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    let [adjective, noun, number] = parts[..] else {
        return false;
    };
    let is_word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase());
    name.len() <= 20
        && is_word(adjective)
        && is_word(noun)
        && number.parse::<u32>().is_ok_and(|n| n <= 1_000)
}

#[test]
fn a_run_created_without_a_name_gets_a_made_up_name_of_mlflows_shape() {
    const RUNS: usize = 8;
    let server = Embedded::start();
    let mut names = std::collections::BTreeSet::new();
    for index in 0..RUNS {
        // Without `run_name`, and with an empty one, as MLflow's client sends either.
        let body = if index % 2 == 0 {
            json!({"experiment_id": "0"})
        } else {
            json!({"experiment_id": "0", "run_name": ""})
        };
        let created = server.client.post("runs/create", body);
        assert_eq!(created.status, 200, "{}", created.text());
        let run = &created.json()["run"];
        let name = run["info"]["run_name"].as_str().unwrap().to_string();
        assert!(is_generated_name(&name), "{name:?}");
        let tags = run["data"]["tags"].as_array().unwrap();
        let tag = tags.iter().find(|t| t["key"] == "mlflow.runName");
        assert_eq!(
            tag.map(|t| t["value"].clone()),
            Some(json!(name)),
            "{tags:?}"
        );
        names.insert(name);
    }
    // About 1.3 billion names: two alike among eight is a one-in-ten-million event, and the
    // allowance of one keeps even that from failing the test.
    assert!(names.len() >= RUNS - 1, "{names:?}");

    // A name given as the tag alone is kept.
    let body =
        json!({"experiment_id": "0", "tags": [{"key": "mlflow.runName", "value": "tagged"}]});
    let created = server.client.post("runs/create", body);
    assert_eq!(created.json()["run"]["info"]["run_name"], "tagged");
}

#[test]
fn an_upload_slower_than_the_rate_floor_is_cut_off_with_408_after_its_grace() {
    let server = Embedded::with(ServerOptions {
        body_rate_min_bytes_per_second: 1 << 10,
        body_rate_grace: Duration::from_millis(300),
        ..ServerOptions::default()
    });
    // A real run's path: the server checks the path before it reads a byte of the body.
    let (experiment, run) = server.client.create_run();
    let path = format!("{ARTIFACTS}/{experiment}/{run}/artifacts/trickle.bin");
    let address = server.client.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&address).unwrap();
    // A guard against a hung test, not an assertion about time.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // One byte every 20 ms, far below 1 KiB/s, until the server answers or closes: the body
    // timeout (120 s) is not what ends it.
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..3_000 {
        if stream.write_all(b"x").is_err() {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("slower than the server's floor"), "{text}");
    assert_eq!(
        server.client.get(&path).status,
        404,
        "the cut upload was kept"
    );
    assert_eq!(server.client.get("/health").status, 200);
}

#[test]
fn an_upload_within_its_grace_or_with_the_floor_off_is_never_cut_off() {
    for (floor, grace) in [(1 << 30, Duration::from_secs(30)), (0, Duration::ZERO)] {
        let server = Embedded::with(ServerOptions {
            body_rate_min_bytes_per_second: floor,
            body_rate_grace: grace,
            ..ServerOptions::default()
        });
        let (_, run) = server.client.create_run();
        let body =
            json!({"run_id": run, "key": "k", "value": 1.0, "timestamp": 1, "step": 0}).to_string();
        let address = server.client.base.trim_start_matches("http://").to_string();
        let mut stream = TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let head = format!(
            "POST /api/2.0/mlflow/runs/log-metric HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        // Slow for the floor of 1 GiB/s, but whole within its grace; any pace with the floor off.
        for byte in body.as_bytes() {
            stream.write_all(&[*byte]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "floor {floor}: {answer}"
        );
    }
}
