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

/// A store with one experiment, `e`, holding a run `r` with one metric `k` of three points.
fn small_store(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("store");
    let lines: String = (0..3)
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
    store
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn plot_refuses_an_image_too_large_to_draw() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    for (width, height) in [("65536", "65536"), ("100000", "100000"), ("8193", "600")] {
        let output_file = dir.path().join("big.png");
        let output = runlog(
            &store,
            &[
                "plot",
                "r",
                "--key",
                "k",
                "-o",
                output_file.to_str().unwrap(),
                "--width",
                width,
                "--height",
                height,
            ],
        );
        assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
        assert!(
            stderr_of(&output).contains("at most 8192x8192 pixels"),
            "{}",
            stderr_of(&output)
        );
        assert!(!output_file.exists());
    }
}

#[test]
fn ingest_keeps_a_numbers_text_as_written_in_params_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // The run line goes through serde_json; the param line through the fast scanner.
    let input = r#"{"type": "run", "experiment": "e", "run": "r", "params": {"seed": 17661420568835545977, "lr": 1.50e-3}, "tags": {"n": -12345678901234567890123}}
{"type":"param","experiment":"e","run":"r","key":"other_seed","value":18446744073709551615}
{"type":"metric","experiment":"e","run":"r","key":"k","value":17661420568835545977}
"#;
    let output = ingest(&store, input, &[]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let runs = json(&store, &["runs", "e"]);
    assert_eq!(runs[0]["params.seed"], "17661420568835545977");
    assert_eq!(runs[0]["params.lr"], "1.50e-3");
    assert_eq!(runs[0]["params.other_seed"], "18446744073709551615");
    // A metric value is still a double.
    assert_eq!(runs[0]["metrics.k"], 17661420568835545977u64 as f64);
}

#[test]
fn ingest_refuses_a_key_given_twice_in_params_or_tags() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for (line, what) in [
        (
            r#"{"type": "run", "run": "r", "params": {"lr": 0.1, "lr": 0.2}}"#,
            r#""params" gives the key "lr" twice"#,
        ),
        (
            r#"{"type": "run", "run": "r", "tags": {"t": "a", "u": "b", "t": "a"}}"#,
            r#""tags" gives the key "t" twice"#,
        ),
    ] {
        let output = ingest(&store, &format!("{line}\n"), &[]);
        assert_eq!(output.status.code(), Some(1), "{line}");
        assert!(stderr_of(&output).contains(what), "{}", stderr_of(&output));
        assert!(
            stderr_of(&output).contains("line 1:"),
            "{}",
            stderr_of(&output)
        );
    }
    // Nothing of the refused lines was written.
    let experiments = json(&store, &["experiments"]);
    assert!(
        experiments.iter().all(|e| e["runs"] == 0),
        "{experiments:?}"
    );
}

/// Runs `runlog ingest FILE` under a file-size limit of about 50 KB: the first segment cannot be
/// created (EFBIG), a store error on the first line.
fn ingest_with_a_full_disk(store: &Path, input: &Path, on_error: &str) -> Output {
    // An ignored SIGXFSZ stays ignored across exec, so the write fails with EFBIG instead.
    let script = "trap '' XFSZ; ulimit -f 100; exec \"$@\"";
    Command::new("sh")
        .args(["-c", script, "sh", env!("CARGO_BIN_EXE_runlog"), "--store"])
        .arg(store)
        .args(["ingest", "--on-error", on_error])
        .arg(input)
        .env_remove("RUNLOG_STORE")
        .output()
        .unwrap()
}

/// `count` ingest lines of one series of run `r`: value and step `0..count`.
fn metric_lines(count: u32) -> String {
    (0..count)
        .map(|i| {
            format!(
                "{{\"type\":\"metric\",\"run\":\"r\",\"key\":\"k\",\"value\":{i},\"step\":{i}}}\n"
            )
        })
        .collect()
}

#[test]
fn a_store_error_stops_the_ingest_whatever_on_error_says() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, metric_lines(100)).unwrap();
    for on_error in ["skip", "stop"] {
        let output = ingest_with_a_full_disk(&store, &input, on_error);
        let stderr = stderr_of(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "--on-error {on_error}: {stderr}"
        );
        assert!(
            stderr.contains("the store failed at line 1:") && stderr.contains("File too large"),
            "--on-error {on_error}: {stderr}"
        );
        // A store error is not a bad line: no "skipped", no hint about --on-error.
        assert!(!stderr.contains("skipped"), "{stderr}");
        assert!(!stderr.contains("--on-error"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn a_closed_acknowledgement_output_fails_the_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let input = dir.path().join("input.jsonl");
    // Far more acknowledgements than a pipe holds, so the ingest meets the closed pipe.
    std::fs::write(&input, metric_lines(100_000)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runlog"))
        .arg("--store")
        .arg(&store)
        .args(["ingest", "--acknowledge"])
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 2];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"1\n");
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("acknowledging line"), "{stderr}");
}

#[test]
fn an_experiment_named_with_another_experiments_id_does_not_shadow_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let experiments = json(&store, &["experiments"]);
    let id = experiments[0]["id"].as_u64().unwrap().to_string();
    let impostor = format!(
        "{{\"type\": \"metric\", \"experiment\": \"{id}\", \"run\": \"impostor\", \"key\": \"k\", \"value\": 1}}\n"
    );
    let output = ingest(&store, &impostor, &[]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let runs = json(&store, &["runs", &id]);
    let names: Vec<&Value> = runs.iter().map(|r| &r["name"]).collect();
    assert_eq!(names, [&Value::from("r")]);
    let runs = json(&store, &["runs", "e"]);
    assert_eq!(runs[0]["name"], "r");
}

#[test]
fn stats_counts_every_byte_of_the_store_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(
        &store,
        &["demo", "--runs", "2", "--steps", "300", "--keys", "2"],
    );
    // A file of the user's, and the log after compaction, count too.
    std::fs::write(store.join("notes.txt"), [b'x'; 1000]).unwrap();
    let more = "{\"type\":\"metric\",\"experiment\":\"demo-sweep\",\"run\":\"late\",\"key\":\"k\",\"value\":1}\n";
    assert!(ingest(&store, more, &[]).status.success());
    let stats = json(&store, &["stats"]);
    let stat = |name: &str| {
        stats
            .iter()
            .find(|s| s["stat"] == name)
            .map(|s| s["value"].clone())
            .unwrap_or_else(|| panic!("no stat {name}: {stats:?}"))
    };
    let bytes_under = |dir: &Path| -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .map(|e| e.unwrap())
                        .map(|e| {
                            let metadata = e.metadata().unwrap();
                            if metadata.is_dir() {
                                walk(&e.path())
                            } else {
                                metadata.len()
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(dir)
    };
    let total = bytes_under(&store);
    let manifests = bytes_under(&store.join("manifest"));
    assert!(manifests > 0, "the demo compacts, so a manifest exists");
    assert_eq!(stat("total_bytes"), total);
    assert_eq!(stat("manifest_bytes"), manifests);
    let kinds: u64 = [
        "segment",
        "metadata_chain",
        "manifest",
        "parquet",
        "artifact",
        "other",
    ]
    .iter()
    .map(|kind| stat(&format!("{kind}_bytes")).as_u64().unwrap())
    .sum();
    assert_eq!(kinds, total);
    assert!(stat("other_bytes").as_u64().unwrap() >= 1000);
    let points = stat("points").as_u64().unwrap();
    assert_eq!(points, 2 * 2 * 300 + 1);
    let per_point = stat("bytes_per_point").as_f64().unwrap();
    assert!(
        (per_point - total as f64 / points as f64).abs() < 0.001,
        "{per_point}"
    );
    let series = stat("series").as_u64().unwrap();
    let per_series = stat("manifest_bytes_per_series").as_f64().unwrap();
    assert!(
        (per_series - manifests as f64 / series as f64).abs() < 0.001,
        "{per_series}"
    );
}

/// More runs than the library's largest page (50,000): `--max` reads them page by page.
#[test]
fn runs_max_has_no_hidden_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let count = runlog::query::SEARCH_RESULTS_MAX + 1;
    let input = dir.path().join("runs.jsonl");
    let lines: String = (0..count)
        .map(|i| format!("{{\"type\":\"run\",\"experiment\":\"e\",\"run\":\"r{i}\"}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    ok(&store, &["ingest", input.to_str().unwrap()]);
    let names = |output: &str| -> std::collections::BTreeSet<String> {
        output
            .lines()
            .skip(1)
            .map(|line| line.split(',').nth(1).unwrap().to_string())
            .collect()
    };
    let all = ok(&store, &["runs", "e", "--max", "100000", "--format", "csv"]);
    assert_eq!(names(&all).len(), count);
    let output = runlog(&store, &["runs", "e", "--max", "50000", "--format", "csv"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        names(&String::from_utf8_lossy(&output.stdout)).len(),
        50_000
    );
    assert!(stderr_of(&output).contains("more runs match"));
    let zero = runlog(&store, &["runs", "e", "--max", "0"]);
    assert_eq!(zero.status.code(), Some(1));
    assert!(stderr_of(&zero).contains("--max must be at least 1"));
}

#[test]
fn ingest_skips_a_byte_order_mark_and_names_the_input_line_of_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let input = "\u{feff}{\"type\":\"metric\",\"run\":\"r\",\"key\":\"k\",\"value\":1}\n\
                 {\"type\":\"metric\",\"run\":\"r\",\"key\":\"k\",\"value\":2,\"step\":1}\n\
                 {\"type\":\"metric\",\"run\":\"r\",\"key\":\"k\",\"value\":}\n";
    let output = ingest(&store, input, &[]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let error = stderr.lines().last().unwrap();
    assert!(
        error.starts_with("runlog: error: line 3: expected value at column 46"),
        "{stderr}"
    );
    assert!(!error.contains("line 1"), "{stderr}");
    let points = json(&store, &["history", "r", "k"]);
    assert_eq!(points.len(), 2);
}

#[test]
fn export_into_an_occupied_folder_says_so_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let target = dir.path().join("export");
    ok(&store, &["export", target.to_str().unwrap()]);
    let again = runlog(&store, &["export", target.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = stderr_of(&again);
    assert!(
        stderr.contains("is not empty; export into a new or empty folder\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("already exists"), "{stderr}");
}

#[test]
fn compare_refuses_an_empty_or_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let empty = runlog(&store, &["compare", "r", "--keys", "k,,k"]);
    assert_eq!(empty.status.code(), Some(1), "{}", stderr_of(&empty));
    assert!(
        stderr_of(&empty).contains("empty key"),
        "{}",
        stderr_of(&empty)
    );
    let unknown = runlog(&store, &["compare", "r", "--keys", "k,nope"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr_of(&unknown));
    assert!(
        stderr_of(&unknown).contains("metric \"nope\""),
        "{}",
        stderr_of(&unknown)
    );
    let known = json(&store, &["compare", "r", "--keys", "k"]);
    assert_eq!(known[0]["k"], 2.0);
}

#[test]
fn tables_escape_control_characters_in_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let line =
        r#"{"type":"metric","experiment":"e","run":"\u001b[31mred\u0000\nx","key":"k","value":1}"#;
    let output = ingest(&store, &format!("{line}\n"), &[]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let table = ok(&store, &["runs", "e"]);
    assert!(
        !table.contains('\u{1b}') && !table.contains('\0'),
        "{table:?}"
    );
    assert!(table.contains("\\u{1b}[31mred\\0\\nx"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    // Tools get the name unchanged.
    let runs = json(&store, &["runs", "e"]);
    assert_eq!(runs[0]["name"], "\u{1b}[31mred\u{0}\nx");
}

/// Lines naming an ended run by `run_id` write to it as it is: the run is not resumed, and
/// stays FINISHED with its end time (only a `status` line changes those).
#[test]
fn ingest_by_run_id_never_resumes_an_ended_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let first = r#"{"type": "metric", "experiment": "e", "run": "r1", "key": "loss", "value": 1, "step": 1}
{"type": "status", "experiment": "e", "run": "r1", "status": "FINISHED"}
{"type": "metric", "experiment": "e", "run": "r1", "key": "loss", "value": 2, "step": 2}
"#;
    let output = ingest(&store, first, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id: runlog::RunId = json(&store, &["runs", "e"])[0]["run_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ended = runlog::Store::open(&store).unwrap().run(id).unwrap().info;
    assert_eq!(ended.status, runlog::RunStatus::Finished);
    assert!(ended.end_time_ms.is_some());

    let later = format!(
        r#"{{"type": "metric", "run_id": "{id}", "key": "loss", "value": 3, "step": 3}}
{{"type": "param", "run_id": "{id}", "key": "lr", "value": "0.1"}}
{{"type": "tag", "run_id": "{id}", "key": "note", "value": "late"}}
"#
    );
    let output = ingest(&store, &later, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let view = runlog::Store::open(&store).unwrap().run(id).unwrap();
    assert_eq!(
        view.info, ended,
        "the ingest changed the run's status or end time"
    );
    assert_eq!(view.metrics["loss"].count, 3);
    assert_eq!(
        (view.params["lr"].as_str(), view.tags["note"].as_str()),
        ("0.1", "late")
    );
}
