//! Processes racing on one store: get-or-create of one experiment name gives one experiment.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use runlog::Store;

/// The body of a child process. Does nothing in a normal test run.
#[test]
#[ignore = "run by the multi-process tests as a child process"]
fn child_entry() {
    let Ok(root) = std::env::var("RUNLOG_TRACKING_CHILD") else {
        return;
    };
    let go = std::path::Path::new(&root).join("go");
    while !go.exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let store = Store::open(&root).unwrap();
    let mut out = std::io::stdout().lock();
    // libtest has printed "test ... " without a newline: start a fresh line.
    writeln!(out).unwrap();
    for name in ["shared", "other", "shared"] {
        let experiment = store.get_or_create_experiment(name).unwrap();
        writeln!(out, "{name} {}", experiment.id).unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn processes_racing_on_get_or_create_end_up_in_one_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "tracking_multiprocess::child_entry",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("RUNLOG_TRACKING_CHILD", &root)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::fs::write(root.join("go"), b"").unwrap();
    let mut seen: Vec<(String, String)> = Vec::new();
    for mut child in children {
        let stdout = child.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some((name, id)) = line.split_once(' ')
                && (name == "shared" || name == "other")
            {
                seen.push((name.to_string(), id.to_string()));
            }
        }
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(seen.len(), 12);
    for name in ["shared", "other"] {
        let mut ids: Vec<&String> = seen
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, id)| id)
            .collect();
        ids.dedup();
        assert_eq!(ids.len(), 1, "{name}: {seen:?}");
    }
    let store = Store::open(&root).unwrap();
    assert_eq!(store.experiments(runlog::ViewType::All).unwrap().len(), 2);
}
