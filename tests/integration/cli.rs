//! The `runlog` binary, driven end to end: demo, ingest (good and malformed input), the
//! inspection commands in every format, plot, compact, export, stats, verify on an intact and
//! on a deliberately corrupted store, a closed pipe, and how errors are reported.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn runlog(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runlog"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("RUNLOG_STORE")
        .output()
        .unwrap()
}

fn ok(store: &Path, args: &[&str]) -> String {
    let output = runlog(store, args);
    assert!(
        output.status.success(),
        "runlog {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn json(store: &Path, args: &[&str]) -> Vec<Value> {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    let text = ok(store, &args);
    match serde_json::from_str(&text).unwrap() {
        Value::Array(rows) => rows,
        other => panic!("not an array: {other}"),
    }
}

fn ingest(store: &Path, input: &str, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runlog"))
        .arg("--store")
        .arg(store)
        .arg("ingest")
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_demo_logs_compacts_and_every_inspection_command_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = ok(
        &store,
        &["demo", "--runs", "4", "--steps", "600", "--keys", "5"],
    );
    assert!(out.contains("Best runs by val/acc"), "{out}");
    assert!(out.contains("trial-001"), "{out}");

    let experiments = json(&store, &["experiments"]);
    assert_eq!(experiments.len(), 1);
    assert_eq!(experiments[0]["name"], "demo-sweep");
    assert_eq!(experiments[0]["runs"], 4);

    let runs = json(
        &store,
        &["runs", "demo-sweep", "--order-by", "metrics.`val/acc` DESC"],
    );
    assert_eq!(runs.len(), 4);
    let accs: Vec<f64> = runs
        .iter()
        .map(|r| r["metrics.val/acc"].as_f64().unwrap())
        .collect();
    assert!(accs.windows(2).all(|w| w[0] >= w[1]), "{accs:?}");
    let csv = ok(
        &store,
        &[
            "runs",
            "demo-sweep",
            "--filter",
            "params.lr = '0.001'",
            "--format",
            "csv",
        ],
    );
    assert!(csv.starts_with("run_id,name,status,start_time,"), "{csv}");
    assert!(csv.lines().count() >= 2, "{csv}");

    let points = json(
        &store,
        &["history", "trial-001", "val/loss", "--steps", "10..20"],
    );
    let steps: Vec<i64> = points.iter().map(|p| p["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, (10..20).collect::<Vec<_>>());
    let buckets = json(
        &store,
        &["history", "trial-002", "train/loss", "--max-points", "7"],
    );
    assert!(!buckets.is_empty() && buckets.len() <= 7);
    let counted: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 600);

    let compared = json(
        &store,
        &[
            "compare",
            "trial-001",
            "trial-003",
            "--keys",
            "val/loss,lr",
            "--agg",
            "count",
        ],
    );
    assert_eq!(compared.len(), 2);
    assert_eq!(compared[0]["val/loss"], 600);
    assert_eq!(compared[1]["lr"], 600);
    // By id as well as by name.
    let id = runs[0]["run_id"].as_str().unwrap().to_string();
    let by_id = json(&store, &["compare", &id, "--keys", "val/acc"]);
    assert_eq!(by_id[0]["run_id"], id.as_str());

    for name in ["curves.svg", "curves.png"] {
        let path = dir.path().join(name);
        ok(
            &store,
            &[
                "plot",
                "trial-001",
                "trial-002",
                "--key",
                "val/loss",
                "-o",
                path.to_str().unwrap(),
            ],
        );
        let bytes = std::fs::read(&path).unwrap();
        if name.ends_with("svg") {
            let text = String::from_utf8(bytes).unwrap();
            assert!(
                text.contains("<svg") && text.contains("trial-002"),
                "{name}"
            );
        } else {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        }
    }

    let stats = json(&store, &["stats"]);
    let stat = |name: &str| {
        stats
            .iter()
            .find(|s| s["stat"] == name)
            .map(|s| s["value"].clone())
            .unwrap()
    };
    assert_eq!(stat("points"), 4 * 5 * 600);
    assert_eq!(stat("points_compacted"), 4 * 5 * 600);
    assert_eq!(stat("series"), 4 * 5);

    let export = dir.path().join("export");
    let exported = json(&store, &["export", export.to_str().unwrap()]);
    assert_eq!(exported[0]["points"], 4 * 5 * 600);
    assert!(export.join("experiments.parquet").is_file());

    let verified = runlog(&store, &["verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

#[test]
fn ingest_writes_every_event_type_and_reports_bad_lines_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let good = r#"{"type": "run", "experiment": "mnist", "run": "r1", "params": {"lr": 0.01, "opt": "adam"}, "tags": {"model": "cnn"}}
{"type": "metric", "experiment": "mnist", "run": "r1", "key": "loss", "value": 0.5, "step": 1, "timestamp": 1700000000000}
{"type": "metric", "experiment": "mnist", "run": "r1", "key": "loss", "value": "NaN", "step": 2}

{"type": "metric", "experiment": "mnist", "run": "r1", "key": "loss", "value": "-Infinity", "step": 3}
{"type": "tag", "experiment": "mnist", "run": "r1", "key": "note", "value": "ok"}
{"type": "metric", "experiment": "mnist", "run": "r2", "key": "loss", "value": 7}
{"type": "status", "experiment": "mnist", "run": "r1", "status": "FINISHED"}
"#;
    let output = ingest(&store, good, &["--format", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report[0]["lines"], 7);
    assert_eq!(report[0]["metrics"], 4);
    assert_eq!(report[0]["params"], 2);
    assert_eq!(report[0]["runs_created"], 2);

    let runs = json(
        &store,
        &["runs", "mnist", "--order-by", "attributes.run_name"],
    );
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["name"], "r1");
    assert_eq!(runs[0]["status"], "FINISHED");
    assert_eq!(runs[0]["params.lr"], "0.01");
    assert_eq!(runs[0]["metrics.loss"], "-Infinity");
    // A run without a status line stays RUNNING.
    assert_eq!(runs[1]["status"], "RUNNING");
    let points = json(&store, &["history", "r1", "loss"]);
    let values: Vec<&Value> = points.iter().map(|p| &p["value"]).collect();
    assert_eq!(
        values,
        [
            &Value::from(0.5),
            &Value::from("NaN"),
            &Value::from("-Infinity")
        ]
    );
    assert_eq!(points[0]["timestamp"], 1_700_000_000_000i64);

    // run_id targets an existing run.
    let id = runs[1]["run_id"].as_str().unwrap();
    let line = format!(
        r#"{{"type": "metric", "run_id": "{id}", "key": "loss", "value": 1.5, "step": 9}}"#
    );
    let output = ingest(&store, &line, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let points = json(&store, &["history", id, "loss"]);
    assert_eq!(points.len(), 2);

    // Malformed input: stop at the first bad line (default), keeping what came before.
    let bad = r#"{"type": "metric", "experiment": "e2", "run": "a", "key": "x", "value": 1, "step": 1}
{"type": "metric", "experiment": "e2", "run": "a", "key": "x", "value": 2, "step": 2}
{"type": "metric", "experiment": "e2", "run": "a", "key": "x", "value": 3, "step":
{"type": "metric", "experiment": "e2", "run": "a", "key": "x", "value": 4, "step": 4}
{"type": "metric", "experiment": "e2", "run": "a", "key": "x", "value": "lots", "step": 5}
{"type": "metric", "experiment": "e2", "run": "a", "key": "x", "value": 6, "stpe": 6}
{"type": "metric", "experiment": "e2", "run": "a", "key": "bad key!", "value": 7}
{"type": "metric", "experiment": "e2", "run": "a", "key": "x", "value": 8, "step": 8}
{"type": "status", "experiment": "e2", "run": "a", "status": "FINISHED", "step": 9}
"#;
    let output = ingest(&store, bad, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error_line = stderr.lines().last().unwrap();
    assert!(error_line.starts_with("runlog: error: line 3:"), "{stderr}");
    let steps = |run: &str| -> Vec<i64> {
        json(&store, &["history", run, "x"])
            .iter()
            .map(|p| p["step"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(steps("a"), [1, 2]);

    // --on-error skip: every bad line is reported with its number, every good one written.
    let renamed = bad.replace("\"run\": \"a\"", "\"run\": \"b\"");
    let output = ingest(&store, &renamed, &["--on-error", "skip"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for number in [3, 5, 6, 7, 9] {
        assert!(
            stderr.contains(&format!("skipped line {number}:")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("unknown field `stpe`"), "{stderr}");
    assert_eq!(steps("b"), [1, 2, 4, 8]);
}

#[test]
fn verify_names_the_file_and_offset_of_a_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let lines: String = (0..200)
        .map(|i| {
            format!(
                "{{\"type\": \"metric\", \"experiment\": \"e\", \"run\": \"r\", \"key\": \"k\", \"value\": {i}, \"step\": {i}}}\n"
            )
        })
        .collect();
    let output = ingest(&store, &lines, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(runlog(&store, &["verify"]).status.success());

    // Damage a record in the middle of the segment that holds the points.
    let wal = store.join(runlog::tracking::WAL_DIR);
    let segment = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = runlog::wal::segment::HEADER_BYTES + 300;
    bytes[at] ^= 0x5a;
    std::fs::write(&segment, &bytes).unwrap();

    let output = runlog(&store, &["verify"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = segment.file_name().unwrap().to_str().unwrap();
    let problem = stdout
        .lines()
        .find(|l| l.starts_with("problem"))
        .unwrap_or_else(|| panic!("no problem listed: {stdout} {stderr}"));
    assert!(problem.contains(name), "{problem}");
    assert!(stderr.contains("verify failed"), "{stderr}");
    // The offset names a record at or before the damaged byte.
    let output = runlog(&store, &["verify", "--format", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let offset = rows
        .iter()
        .find(|r| r["severity"] == "problem")
        .and_then(|r| r["offset"].as_u64())
        .unwrap();
    assert!(offset <= at as u64, "{offset} > {at}");
}

#[test]
fn a_closed_pipe_is_not_an_error_and_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(
        &store,
        &["demo", "--runs", "1", "--steps", "20000", "--keys", "1"],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_runlog"))
        .args([
            "--store",
            store.to_str().unwrap(),
            "history",
            "trial-001",
            "train/loss",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let missing = runlog(&dir.path().join("nowhere"), &["runs", "x"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("runlog: error: no store at"), "{stderr}");
    assert!(
        !dir.path().join("nowhere").exists(),
        "inspection must not create a store"
    );

    let unknown = runlog(&store, &["history", "no-such-run", "k"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(unknown.stderr).unwrap().lines().count(),
        1
    );

    // RUNLOG_STORE chooses the store when --store is absent.
    let from_env = Command::new(env!("CARGO_BIN_EXE_runlog"))
        .args(["experiments", "--format", "csv"])
        .env("RUNLOG_STORE", &store)
        .output()
        .unwrap();
    assert!(from_env.status.success());
    assert!(
        String::from_utf8(from_env.stdout)
            .unwrap()
            .contains("demo-sweep")
    );
}
