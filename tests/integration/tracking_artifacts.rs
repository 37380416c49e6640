//! Artifact folders and deletion through the library: listing a folder's direct children,
//! deleting a file or a folder (recorded in the log, file removed), the one path check every
//! front-end relies on, and files a crash left at an artifact's path with no event naming them.

use runlog::{ArtifactEntry, Error, ModelOptions, Store, StoreOptions};

use crate::util::Store as TempStore;

fn open(dir: &TempStore) -> Store {
    Store::open_with(dir.dir.path(), StoreOptions::default()).unwrap()
}

/// A run started in experiment `e` (made if missing).
fn new_run(store: &Store) -> runlog::RunId {
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    store
        .start_run(experiment, Default::default())
        .unwrap()
        .id()
}

fn names(entries: &[ArtifactEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| match entry {
            ArtifactEntry::File { path, size_bytes } => format!("{path}:{size_bytes}"),
            ArtifactEntry::Dir { path } => format!("{path}/"),
        })
        .collect()
}

#[test]
fn folders_list_their_direct_children() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store);
    for (path, bytes) in [
        ("a.txt", &b"hello"[..]),
        ("d/b.txt", b"bb"),
        ("d/e/c.txt", b"c"),
    ] {
        store.log_artifact_bytes(run, path, bytes).unwrap();
    }
    assert_eq!(
        names(&store.list_artifacts(run, "").unwrap()),
        ["a.txt:5", "d/"]
    );
    assert_eq!(
        names(&store.list_artifacts(run, "d").unwrap()),
        ["d/b.txt:2", "d/e/"]
    );
    assert!(store.list_artifacts(run, "a.txt").unwrap().is_empty());
    assert!(store.list_artifacts(run, "nothing").unwrap().is_empty());
    assert!(matches!(
        store.list_artifacts(run, "../x"),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn a_deleted_artifact_is_gone_after_reopen_and_its_path_is_free_again() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store);
    store.log_artifact_bytes(run, "keep.txt", b"k").unwrap();
    store.log_artifact_bytes(run, "m/a.bin", b"a").unwrap();
    store.log_artifact_bytes(run, "m/sub/b.bin", b"b").unwrap();
    let file = dir
        .dir
        .path()
        .join("artifacts")
        .join(run.to_string())
        .join("m/a.bin");
    assert!(file.exists());

    // A folder goes with everything under it; a prefix that is not a folder is not touched.
    let mut deleted = store.delete_artifacts(run, "m").unwrap();
    deleted.sort();
    assert_eq!(deleted, ["m/a.bin", "m/sub/b.bin"]);
    assert!(!file.exists());
    assert!(matches!(
        store.read_artifact(run, "m/a.bin"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.delete_artifacts(run, "m"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.delete_artifacts(run, "kee"),
        Err(Error::NotFound(_))
    ));
    for bad in ["..", "../keep.txt", "/keep.txt", "a\\b", "a\0b"] {
        assert!(
            matches!(
                store.delete_artifacts(run, bad),
                Err(Error::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    drop(store);

    let store = open(&dir);
    assert_eq!(
        names(&store.list_artifacts(run, "").unwrap()),
        ["keep.txt:1"]
    );
    // The path can be stored again, with new content.
    store.log_artifact_bytes(run, "m/a.bin", b"new").unwrap();
    assert_eq!(store.read_artifact(run, "m/a.bin").unwrap(), b"new");
    drop(store);
    let store = open(&dir);
    assert_eq!(store.read_artifact(run, "m/a.bin").unwrap(), b"new");
}

#[cfg(feature = "parquet")]
#[test]
fn deletion_survives_compaction() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store);
    store.log_artifact_bytes(run, "x.txt", b"x").unwrap();
    store.log_artifact_bytes(run, "y.txt", b"y").unwrap();
    store.delete_artifacts(run, "x.txt").unwrap();
    store.close().unwrap();
    store.compact().unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(names(&store.list_artifacts(run, "").unwrap()), ["y.txt:1"]);
}

/// What a crash between an artifact's link and its event leaves (or a power loss that takes
/// the event, or a crash between a deletion's event and its file's removal): a complete file at
/// the path that no event names. The next store of that path replaces it.
#[test]
fn a_file_no_event_names_does_not_block_its_path() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store);
    let run_dir = dir.dir.path().join("artifacts").join(run.to_string());
    std::fs::create_dir_all(run_dir.join("weights")).unwrap();
    std::fs::write(run_dir.join("weights/last.pt"), b"left by a crash").unwrap();

    let stored = store
        .log_artifact_bytes(run, "weights/last.pt", b"the real one")
        .unwrap();
    assert_eq!(stored.size_bytes, 12);
    assert_eq!(
        store.read_artifact(run, "weights/last.pt").unwrap(),
        b"the real one"
    );

    // A deleted artifact whose file survived (a crash after the deletion's event).
    store.log_artifact_bytes(run, "gone.txt", b"old").unwrap();
    store.delete_artifacts(run, "gone.txt").unwrap();
    std::fs::write(run_dir.join("gone.txt"), b"old").unwrap();
    store.log_artifact_bytes(run, "gone.txt", b"new").unwrap();
    drop(store);

    let store = open(&dir);
    assert_eq!(
        names(&store.list_artifacts(run, "").unwrap()),
        ["gone.txt:3", "weights/"]
    );
    assert_eq!(store.read_artifact(run, "gone.txt").unwrap(), b"new");
    assert_eq!(
        store.read_artifact(run, "weights/last.pt").unwrap(),
        b"the real one"
    );
}

/// A handle whose catalog has not yet seen another handle's artifact finds its file at the
/// path; the refresh under the exclusive lock finds the event, so the file stays and the store
/// is refused as write-once.
#[test]
fn a_file_an_event_names_is_never_taken_for_an_orphan() {
    let dir = TempStore::new();
    let stale = Store::open_with(
        dir.dir.path(),
        StoreOptions {
            refresh_interval: Some(std::time::Duration::from_secs(3600)),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let run = new_run(&stale);
    stale.list_artifacts(run, "").unwrap();

    let writer = open(&dir);
    writer
        .log_artifact_bytes(run, "model.bin", b"first")
        .unwrap();
    let refused = stale.log_artifact_bytes(run, "model.bin", b"second");
    assert!(
        matches!(&refused, Err(Error::AlreadyExists(message)) if message.contains("model.bin")),
        "{refused:?}"
    );
    assert_eq!(writer.read_artifact(run, "model.bin").unwrap(), b"first");
    assert_eq!(stale.read_artifact(run, "model.bin").unwrap(), b"first");
}

#[test]
fn a_logged_models_orphan_does_not_block_its_path() {
    let dir = TempStore::new();
    let store = open(&dir);
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let model = store
        .create_logged_model(experiment, ModelOptions::default())
        .unwrap()
        .id;
    let model_dir = dir
        .dir
        .path()
        .join("artifacts")
        .join("models")
        .join(model.to_string());
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(model_dir.join("MLmodel"), b"left by a crash").unwrap();
    store
        .log_model_artifact_bytes(model, "MLmodel", b"flavors: {}")
        .unwrap();
    assert_eq!(
        store.read_model_artifact(model, "MLmodel").unwrap(),
        b"flavors: {}"
    );
    // A folder at the path is not an orphan: the store fails as before and the folder stays.
    std::fs::create_dir_all(model_dir.join("data/keep")).unwrap();
    assert!(store.log_model_artifact_bytes(model, "data", b"x").is_err());
    assert!(model_dir.join("data/keep").is_dir());
}

/// Handles with stale catalogs race to store the same paths, each trying every path a few
/// times, so that later tries find the winner's file, often before its event is appended: each
/// path is stored exactly once, and what is read back is the winner's content, so no racer took
/// a file about to be recorded for an orphan.
#[test]
fn racing_stores_of_one_path_keep_exactly_one_file() {
    const HANDLES: usize = 4;
    const PATHS: usize = 24;
    const TRIES: usize = 4;
    let dir = TempStore::new();
    let first = open(&dir);
    let run = new_run(&first);
    let stale = || {
        Store::open_with(
            dir.dir.path(),
            StoreOptions {
                refresh_interval: Some(std::time::Duration::from_secs(3600)),
                ..StoreOptions::default()
            },
        )
        .unwrap()
    };
    let handles: Vec<Store> = (0..HANDLES).map(|_| stale()).collect();
    let barrier = std::sync::Barrier::new(HANDLES);
    let wins: Vec<Vec<usize>> = std::thread::scope(|scope| {
        let racers: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(index, handle)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut won = Vec::new();
                    for path in 0..PATHS {
                        barrier.wait();
                        let content = format!("handle {index}");
                        for _ in 0..TRIES {
                            match handle.log_artifact_bytes(
                                run,
                                &format!("p{path}.txt"),
                                content.as_bytes(),
                            ) {
                                Ok(_) => won.push(path),
                                Err(Error::AlreadyExists(_)) => {}
                                Err(other) => panic!("handle {index}, path {path}: {other}"),
                            }
                        }
                    }
                    won
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let reader = open(&dir);
    for path in 0..PATHS {
        let winners: Vec<usize> = (0..HANDLES).filter(|h| wins[*h].contains(&path)).collect();
        assert_eq!(winners.len(), 1, "path {path}: winners {winners:?}");
        assert_eq!(
            reader.read_artifact(run, &format!("p{path}.txt")).unwrap(),
            format!("handle {}", winners[0]).as_bytes(),
            "path {path}"
        );
    }
}

/// A source that yields one byte, then blocks until told to end.
struct Held(std::sync::mpsc::Receiver<()>, bool);

impl std::io::Read for Held {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if !self.1 {
            self.1 = true;
            buffer[0] = b'x';
            return Ok(1);
        }
        let _ = self.0.recv();
        Ok(0)
    }
}

/// An upload's content is written before the artifact lock is taken, so a slow upload never
/// holds the lock that removing an orphan waits for.
#[test]
fn removing_an_orphan_does_not_wait_for_an_upload_in_progress() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store);
    let run_dir = dir.dir.path().join("artifacts").join(run.to_string());
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("orphan.txt"), b"left by a crash").unwrap();

    let (release, held) = std::sync::mpsc::channel();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let store = &store;
        let slow = scope.spawn(move || {
            store
                .log_artifact_from(run, "slow.bin", &mut Held(held, false))
                .unwrap();
        });
        // Let the slow upload start its copy (it is blocked inside it from then on).
        std::thread::sleep(std::time::Duration::from_millis(50));
        scope.spawn(move || {
            store.log_artifact_bytes(run, "orphan.txt", b"new").unwrap();
            done.send(()).unwrap();
        });
        // A guard against a hang, not a timing assertion: the orphan's store must not wait
        // for the slow upload, which waits for this test.
        let stored = finished.recv_timeout(std::time::Duration::from_secs(60));
        release.send(()).unwrap();
        slow.join().unwrap();
        assert!(
            stored.is_ok(),
            "the orphan's store waited for the slow upload"
        );
    });
    assert_eq!(store.read_artifact(run, "orphan.txt").unwrap(), b"new");
    assert_eq!(store.read_artifact(run, "slow.bin").unwrap(), b"x");
}

/// A process killed while it wrote an artifact leaves its publish temporary in the artifact's
/// folder. Compaction removes such files once they are an hour old and unlocked; a temporary a
/// live writer holds locked, a recent one, and an artifact a user named like a temporary stay.
#[test]
fn compaction_removes_temporaries_killed_writers_left_and_nothing_else() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store);
    let user_named = ".tmp-00000000deadbeef";
    store.log_artifact_bytes(run, user_named, b"mine").unwrap();
    let model = store
        .create_logged_model(
            store.get_or_create_experiment("e").unwrap().id,
            ModelOptions::default(),
        )
        .unwrap();
    store
        .log_model_artifact_bytes(model.id, "weights/model.bin", b"w")
        .unwrap();
    let run_dir = dir.dir.path().join("artifacts").join(run.to_string());
    let model_dir = dir
        .dir
        .path()
        .join("artifacts")
        .join("models")
        .join(model.id.to_string())
        .join("weights");
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let left = |path: std::path::PathBuf| {
        let file = std::fs::File::create(&path).unwrap();
        std::fs::write(&path, b"half an upload").unwrap();
        file.set_modified(two_hours_ago).unwrap();
        path
    };
    let killed = left(run_dir.join(".tmp-0123456789abcdef"));
    let killed_old_name = left(run_dir.join(".model.pkl.tmp-0123456789abcdef"));
    let killed_in_model = left(model_dir.join(".tmp-fedcba9876543210"));
    let live = left(run_dir.join(".tmp-1111111111111111"));
    let live_writer = std::fs::File::open(&live).unwrap();
    live_writer.lock().unwrap();
    let recent = run_dir.join(".tmp-2222222222222222");
    std::fs::write(&recent, b"being written").unwrap();
    let user_file = run_dir.join(user_named);
    std::fs::File::options()
        .write(true)
        .open(&user_file)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let foreign = left(run_dir.join(".tmp-not-hex-at-all!"));

    store.compact().unwrap();
    for gone in [&killed, &killed_old_name, &killed_in_model] {
        assert!(!gone.exists(), "{} was left", gone.display());
    }
    for kept in [&live, &recent, &user_file, &foreign] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
    assert_eq!(store.read_artifact(run, user_named).unwrap(), b"mine");
    drop(live_writer);
}

/// An artifact path read from the log is checked again where it meets the file system: a
/// damaged or forged record naming `x/../../../victim.txt` must not let a deletion of folder
/// `x` remove a file outside the run's folder, nor a read reach one.
#[test]
fn a_recorded_path_that_leaves_the_run_folder_reaches_no_file() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store);
    store
        .log_artifact_bytes(run, "x/kept.txt", b"kept")
        .unwrap();
    store.close().unwrap();
    drop(store);

    let victim = dir.dir.path().join("victim.txt");
    std::fs::write(&victim, b"outside").unwrap();
    let forged = "x/../../../victim.txt";
    let mut writer = dir.writer(64 * 1024);
    writer
        .append(&runlog::wal::Event::ArtifactRecorded {
            run,
            time_ms: 1,
            size_bytes: 7,
            sha256: [0; 32],
            path: forged.to_string(),
        })
        .unwrap();
    writer.close().unwrap();

    let store = open(&dir);
    let error = store.delete_artifacts(run, "x").unwrap_err();
    assert!(
        matches!(&error, Error::InvalidInput(message) if message.contains(forged)),
        "{error:?}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"outside");
    // Nothing was recorded: the legitimate file is still listed and readable.
    assert_eq!(store.read_artifact(run, "x/kept.txt").unwrap(), b"kept");
}
